"""A lean LIST+WATCH of the Jobs and pods carrying ``sgs.io/run``, read as raw JSON into small per-Run maps.

kopf's own watch would do, but it prepares every event for change handlers (deep copies of the whole object,
managedFields included): at thousands of Jobs that cost more CPU than creating them. Here the label selector
is applied by the API server and each event is one JSON parse (the core's resumable Watch) and one small
frozen value.
"""

from __future__ import annotations

import asyncio
import fnmatch
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sgs.kube import Watch
from sgs.kube.watch import WATCH_TIMEOUT_S
from sgs_operator.kube import Kube
from sgs_operator.naming import LABEL_RUN
from sgs_operator.observe import JobSeen, PodSeen, job_entry, pod_entry, run_key

T = TypeVar("T")
RunKey = tuple[str, str]
Entry = Callable[[str, Mapping[str, str], Mapping[str, str], Mapping[str, Any]], T]


@dataclass
class RunObjects(Generic[T]):
    """Objects of one kind by Run, kept current by a watch; ``synced`` once the first LIST is in."""

    kind: str
    entry: Entry[T]
    namespaces: Collection[str] = ()
    by_run: dict[RunKey, dict[str, T]] = field(default_factory=dict)
    synced: asyncio.Event = field(default_factory=asyncio.Event)
    lists: int = 0  # full LISTs so far: one at start, then one per 410 Gone or broken stream

    def of(self, key: RunKey) -> list[T]:
        return list(self.by_run.get(key, {}).values())

    def serves(self, namespace: str) -> bool:
        return not self.namespaces or any(fnmatch.fnmatchcase(namespace, p) for p in self.namespaces)

    def apply(self, kind: str, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        namespace, name = meta.get("namespace") or "", meta.get("name") or ""
        if not self.serves(namespace):
            return
        labels = meta.get("labels") or {}
        key = run_key(namespace, labels)
        if kind == "DELETED":
            self.by_run.get(key, {}).pop(name, None)
            return
        value = self.entry(name, meta.get("annotations") or {}, labels, obj.get("status") or {})
        self.by_run.setdefault(key, {})[name] = value

    def replace(self, items: list[dict[str, Any]]) -> None:
        self.lists += 1
        self.by_run = {}
        for item in items:
            self.apply("ADDED", item)
        self.synced.set()


def watch_of(kube: Kube, objects: RunObjects[Any], watch_timeout_s: int = WATCH_TIMEOUT_S) -> Watch:
    """The core's resumable LIST+WATCH of ``objects``' kind, cluster-wide, filtered by the API server."""
    path = "/apis/batch/v1/jobs" if objects.kind == "jobs" else "/api/v1/pods"
    return Watch(kube.client, path, objects, {"labelSelector": LABEL_RUN}, timeout_s=watch_timeout_s)


async def follow(
    kube: Kube, objects: RunObjects[Any], stopped: asyncio.Event, watch_timeout_s: int = WATCH_TIMEOUT_S
) -> None:
    await watch_of(kube, objects, watch_timeout_s).run(stopped)


def job_objects(namespaces: Collection[str]) -> RunObjects[JobSeen]:
    return RunObjects("jobs", job_entry, namespaces)


def pod_objects(namespaces: Collection[str]) -> RunObjects[PodSeen]:
    return RunObjects("pods", pod_entry, namespaces)

"""A lean LIST+WATCH of the Jobs and pods carrying ``sgs.io/run``, read as raw JSON into small per-Run maps.

kopf's own watch would do, but it prepares every event for change handlers (deep copies of the whole object,
managedFields included): at thousands of Jobs that cost more CPU than creating them. Here the label selector
is applied by the API server and each event is one ``json.loads`` and one small frozen value.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from kubernetes_asyncio.client.exceptions import ApiException

from sgs_operator.kube import Kube, checked_response
from sgs_operator.naming import LABEL_RUN
from sgs_operator.observe import JobSeen, PodSeen, job_entry, pod_entry, run_key

T = TypeVar("T")
RunKey = tuple[str, str]
Entry = Callable[[str, Mapping[str, str], Mapping[str, str], Mapping[str, Any]], T]
GONE = 410
RETRY_S = 1.0
WATCH_TIMEOUT_S = 300

log = logging.getLogger("sgs_operator.watch")


@dataclass
class RunObjects(Generic[T]):
    """Objects of one kind by Run, kept current by a watch; ``synced`` once the first LIST is in."""

    kind: str
    entry: Entry[T]
    namespaces: Collection[str] = ()
    by_run: dict[RunKey, dict[str, T]] = field(default_factory=dict)
    synced: asyncio.Event = field(default_factory=asyncio.Event)

    def of(self, key: RunKey) -> list[T]:
        return list(self.by_run.get(key, {}).values())

    def serves(self, namespace: str) -> bool:
        return not self.namespaces or any(fnmatch.fnmatchcase(namespace, p) for p in self.namespaces)

    def apply(self, kind: str, obj: Mapping[str, Any]) -> None:
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

    def replace(self, items: list[Mapping[str, Any]]) -> None:
        self.by_run = {}
        for item in items:
            self.apply("ADDED", item)


async def follow(kube: Kube, objects: RunObjects[Any], stopped: asyncio.Event) -> None:
    """LIST, then WATCH from its resourceVersion; start over on 410 Gone or a broken stream."""
    while not stopped.is_set():
        try:
            version = await _list(kube, objects)
            objects.synced.set()
            await _watch(kube, objects, version, stopped)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # a broken stream is normal (restarts, timeouts): list again
            log.info(f"watch of {objects.kind}: {err!r}; listing again")
            await asyncio.sleep(RETRY_S)


async def _list(kube: Kube, objects: RunObjects[Any]) -> str:
    response = await _call(kube, objects.kind, watch=False, resource_version=None)
    try:
        data = json.loads(await response.read())
    finally:
        response.release()
    objects.replace(data.get("items") or [])
    return str(data["metadata"]["resourceVersion"])


async def _watch(kube: Kube, objects: RunObjects[Any], version: str, stopped: asyncio.Event) -> None:
    response = await _call(kube, objects.kind, watch=True, resource_version=version)
    try:
        while not stopped.is_set():
            line = await response.content.readline()
            if not line:
                return  # the server ended the watch (timeout): resume from a fresh list
            event = json.loads(line)
            if event.get("type") == "ERROR":
                code = (event.get("object") or {}).get("code")
                raise ApiException(status=code, reason=f"watch error {code}")
            if event.get("type") == "BOOKMARK":
                continue
            objects.apply(event["type"], event["object"])
    finally:
        response.release()


async def _call(kube: Kube, kind: str, *, watch: bool, resource_version: str | None) -> Any:
    options: dict[str, Any] = {
        "label_selector": LABEL_RUN,
        "watch": watch,
        "_preload_content": False,
        "_request_timeout": WATCH_TIMEOUT_S + 30 if watch else 60,
    }
    if watch:
        options.update(resource_version=resource_version, timeout_seconds=WATCH_TIMEOUT_S, allow_watch_bookmarks=True)
    response: Any
    if kind == "jobs":
        response = await kube.batch.list_job_for_all_namespaces(**options)
    else:
        response = await kube.core.list_pod_for_all_namespaces(**options)
    return await checked_response(response, keep=True)


def job_objects(namespaces: Collection[str]) -> RunObjects[JobSeen]:
    return RunObjects("jobs", job_entry, namespaces)


def pod_objects(namespaces: Collection[str]) -> RunObjects[PodSeen]:
    return RunObjects("pods", pod_entry, namespaces)

"""What the console shows of the cluster, kept current by LIST+WATCH with the console's own read-only identity.

One cache per kind serves every browser: ten people following a Run cost one watch, not ten, and a page is
rendered from memory. Each cache counts its changes (``version``), so a page's ETag is known without asking the
API server or the database anything. What a person may see is still the API server's decision: the pages ask
it, with the person's token, whether they may list the kind in that namespace (``access.AccessCheck``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sgs.kube import JSON, KubeClient, KubeError, Watch
from sgs.model.base import GROUP, VERSION

log = logging.getLogger("sgs_console.kubeview")

KINDS = ("runs", "pipelines", "sites", "dataplacements")


@dataclass
class Store:
    """Objects of one kind by (namespace, name); implements sgs.kube.watch.Cache."""

    kind: str
    objects: dict[tuple[str, str], JSON] = field(default_factory=dict)
    version: int = 0
    synced: bool = False

    def replace(self, items: list[JSON]) -> None:
        self.objects = {key_of(obj): obj for obj in items}
        self.version += 1
        self.synced = True

    def apply(self, kind: str, obj: JSON) -> None:
        if kind == "DELETED":
            self.objects.pop(key_of(obj), None)
        else:
            self.objects[key_of(obj)] = obj
        self.version += 1

    def get(self, namespace: str, name: str) -> JSON | None:
        return self.objects.get((namespace, name))

    def in_namespaces(self, namespaces: Iterable[str] | None) -> list[JSON]:
        """Objects in the given namespaces (all when None)."""
        if namespaces is None:
            return list(self.objects.values())
        wanted = set(namespaces)
        return [obj for (namespace, _), obj in self.objects.items() if namespace in wanted]

    def namespaces(self) -> set[str]:
        return {namespace for namespace, _ in self.objects}


def key_of(obj: JSON) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


class KubeView:
    """The sgs resources and the nodes, watched; ``start()`` returns once each first LIST is in (or failed)."""

    def __init__(self, kube: KubeClient, namespaces: list[str]) -> None:
        self.kube = kube
        self.namespaces = namespaces
        self.stores: dict[str, Store] = {kind: Store(kind) for kind in (*KINDS, "nodes")}
        self.errors: dict[str, str] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = asyncio.Event()

    @property
    def runs(self) -> Store:
        return self.stores["runs"]

    @property
    def pipelines(self) -> Store:
        return self.stores["pipelines"]

    @property
    def sites(self) -> Store:
        return self.stores["sites"]

    @property
    def placements(self) -> Store:
        return self.stores["dataplacements"]

    @property
    def nodes(self) -> Store:
        return self.stores["nodes"]

    def _paths(self, kind: str) -> list[str]:
        if kind == "nodes":
            return ["/api/v1/nodes"]
        base = f"/apis/{GROUP}/{VERSION}"
        if not self.namespaces:
            return [f"{base}/{kind}"]
        return [f"{base}/namespaces/{namespace}/{kind}" for namespace in self.namespaces]

    async def start(self, timeout_s: float = 30.0) -> None:
        watches: list[Watch] = []
        for kind, store in self.stores.items():
            paths = self._paths(kind)
            for path in paths:
                problem = await self._may_list(path)
                if problem is not None:  # shown on the pages that need the kind; the rest of the console works
                    self.errors[kind] = problem
                    log.warning("not watching %s: %s", path, problem)
                    continue
                # One store per kind even when several namespaces are watched: each watch keeps its own slice.
                target: Any = store if len(paths) == 1 else _Slice(store, path)
                watch = Watch(self.kube, path, target)
                watches.append(watch)
                self._tasks.append(asyncio.create_task(watch.run(self._stopped), name=f"console-watch-{kind}"))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(w.synced.wait() for w in watches)), timeout_s)

    async def _may_list(self, path: str) -> str | None:
        try:
            await self.kube.get(path, {"limit": "1"})
        except KubeError as error:
            return f"the console's own identity may not list {path}: {error.status} {error.reason}"
        return None

    async def stop(self) -> None:
        self._stopped.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


@dataclass
class _Slice:
    """The objects one namespace's watch contributes to a kind's store."""

    store: Store
    path: str
    keys: set[tuple[str, str]] = field(default_factory=set)

    def replace(self, items: list[JSON]) -> None:
        for key in self.keys:
            self.store.objects.pop(key, None)
        self.keys = {key_of(obj) for obj in items}
        for obj in items:
            self.store.objects[key_of(obj)] = obj
        self.store.version += 1
        self.store.synced = True

    def apply(self, kind: str, obj: JSON) -> None:
        if kind == "DELETED":
            self.keys.discard(key_of(obj))
        else:
            self.keys.add(key_of(obj))
        self.store.apply(kind, obj)

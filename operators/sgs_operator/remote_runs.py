"""What one cluster Site's API server says about the copies made through it: a watch, and a probe of the link.

Push, not poll (DESIGN.md): one LIST+WATCH per cluster Site (the copies carrying this control plane's origin and
the Site's name) keeps their latest versions here and wakes the mirror of the Run whose copy changed, so a status
written there is mirrored in milliseconds and a thousand idle Runs cost the remote API server nothing. A probe
(``/readyz`` every ``PROBE_S``) says whether the link holds; while it does not, the cache is not trusted (the
mirror reports ``SiteUnreachable`` since the first failed probe), and when it returns the watch starts again from
a fresh LIST, so nothing missed during the outage stays missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime

from sgs.kube import JSON, KubeClient, Watch

PROBE_S = 2.0  # a lost link shows within this (plus the client's timeout when packets are dropped)
log = logging.getLogger("sgs_operator.remote_runs")


class RemoteRuns:
    """The copies at one cluster Site, kept current; ``unreachable_since`` while its API server cannot be reached."""

    def __init__(
        self, client: KubeClient, path: str, selector: str, now: Callable[[], datetime], describe: Callable[..., str]
    ) -> None:
        self.client = client
        self.path = path
        self.selector = selector
        self.now = now
        self.describe = describe
        self.objects: dict[str, JSON] = {}
        self.pipelines: set[str] = set()  # <namespace>/<name> of the Pipeline copies made there (by this client)
        self.unreachable_since: datetime | None = None
        self.error = ""
        self._wakers: dict[str, asyncio.Event] = {}
        self._watch: Watch | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._probe_task: asyncio.Task[None] | None = None

    # --- the cache a Watch keeps (sgs.kube.watch.Cache) ---------------------------------------------------

    def replace(self, items: list[JSON]) -> None:
        before = set(self.objects)
        self.objects = {str(item["metadata"]["name"]): item for item in items}
        for name in before | set(self.objects):
            self._wake(name)

    def apply(self, kind: str, obj: JSON) -> None:
        name = str(obj["metadata"]["name"])
        if kind == "DELETED":
            self.objects.pop(name, None)
        else:
            self.objects[name] = obj
        self._wake(name)

    # --- what the mirrors ask ---------------------------------------------------------------------------

    @property
    def synced(self) -> bool:
        """The cache holds what the API server has (a LIST since the link last returned, and watching)."""
        return self._watch is not None and self._watch.synced.is_set() and self.unreachable_since is None

    def seen(self, obj: JSON) -> None:
        """A copy this operator just wrote (the API server's answer): newer than what the watch has shown yet."""
        current = self.objects.get(str(obj["metadata"]["name"]))
        if current is None or _version(obj) >= _version(current):
            self.objects[str(obj["metadata"]["name"])] = obj

    def waker(self, name: str) -> asyncio.Event:
        return self._wakers.setdefault(name, asyncio.Event())

    def forget(self, name: str) -> None:
        self._wakers.pop(name, None)

    # --- lifecycle ----------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._probe_task is None:
            self._restart_watch()
            self._probe_task = asyncio.create_task(self._probe(), name=f"probe {self.client.server}")

    async def close(self) -> None:
        for task in (self._probe_task, self._watch_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._probe_task = self._watch_task = None

    def _restart_watch(self) -> None:
        if self._watch_task is not None:
            self._watch_task.cancel()
        self._watch = Watch(self.client, self.path, self, {"labelSelector": self.selector})
        self._watch_task = asyncio.create_task(self._watch.run(), name=f"watch {self.client.server}{self.path}")

    async def _probe(self) -> None:
        while True:
            try:
                await self.client.read_text("/readyz")
            except Exception as err:  # refused, reset, timed out, not ready (5xx): all the same here
                if self.unreachable_since is None:
                    self.unreachable_since = self.now()
                    log.warning("%s unreachable: %s", self.client.server, self.describe(err))
                    self._wake_all()
                self.error = self.describe(err)
            else:
                if self.unreachable_since is not None:
                    log.info("%s reachable again; watching from a fresh list", self.client.server)
                    self.unreachable_since, self.error = None, ""
                    self._restart_watch()  # a watch stalled through the outage would miss changes
                    self._wake_all()
            await asyncio.sleep(PROBE_S)

    def _wake(self, name: str) -> None:
        event = self._wakers.get(name)
        if event is not None:
            event.set()

    def _wake_all(self) -> None:
        for event in self._wakers.values():
            event.set()


def _version(obj: JSON) -> int:
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0

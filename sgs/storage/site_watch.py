"""The Sites of a cluster, kept current: Site resources by LIST + WATCH, the Secrets they name by GET.

The same :func:`sgs.storage.sites.resolve` turns them into :class:`~sgs.storage.sites.Sites` as for a Sites
file. Secrets are read one by one by name — the loader needs ``get`` on the Secrets its Sites name, never
``list``/``watch`` of every Secret in the namespace — on every change of the Sites and again every
``resync_s`` seconds, so a rotated key is picked up without a restart.

    client = await KubeClient.connect(kubeconfig)        # kubeconfig, or in-cluster credentials
    watch = SitesWatch(client, namespace="survey", on_change=print)
    task = asyncio.create_task(watch.run(stopped))
    await watch.synced.wait()
    store = watch.current["sdc-fr"].store()
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from sgs.kube import JSON, KubeClient, Watch
from sgs.model.base import API_VERSION
from sgs.model.site import Site
from sgs.storage.sites import DEFAULT_NAMESPACE, Sites, resolve

log = logging.getLogger(__name__)
RESYNC_S = 60.0


def sites_path(namespace: str | None) -> str:
    """The Site collection of one namespace, or of the whole cluster."""
    scope = f"/namespaces/{namespace}" if namespace else ""
    return f"/apis/{API_VERSION}{scope}/{Site.plural}"


def _secret_refs(site_objects: list[JSON]) -> set[tuple[str, str]]:
    refs = set()
    for obj in site_objects:
        spec = obj.get("spec") or {}
        namespace = (obj.get("metadata") or {}).get("namespace") or DEFAULT_NAMESPACE
        for ref in ((spec.get("storage") or {}).get("credentials"), spec.get("archiveCredentials")):
            if isinstance(ref, dict) and ref.get("name"):
                refs.add((str(namespace), str(ref["name"])))
    return refs


async def read_secrets(client: KubeClient, refs: set[tuple[str, str]]) -> list[JSON]:
    """The Secrets that exist among ``refs`` (a missing one becomes its Site's error, not an exception)."""
    found = await asyncio.gather(*(client.get_or_none(f"/api/v1/namespaces/{ns}/secrets/{name}") for ns, name in refs))
    return [secret for secret in found if secret is not None]


async def load_sites_from_cluster(client: KubeClient, namespace: str | None = None) -> Sites:
    """One read: every Site (of ``namespace``, or all) with its credentials."""
    listing = await client.get(sites_path(namespace))
    objects = list(listing.get("items") or [])
    return resolve(objects, await read_secrets(client, _secret_refs(objects)))


class _SiteObjects:
    """The watch's cache: Site objects by namespace and name; ``changed`` is set on every event."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], JSON] = {}
        self.changed = asyncio.Event()

    @staticmethod
    def _key(obj: JSON) -> tuple[str, str]:
        metadata = obj.get("metadata") or {}
        return str(metadata.get("namespace") or DEFAULT_NAMESPACE), str(metadata.get("name") or "")

    def replace(self, items: list[JSON]) -> None:
        self.objects = {self._key(item): item for item in items}
        self.changed.set()

    def apply(self, kind: str, obj: JSON) -> None:
        if kind == "DELETED":
            self.objects.pop(self._key(obj), None)
        else:
            self.objects[self._key(obj)] = obj
        self.changed.set()


class SitesWatch:
    """``current`` is the latest :class:`Sites`; ``on_change`` is called (on the loop) whenever it changes;
    ``synced`` is set once the first snapshot is in."""

    def __init__(
        self,
        client: KubeClient,
        namespace: str | None = None,
        *,
        on_change: Callable[[Sites], None] | None = None,
        resync_s: float = RESYNC_S,
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.on_change = on_change
        self.resync_s = resync_s
        self.current = Sites()
        self.synced = asyncio.Event()
        self._cache = _SiteObjects()
        self._watch = Watch(client, sites_path(namespace), self._cache)

    async def run(self, stopped: asyncio.Event | None = None) -> None:
        """Until ``stopped`` is set (or cancelled)."""
        stopped = stopped or asyncio.Event()
        watching = asyncio.create_task(self._watch.run(stopped), name="sgs-sites-watch")
        try:
            while not stopped.is_set():
                await self._wait_for_change(stopped)
                if stopped.is_set() or not self._watch.synced.is_set():
                    continue
                try:
                    await self.refresh()
                except Exception as error:  # the API server away for a moment: keep the last snapshot
                    log.warning("Sites not refreshed: %r", error)
        finally:
            watching.cancel()
            await asyncio.gather(watching, return_exceptions=True)

    async def _wait_for_change(self, stopped: asyncio.Event) -> None:
        waits = [asyncio.ensure_future(self._cache.changed.wait()), asyncio.ensure_future(stopped.wait())]
        try:
            await asyncio.wait(waits, timeout=self.resync_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        self._cache.changed.clear()

    async def refresh(self) -> Sites:
        """Resolve the watched Sites against freshly read Secrets; notify if anything changed."""
        objects = list(self._cache.objects.values())
        snapshot = resolve(objects, await read_secrets(self.client, _secret_refs(objects)))
        changed = snapshot != self.current or not self.synced.is_set()
        self.current = snapshot
        self.synced.set()
        if changed and self.on_change is not None:
            self.on_change(snapshot)
        return snapshot

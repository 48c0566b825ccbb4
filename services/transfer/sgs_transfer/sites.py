"""The Sites as the transfer service sees them: names, labels, maintenance, weight and room, archive endpoint."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sgs.expression import SiteFacts
from sgs.model.site import Site
from sgs.replication.placement import Candidate
from sgs.storage.sites import Sites, SiteStores, load_sites_file

if TYPE_CHECKING:
    from sgs.storage import Store
    from sgs_transfer.settings import TransferSettings

log = logging.getLogger(__name__)
BYTES_PER_TB = 10**12


def in_maintenance(site: Site, now: datetime) -> bool:
    return any(window.start <= now < window.end for window in site.spec.maintenance)


@dataclass(frozen=True)
class KnownSite:
    """A Site, the token this service registers its replicas with (its own archive's Site token) and its store."""

    site: Site
    archive_token: str | None = None
    store: Store | None = None

    @property
    def name(self) -> str:
        return self.site.metadata.name

    @property
    def archive_url(self) -> str | None:
        return self.site.spec.archive_url

    def facts(self, now: datetime) -> SiteFacts:
        return SiteFacts(self.name, dict(self.site.metadata.labels), in_maintenance(self.site, now))

    def candidate(self, used_bytes: int, now: datetime) -> Candidate:
        capacity = self.site.spec.capacity.storage_tb
        return Candidate(
            name=self.name,
            weight=self.site.spec.weight,
            capacity_bytes=int(capacity * BYTES_PER_TB) if capacity > 0 else None,
            used_bytes=used_bytes,
            in_maintenance=in_maintenance(self.site, now),
        )


class SiteBook:
    """The Sites known right now (replaced whole when the loader reports a change)."""

    def __init__(self, sites: Iterable[KnownSite] = ()) -> None:
        self._sites: dict[str, KnownSite] = {s.name: s for s in sites}

    def replace(self, sites: Iterable[KnownSite]) -> None:
        self._sites = {s.name: s for s in sites}

    @property
    def names(self) -> list[str]:
        return sorted(self._sites)

    def get(self, name: str) -> KnownSite | None:
        return self._sites.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._sites

    def all(self) -> list[KnownSite]:
        return [self._sites[name] for name in sorted(self._sites)]

    def facts(self, now: datetime) -> list[SiteFacts]:
        return [site.facts(now) for site in self.all()]

    def candidates(self, names: Iterable[str], used: Mapping[str, int], now: datetime) -> list[Candidate]:
        return [self._sites[n].candidate(used.get(n, 0), now) for n in sorted(names) if n in self._sites]


def known_sites(sites: Sites, stores: SiteStores) -> list[KnownSite]:
    """The usable Sites of a loader snapshot with their shared stores; unusable ones are logged with the reason."""
    for name, reason in sorted(sites.errors.items()):
        log.error("Site %s cannot be used: %s", name, reason)
    return [KnownSite(loaded.resource, loaded.archive_token, stores[name]) for name, loaded in sites.sites.items()]


def load_site_book(settings: TransferSettings) -> SiteBook:
    """The Sites of the settings' Sites file (none without one: the cluster watch or a caller fills the book)."""
    if settings.sites_file is None:
        return SiteBook()
    sites = load_sites_file(settings.sites_file)
    return SiteBook(known_sites(sites, SiteStores(sites)))


async def watch_cluster_sites(settings: TransferSettings, book: SiteBook, stopped: asyncio.Event) -> None:
    """Keep ``book`` in step with the cluster's Site resources (and the Secrets they name)."""
    from sgs.kube import KubeClient
    from sgs.storage.site_watch import SitesWatch

    client = await KubeClient.connect(settings.kubeconfig)
    stores = SiteStores()

    def changed(sites: Sites) -> None:
        stores.update(sites)
        book.replace(known_sites(sites, stores))
        log.info("Sites from the cluster: %s", ", ".join(book.names) or "none")

    try:
        await SitesWatch(client, settings.sites_namespace, on_change=changed).run(stopped)
    finally:
        await client.close()

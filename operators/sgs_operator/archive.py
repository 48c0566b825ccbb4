"""A Site's archive over HTTP, with that Site's token: what the Run controllers read (datasets, replicas, dataset
types) and write (their outputs, with replicas and lineage). Deployables talk to each other only this way.

The token comes from the Secret the Site names (``spec.archiveCredentials``), read when a Run needs it; one
connection pool serves every Site.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from sgs.model.site import SiteSpec
from sgs.placement.consequences import placement_of, placement_params
from sgs_operator.kube import Kube

PAGE = 10_000
LOCATE_BATCH = 10_000  # the archive's limit on dataset ids per locate


class ArchiveError(RuntimeError):
    """The archive could not be reached (``status`` None) or answered an error."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def retryable(self) -> bool:
        """Worth trying again later: unreachable, overloaded, or refused for the token (a Secret to fix, not
        an output to give up on)."""
        return self.status is None or self.status >= 500 or self.status in (401, 403, 408, 429)


class ArchiveUnsetError(Exception):
    """The Site names no archive, or its token cannot be read; the message names the field."""


@dataclass(frozen=True)
class SiteArchive:
    """One Site's archive endpoint and the token it writes with."""

    site: str
    url: str
    token: str | None


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    if isinstance(detail, list):
        return "; ".join(f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg')}" for d in detail)
    return str(detail)[:500]


def check_archive_url(url: str) -> str:
    """An http(s) URL without credentials or query: what a Site may name as its archive."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ArchiveUnsetError(f"spec.archiveUrl: {url!r} is not an http:// or https:// URL")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ArchiveUnsetError(f"spec.archiveUrl: {url!r} must not carry credentials, a query or a fragment")
    return url.rstrip("/")


async def site_archive(kube: Kube, namespace: str, name: str, site: SiteSpec) -> SiteArchive:
    """The Site's archive with its token (read from the Secret now: a rotated token is picked up)."""
    if not site.archive_url:
        raise ArchiveUnsetError(f"Site {name!r}: spec.archiveUrl is unset; archive inputs and outputs need it")
    url = check_archive_url(site.archive_url)
    ref = site.archive_credentials
    if ref is None:
        return SiteArchive(name, url, None)
    where = f"Site {name!r}: spec.archiveCredentials"
    secret = await kube.client.get_or_none(
        f"/api/v1/namespaces/{quote(namespace, safe='')}/secrets/{quote(ref.name, safe='')}"
    )
    if secret is None:
        raise ArchiveUnsetError(f"{where}: Secret {namespace}/{ref.name} not found")
    try:
        token = base64.b64decode((secret.get("data") or {}).get(ref.key) or "", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, AttributeError):
        raise ArchiveUnsetError(f"{where}: Secret {namespace}/{ref.name} has undecodable data") from None
    if not token:
        raise ArchiveUnsetError(f"{where}: Secret {namespace}/{ref.name} has no key {ref.key!r}")
    return SiteArchive(name, url, token)


class ArchiveClient:
    """One connection pool for every Site's archive."""

    def __init__(self, timeout_s: float = 60.0) -> None:
        self._client = httpx.AsyncClient(timeout=timeout_s, trust_env=False, follow_redirects=False)

    async def close(self) -> None:
        await self._client.aclose()

    async def _call(self, archive: SiteArchive, method: str, path: str, ok: tuple[int, ...] = (200,), **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {archive.token}"} if archive.token else {}
        url = f"{archive.url}{path}"
        try:
            response = await self._client.request(method, url, headers=headers, **kw)
        except httpx.HTTPError as error:
            raise ArchiveError(f"archive {method} {url}: {type(error).__name__}: {error}") from error
        if response.status_code not in ok:
            raise ArchiveError(
                f"archive {method} {url}: {response.status_code} {_detail(response)}", response.status_code
            )
        return response.json() if response.content else None

    async def query(
        self, archive: SiteArchive, dataset_type: str, collections: Sequence[str], where: str, limit: int
    ) -> list[dict[str, Any]]:
        """Every dataset matching (find-first over the collections, as Butler resolves a search path), in the
        archive's order, following its keyset cursor; at most ``limit`` (the caller refuses more)."""
        found: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            body = {
                "dataset_type": dataset_type,
                "collections": list(collections),
                "where": where,
                "find_first": bool(collections),
                "limit": PAGE,
                "cursor": cursor,
            }
            page = await self._call(archive, "POST", "/datasets/query", json=body)
            found.extend(page["items"])
            cursor = page["next_cursor"]
            if cursor is None or len(found) > limit:
                return found

    async def dataset(self, archive: SiteArchive, dataset_id: uuid.UUID) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = await self._call(archive, "GET", f"/datasets/{dataset_id}")
        except ArchiveError as error:
            if error.status == 404:
                return None
            raise
        return found

    async def locate(self, archive: SiteArchive, dataset_ids: Sequence[uuid.UUID]) -> dict[str, list[dict[str, Any]]]:
        """Available replicas at every Site of each dataset (missing: none)."""
        found: dict[str, list[dict[str, Any]]] = {}
        for start in range(0, len(dataset_ids), LOCATE_BATCH):
            batch = [str(i) for i in dataset_ids[start : start + LOCATE_BATCH]]
            answer = await self._call(
                archive, "POST", "/replicas/locate", json={"dataset_ids": batch, "state": "available"}
            )
            found.update(answer["replicas"])
        return found

    async def dataset_type(self, archive: SiteArchive, name: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = await self._call(archive, "GET", f"/dataset-types/{quote(name, safe='')}")
        except ArchiveError as error:
            if error.status == 404:
                return None
            raise
        return found

    async def placement(self, archive: SiteArchive, observation: int) -> tuple[str, str | None] | None:
        """The (primary, secondary) Site the survey's placement gives ``observation``; None: not placed."""
        return placement_of(await self._call(archive, "GET", "/placements", params=placement_params(observation)))

    async def ingest(self, archive: SiteArchive, datasets: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Datasets with their replicas and lineage, all or nothing; identical ones again are a no-op."""
        found: dict[str, Any] = await self._call(archive, "POST", "/datasets/ingest", json={"datasets": list(datasets)})
        return found

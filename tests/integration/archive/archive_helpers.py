"""Helpers shared by the archive integration tests (imported by name: the test folders are not packages)."""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass
from typing import Any

import httpx
from sgs_archive.settings import ArchiveSettings

ADMIN_TOKEN = "test-admin-token-0123456789abcdef"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@dataclass
class Archive:
    client: httpx.AsyncClient
    settings: ArchiveSettings

    async def ok(self, method: str, url: str, expected: int = 200, **kwargs: Any) -> Any:
        kwargs.setdefault("headers", ADMIN)
        response = await self.client.request(method, url, **kwargs)
        assert response.status_code == expected, f"{method} {url}: {response.status_code} {response.text}"
        return response.json() if response.content else None


def settings_for(dsn: str, nats_url: str | None, **overrides: Any) -> ArchiveSettings:
    return ArchiveSettings(dsn=dsn, nats_url=nats_url, admin_token=ADMIN_TOKEN, relay_poll_interval_s=0.2, **overrides)


def checksums(content: bytes) -> dict[str, Any]:
    return {
        "size": len(content),
        "adler32": f"{zlib.adler32(content) & 0xFFFFFFFF:08x}",
        "sha256": hashlib.sha256(content).hexdigest(),
    }


def replica(site: str, name: str, content: bytes | None = None) -> dict[str, Any]:
    return {"site": site, "uri": f"s3://{site}/{name}", **checksums(content or name.encode())}


async def register_types(archive: Archive) -> None:
    for body in (
        {"name": "raw", "dimensions": ["exposure", "detector"], "storage_class": "Fits"},
        {"name": "calexp", "dimensions": ["exposure", "detector"], "storage_class": "Fits"},
        {"name": "coadd", "dimensions": ["tile", "band", "skypix"], "storage_class": "Fits"},
    ):
        await archive.ok("POST", "/dataset-types", 201, json=body)

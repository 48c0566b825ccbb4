"""The archive app against a fresh real PostgreSQL database (and the session's NATS) per test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest_asyncio
from archive_helpers import Archive, settings_for
from sgs_archive.app import create_app

from sgs.testing.nats import NatsPart


@pytest_asyncio.fixture(loop_scope="session")
async def archive(pg_database: str, nats_server: NatsPart) -> AsyncIterator[Archive]:
    settings = settings_for(pg_database, nats_server.url)
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://archive") as client,
    ):
        yield Archive(client, settings)

"""Bearer tokens: writes need one, replicas only at the token's Site, tokens hashed at rest, gated reads."""

from __future__ import annotations

import hashlib

import httpx
import psycopg
import pytest
from archive_helpers import ADMIN, Archive, register_types, replica, settings_for
from sgs_archive.app import create_app

pytestmark = [pytest.mark.integration]
async_test = pytest.mark.asyncio(loop_scope="session")


def dataset(site: str, exposure: int) -> dict[str, object]:
    return {
        "dataset_type": "raw",
        "data_id": {"instrument": "VIS", "exposure": exposure, "detector": 1},
        "run": "raw/tokens",
        "replicas": [replica(site, f"raw/{site}/{exposure}")],
    }


@async_test
async def test_site_tokens_only_write_their_site(archive: Archive) -> None:
    await register_types(archive)
    created = await archive.ok("POST", "/tokens", 201, json={"name": "sdc-fr-ingest", "site": "sdc-fr"})
    fr = {"Authorization": f"Bearer {created['token']}"}

    missing = await archive.client.post("/datasets/ingest", json={"datasets": [dataset("sdc-fr", 1)]})
    assert missing.status_code == 401
    assert missing.json()["detail"][0]["loc"] == ["header", "authorization"]
    wrong = await archive.client.post(
        "/datasets/ingest", json={"datasets": [dataset("sdc-fr", 1)]}, headers={"Authorization": "Bearer nope"}
    )
    assert wrong.status_code == 401

    await archive.ok("POST", "/datasets/ingest", json={"datasets": [dataset("sdc-fr", 1)]}, headers=fr)
    other_site = await archive.ok(
        "POST", "/datasets/ingest", 403, json={"datasets": [dataset("sdc-fr", 2), dataset("sdc-it", 3)]}, headers=fr
    )
    assert other_site["detail"][0]["loc"] == ["body", "datasets", 1, "replicas", 0, "site"]

    # The admin may register anywhere; the FR token may not flip the IT replica's state.
    ids = (await archive.ok("POST", "/datasets/ingest", json={"datasets": [dataset("sdc-it", 4)]}))["ids"]
    (it_replica,) = await archive.ok("GET", f"/datasets/{ids[0]}/replicas")
    await archive.ok("PATCH", f"/replicas/{it_replica['id']}", 403, json={"state": "bad"}, headers=fr)
    await archive.ok("POST", "/tokens", 403, json={"name": "escalate", "admin": True}, headers=fr)
    await archive.ok("POST", "/replicas", 403, json={"dataset_id": ids[0], **replica("sdc-it", "x")}, headers=fr)
    await archive.ok("POST", "/replicas", 201, json={"dataset_id": ids[0], **replica("sdc-fr", "x")}, headers=fr)

    with psycopg.connect(archive.settings.dsn) as conn:
        row = conn.execute("SELECT token_hash FROM api_token WHERE name = 'sdc-fr-ingest'").fetchone()
    assert row is not None
    assert row[0] == hashlib.sha256(created["token"].encode()).hexdigest()
    assert created["token"] not in row[0]
    listed = await archive.ok("GET", "/tokens")
    assert created["token"] not in str(listed)

    await archive.ok("DELETE", "/tokens/sdc-fr-ingest", 204)
    revoked = await archive.client.post("/datasets/ingest", json={"datasets": [dataset("sdc-fr", 5)]}, headers=fr)
    assert revoked.status_code == 401


@async_test
async def test_reads_can_be_gated(pg_database: str) -> None:
    app = create_app(settings_for(pg_database, None, read_requires_token=True))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://a") as client,
    ):
        assert (await client.get("/datasets")).status_code == 401
        assert (await client.get("/datasets", headers=ADMIN)).status_code == 200
        assert (await client.get("/healthz")).status_code == 200


def test_production_refuses_placeholder_admin_token() -> None:
    from pydantic import ValidationError
    from sgs_archive.settings import ArchiveSettings

    with pytest.raises(ValidationError, match="admin_token"):
        ArchiveSettings(environment="production", admin_token="changeme")
    with pytest.raises(ValidationError, match="admin_token"):
        ArchiveSettings(environment="production")
    assert ArchiveSettings(environment="production", admin_token="x" * 32).admin_token is not None

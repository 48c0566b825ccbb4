"""Bearer tokens and roles: writes need one, a Site token writes only its Site's replicas and the collections its
Site owns, dataset types and other Sites' collections need an admin, reader tokens only read, tokens are hashed
at rest, and reads need a token unless the administrator makes them public."""

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
    await archive.ok("POST", "/tokens", 403, json={"name": "escalate", "role": "admin"}, headers=fr)
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


async def site_token(archive: Archive, site: str) -> dict[str, str]:
    created = await archive.ok("POST", "/tokens", 201, json={"name": f"{site}-token", "site": site})
    assert (created["role"], created["site"]) == ("site", site)
    return {"Authorization": f"Bearer {created['token']}"}


def ingest_body(site: str, run: str, exposure: int) -> dict[str, object]:
    return {"datasets": [{**dataset(site, exposure), "run": run}]}


@async_test
async def test_a_site_token_writes_only_the_collections_its_site_owns(archive: Archive) -> None:
    await register_types(archive)
    fr, it = await site_token(archive, "sdc-fr"), await site_token(archive, "sdc-it")

    (fr_dataset,) = (await archive.ok("POST", "/datasets/ingest", json=ingest_body("sdc-fr", "fr/run", 1), headers=fr))[
        "ids"
    ]
    assert (await archive.ok("GET", "/collections/fr/run"))["site"] == "sdc-fr", "an ingest's new RUN is its Site's"
    refused = await archive.ok("POST", "/datasets/ingest", 403, json=ingest_body("sdc-it", "fr/run", 2), headers=it)
    assert refused["detail"][0]["loc"] == ["body", "datasets", 0, "run"]
    assert "sdc-fr" in refused["detail"][0]["msg"]
    assert (await archive.ok("GET", "/datasets", params={"collection": "fr/run"}))["items"][0]["id"] == fr_dataset
    assert len((await archive.ok("GET", "/datasets", params={"collection": "fr/run"}))["items"]) == 1

    await archive.ok("POST", "/collections", 201, json={"name": "fr/best", "type": "TAGGED"}, headers=fr)
    chain = {"name": "fr/chain", "type": "CHAINED", "children": ["fr/run"]}
    assert (await archive.ok("POST", "/collections", 201, json=chain, headers=fr))["site"] == "sdc-fr"
    tags = {"dataset_ids": [fr_dataset]}
    for method, url, body in (
        ("DELETE", "/collections/fr/best", None),
        ("POST", "/collections/fr/best/tags", tags),
        ("POST", "/collections/fr/best/untag", tags),
        ("PUT", "/collections/fr/chain/chain", {"children": []}),
        ("POST", "/collections/fr/chain/chain", {"child": "fr/best", "position": 0}),
        ("DELETE", "/collections/fr/chain/chain/fr%2Frun", None),
        ("DELETE", "/collections/fr/run", None),
        ("PUT", "/collections/fr/best/owner", {"site": "sdc-it"}),
    ):
        response = await archive.client.request(method, url, json=body, headers=it)
        assert response.status_code == 403, f"{method} {url} with another Site's token: {response.text}"
    assert (await archive.ok("GET", "/collections/fr/chain"))["children"] == ["fr/run"], "a refused edit changed it"

    # A Site creates only for itself, and may not take over a name another Site holds.
    stolen = await archive.ok(
        "POST", "/collections", 403, json={"name": "it/x", "type": "TAGGED", "site": "sdc-fr"}, headers=it
    )
    assert stolen["detail"][0]["loc"] == ["body", "site"]
    await archive.ok("POST", "/collections", 409, json={"name": "fr/best", "type": "TAGGED"}, headers=it)
    # Its own chains and tags may refer to another Site's collections and datasets: that only reads them.
    referring = {"name": "it/chain", "type": "CHAINED", "children": ["fr/chain"]}
    await archive.ok("POST", "/collections", 201, json=referring, headers=it)
    await archive.ok("POST", "/collections", 201, json={"name": "it/best", "type": "TAGGED"}, headers=it)
    await archive.ok("POST", "/collections/it/best/tags", json=tags, headers=it)

    # The owner may; so may an admin, for any Site's collection.
    await archive.ok("POST", "/collections/fr/best/tags", json=tags, headers=fr)
    await archive.ok("DELETE", "/collections/it/chain", 204)
    await archive.ok("DELETE", "/collections/fr/chain", 204, headers=fr)


@async_test
async def test_survey_collections_are_written_by_admins_until_handed_to_a_site(archive: Archive) -> None:
    await register_types(archive)
    fr = await site_token(archive, "sdc-fr")
    (raw_id,) = (await archive.ok("POST", "/datasets/ingest", json=ingest_body("sdc-fr", "survey/raw", 1)))["ids"]
    assert (await archive.ok("GET", "/collections/survey/raw"))["site"] is None, "an admin's new RUN is the survey's"
    await archive.ok("POST", "/datasets/ingest", 403, json=ingest_body("sdc-fr", "survey/raw", 2), headers=fr)
    await archive.ok("POST", "/collections", 201, json={"name": "survey/calib", "type": "TAGGED"})
    tags = {"dataset_ids": [raw_id]}
    await archive.ok("POST", "/collections/survey/calib/tags", 403, json=tags, headers=fr)

    handed = await archive.ok("PUT", "/collections/survey/raw/owner", json={"site": "sdc-fr"})
    assert handed["site"] == "sdc-fr"
    await archive.ok("POST", "/datasets/ingest", json=ingest_body("sdc-fr", "survey/raw", 2), headers=fr)
    owned = await archive.ok("GET", "/collections", params={"site": "sdc-fr"})
    assert [c["name"] for c in owned["items"]] == ["survey/raw"]
    await archive.ok("POST", "/collections", 201, json={"name": "fr/tag", "type": "TAGGED", "site": "sdc-fr"})
    await archive.ok("POST", "/collections/fr/tag/tags", json=tags, headers=fr)


@async_test
async def test_dataset_types_need_an_admin(archive: Archive) -> None:
    fr = await site_token(archive, "sdc-fr")
    body = {"name": "raw", "dimensions": ["exposure", "detector"], "storage_class": "Fits"}
    assert (await archive.client.post("/dataset-types", json=body)).status_code == 401
    refused = await archive.ok("POST", "/dataset-types", 403, json=body, headers=fr)
    assert refused["detail"][0]["loc"] == ["header", "authorization"] and "admin" in refused["detail"][0]["msg"]
    assert (await archive.ok("GET", "/dataset-types", headers=fr)) == [], "the refused type was registered"
    await archive.ok("POST", "/dataset-types", 201, json=body)
    await archive.ok("PUT", "/placements", 403, json={"placements": []}, headers=fr)


@async_test
async def test_reader_tokens_only_read(archive: Archive) -> None:
    await register_types(archive)
    created = await archive.ok("POST", "/tokens", 201, json={"name": "console", "role": "reader"})
    assert (created["role"], created["site"]) == ("reader", None)
    reader = {"Authorization": f"Bearer {created['token']}"}
    (dataset_id,) = (await archive.ok("POST", "/datasets/ingest", json={"datasets": [dataset("sdc-fr", 1)]}))["ids"]
    (held,) = await archive.ok("GET", f"/datasets/{dataset_id}/replicas", headers=reader)
    for method, url, body in (
        ("POST", "/datasets/ingest", {"datasets": [dataset("sdc-fr", 2)]}),
        ("POST", "/collections", {"name": "mine", "type": "TAGGED"}),
        ("PATCH", f"/replicas/{held['id']}", {"state": "bad"}),
        ("POST", "/replicas", {"dataset_id": dataset_id, **replica("sdc-fr", "y")}),
    ):
        response = await archive.client.request(method, url, json=body, headers=reader)
        assert response.status_code == 403 and "read-only" in response.text, f"{method} {url}: {response.text}"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"name": "no-site", "role": "site"}, 422),
        ({"name": "reader-with-site", "role": "reader", "site": "sdc-fr"}, 422),
        ({"name": "admin-with-site", "role": "admin", "site": "sdc-fr"}, 422),
        ({"name": "legacy-flag", "admin": True}, 422),
    ],
)
@async_test
async def test_token_scopes_are_consistent(archive: Archive, body: dict[str, object], status: int) -> None:
    await archive.ok("POST", "/tokens", status, json=body)


@async_test
async def test_reads_need_a_token_unless_public(archive: Archive, pg_database: str) -> None:
    for url in ("/datasets", "/collections", "/dataset-types", "/dimensions", "/metrics", "/placements"):
        response = await archive.client.get(url)
        assert response.status_code == 401, f"anonymous GET {url}: {response.status_code}"
        assert (await archive.client.get(url, headers=ADMIN)).status_code == 200
    for url in ("/healthz", "/readyz", "/openapi.json"):
        assert (await archive.client.get(url)).status_code == 200, url

    app = create_app(settings_for(pg_database, None, public_reads=True, migrate_on_start=False))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://a") as client,
    ):
        assert (await client.get("/datasets")).status_code == 200
        assert (await client.get("/collections")).status_code == 200
        assert (await client.post("/collections", json={"name": "x", "type": "TAGGED"})).status_code == 401

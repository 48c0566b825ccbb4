"""Ingest, idempotent re-ingest, conflicts, every query form, replicas, lineage both ways, collections."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from archive_helpers import ADMIN, Archive, register_types, replica, settings_for
from astropy import units as u
from astropy_healpix import HEALPix
from sgs_archive.app import create_app

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

RUN = "nir/run-1"


def raw(exposure: int, detector: int, band: str = "Y", **extra: Any) -> dict[str, Any]:
    return {
        "dataset_type": "raw",
        "data_id": {"instrument": "NISP", "exposure": exposure, "detector": detector, "band": band},
        "run": "raw/all",
        "replicas": [replica("sdc-fr", f"raw/{exposure}/{detector}.fits")],
        **extra,
    }


async def ingest(archive: Archive, datasets: list[dict[str, Any]], expected: int = 200) -> Any:
    return await archive.ok("POST", "/datasets/ingest", expected, json={"datasets": datasets})


async def test_ingest_then_reingest_is_a_noop(archive: Archive) -> None:
    await register_types(archive)
    batch = [raw(e, d) for e in (1, 2) for d in (1, 2, 3)]
    first = await ingest(archive, batch)
    assert (first["inserted"], first["existing"]) == (6, 0)
    again = await ingest(archive, batch)
    assert (again["inserted"], again["existing"]) == (0, 6)
    assert again["ids"] == first["ids"]
    page = await archive.ok("GET", "/datasets", params={"dataset_type": "raw", "limit": 100})
    assert len(page["items"]) == 6
    one = await archive.ok("GET", f"/datasets/{first['ids'][0]}")
    assert one["data_id"] == {"instrument": "NISP", "band": "Y", "exposure": 1, "detector": 1}
    assert one["run"] == "raw/all"


async def test_conflicting_reingest_is_refused_and_nothing_is_half_written(archive: Archive) -> None:
    await register_types(archive)
    await ingest(archive, [raw(1, 1)])
    changed = raw(1, 1)
    changed["replicas"][0]["sha256"] = "0" * 64
    error = await ingest(archive, [raw(9, 9), changed], expected=409)
    assert error["detail"][0]["loc"] == ["body", "datasets", 1, "replicas", 0]
    other_band = raw(1, 1, band="H")
    error = await ingest(archive, [other_band], expected=409)
    assert error["detail"][0]["loc"] == ["body", "datasets", 0]
    page = await archive.ok("GET", "/datasets", params={"where": "exposure = 9"})
    assert page["items"] == [], "the rolled-back batch left a dataset behind"


async def test_a_new_batch_round_trips_awkward_text_and_same_batch_lineage(archive: Archive) -> None:
    """A batch with no registered dataset takes the direct COPY path: its text escaping and in-batch lineage
    must store exactly what the general (staging) path would, so re-ingesting it is a no-op, not a conflict."""
    await register_types(archive)
    awkward_uri = "s3://sdc-fr/odd\tname\\with\nbreaks\r.fits"
    awkward_task = 'run\\1/step\t"quoted"\n/0'
    source = raw(7, 1, replicas=[{**replica("sdc-fr", "x"), "uri": awkward_uri}], task=awkward_task)
    (source_id,) = (await ingest(archive, [source]))["ids"]
    product = {
        "dataset_type": "calexp",
        "data_id": {"instrument": "NISP", "exposure": 7, "detector": 1, "band": "Y"},
        "run": RUN,
        "task": awkward_task,
        "lineage": {
            "inputs": [source_id, source_id],
            "executable": "tab\there",
            "version": "1\\2",
            "config_digest": "sha256:abc",
            "task": None,
        },
    }
    sibling = {**raw(7, 2), "lineage": None}
    first = await ingest(archive, [sibling, product])
    assert (first["inserted"], first["existing"]) == (2, 0)
    again = await ingest(archive, [sibling, product, source])
    assert (again["inserted"], again["existing"]) == (0, 3)

    stored = await archive.ok("GET", f"/datasets/{source_id}")
    assert stored["task"] == awkward_task
    (where,) = await archive.ok("GET", f"/datasets/{source_id}/replicas")
    assert where["uri"] == awkward_uri
    up = await archive.ok("GET", f"/datasets/{first['ids'][1]}/lineage", params={"direction": "up", "depth": 1})
    assert {n["id"] for n in up["nodes"]} == {first["ids"][1], source_id}
    node = next(n for n in up["nodes"] if n["id"] == first["ids"][1])
    assert node["provenance"]["executable"] == "tab\there"


async def test_a_new_id_for_a_registered_data_id_is_a_conflict_not_a_duplicate(archive: Archive) -> None:
    """No id of this batch exists, so it starts on the direct path; the unique (type, run, data ID) index
    refuses it there and the general path names the offending item."""
    await register_types(archive)
    await ingest(archive, [raw(3, 3)])
    renamed = raw(3, 3, id="5f0c2d2e-7a5b-4c7e-9a61-0c9a0e7d1f00")
    error = await ingest(archive, [raw(3, 4), renamed], expected=409)
    assert error["detail"][0]["loc"] == ["body", "datasets", 1]
    page = await archive.ok("GET", "/datasets", params={"where": "exposure = 3"})
    assert len(page["items"]) == 1, "the refused batch left a dataset behind"


@pytest.mark.parametrize(
    ("dataset", "loc", "status"),
    [
        ({"data_id": {"instrument": "NISP", "exposure": 1}}, ["body", "datasets", 0, "data_id", "detector"], 422),
        (
            {"data_id": {"instrument": "NISP", "exposure": 1, "detector": 2, "colour": 3}},
            ["body", "datasets", 0, "data_id", "colour"],
            422,
        ),
        (
            {"data_id": {"instrument": "NISP", "exposure": "one", "detector": 2}},
            ["body", "datasets", 0, "data_id", "exposure"],
            422,
        ),
        (
            {"data_id": {"instrument": "NISP", "exposure": 1, "detector": 2, "tile": 3}},
            ["body", "datasets", 0, "data_id", "tile"],
            422,
        ),
        ({"dataset_type": "nope"}, ["body", "datasets", 0, "dataset_type"], 422),
        ({"run": "bad name!"}, ["body", "datasets", 0, "run"], 422),
        (
            {
                "lineage": {
                    "inputs": ["5f0c2d2e-7a5b-4c7e-9a61-0c9a0e7d1f00"],
                    "executable": "x",
                    "version": "1",
                    "config_digest": "c",
                }
            },
            ["body", "datasets", 0, "lineage", "inputs", 0],
            404,
        ),
    ],
)
async def test_bad_input_names_the_field(
    archive: Archive, dataset: dict[str, Any], loc: list[Any], status: int
) -> None:
    await register_types(archive)
    body = {**raw(1, 2), **dataset}
    error = await ingest(archive, [body], expected=status)
    assert error["detail"][0]["loc"][: len(loc)] == loc, error


async def test_oversized_batch_is_413(pg_database: str) -> None:
    app = create_app(settings_for(pg_database, None, max_batch=2))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://a") as client,
    ):
        small = Archive(client, app.state.archive.settings)
        await register_types(small)
        response = await client.post(
            "/datasets/ingest", json={"datasets": [raw(1, d) for d in range(3)]}, headers=ADMIN
        )
        assert response.status_code == 413
        assert response.json()["detail"][0]["loc"] == ["body", "datasets"]


async def test_every_query_form(archive: Archive) -> None:
    await register_types(archive)
    bands = ["VIS", "Y", "J", "H"]
    await ingest(archive, [raw(e, d, band=bands[e % 4]) for e in range(8) for d in range(1, 5)])
    hp = HEALPix(nside=2**10, order="nested")
    near = int(hp.lonlat_to_healpix(150.1 * u.deg, 2.2 * u.deg))
    far = int(hp.lonlat_to_healpix(20.0 * u.deg, -30.0 * u.deg))
    coadds = [
        {"dataset_type": "coadd", "data_id": {"tile": tile, "band": band, "skypix": pix}, "run": "mer/run-1"}
        for tile, pix in ((102345, near), (102346, far))
        for band in ("VIS", "Y", "J")
    ]
    await ingest(archive, coadds)

    async def ids(**params: Any) -> list[dict[str, Any]]:
        page = await archive.ok("GET", "/datasets", params={"limit": 1000, **params})
        return list(page["items"])

    found = await ids(where="band IN ('VIS','Y') AND tile = 102345")
    assert sorted(d["data_id"]["band"] for d in found) == ["VIS", "Y"]
    assert {d["dataset_type"] for d in found} == {"coadd"}
    assert len(await ids(dataset_type="raw", where="exposure >= 6")) == 8
    assert len(await ids(dataset_type="raw", where="detector IN (1..2, 4) AND NOT band = 'VIS'")) == 18
    assert len(await ids(dataset_type="raw", where="band NOT IN ('VIS', 'Y') OR exposure < 1")) == 20
    assert len(await ids(dataset_type="raw", where="exposure != 3 AND exposure <= 4 AND exposure > 1")) == 8
    region = await ids(where="region OVERLAPS CIRCLE(150.1, 2.2, 0.1)")
    assert {d["data_id"]["tile"] for d in region} == {102345}
    assert len(await ids(dataset_type="coadd", where="skypix OVERLAPS CIRCLE(20.0, -30.0, 1)")) == 3
    assert len(await ids(collection=["mer/run-1"])) == 6

    bad = await archive.client.get("/datasets", params={"where": "tile = 'x'"}, headers=ADMIN)
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "where"]
    bad = await archive.client.get("/datasets", params={"dataset_type": "raw", "where": "tile = 3"}, headers=ADMIN)
    assert bad.status_code == 422 and "not a dimension of the dataset type" in bad.text

    # Keyset paging visits every dataset exactly once.
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"dataset_type": "raw", "limit": 7}
        if cursor:
            params["cursor"] = cursor
        page = await archive.ok("GET", "/datasets", params=params)
        seen.extend(d["id"] for d in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 32

    posted = await archive.ok(
        "POST", "/datasets/query", json={"dataset_type": "coadd", "where": "band = 'J'", "limit": 10}
    )
    assert len(posted["items"]) == 2


async def test_negation_is_three_valued_for_a_missing_dimension(archive: Archive) -> None:
    """A dataset without a tile matches neither ``tile = 3`` nor any negation of it: NOT, != and NOT IN agree
    (SQL's three-valued logic), so the double negation gives back exactly the tile-3 coadds."""
    await register_types(archive)
    await ingest(archive, [raw(1, 1, band="VIS"), raw(2, 1, band="Y")])
    coadds = [
        {"dataset_type": "coadd", "data_id": {"tile": tile, "band": "VIS", "skypix": tile}, "run": "mer/run-1"}
        for tile in (3, 4)
    ]
    await ingest(archive, coadds)

    async def tiles(where: str) -> list[int | None]:
        page = await archive.ok("GET", "/datasets", params={"where": where, "limit": 100})
        return sorted(d["data_id"].get("tile", -1) for d in page["items"])

    for negation in ("NOT tile = 3", "tile != 3", "tile NOT IN (3)", "NOT tile IN (3)", "NOT (tile <= 3)"):
        assert await tiles(negation) == [4], negation
    for double in ("NOT tile != 3", "NOT (tile NOT IN (3))", "NOT NOT tile = 3"):
        assert await tiles(double) == [3], double
    # unknown AND false is false, so the Y raw matches the negation; the VIS raw stays unknown.
    assert await tiles("NOT (tile = 3 AND band = 'VIS')") == [-1, 4]
    assert await tiles("exposure = 1 OR NOT tile = 3") == [-1, 4]
    assert await tiles("NOT (tile = 3 OR exposure = 1)") == [], "unknown OR false is unknown; NOT keeps it unknown"


async def test_replicas_locate_and_state_changes(archive: Archive) -> None:
    await register_types(archive)
    result = await ingest(archive, [raw(1, 1), raw(1, 2)])
    first, second = result["ids"]
    copy = {"dataset_id": first, **replica("sdc-it", "raw/1/1.fits"), "state": "copying"}
    created = await archive.ok("POST", "/replicas", 201, json=copy)
    assert (await archive.ok("POST", "/replicas", 200, json=copy))["id"] == created["id"]

    everywhere = await archive.ok("GET", f"/datasets/{first}/replicas")
    assert {r["site"] for r in everywhere} == {"sdc-fr", "sdc-it"}
    at_it = await archive.ok("GET", f"/datasets/{first}/replicas", params={"site": "sdc-it"})
    assert [r["state"] for r in at_it] == ["copying"]

    located = await archive.ok("POST", "/replicas/locate", json={"dataset_ids": [first, second]})
    assert {k: len(v) for k, v in located["replicas"].items()} == {first: 1, second: 1}
    await archive.ok("PATCH", f"/replicas/{created['id']}", json={"state": "available"})
    located = await archive.ok("POST", "/replicas/locate", json={"dataset_ids": [first], "site": "sdc-it"})
    assert [r["state"] for r in located["replicas"][first]] == ["available"]

    site_view = await archive.ok("GET", "/replicas", params={"site": "sdc-fr", "limit": 1})
    assert len(site_view["items"]) == 1 and site_view["next_cursor"] is not None
    rest = await archive.ok("GET", "/replicas", params={"site": "sdc-fr", "cursor": site_view["next_cursor"]})
    assert len(rest["items"]) == 1 and rest["next_cursor"] is None


async def test_checksums_compare_as_values_not_as_text(archive: Archive) -> None:
    """rucio#4127: one storage prints adler32 9600001, another 09600001 — the same checksum, not a conflict."""
    await register_types(archive)
    unpadded = {**replica("sdc-fr", "raw/9/1.fits"), "adler32": "9600001"}
    unpadded["sha256"] = unpadded["sha256"].upper()
    (dataset_id,) = (await ingest(archive, [raw(9, 1, replicas=[unpadded])]))["ids"]
    (stored,) = await archive.ok("GET", f"/datasets/{dataset_id}/replicas")
    assert stored["adler32"] == "09600001" and stored["sha256"] == unpadded["sha256"].lower()

    padded = {**unpadded, "adler32": "09600001", "sha256": stored["sha256"]}
    assert (await ingest(archive, [raw(9, 1, replicas=[padded])]))["existing"] == 1
    again = {"dataset_id": dataset_id, **padded, "adler32": "0x9600001"}
    assert (await archive.ok("POST", "/replicas", 200, json=again))["id"] == stored["id"]
    other = {**again, "adler32": "09600002"}
    conflict = await archive.ok("POST", "/replicas", 409, json=other)
    assert conflict["detail"][0]["loc"] == ["body", "sha256"]
    for bad in ("96000011x", "123456789", ""):
        refused = await archive.ok("POST", "/replicas", 422, json={**again, "adler32": bad})
        assert refused["detail"][0]["loc"][-1] == "adler32"


async def test_lineage_up_and_down(archive: Archive) -> None:
    await register_types(archive)
    raws = (await ingest(archive, [raw(1, 1), raw(1, 2)]))["ids"]

    def product(dataset_type: str, detector: int, inputs: list[str], run: str) -> dict[str, Any]:
        return {
            "dataset_type": dataset_type,
            "data_id": {"instrument": "NISP", "exposure": 1, "detector": detector},
            "run": run,
            "task": f"{run}/calibrate-{detector}/0",
            "lineage": {
                "inputs": inputs,
                "executable": "ialtest_correct_dark",
                "image": "registry.example/nir:3.1",
                "version": "3.1.0",
                "config_digest": "sha256:abc",
                "pipeline_run": run,
                "task": f"calibrate-{detector}",
                "attempt": 1,
            },
        }

    calexps = (await ingest(archive, [product("calexp", 1, [raws[0]], RUN), product("calexp", 2, [raws[1]], RUN)]))[
        "ids"
    ]
    await archive.ok(
        "POST", "/dataset-types", 201, json={"name": "mosaic", "dimensions": ["exposure"], "storage_class": "Fits"}
    )
    mosaic_body: dict[str, Any] = {
        "dataset_type": "mosaic",
        "data_id": {"instrument": "NISP", "exposure": 1},
        "run": RUN,
        "lineage": {"inputs": calexps, "executable": "stack", "version": "1", "config_digest": "sha256:def"},
    }
    (mosaic,) = (await ingest(archive, [mosaic_body]))["ids"]

    up = await archive.ok("GET", f"/datasets/{mosaic}/lineage", params={"direction": "up", "depth": 5})
    depths = {n["id"]: n["depth"] for n in up["nodes"]}
    assert depths == {mosaic: 0, calexps[0]: 1, calexps[1]: 1, raws[0]: 2, raws[1]: 2}
    assert {(e["output"], e["input"]) for e in up["edges"]} == {
        (mosaic, calexps[0]),
        (mosaic, calexps[1]),
        (calexps[0], raws[0]),
        (calexps[1], raws[1]),
    }
    calexp_node = next(n for n in up["nodes"] if n["id"] == calexps[0])
    assert calexp_node["provenance"]["image"] == "registry.example/nir:3.1"
    shallow = await archive.ok("GET", f"/datasets/{mosaic}/lineage", params={"direction": "up", "depth": 1})
    assert {n["id"] for n in shallow["nodes"]} == {mosaic, *calexps}
    down = await archive.ok("GET", f"/datasets/{raws[0]}/lineage", params={"direction": "down", "depth": 5})
    assert {n["id"]: n["depth"] for n in down["nodes"]} == {raws[0]: 0, calexps[0]: 1, mosaic: 2}

    changed = {**mosaic_body, "lineage": {**mosaic_body["lineage"], "config_digest": "sha256:other"}}
    error = await ingest(archive, [changed], expected=409)
    assert error["detail"][0]["loc"] == ["body", "datasets", 0, "lineage"]


async def test_collections_chains_and_tags(archive: Archive) -> None:
    await register_types(archive)
    old = {"dataset_type": "calexp", "data_id": {"instrument": "NISP", "exposure": 1, "detector": 1}}
    new = {"dataset_type": "calexp", "data_id": {"instrument": "NISP", "exposure": 1, "detector": 1}}
    other = {"dataset_type": "calexp", "data_id": {"instrument": "NISP", "exposure": 1, "detector": 2}}
    (old_id, other_id) = (await ingest(archive, [{**old, "run": "calib/v1"}, {**other, "run": "calib/v1"}]))["ids"]
    (new_id,) = (await ingest(archive, [{**new, "run": "calib/v2"}]))["ids"]

    await archive.ok(
        "POST",
        "/collections",
        201,
        json={"name": "calib/current", "type": "CHAINED", "children": ["calib/v2", "calib/v1"]},
    )
    found = await archive.ok("GET", "/datasets", params={"collection": "calib/current", "find_first": "true"})
    assert {d["id"] for d in found["items"]} == {new_id, other_id}
    every = await archive.ok("GET", "/datasets", params={"collection": "calib/current"})
    assert {d["id"] for d in every["items"]} == {new_id, old_id, other_id}

    # Chain editing: put v1 first, then the old calexp wins.
    await archive.ok("DELETE", "/collections/calib/current/chain/calib%2Fv1")
    chain = await archive.ok("POST", "/collections/calib/current/chain", json={"child": "calib/v1", "position": 0})
    assert chain["children"] == ["calib/v1", "calib/v2"]
    found = await archive.ok("GET", "/datasets", params={"collection": "calib/current", "find_first": "true"})
    assert {d["id"] for d in found["items"]} == {old_id, other_id}

    # Cycles are refused with the field named.
    await archive.ok(
        "POST", "/collections", 201, json={"name": "outer", "type": "CHAINED", "children": ["calib/current"]}
    )
    error = await archive.ok("PUT", "/collections/calib/current/chain", 422, json={"children": ["calib/v1", "outer"]})
    assert error["detail"][0]["loc"] == ["body", "children", 1]

    # TAGGED: one dataset per (type, data ID).
    await archive.ok("POST", "/collections", 201, json={"name": "best", "type": "TAGGED"})
    await archive.ok("POST", "/collections/best/tags", json={"dataset_ids": [old_id, other_id]})
    await archive.ok("POST", "/collections/best/tags", 409, json={"dataset_ids": [new_id]})
    tagged = await archive.ok("GET", "/datasets", params={"collection": "best"})
    assert {d["id"] for d in tagged["items"]} == {old_id, other_id}
    await archive.ok("POST", "/collections/best/untag", json={"dataset_ids": [old_id]})
    await archive.ok("POST", "/collections/best/tags", json={"dataset_ids": [new_id]})

    # RUN invariants: cannot delete a run holding datasets, nor a collection inside a chain.
    await archive.ok("DELETE", "/collections/calib/v2", 409)
    await archive.ok("DELETE", "/collections/calib/current", 409)
    await archive.ok("DELETE", "/collections/outer", 204)
    await archive.ok("DELETE", "/collections/calib/current", 204)
    error = await ingest(archive, [{**other, "run": "best"}], expected=422)
    assert error["detail"][0]["loc"] == ["body", "datasets", 0, "run"]
    listed = await archive.ok("GET", "/collections", params={"type": "RUN"})
    assert {c["name"] for c in listed["items"]} == {"calib/v1", "calib/v2"}
    assert listed["next_cursor"] is None


async def test_collection_listing_pages_past_the_page_size(pg_database: str) -> None:
    """More collections than one page holds: every one is listed once, by next_cursor or the Link header."""
    app = create_app(settings_for(pg_database, None, max_page_size=3))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://a") as client,
    ):
        small = Archive(client, app.state.archive.settings)
        names = [f"tag/{i:02d}" for i in range(8)]
        for name in names:
            await small.ok("POST", "/collections", 201, json={"name": name, "type": "TAGGED"})
        await small.ok("POST", "/collections", 201, json={"name": "chain", "type": "CHAINED", "children": names[:2]})

        seen: list[str] = []
        url: str | None = "/collections?prefix=tag/&limit=100"
        while url is not None:
            response = await client.get(url, headers=ADMIN)
            assert response.status_code == 200, response.text
            page = response.json()
            assert len(page["items"]) <= 3, "a page larger than max_page_size"
            seen.extend(c["name"] for c in page["items"])
            link = response.links.get("next", {}).get("url")
            assert (link is None) == (page["next_cursor"] is None)
            url = link
        assert seen == names

        first = await small.ok("GET", "/collections", params={"limit": 2})
        assert [c["name"] for c in first["items"]] == ["chain", "tag/00"]
        assert first["items"][0]["children"] == names[:2]
        rest = await small.ok("GET", "/collections", params={"limit": 2, "cursor": first["next_cursor"]})
        assert [c["name"] for c in rest["items"]] == ["tag/01", "tag/02"]


async def test_request_latency_is_measured_per_route_template(archive: Archive) -> None:
    await register_types(archive)
    (dataset_id,) = (await ingest(archive, [raw(5, 5)]))["ids"]
    await archive.ok("GET", f"/datasets/{dataset_id}")
    await archive.ok("GET", "/datasets/not-a-uuid", 422)
    metrics = (await archive.client.get("/metrics", headers=ADMIN)).text
    for route, method, status in (
        ("/datasets/ingest", "POST", "200"),
        ("/datasets/{dataset_id}", "GET", "200"),
        ("/datasets/{dataset_id}", "GET", "422"),
    ):
        series = f'sgs_archive_request_seconds_count{{method="{method}",route="{route}",status="{status}"}}'
        assert f"{series} 1.0" in metrics, f"{series} missing from /metrics"

"""Placements: the admin writes them, anyone allowed to read pages through them, and the archive says which
observations already have data (the DataPlacement controller freezes those)."""

from __future__ import annotations

import pytest
from archive_helpers import Archive, register_types, replica

pytestmark = [pytest.mark.integration]
async_test = pytest.mark.asyncio(loop_scope="session")


@async_test
async def test_placements_page_in_order_and_processed_observations_are_the_ones_with_data(archive: Archive) -> None:
    rows = [
        {"dimension": "observation", "value": v, "primary_site": "sdc-fr", "secondary_site": "sdc-it"}
        for v in range(1, 8)
    ] + [{"dimension": "tile", "value": 70, "primary_site": "sdc-it", "secondary_site": "sdc-fr"}]
    assert (await archive.ok("PUT", "/placements", json={"placements": rows}))["count"] == 8

    seen: list[tuple[str, int]] = []
    params: dict[str, object] = {"limit": 3}
    while page := await archive.ok("GET", "/placements", params=params):
        seen += [(p["dimension"], p["value"]) for p in page]
        params = {"limit": 3, "after_dimension": page[-1]["dimension"], "after_value": page[-1]["value"]}
    assert seen == [("observation", v) for v in range(1, 8)] + [("tile", 70)]

    await register_types(archive)
    data = {
        "dataset_type": "raw",
        "data_id": {"instrument": "VIS", "exposure": 300, "detector": 1, "observation": 3},
        "run": "raw/placement",
        "replicas": [replica("sdc-fr", "raw/3")],
    }
    await archive.ok("POST", "/datasets/ingest", json={"datasets": [data]})
    found = await archive.ok("POST", "/placements/processed", json={"observations": [1, 2, 3, 4]})
    assert found == {"observations": [3]}
    refused = await archive.ok("POST", "/placements/processed", 422, json={"observations": [-1]})
    assert refused["detail"][0]["loc"][:2] == ["body", "observations"]

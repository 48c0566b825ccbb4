"""`sgs demo` end to end on a smaller survey: Sites, runs, archive record, replicas, preview, re-run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from sgs.demo.app import DemoOptions, DemoResult, run_demo
from sgs.demo.archive import LocalArchive, checksums

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DemoResult, str]:
    root = tmp_path_factory.mktemp("demo")
    console = Console(record=True, width=140)
    result = run_demo(DemoOptions(root=root, observations=2, tiles=1, sites=2, parallel=2), console)
    return root, result, console.export_text()


def test_every_observation_is_processed_at_its_primary_site(demo: tuple[Path, DemoResult, str]) -> None:
    _, result, output = demo
    assert result.succeeded
    for outcome in result.outcomes:
        obs = outcome.observation
        assert outcome.products["stackedImage"].is_relative_to(obs.primary.root)
        assert outcome.quality is not None and outcome.quality.completeness_snr10 >= 0.95
    assert "OBS000001" in output and "sdc-it → sdc-fr" in output and "sdc-fr → sdc-it" in output


def test_products_are_registered_with_lineage_and_replicated(demo: tuple[Path, DemoResult, str]) -> None:
    root, _, _ = demo
    archive = LocalArchive(root / "archive")
    counts = archive.counts()
    assert counts["placements"] == 2
    by_type: dict[str, int] = {}
    for ref in archive.datasets():
        by_type[ref.dataset_type] = by_type.get(ref.dataset_type, 0) + 1
    assert by_type["nir_raw"] == 8 and by_type["nir_stack"] == 2 and by_type["nir_catalog"] == 2
    assert by_type["nir_calexp"] == 8
    catalog = next(r for r in archive.datasets() if r.dataset_type == "nir_catalog")
    replicas = archive.replicas_of(str(catalog.id))
    assert {r.site for r in replicas} == {"sdc-it", "sdc-fr"}
    for replica in replicas:
        path = Path(replica.uri.removeprefix("file://"))
        assert checksums(path).sha256 == replica.sha256
    lineage = [json.loads(line) for line in (root / "archive" / "lineage.jsonl").read_text().splitlines()]
    of_catalog = next(item for item in lineage if item["dataset_id"] == str(catalog.id))
    assert of_catalog["executable"] == "catalogPhot" and len(of_catalog["inputs"]) == 2


def test_preview_png_is_written(demo: tuple[Path, DemoResult, str]) -> None:
    root, result, _ = demo
    preview = result.preview
    assert preview == root / "preview.png"
    assert preview.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and preview.stat().st_size > 20_000


def test_rerun_resumes_and_registers_nothing_twice(demo: tuple[Path, DemoResult, str]) -> None:
    root, _, _ = demo
    before = {p.name: p.read_text() for p in (root / "archive").glob("*.jsonl")}
    again = run_demo(DemoOptions(root=root, observations=2, tiles=1, sites=2, parallel=2), Console(quiet=True))
    assert again.succeeded
    after = {p.name: p.read_text() for p in (root / "archive").glob("*.jsonl")}
    assert after == before

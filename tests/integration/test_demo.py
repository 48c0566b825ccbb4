"""`sgs demo` end to end on a smaller survey: Sites, runs, the embedded archive service, replicas, lineage,
preview, an idempotent re-run, the local fallback and `--keep-serving` with Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest
from rich.console import Console

from sgs.demo.app import ARCHIVE_DB_DIR, ArchiveKind, DemoOptions, DemoResult, run_demo
from sgs.demo.archive import LocalArchive
from sgs.demo.http_archive import HttpArchive
from sgs.demo.service import EmbeddedArchive
from sgs.storage import checksum_file

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def small(root: Path, archive: ArchiveKind = "service") -> DemoOptions:
    # Two tiles: the placement solver keeps a tile's observations at one Site, so each Site gets one tile here.
    return DemoOptions(root=root, observations=2, tiles=2, sites=2, parallel=2, archive=archive)


TABLES = ("dataset", "replica", "lineage", "lineage_input", "placement", "dataset_type", "collection")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DemoResult, str]:
    root = tmp_path_factory.mktemp("demo")
    console = Console(record=True, width=160)
    result = run_demo(small(root), console)
    return root, result, console.export_text()


@contextmanager
def reopened(root: Path) -> Iterator[tuple[HttpArchive, EmbeddedArchive]]:
    """The demo's archive started again on the database it left under its root."""
    with EmbeddedArchive(root / ARCHIVE_DB_DIR) as service, HttpArchive(service.url, service.admin_token) as http:
        yield http, service


def row_counts(dsn: str) -> dict[str, int]:
    counts = {}
    with psycopg.connect(dsn) as conn:
        for table in TABLES:
            row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
            assert row is not None
            counts[table] = int(row[0])
    return counts


def postgres_on(data_dir: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        if process.info["name"] == "postgres" and str(data_dir) in " ".join(process.info["cmdline"] or []):
            found.append(process)
    return found


def test_every_observation_is_processed_at_its_primary_site(demo: tuple[Path, DemoResult, str]) -> None:
    _, result, output = demo
    assert result.succeeded
    for outcome in result.outcomes:
        obs = outcome.observation
        assert outcome.products["stackedImage"].is_relative_to(obs.primary.root)
        assert outcome.quality is not None and outcome.quality.completeness_snr10 >= 0.95
    assert "OBS000001" in output and "sdc-it → sdc-fr" in output and "sdc-fr → sdc-it" in output


def test_summary_is_read_from_the_archive(demo: tuple[Path, DemoResult, str]) -> None:
    _, result, output = demo
    report = result.report
    assert report is not None and result.archive_url == report.url
    assert report.datasets_by_type["nir_raw"] == 8 and report.datasets_by_type["nir_catalog"] == 2
    # Each Site holds its own observation's raw data and products, the calibrations, and the other's copies.
    assert {s.site: s.replicas for s in report.sites} == {"sdc-it": 41, "sdc-fr": 41}
    assert report.placements == 2 and report.catalog is not None
    assert re.search(r"nir_catalog\s+│\s+2\s+│\s+2\s+│\s+2", output), "datasets per type and per Site"
    assert "nir_catalog tile=1 observation=1 ← catalogPhot" in output
    assert "nir_raw tile=1 exposure=11 observation=1 in NISP-SIM/raw/all" in output
    assert "+ 3 more made the same way (exposure=12, exposure=13, exposure=14)" in output
    assert f"{report.datasets} datasets, {report.replicas} replicas at 2 Sites, 2 placements" in output


def test_archive_holds_datasets_replicas_lineage_and_placements(demo: tuple[Path, DemoResult, str]) -> None:
    root, result, _ = demo
    with reopened(root) as (archive, _service):
        datasets = list(archive.datasets())
        by_type = Counter(d["dataset_type"] for d in datasets)
        assert by_type["nir_raw"] == 8 and by_type["nir_calexp"] == 8
        assert by_type["nir_stack"] == 2 and by_type["nir_catalog"] == 2 and by_type["nir_mdb"] == 1
        assert len(datasets) == len({d["id"] for d in datasets}) == result.registered.new

        catalog = next(iter(archive.datasets("nir_catalog", where="observation = 1")))
        assert catalog["data_id"] == {"instrument": "NISP-SIM", "band": "H", "observation": 1, "tile": 1}
        replicas = archive.replicas_of(catalog["id"])
        assert {r.site for r in replicas} == {"sdc-it", "sdc-fr"}
        for replica in replicas:
            assert checksum_file(Path(replica.uri.removeprefix("file://"))).sha256 == replica.sha256

        graph = archive.lineage(catalog["id"], depth=30)
        nodes = {n["id"]: n for n in graph["nodes"]}
        assert nodes[catalog["id"]]["provenance"]["executable"] == "catalogPhot"
        raws = sorted(n["data_id"]["exposure"] for n in graph["nodes"] if n["dataset_type"] == "nir_raw")
        assert raws == [11, 12, 13, 14], "the catalogue's lineage reaches its four raw exposures"
        assert not graph["truncated"]

        placements = {p["value"]: (p["primary_site"], p["secondary_site"]) for p in archive.placements()}
        assert placements == {1: ("sdc-it", "sdc-fr"), 2: ("sdc-fr", "sdc-it")}


def test_the_transfer_service_copied_the_products_by_rule(demo: tuple[Path, DemoResult, str]) -> None:
    root, result, output = demo
    replication = result.replication
    assert replication is not None and replication.ok
    # One rule per (product type, secondary Site), read back from the transfer service.
    assert sorted((r.dataset_type, r.site, r.where) for r in replication.rules) == [
        ("nir_catalog", "sdc-fr", "observation IN (1)"),
        ("nir_catalog", "sdc-it", "observation IN (2)"),
        ("nir_stack", "sdc-fr", "observation IN (1)"),
        ("nir_stack", "sdc-it", "observation IN (2)"),
    ]
    for rule in replication.rules:
        assert rule.state == "OK" and rule.locks_ok == rule.expected == rule.copies == 1
        assert rule.bytes > 0 and rule.latency_max_s is not None and 0 <= rule.latency_max_s < 30
    assert re.search(r"nir_stack observation IN \(1\)\s+│ sdc-fr\s+│ OK\s+│\s+1/1\s+│\s+1", output)
    assert "4 copies made by the transfer service (4 by its 4 rules in all)" in output
    # The copies are the archive's replicas at the secondary Site, at their deterministic key, checksums equal.
    with reopened(root) as (archive, _service):
        for dataset_type in ("nir_stack", "nir_catalog"):
            product = next(iter(archive.datasets(dataset_type, where="observation = 2")))
            replicas = {r.site: r for r in archive.replicas_of(product["id"])}
            assert set(replicas) == {"sdc-fr", "sdc-it"}
            copy = replicas["sdc-it"]
            path = Path(copy.uri.removeprefix("file://"))
            assert path.is_relative_to(root / "sites" / "sdc-it" / dataset_type)
            sums = checksum_file(path)
            assert (sums.size, sums.adler32, sums.sha256) == (copy.size, copy.adler32, copy.sha256)
            assert sums.sha256 == replicas["sdc-fr"].sha256


def test_preview_png_is_written(demo: tuple[Path, DemoResult, str]) -> None:
    root, result, _ = demo
    preview = result.preview
    assert preview == root / "preview.png"
    assert preview.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and preview.stat().st_size > 20_000


def test_rerun_reuses_the_database_and_registers_nothing_twice(demo: tuple[Path, DemoResult, str]) -> None:
    root, first, _ = demo
    with reopened(root) as (_archive, service):
        assert service.postgres is not None
        before = row_counts(service.postgres.dsn)
    again = run_demo(small(root), Console(quiet=True))
    assert again.succeeded
    assert again.registered.new == 0 and again.registered.existing == first.registered.total
    assert first.replication is not None and again.replication is not None
    assert first.replication.copies_this_run == 4, "one stack and one catalogue per observation"
    assert again.replication.copies_this_run == 0 and again.replication.copies == 4, "nothing copied twice"
    assert [r.id for r in again.replication.rules] == [r.id for r in first.replication.rules], "no rule added"
    with reopened(root) as (_archive, service):
        assert service.postgres is not None
        assert row_counts(service.postgres.dsn) == before
    assert not postgres_on(root / ARCHIVE_DB_DIR), "the demo left PostgreSQL running"


def test_local_fallback_records_the_same_datasets(demo: tuple[Path, DemoResult, str]) -> None:
    root, _, _ = demo
    local = run_demo(small(root, "local"), Console(quiet=True))
    assert local.succeeded and local.report is None
    record = LocalArchive(root / "archive")
    with reopened(root) as (archive, _service):
        in_service = {d["id"] for d in archive.datasets()}
    assert {str(ref.id) for ref in record.datasets()} == in_service, "both archives derive the same dataset ids"
    assert record.counts()["placements"] == 2


def _wait_for_line(process: subprocess.Popen[str], pattern: str, timeout_s: float) -> list[str]:
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            break
        lines.append(line.rstrip("\n"))
        if re.search(pattern, line):
            return lines
    raise AssertionError(f"no line matching {pattern!r} within {timeout_s} s:\n" + "\n".join(lines))


def _run_printed(command: str) -> str:
    argv: list[Any] = command.split(" ", 2)
    assert argv[:2] == ["sgs", "archive"], command
    sgs = Path(sys.executable).parent / "sgs"
    rest = re.findall(r'"[^"]*"|\S+', argv[2])
    result = subprocess.run(
        [str(sgs), "archive", *(r.strip('"') for r in rest)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_keep_serving_answers_the_printed_commands_until_ctrl_c(demo: tuple[Path, DemoResult, str]) -> None:
    root, _, _ = demo
    sgs = Path(sys.executable).parent / "sgs"
    argv = [str(sgs), "demo", "--root", str(root), "--observations", "2", "--tiles", "2", "--sites", "2"]
    process = subprocess.Popen(
        [*argv, "--keep-serving"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "80"},
    )
    try:
        lines = _wait_for_line(process, r"press Ctrl-C", timeout_s=300)
        # Piped output gets a wide console: a table row is not wrapped into pieces.
        assert any("OBS000001" in line and "sdc-it → sdc-fr" in line for line in lines)
        query = next(line.strip() for line in lines if line.strip().startswith("sgs archive query"))
        assert "1 datasets" in _run_printed(query)  # tile 1 holds one observation of the two
        lineage = next(line.strip() for line in lines if line.strip().startswith("sgs archive lineage"))
        assert "catalogPhot" in _run_printed(lineage)
        process.send_signal(signal.SIGINT)
        # Read what it prints while stopping: an unread pipe that fills blocks the demo's writes, and its exit.
        try:
            rest, _ = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            rest, _ = process.communicate()
            raise AssertionError(f"still running 60 s after Ctrl-C; it printed:\n{rest[-4000:]}") from None
        assert process.returncode == 0, rest[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert not postgres_on(root / ARCHIVE_DB_DIR), "Ctrl-C left PostgreSQL running"

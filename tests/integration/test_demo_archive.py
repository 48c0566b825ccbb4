"""The demo's archive plumbing against the real embedded archive, without running the pipeline: ids match the
archive's own derivation, Site tokens are scoped, a PostgreSQL left behind by a killed demo is replaced, and
the lineage tree folds the dithers."""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from rich.console import Console

from sgs.demo.archive import Registered, Registration, archive_universe, dataset_ref, dataset_type_for
from sgs.demo.http_archive import HttpArchive
from sgs.demo.report import lineage_tree
from sgs.demo.service import EmbeddedArchive
from sgs.model.replica import Replica
from sgs.testing.postgres import PostgresPart

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedArchive]:
    with EmbeddedArchive(tmp_path_factory.mktemp("archive")) as running:
        yield running


@pytest.fixture
def archive(service: EmbeddedArchive) -> Iterator[HttpArchive]:
    with HttpArchive(service.url, service.admin_token) as client:
        client.issue_site_tokens(["sdc-it", "sdc-fr"])
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def replica_of(dataset_id: object, site: str, content: bytes) -> Replica:
    return Replica.model_validate(
        {
            "dataset_id": dataset_id,
            "site": site,
            "uri": f"file:///{site}/{hashlib.md5(content).hexdigest()}.fits",
            "size": len(content),
            "adler32": f"{zlib.adler32(content) & 0xFFFFFFFF:08x}",
            "sha256": hashlib.sha256(content).hexdigest(),
        }
    )


def raw_exposure(exposure: int, run: str = "NISP-SIM/raw/all") -> Registration:
    data_id: dict[str, int | str] = {"instrument": "NISP-SIM", "band": "H", "observation": 9, "tile": 3}
    data_id["exposure"] = exposure
    kind = dataset_type_for("nir_raw", data_id, archive_universe())
    ref = dataset_ref(kind, data_id, run)
    return Registration({kind.name: kind}, [ref], [replica_of(ref.id, "sdc-it", f"raw {exposure}".encode())])


def test_identity_follows_the_archive_universe() -> None:
    data_id: dict[str, int | str] = {"instrument": "NISP-SIM", "band": "H", "observation": 1, "tile": 1}
    assert dataset_type_for("x", {**data_id, "exposure": 11}, archive_universe()).dimensions == (
        "instrument",
        "exposure",
        "tile",
    )
    assert dataset_type_for("x", data_id, archive_universe()).dimensions == ("instrument", "observation", "tile")
    assert dataset_type_for("x", {"tile": 2}, archive_universe()).dimensions == ("tile",)


def test_ids_are_the_ones_the_archive_derives(archive: HttpArchive, service: EmbeddedArchive) -> None:
    batch = raw_exposure(91)
    assert archive.register(batch) == Registered(1, 0)
    ref = batch.datasets[0]
    # The same dataset sent without an id: the archive derives one, finds ours, and inserts nothing.
    body = {"dataset_type": ref.dataset_type, "data_id": ref.data_id, "run": ref.run}
    answer = httpx.post(
        f"{service.url}/datasets/ingest", json={"datasets": [body]}, headers=bearer(service.admin_token)
    ).json()
    assert answer["ids"] == [str(ref.id)] and answer["inserted"] == 0


def test_reregistration_changes_nothing(archive: HttpArchive) -> None:
    batch = raw_exposure(92)
    assert archive.register(batch) == Registered(1, 0)
    assert archive.register(batch) == Registered(0, 1)
    copy = replica_of(batch.datasets[0].id, "sdc-fr", b"raw 92")
    assert archive.register_replicas([copy]) == Registered(1, 0)
    assert archive.register_replicas([copy]) == Registered(0, 1)
    assert {r.site for r in archive.replicas_of(str(batch.datasets[0].id))} == {"sdc-it", "sdc-fr"}


def test_a_site_token_cannot_register_another_sites_replica(archive: HttpArchive, service: EmbeddedArchive) -> None:
    batch = raw_exposure(93)
    archive.register(batch)
    copy = replica_of(batch.datasets[0].id, "sdc-fr", b"raw 93")
    response = httpx.post(
        f"{service.url}/replicas",
        json=copy.model_dump(mode="json", exclude={"updated_at"}),
        headers=bearer(archive.site_token("sdc-it")),
    )
    assert response.status_code == 403 and "sdc-fr" in response.text
    assert archive.register_replicas([copy]) == Registered(1, 0), "sdc-fr's own token may"


def test_survey_runs_go_with_the_admin_token_and_a_sites_own_run_with_its_token(service: EmbeddedArchive) -> None:
    """Raw data of every Site lands in one survey collection (admins write it); a Run's products in a RUN
    collection its Site then owns, which another Site's token may not write."""
    with HttpArchive(service.url, service.admin_token, survey_runs=["NISP-SIM/raw/survey"]) as client:
        client.issue_site_tokens(["sdc-it", "sdc-fr"])
        for site, exposure in (("sdc-it", 95), ("sdc-fr", 96)):
            batch = raw_exposure(exposure, run="NISP-SIM/raw/survey")
            kind = dataset_type_for("nir_calexp", batch.datasets[0].data_id, archive_universe())
            calexp = dataset_ref(kind, batch.datasets[0].data_id, f"demo/{site}/run")
            batch.dataset_types[kind.name] = kind
            batch.datasets.append(calexp)
            batch.replicas = [r.model_copy(update={"site": site}) for r in batch.replicas]
            batch.replicas.append(replica_of(calexp.id, site, f"calexp {exposure}".encode()))
            assert client.register(batch) == Registered(2, 0)
        owners = httpx.get(f"{service.url}/collections", headers=bearer(service.admin_token)).json()["items"]
        owner = {c["name"]: c["site"] for c in owners}
        assert owner["NISP-SIM/raw/survey"] is None
        assert (owner["demo/sdc-it/run"], owner["demo/sdc-fr/run"]) == ("sdc-it", "sdc-fr")
        refused = httpx.delete(
            f"{service.url}/collections/demo/sdc-it/run", headers=bearer(client.site_token("sdc-fr"))
        )
        assert refused.status_code == 403 and "sdc-it" in refused.text


def test_a_postgres_left_by_a_killed_demo_is_replaced(tmp_path: Path) -> None:
    # A demo killed with SIGKILL never stops its PostgreSQL (a detached daemon): start one and walk away.
    orphan = PostgresPart(tmp_path / "postgres").start()
    orphan_pid = orphan.processes[0].record.pid if orphan.processes[0].record else None
    assert orphan_pid is not None
    with EmbeddedArchive(tmp_path) as service:
        assert httpx.get(f"{service.url}/readyz").status_code == 200
        assert not psutil.pid_exists(orphan_pid) or psutil.Process(orphan_pid).status() == psutil.STATUS_ZOMBIE
    assert not (tmp_path / "postgres" / "data" / "postmaster.pid").exists(), "stop left the server running"


def test_lineage_tree_folds_inputs_made_the_same_way() -> None:
    def node(i: str, kind: str, executable: str | None, **data_id: int) -> dict[str, object]:
        provenance = None
        if executable:
            provenance = {"executable": executable, "task": executable, "image": None, "version": "1"}
        return {"id": i, "dataset_type": kind, "data_id": data_id, "run": "r", "depth": 0, "provenance": provenance}

    nodes = [node("stack", "nir_stack", "doStack", observation=1)]
    edges = []
    for e in (1, 2, 3):
        nodes += [node(f"cal{e}", "nir_calexp", "doAstrom", exposure=e), node(f"raw{e}", "nir_raw", None, exposure=e)]
        edges += [{"output": "stack", "input": f"cal{e}"}, {"output": f"cal{e}", "input": f"raw{e}"}]
        edges += [{"output": f"cal{e}", "input": "dark"}]
    nodes.append(node("dark", "nir_master_dark", None))
    graph = {"root": "stack", "direction": "up", "depth": 5, "nodes": nodes, "edges": edges, "truncated": False}
    console = Console(record=True, width=120)
    console.print(lineage_tree(graph))
    text = console.export_text()
    assert "nir_raw exposure=1" in text and "nir_raw exposure=2" not in text
    assert "+ 2 more made the same way (exposure=2, exposure=3)" in text
    assert text.count("nir_master_dark") == 1


def test_a_nats_server_left_by_a_killed_demo_is_stopped(tmp_path: Path) -> None:
    from sgs.demo.service import stop_stale_nats
    from sgs.testing.nats import NatsPart

    other = NatsPart(tmp_path / "other").start()
    left = NatsPart(tmp_path / "archive-db" / "nats").start()
    try:
        left_record, other_record = left.processes[0].record, other.processes[0].record
        assert left_record is not None and other_record is not None
        assert EmbeddedArchive.stop_leftovers(tmp_path / "archive-db")
        assert not left_record.is_alive()
        assert not stop_stale_nats(tmp_path / "archive-db" / "nats" / "jetstream"), "nothing left to stop"
        assert other_record.is_alive(), "a server on another directory is left alone"
    finally:
        left.stop()
        other.stop()

"""Stage-in, on the real API server, PostgreSQL, NATS, archive, transfer service (with its worker), operator and
bridge: a Run whose archive inputs are only at another Site is staged in by one replication rule (the transfer
service copies, verifies and registers the copies at the Run's Site), then runs on the copies and succeeds; its
rule is deleted at its end. kill -9 of the operator between creating the rule and recording its id creates no
second rule after the restart. A stage-in whose only source is bad (checksum mismatch) fails the Run with the
transfer's reason."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import time
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from operator_kit import SITE, ArchiveService, Cluster, OperatorProcess, new_database, wait_for
from sgs_bridge.launch import BridgeProcess
from sgs_transfer.app import create_app as create_transfer
from sgs_transfer.settings import TransferSettings
from sgs_transfer.sites import KnownSite, SiteBook

from sgs.model.site import Site
from sgs.storage import PosixStore
from sgs.testing.nats import NatsPart
from sgs.testing.postgres import PostgresPart
from sgs.testing.services import ServiceThread

pytest_plugins = ["operator_kit"]
pytestmark = pytest.mark.integration

ADMIN = "sgs_" + secrets.token_urlsafe(32)
SOURCE = "site-b"  # holds the inputs; the Runs go to SITE (served by the bridge), which holds none
THIRD = "site-c"
FAST: dict[str, Any] = {
    "retry_base_s": 0.2,
    "retry_max_s": 1.0,
    "fast_attempts": 3,
    "stuck_after_s": 30.0,
    "ack_wait_s": 5.0,
}


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("stage-in-stores")
    for name in (SITE, SOURCE, THIRD):
        (root / name).mkdir()
    return {name: root / name for name in (SITE, SOURCE, THIRD)}


@pytest.fixture(scope="module")
def archive(
    postgres: PostgresPart, nats_server: NatsPart, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ArchiveService]:
    """The archive, announcing on NATS (the transfer service's evaluator consumes its stream)."""
    os.environ["SGS_ARCHIVE_NATS_URL"] = nats_server.url
    try:
        service = ArchiveService(new_database(postgres, "stagein"), tmp_path_factory.mktemp("archive") / "a.log", ADMIN)
    finally:
        os.environ.pop("SGS_ARCHIVE_NATS_URL", None)
    service.call(
        "POST",
        "/dataset-types",
        json={"name": "nir_raw", "dimensions": ["instrument", "exposure"], "storage_class": "Text"},
    )
    yield service
    service.stop()


def site_token(archive: ArchiveService, site: str, name: str) -> str:
    token: str = archive.call("POST", "/tokens", json={"name": name, "site": site})["token"]
    return token


@pytest.fixture(scope="module")
def transfer(
    postgres: PostgresPart, nats_server: NatsPart, archive: ArchiveService, stores: dict[str, Path]
) -> Iterator[str]:
    """The transfer service with an embedded worker, knowing both Sites' stores and their archive tokens."""
    book = []
    for name, root in stores.items():
        spec = {
            "storage": {"kind": "posix", "path": str(root)},
            "archiveUrl": archive.url,
            "capacity": {"cores": 8, "storageTb": 1},
        }
        site = Site.model_validate({"metadata": {"name": name}, "spec": spec})
        token = site_token(archive, name, f"transfer-{name}")
        book.append(KnownSite(site, token, PosixStore(name, root, durable=False)))
    settings = TransferSettings(
        dsn=new_database(postgres, "stageintransfer"),
        nats_url=nats_server.url,
        namespace=f"t{uuid.uuid4().hex[:10]}",
        admin_token=ADMIN,
        archive_url=archive.url,
        archive_token=ADMIN,
        embedded_worker=True,
        **FAST,
    )
    server = ServiceThread(create_transfer(settings, SiteBook(book)), "transfer").start()
    wait_for(lambda: httpx.get(f"{server.url}/readyz", timeout=2).json().get("events") == "connected", "transfer")
    yield server.url
    server.stop()


@pytest.fixture(scope="module")
def operator_settings(transfer: str) -> dict[str, str]:
    return {"SGS_OPERATOR_TRANSFER_URL": transfer, "SGS_OPERATOR_TRANSFER_TOKEN": ADMIN}


def rules_of(transfer: str, owner: str) -> list[dict[str, Any]]:
    page = httpx.get(
        f"{transfer}/rules", params={"owner": owner}, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30
    )
    assert page.status_code == 200, page.text
    items: list[dict[str, Any]] = page.json()["items"]
    return items


def checksums(content: bytes) -> dict[str, Any]:
    return {
        "size": len(content),
        "adler32": f"{zlib.adler32(content) & 0xFFFFFFFF:08x}",
        "sha256": hashlib.sha256(content).hexdigest(),
    }


def sites(cluster: Cluster, archive: ArchiveService, stores: dict[str, Path]) -> None:
    """The namespace's two Sites on the module's stores, each naming the archive and a Secret with its token."""
    for name, root in stores.items():
        token = site_token(archive, name, f"{cluster.namespace}-{name}")
        data = {"token": base64.b64encode(token.encode()).decode()}
        cluster.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"archive-{name}"}, "data": data})
        site = cluster.site(name, max_parallel=20)
        site["spec"]["storage"] = {"kind": "posix", "path": str(root)}
        site["spec"]["archiveUrl"] = archive.url
        site["spec"]["archiveCredentials"] = {"name": f"archive-{name}"}
        cluster.apply(site)


def ingest_at_source(
    cluster: Cluster, archive: ArchiveService, stores: dict[str, Path], count: int, corrupt: bool = False
) -> list[str]:
    """Raw files at SOURCE only, registered with their replica there (``corrupt``: the files differ from the
    checksums registered, same size: a bad replica)."""
    contents = [f"raw exposure {i} of {cluster.namespace}\n".encode() * (i + 1) for i in range(count)]
    return ingest(cluster, archive, stores, [(SOURCE, content) for content in contents], corrupt)


def ingest(
    cluster: Cluster,
    archive: ArchiveService,
    stores: dict[str, Path],
    files: list[tuple[str, bytes]],
    corrupt: bool = False,
) -> list[str]:
    """Raw files, each at one Site, registered with their replica there."""
    datasets = []
    for exposure, (site, content) in enumerate(files):
        directory = stores[site] / "raw" / cluster.namespace
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"raw_{exposure}.txt"
        path.write_bytes(content.upper() if corrupt else content)
        datasets.append(
            {
                "dataset_type": "nir_raw",
                "data_id": {"instrument": "NISP", "exposure": exposure},
                "run": f"raw/{cluster.namespace}",
                "replicas": [{"site": site, "uri": path.as_uri(), **checksums(content)}],
            }
        )
    return [str(i) for i in archive.call("POST", "/datasets/ingest", json={"datasets": datasets})["ids"]]


def one_step_pipeline() -> dict[str, Any]:
    return {
        "apiVersion": "sgs.io/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": "stack"},
        "spec": {
            "inputs": [{"name": "images"}],
            "executables": [
                {
                    "name": "stack",
                    "command": "optest_task",
                    "inputs": [{"name": "mode"}, {"name": "input", "optional": True}],
                    "outputs": [{"name": "out", "suffix": ".txt"}],
                    "resources": {"cores": 1, "ram": 0.25, "walltime": 0.05},
                }
            ],
            "steps": [
                {
                    "name": "stack",
                    "executable": "stack",
                    "inputs": {"mode": {"value": "ok"}, "input": {"input": "images"}},
                }
            ],
        },
    }


def condition(cluster: Cluster, run: str, kind: str) -> dict[str, Any] | None:
    return next((c for c in cluster.run_status(run).get("conditions", []) if c["type"] == kind), None)


def owner(cluster: Cluster, run: str) -> str:
    return f"run:{cluster.namespace}/{run}:{cluster.get('runs', run)['metadata']['uid']}"


def stage_in_row(cluster: Cluster, run: str) -> tuple[Any, ...]:
    uid = cluster.get("runs", run)["metadata"]["uid"]
    with psycopg.connect(cluster.dsn) as conn:
        row = conn.execute(
            "SELECT rule_id::text, bytes_to_stage, bytes_minimum, failed, released FROM sgs_run_stage_in"
            " WHERE run_uid = %s",
            (uid,),
        ).fetchone()
    assert row is not None, "no stage-in recorded"
    return tuple(row)


@pytest.fixture
def staged(cluster: Cluster, bridge: BridgeProcess, archive: ArchiveService, stores: dict[str, Path]) -> Cluster:
    sites(cluster, archive, stores)
    cluster.apply(one_step_pipeline())
    return cluster


def test_inputs_at_another_site_are_staged_in_and_the_run_succeeds(
    staged: Cluster, archive: ArchiveService, transfer: str, stores: dict[str, Path]
) -> None:
    cluster = staged
    ids = ingest_at_source(cluster, archive, stores, 3)
    sizes = sum(len(f"raw exposure {i} of {cluster.namespace}\n".encode()) * (i + 1) for i in range(3))
    cluster.apply(cluster.run("staged", pipeline="stack", site=SITE, inputs={"images": {"datasetIds": ids}}))

    status = cluster.wait_phase("staged", {"Succeeded", "Failed"}, timeout_s=180)

    assert status["phase"] == "Succeeded", cluster.attempt_rows("staged")
    shown = condition(cluster, "staged", "StagingInputs")
    assert shown is not None and shown["status"] == "True" and shown["reason"] == "Staged", shown
    assert f"3/3 input datasets at {SITE}; staged {sizes:,} of {sizes:,} bytes to stage" in shown["message"]
    assert f"minimum possible 0: missing at the best Site, {SOURCE}" in shown["message"]  # spec.site forced SITE
    uid = cluster.get("runs", "staged")["metadata"]["uid"]
    with psycopg.connect(cluster.dsn) as conn:
        paths = conn.execute("SELECT dataset_id::text, path FROM sgs_run_input WHERE run_uid = %s", (uid,)).fetchall()
    assert sorted(i for i, _ in paths) == sorted(ids)
    for dataset_id, path in paths:  # the task read the verified copies at its own Site, not the source's files
        assert Path(path).is_relative_to(stores[SITE]), path
        replicas = {r["site"]: r for r in archive.call("GET", f"/datasets/{dataset_id}/replicas")}
        assert replicas[SITE]["state"] == "available" and replicas[SITE]["uri"] == Path(path).as_uri()
        assert replicas[SITE]["sha256"] == hashlib.sha256(Path(path).read_bytes()).hexdigest()
        assert replicas[SITE]["sha256"] == replicas[SOURCE]["sha256"]
    wait_for(lambda: not rules_of(transfer, owner(cluster, "staged")), "the stage-in rule deleted at the Run's end")
    assert stage_in_row(cluster, "staged")[1:] == (sizes, 0, None, True)


def test_a_restart_between_creating_the_rule_and_recording_it_creates_no_second_rule(
    staged: Cluster, archive: ArchiveService, transfer: str, stores: dict[str, Path], operator: OperatorProcess
) -> None:
    cluster = staged
    ids = ingest_at_source(cluster, archive, stores, 2)
    operator.stop()
    operator.start(crash_at="after-stage-in-rule")
    applied = cluster.apply(
        cluster.run("restarted", pipeline="stack", site=SITE, inputs={"images": {"datasetIds": ids}}), check=False
    )
    assert applied.returncode == 0, f"{applied.stderr}\n{operator.log.read_text()[-3000:]}"
    assert operator.wait_exit(60) != 0, operator.log.read_text()[-3000:]  # killed itself right after the POST
    made = rules_of(transfer, owner(cluster, "restarted"))
    assert len(made) == 1 and sorted(made[0]["dataset_ids"]) == sorted(ids)
    assert stage_in_row(cluster, "restarted")[0] is None  # the intent is recorded, the rule's id is not

    operator.start()
    status = cluster.wait_phase("restarted", {"Succeeded", "Failed"}, timeout_s=180)

    assert status["phase"] == "Succeeded", cluster.attempt_rows("restarted")
    assert stage_in_row(cluster, "restarted")[0] == made[0]["id"]  # adopted, not made again
    # Only the recorded rule is deleted by its id: a second one would still be listed under the owner.
    wait_for(lambda: not rules_of(transfer, owner(cluster, "restarted")), "the adopted rule deleted at the end")


def test_a_stage_in_whose_only_source_is_bad_fails_the_run_with_the_reason(
    staged: Cluster, archive: ArchiveService, transfer: str, stores: dict[str, Path]
) -> None:
    cluster = staged
    ids = ingest_at_source(cluster, archive, stores, 1, corrupt=True)
    cluster.apply(cluster.run("bad-source", pipeline="stack", site=SITE, inputs={"images": {"datasetIds": ids}}))

    status = cluster.wait_phase("bad-source", {"Succeeded", "Failed"}, timeout_s=120)

    assert status["phase"] == "Failed"
    shown = condition(cluster, "bad-source", "StagingInputs")
    assert shown is not None and shown["status"] == "False" and shown["reason"] == "StageInFailed", shown
    assert f"stage-in to {SITE} failed: 1 copy stuck — 1 to {SITE}:" in shown["message"]
    assert "checksum" in shown["message"].lower(), shown["message"]
    assert cluster.jobs("bad-source") == []  # nothing ran on inputs that never arrived
    assert not rules_of(transfer, owner(cluster, "bad-source"))  # released with the verdict
    replicas = archive.call("GET", f"/datasets/{ids[0]}/replicas")
    assert SITE not in [r["site"] for r in replicas]  # no bad copy registered at SITE


def test_a_run_without_a_site_stages_in_only_what_the_best_site_lacks(
    staged: Cluster, archive: ArchiveService, transfer: str, stores: dict[str, Path]
) -> None:
    """The figure of bench/stage_in.py: inputs split unevenly over 3 Sites (45 / 35 / 20 % of the bytes); the
    bytes the transfer service copied for the Run against the least any Site choice would have needed."""
    cluster = staged
    split = {SITE: 45, SOURCE: 35, THIRD: 20}  # percent of the bytes, SITE (the bridge's) holding most
    unit = int(os.environ.get("SGS_BENCH_STAGE_IN_UNIT", "1000"))  # bytes per percent
    files = [(site, os.urandom(unit * share // 5)) for site, share in split.items() for _ in range(5)]
    ids = ingest(cluster, archive, stores, files)
    total = sum(len(content) for _, content in files)
    minimum = min(sum(len(c) for s, c in files if s != site) for site in split)
    run = cluster.run("unplaced", pipeline="stack", inputs={"images": {"datasetIds": ids}})
    del run["spec"]["site"]  # the operator chooses: the Site holding most input bytes
    cluster.apply(run)
    started = time.monotonic()

    status = cluster.wait_phase("unplaced", {"Succeeded", "Failed"}, timeout_s=180)

    elapsed = time.monotonic() - started
    assert status["phase"] == "Succeeded" and status["site"] == SITE, status
    headers = {"Authorization": f"Bearer {ADMIN}"}
    page = httpx.get(f"{transfer}/transfers", params={"limit": 1000}, headers=headers, timeout=30).json()
    copied = [t for t in page["items"] if t["dataset_id"] in ids and t["state"] == "DONE"]
    staged_bytes = sum(int(t["bytes"]) for t in copied)
    assert {t["destination"] for t in copied} == {SITE} and len(copied) == 10  # the 10 SITE lacked, once each
    assert staged_bytes == minimum == stage_in_row(cluster, "unplaced")[2]
    shown = condition(cluster, "unplaced", "StagingInputs")
    assert shown is not None and f"staged {minimum:,} of {minimum:,} bytes" in shown["message"], shown
    if out := os.environ.get("SGS_BENCH_STAGE_IN_OUT"):
        figure = {"total": total, "staged": staged_bytes, "minimum": minimum, "datasets": len(ids)}
        Path(out).write_text(json.dumps({**figure, "copies": len(copied), "run_s": elapsed, "split": split}))

"""Runs at an S3 Site (MinIO, no shared directory), end to end on the real API server, PostgreSQL, archive service,
MinIO and the bridge's process provider: each task runs under `sgs task exec`, which downloads its input objects
into the pod's scratch, runs the command on plain files, and uploads its outputs with their checksums; the
operator learns the outcome from the objects (one HEAD each) and registers the outputs with their s3:// replicas.

- an archive query's raws (objects in the Site's bucket) are stacked, and the products are registered with
  s3:// replicas whose checksums are those of the uploaded bytes, with lineage back to the raws;
- the seed-002 pipeline (split → per-image map → combine) runs there: list outputs go through the bucket;
- an input whose bytes rotted in the store (its recorded checksums kept), or that was replaced by another file
  with checksums of its own, fails the task with the checksum reason (checked against the archive's checksums),
  and nothing of it is uploaded or registered;
- an upload that fails because MinIO is down (stopped for real) is retried by the wrapper onto the same key, and
  the output is registered once;
- kill -9 of the operator between a task's end and its registration registers it exactly once;
- the same wrapper runs on the bridge's Slurm provider: a chain whose second task downloads the first's output.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import secrets
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from operator_kit import (
    EXAMPLE,
    KEEP_FINISHED_JOBS,
    SITE,
    TEST_BIN,
    ArchiveService,
    Cluster,
    OperatorProcess,
    new_database,
    task_pipeline,
    wait_for,
)
from sgs_bridge.launch import BridgeProcess

from sgs.storage import S3Store, checksum_bytes
from sgs.testing.kube import KubePart
from sgs.testing.minio import MinioPart
from sgs.testing.postgres import PostgresPart
from sgs.testing.slurm import SlurmPart

pytest_plugins = ["operator_kit"]
pytestmark = pytest.mark.integration

ADMIN = "sgs_" + secrets.token_urlsafe(32)
OBSERVATION = 7
EXPOSURES = (71, 72, 73, 74)
TYPES = {"nir_raw": ["instrument", "exposure"], "s3_stack": ["instrument", "observation"]}
NO_RETRY = {"max": 0}


@pytest.fixture(scope="module")
def operator_settings() -> dict[str, str]:
    # The task image's `sgs task exec`, here the test's own Python (the bridge runs tasks as local processes).
    return {"SGS_OPERATOR_TASK_WRAPPER": json.dumps([sys.executable, "-m", "sgs.task", "exec"]), **KEEP_FINISHED_JOBS}


@pytest.fixture(scope="module")
def minio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MinioPart]:
    with MinioPart(SITE, tmp_path_factory.mktemp("minio")) as part:
        yield part


@pytest.fixture(scope="module")
def archive(postgres: PostgresPart, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArchiveService]:
    service = ArchiveService(new_database(postgres, "s3runs"), tmp_path_factory.mktemp("archive") / "a.log", ADMIN)
    for name, dimensions in TYPES.items():
        service.call("POST", "/dataset-types", json={"name": name, "dimensions": dimensions, "storage_class": "Text"})
    yield service
    service.stop()


@dataclass
class S3Site:
    cluster: Cluster
    minio: MinioPart
    archive: ArchiveService
    store: S3Store
    raws: dict[int, str]  # exposure → key
    raw_ids: list[str]

    def objects(self, prefix: str) -> dict[str, bytes]:
        return {info.key: self.store.read_bytes(info.key) for info in self.store.list(prefix)}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def s3_site_manifest(cluster: Cluster, minio: MinioPart, archive: ArchiveService | None) -> dict[str, Any]:
    """Site `site-a` with its store in MinIO and no storage.path: nothing is shared with the tasks but the bucket."""
    keys = {"accessKey": b64(minio.access_key), "secretKey": b64(minio.secret_key)}
    cluster.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "site-a-s3"}, "data": keys})
    spec: dict[str, Any] = {
        "compute": {"kind": "kubernetes", "maxParallel": 20},
        "storage": {
            "kind": "s3",
            "endpoint": minio.endpoint,
            "bucket": minio.bucket,
            "secure": False,
            "credentials": {"name": "site-a-s3"},
            # The example's inputs are reference files: read by path, mounted read-only.
            "readOnlyPaths": [str(EXAMPLE / "inputs")],
        },
        "capacity": {"cores": 16, "storageTb": 1},
    }
    if archive is not None:
        token = archive.call("POST", "/tokens", json={"name": f"{cluster.namespace}-{SITE}", "site": SITE})["token"]
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "archive-site-a"},
            "data": {"token": b64(token)},
        }
        cluster.apply(secret)
        spec |= {"archiveUrl": archive.url, "archiveCredentials": {"name": "archive-site-a"}}
    return {"apiVersion": "sgs.io/v1alpha1", "kind": "Site", "metadata": {"name": SITE}, "spec": spec}


def checksums(content: bytes) -> dict[str, Any]:
    return {
        "size": len(content),
        "adler32": f"{zlib.adler32(content) & 0xFFFFFFFF:08x}",
        "sha256": hashlib.sha256(content).hexdigest(),
    }


@pytest.fixture
def s3(cluster: Cluster, bridge: BridgeProcess, minio: MinioPart, archive: ArchiveService) -> S3Site:
    """The S3 Site, and four raw exposures uploaded to its bucket (checksums as metadata) and registered there."""
    cluster.apply(s3_site_manifest(cluster, minio, archive))
    store = S3Store.connect(SITE, minio.endpoint, minio.bucket, minio.access_key, minio.secret_key, secure=False)
    raws: dict[int, str] = {}
    datasets = []
    for exposure in EXPOSURES:
        key = f"raw/{cluster.namespace}/raw_{OBSERVATION}_{exposure}.txt"
        content = f"raw exposure {exposure}\n".encode()
        store.put_bytes(key, content, checksum_bytes(content))
        raws[exposure] = key
        datasets.append(
            {
                "dataset_type": "nir_raw",
                "data_id": {"instrument": "NISP", "exposure": exposure, "observation": OBSERVATION, "band": "H"},
                "run": f"raw/{cluster.namespace}",
                "replicas": [{"site": SITE, "uri": store.uri(key), **checksums(content)}],
            }
        )
    ids = [str(i) for i in archive.call("POST", "/datasets/ingest", json={"datasets": datasets})["ids"]]
    return S3Site(cluster, minio, archive, store, raws, ids)


def stack_pipeline() -> dict[str, Any]:
    """stack: the raws' contents concatenated (the command reads the downloaded files), registered as s3_stack."""
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
                    "inputs": [{"name": "mode"}, {"name": "input"}],
                    "outputs": [{"name": "out", "suffix": ".txt", "datasetType": "s3_stack"}],
                    "resources": {"cores": 1, "ram": 0.25, "walltime": 0.05},
                }
            ],
            "steps": [
                {
                    "name": "stack",
                    "executable": "stack",
                    "inputs": {"mode": {"value": "concat"}, "input": {"input": "images"}},
                }
            ],
        },
    }


def query_input(site: S3Site) -> dict[str, Any]:
    where = f"instrument = 'NISP' AND observation = {OBSERVATION}"
    return {"images": {"query": where, "datasetType": "nir_raw", "collections": [f"raw/{site.cluster.namespace}"]}}


def condition(cluster: Cluster, run: str, kind: str) -> dict[str, Any] | None:
    return next((c for c in cluster.run_status(run).get("conditions", []) if c["type"] == kind), None)


def registrations(cluster: Cluster, run: str) -> list[tuple[str, str, str]]:
    uid = cluster.get("runs", run)["metadata"]["uid"]
    with psycopg.connect(cluster.dsn) as conn:
        rows = conn.execute(
            "SELECT task, state, path FROM sgs_registration WHERE run_uid = %s ORDER BY id", (uid,)
        ).fetchall()
    return [(str(t), str(s), str(p)) for t, s, p in rows]


def test_a_query_of_objects_runs_through_the_wrapper_and_its_output_is_registered_with_its_s3_replica(
    s3: S3Site,
) -> None:
    cluster, archive = s3.cluster, s3.archive
    cluster.apply(stack_pipeline())
    cluster.apply(cluster.run("stack-7", pipeline="stack", inputs=query_input(s3), retry=NO_RETRY))

    status = cluster.wait_phase("stack-7", {"Succeeded", "Failed"}, timeout_s=180)
    registered = wait_for(
        lambda: (c := condition(cluster, "stack-7", "OutputsRegistered")) and c["status"] == "True" and c,
        "the stack's output to be registered",
        timeout_s=120,
    )

    assert status["phase"] == "Succeeded", cluster.attempt_rows("stack-7")
    assert "1 output(s) registered" in registered["message"]
    key = f"{cluster.namespace}/stack-7/stack/out.txt"
    content = s3.store.read_bytes(key)
    uid = cluster.get("runs", "stack-7")["metadata"]["uid"]
    with psycopg.connect(cluster.dsn) as conn:
        recorded = [
            str(path)
            for (path,) in conn.execute(
                "SELECT path FROM sgs_run_input WHERE run_uid = %s ORDER BY position", (uid,)
            ).fetchall()
        ]
    by_uri = {s3.store.uri(key): exposure for exposure, key in s3.raws.items()}
    assert sorted(recorded) == sorted(by_uri)  # the replicas' own s3:// URIs, recorded at the Run's start
    raws = "".join(f"raw exposure {by_uri[uri]}\n" for uri in recorded)
    assert content.decode() == raws + "concat done\n"  # the command read the four downloaded objects, in order
    assert s3.store.stat(key).checksums == checksum_bytes(content)  # recorded by the wrapper as it uploaded
    page = archive.call("POST", "/datasets/query", json={"dataset_type": "s3_stack", "where": "", "limit": 100})
    (stack,) = [d for d in page["items"] if str(d["run"]).startswith(f"{cluster.namespace}/stack-7/")]
    assert stack["data_id"] == {"instrument": "NISP", "observation": OBSERVATION, "band": "H"}
    (replica,) = archive.call("GET", f"/datasets/{stack['id']}/replicas")
    assert replica["site"] == SITE and replica["uri"] == f"s3://{s3.minio.bucket}/{key}"
    assert {k: replica[k] for k in ("size", "adler32", "sha256")} == checksums(content)
    up = archive.call("GET", f"/datasets/{stack['id']}/lineage", params={"direction": "up", "depth": 1})
    assert {e["input"] for e in up["edges"]} == set(s3.raw_ids)
    (job,) = cluster.jobs("stack-7")
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == [sys.executable] and container["args"][:4] == ["-m", "sgs.task", "exec", "--"]
    secret_refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    assert secret_refs["SGS_S3_SECRET_KEY"] == {"name": "site-a-s3", "key": "secretKey"}
    assert s3.minio.secret_key not in json.dumps(job)  # the keys never enter the Job
    assert all(m["mountPath"] == "/sgs/tmp" for m in container["volumeMounts"])  # no storage mounted


def test_the_seed_pipeline_runs_at_an_s3_site_its_list_outputs_going_through_the_bucket(
    cluster: Cluster, bridge: BridgeProcess, minio: MinioPart, example_pipeline: dict[str, Any]
) -> None:
    cluster.apply(s3_site_manifest(cluster, minio, archive=None))  # no archive: outputs stay objects
    cluster.apply(example_pipeline)
    cluster.apply(cluster.run("seed", retry=NO_RETRY))

    status = cluster.wait_phase("seed", {"Succeeded", "Failed"}, timeout_s=240)

    assert status["phase"] == "Succeeded", cluster.attempt_rows("seed")
    store = S3Store.connect(SITE, minio.endpoint, minio.bucket, minio.access_key, minio.secret_key, secure=False)
    keys = {info.key for info in store.list(f"{cluster.namespace}/seed/")}
    split = json.loads(store.read_bytes(f"{cluster.namespace}/seed/ialtest_split_images/images_splitted.json"))
    images = json.loads((EXAMPLE / "inputs" / "images.json").read_text())["images"]
    assert len(split) == len(images) and all(uri.startswith(f"s3://{minio.bucket}/") for uri in split)
    assert {uri.split("/", 3)[3] for uri in split} <= keys  # each split image, uploaded under <list>.d/
    combined = [k for k in keys if k.endswith("/combined.json")]
    assert len(combined) == 1, sorted(keys)
    assert len([k for k in keys if k.endswith("/corrected_image.json")]) == 2 * len(images)  # dark, then flat
    assert all(store.stat(key).checksums is not None for key in keys)  # every upload carries its checksums


def test_dynamic_resources_at_an_s3_site_are_read_from_the_upstream_object(
    cluster: Cluster, bridge: BridgeProcess, minio: MinioPart
) -> None:
    """`sgs challenge`'s dynamic-resources Run at an S3 Site: ``sizes`` uploads {ram: 1.0}; ``hungry`` (static
    0.25 GiB, no retry) holds 400 MiB, so it succeeds only with the memory the operator read from that object
    (it used to refuse: "resources read from an upstream output are not read at S3 Sites")."""
    from sgs.challenge.suite import dynamic_pipeline

    cluster.apply(s3_site_manifest(cluster, minio, archive=None))
    spec = dynamic_pipeline(sys.executable).model_dump(mode="json", by_alias=True, exclude_none=True)
    cluster.apply({"apiVersion": "sgs.io/v1alpha1", "kind": "Pipeline", "metadata": {"name": "dyn"}, "spec": spec})
    cluster.apply(cluster.run("dyn", pipeline="dyn", inputs={}, retry=NO_RETRY))

    status = cluster.wait_phase("dyn", {"Succeeded", "Failed"}, timeout_s=120)

    assert status["phase"] == "Succeeded", (status, cluster.attempt_rows("dyn"))
    hungry = [r for r in cluster.attempt_rows("dyn") if r["task"] == "hungry"]
    assert len(hungry) == 1, hungry  # one attempt: its memory was the upstream product's from the start


@pytest.mark.parametrize("damage", ["bytes-rotted", "replaced-with-its-own-checksums"])
def test_an_input_that_is_not_the_archives_fails_the_task_with_the_reason_and_registers_nothing(
    s3: S3Site, bridge: BridgeProcess, damage: str
) -> None:
    cluster = s3.cluster
    key = s3.raws[EXPOSURES[1]]
    original = s3.store.stat(key).checksums
    assert original is not None
    other = b"raw exposure 7X\n"  # same size, other bytes
    if damage == "bytes-rotted":  # the recorded checksums stay those of the original
        metadata: dict[str, str | list[str] | tuple[str]] = {
            "sgs-adler32": str(original.adler32),
            "sgs-sha256": original.sha256,
        }
        s3.minio.client().put_object(s3.minio.bucket, key, io.BytesIO(other), len(other), metadata=metadata)
    else:  # another file uploaded through sgs: its metadata agrees with it, only the archive's checksums do not
        s3.store.put_bytes(key, other, checksum_bytes(other))
    cluster.apply(stack_pipeline())
    cluster.apply(cluster.run("rotted", pipeline="stack", inputs=query_input(s3), retry=NO_RETRY))

    status = cluster.wait_phase("rotted", {"Succeeded", "Failed"}, timeout_s=180)

    assert status["phase"] == "Failed"
    (row,) = cluster.task_rows("rotted")
    assert row["exit_code"] == 65, row
    assert "sgs task exec: an input or output unusable" in row["message"]
    (job,) = cluster.jobs("rotted")
    uid = cluster.kubectl("get", "pods", "-l", f"job-name={job['metadata']['name']}", "-o", "json").stdout
    pod_uid = json.loads(uid)["items"][0]["metadata"]["uid"]
    log = "".join(p.read_text() for p in Path(bridge.workdir).rglob("*.log") if pod_uid in str(p))
    assert f"input s3://{s3.minio.bucket}/{key}: checksums do not match" in log, log
    assert s3.objects(f"{cluster.namespace}/rotted/") == {}  # the command never ran: nothing uploaded
    assert registrations(cluster, "rotted") == []


def pod_files(cluster: Cluster, bridge: BridgeProcess, run: str, pattern: str) -> list[Path]:
    """Files the bridge keeps for the pods of ``run`` (their logs, their scratch), by name pattern."""
    pods = json.loads(cluster.kubectl("get", "pods", "-l", f"sgs.io/run={run}", "-o", "json").stdout)["items"]
    uids = [p["metadata"]["uid"] for p in pods]
    return [p for p in Path(bridge.workdir).rglob(pattern) if any(uid in str(p) for uid in uids)]


def pod_log(cluster: Cluster, bridge: BridgeProcess, run: str) -> str:
    return "".join(p.read_text(errors="replace") for p in pod_files(cluster, bridge, run, "*.log"))


def test_an_upload_that_fails_while_the_store_is_down_is_retried_and_the_output_registered_once(
    s3: S3Site, bridge: BridgeProcess
) -> None:
    cluster, archive = s3.cluster, s3.archive
    pipeline = stack_pipeline()
    pipeline["metadata"]["name"] = "slow-stack"
    pipeline["spec"]["steps"][0]["inputs"]["mode"] = {"value": "sleep:4"}  # then writes its output
    cluster.apply(pipeline)
    cluster.apply(cluster.run("outage", pipeline="slow-stack", inputs=query_input(s3), retry=NO_RETRY))

    # The command started (its inputs downloaded): MinIO goes away for real before the command ends and uploads.
    wait_for(lambda: pod_files(cluster, bridge, "outage", "out.runs"), "the command to start", timeout_s=120)
    s3.minio.stop()
    try:
        wait_for(
            lambda: "failed (try 1 of 5)" in pod_log(cluster, bridge, "outage"),
            "the wrapper's first upload to fail",
            timeout_s=30,
        )
    finally:
        s3.minio.start()

    status = cluster.wait_phase("outage", {"Succeeded", "Failed"}, timeout_s=120)
    wait_for(
        lambda: (c := condition(cluster, "outage", "OutputsRegistered")) and c["status"] == "True" and c,
        "the output to be registered",
        timeout_s=120,
    )

    assert status["phase"] == "Succeeded", cluster.attempt_rows("outage")
    assert [r["attempt"] for r in cluster.attempt_rows("outage")] == [0]  # the wrapper retried, not the operator
    key = f"{cluster.namespace}/outage/stack/out.txt"
    uploaded = re.search(
        rf"uploaded s3://{s3.minio.bucket}/{key} \(.*\) after (\d) tries", pod_log(cluster, bridge, "outage")
    )
    assert uploaded is not None and int(uploaded[1]) >= 2  # the same key, written again once MinIO was back
    content = s3.store.read_bytes(key)
    page = archive.call("POST", "/datasets/query", json={"dataset_type": "s3_stack", "where": "", "limit": 100})
    mine = [d for d in page["items"] if str(d["run"]).startswith(f"{cluster.namespace}/outage/")]
    assert len(mine) == 1
    (replica,) = archive.call("GET", f"/datasets/{mine[0]['id']}/replicas")
    assert replica["uri"] == f"s3://{s3.minio.bucket}/{key}"
    assert {k: replica[k] for k in ("size", "adler32", "sha256")} == checksums(content)
    assert registrations(cluster, "outage") == [("stack", "registered", f"s3://{s3.minio.bucket}/{key}")]


@pytest.fixture
def restartable(operator: OperatorProcess) -> Iterator[OperatorProcess]:
    yield operator
    if operator.proc is None or operator.proc.poll() is not None:
        operator.start()


def test_a_kill_between_a_task_end_and_its_registration_at_an_s3_site_registers_exactly_once(
    restartable: OperatorProcess, s3: S3Site
) -> None:
    """The restarted operator opens the bucket again and takes the output's checksums from the object (one HEAD):
    what the killed one had seen is gone with it."""
    cluster = s3.cluster
    restartable.stop()
    restartable.start(crash_at="after-finish-before-register:1")
    cluster.apply(stack_pipeline())
    cluster.apply(cluster.run("crash", pipeline="stack", inputs=query_input(s3), retry=NO_RETRY))

    assert restartable.wait_exit(120) == -9  # it killed itself with the task's outcome recorded, nothing registered
    restartable.start()
    status = cluster.wait_phase("crash", {"Succeeded", "Failed"}, timeout_s=180)
    wait_for(
        lambda: (c := condition(cluster, "crash", "OutputsRegistered")) and c["status"] == "True" and c,
        "the output to be registered after the restart",
        timeout_s=120,
    )

    assert status["phase"] == "Succeeded"
    key = f"{cluster.namespace}/crash/stack/out.txt"
    page = s3.archive.call("POST", "/datasets/query", json={"dataset_type": "s3_stack", "where": "", "limit": 100})
    (mine,) = [d for d in page["items"] if str(d["run"]).startswith(f"{cluster.namespace}/crash/")]
    (replica,) = s3.archive.call("GET", f"/datasets/{mine['id']}/replicas")
    assert replica["uri"] == f"s3://{s3.minio.bucket}/{key}"
    assert {k: replica[k] for k in ("size", "adler32", "sha256")} == checksums(s3.store.read_bytes(key))
    assert registrations(cluster, "crash") == [("stack", "registered", f"s3://{s3.minio.bucket}/{key}")]


SLURM_SITE = "site-s3-slurm"


@pytest.fixture(scope="module")
def slurm_bridge(kube: KubePart, slurm: SlurmPart, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BridgeProcess]:
    """A second Site's node: the bridge's Slurm provider (sbatch on the fixture's one-node cluster)."""
    path = os.pathsep.join([str(TEST_BIN), os.environ.get("PATH", "")])
    process = BridgeProcess(
        node_name="sgs-s3-slurm-node",
        site=SLURM_SITE,
        kubeconfig=kube.kubeconfig,
        workdir=tmp_path_factory.mktemp("bridge-slurm"),
        provider="slurm",
        poll_interval_s=0.3,
        env={**slurm.env, "PATH": path},
    )
    with process:
        yield process


def test_tasks_at_an_s3_site_run_the_same_on_the_slurm_provider(
    cluster: Cluster, slurm_bridge: BridgeProcess, minio: MinioPart
) -> None:
    site = s3_site_manifest(cluster, minio, archive=None)
    site["metadata"]["name"] = SLURM_SITE
    site["spec"]["compute"] = {"kind": "slurm", "maxParallel": 4}
    cluster.apply(site)
    cluster.apply(task_pipeline("chain", {"first": ("ok", 0.25, None), "second": ("ok", 0.25, "first")}))
    cluster.apply(cluster.run("on-slurm", pipeline="chain", site=SLURM_SITE, inputs={}, retry=NO_RETRY))

    status = cluster.wait_phase("on-slurm", {"Succeeded", "Failed"}, timeout_s=240)

    assert status["phase"] == "Succeeded", cluster.attempt_rows("on-slurm")
    store = S3Store.connect(SITE, minio.endpoint, minio.bucket, minio.access_key, minio.secret_key, secure=False)
    second = store.read_bytes(f"{cluster.namespace}/on-slurm/second/out.txt")
    assert second == b"ok done\nok done\n"  # the first task's output, downloaded from the bucket, then its own
    pods = json.loads(cluster.kubectl("get", "pods", "-l", "sgs.io/run=on-slurm", "-o", "json").stdout)["items"]
    assert {p["spec"]["nodeName"] for p in pods} == {"sgs-s3-slurm-node"}
    assert len(list(Path(slurm_bridge.workdir).rglob("slurm_job_id"))) == 2  # each task went through sbatch

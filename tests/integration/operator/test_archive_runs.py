"""Runs on the archive, end to end on the real API server, PostgreSQL, archive service and bridge: a Run whose input
is an archive query on a POSIX Site is resolved to its replicas' paths, runs through the bridge's process provider,
and its outputs become datasets with a replica and lineage at the Site's archive (``sgs archive lineage`` shows
them); kill -9 of the operator between a task's end and its registration registers exactly once; a query
matching nothing leaves the Run Pending with reason NoInputs; a Run without spec.site goes to the Site holding
its input bytes per the archive's replicas."""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from operator_kit import (
    EXAMPLE,
    SITE,
    TEST_BIN,
    ArchiveService,
    Cluster,
    OperatorProcess,
    new_database,
    wait_for,
)
from sgs_bridge.launch import BridgeProcess

from sgs.testing.kube import KubePart
from sgs.testing.postgres import PostgresPart

pytest_plugins = ["operator_kit"]
pytestmark = pytest.mark.integration

ADMIN = "sgs_" + secrets.token_urlsafe(32)  # production refuses short or guessable admin tokens
OBSERVATION = 7
EXPOSURES = (71, 72, 73, 74)
TYPES = {
    "nir_raw": ["instrument", "exposure"],
    "optest_stack": ["instrument", "observation"],
    "optest_report": ["instrument", "observation"],
}


@pytest.fixture(scope="module")
def archive(postgres: PostgresPart, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArchiveService]:
    """The archive, with the survey's dataset types (an admin's job) registered."""
    service = ArchiveService(new_database(postgres, "runarchive"), tmp_path_factory.mktemp("archive") / "a.log", ADMIN)
    for name, dimensions in TYPES.items():
        service.call("POST", "/dataset-types", json={"name": name, "dimensions": dimensions, "storage_class": "Text"})
    yield service
    service.stop()


@dataclass
class ArchivedSite:
    cluster: Cluster
    archive: ArchiveService
    raw_collection: str
    raw_ids: list[str]

    @property
    def outputs_collection_prefix(self) -> str:
        return f"{self.cluster.namespace}/"


def checksums(path: Path) -> dict[str, Any]:
    content = path.read_bytes()
    return {
        "size": len(content),
        "adler32": f"{zlib.adler32(content) & 0xFFFFFFFF:08x}",
        "sha256": hashlib.sha256(content).hexdigest(),
    }


def archive_site(cluster: Cluster, archive: ArchiveService, name: str = SITE) -> dict[str, Any]:
    """The test namespace's Site, naming the archive and the Secret holding its Site token."""
    token = archive.call("POST", "/tokens", json={"name": f"{cluster.namespace}-{name}", "site": name})["token"]
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": f"archive-{name}"},
        "data": {"token": base64.b64encode(token.encode()).decode()},
    }
    cluster.apply(secret)
    site = cluster.site(name, max_parallel=20)
    site["spec"]["archiveUrl"] = archive.url
    site["spec"]["archiveCredentials"] = {"name": f"archive-{name}"}
    return site


def ingest_raws(
    cluster: Cluster,
    archive: ArchiveService,
    site: str = SITE,
    observation: int = OBSERVATION,
    exposures: tuple[int, ...] = EXPOSURES,
) -> list[str]:
    """Four raw exposures as files in the Site's store, registered with their replica there."""
    collection = f"raw/{cluster.namespace}"
    directory = cluster.store / "raw"
    directory.mkdir(exist_ok=True)
    datasets = []
    for exposure in exposures:
        path = directory / f"raw_{observation}_{exposure}.txt"
        path.write_text(f"raw exposure {exposure}\n")
        datasets.append(
            {
                "dataset_type": "nir_raw",
                "data_id": {"instrument": "NISP", "exposure": exposure, "observation": observation, "band": "H"},
                "run": collection,
                "replicas": [{"site": site, "uri": path.as_uri(), **checksums(path)}],
            }
        )
    result = archive.call("POST", "/datasets/ingest", json={"datasets": datasets})
    return [str(i) for i in result["ids"]]


def chain_pipeline(name: str) -> dict[str, Any]:
    """stack (all raws) → scratch (register: false) → report: products, an intermediate, and what derives from it."""

    def executable(exe: str, output: dict[str, Any]) -> dict[str, Any]:
        return {
            "name": exe,
            "command": "optest_task",
            "inputs": [{"name": "mode"}, {"name": "input", "optional": True}],
            "outputs": [{"name": "out", "suffix": ".txt", **output}],
            "resources": {"cores": 1, "ram": 0.25, "walltime": 0.05},
        }

    return {
        "apiVersion": "sgs.io/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": name},
        "spec": {
            "inputs": [{"name": "images"}],
            "executables": [
                executable("stack", {"datasetType": "optest_stack"}),
                executable("scratch", {"register": False}),
                executable("report", {"datasetType": "optest_report"}),
            ],
            "steps": [
                {
                    "name": "stack",
                    "executable": "stack",
                    "inputs": {"mode": {"value": "ok"}, "input": {"input": "images"}},
                },
                {
                    "name": "scratch",
                    "executable": "scratch",
                    "inputs": {"mode": {"value": "ok"}, "input": {"step": "stack", "output": "out"}},
                },
                {
                    "name": "report",
                    "executable": "report",
                    "inputs": {"mode": {"value": "ok"}, "input": {"step": "scratch", "output": "out"}},
                },
            ],
        },
    }


def query_input(collection: str, where: str = f"instrument = 'NISP' AND observation = {OBSERVATION}") -> dict[str, Any]:
    return {"images": {"query": where, "datasetType": "nir_raw", "collections": [collection]}}


@pytest.fixture
def archived(cluster: Cluster, bridge: BridgeProcess, archive: ArchiveService) -> ArchivedSite:
    cluster.apply(archive_site(cluster, archive))
    ids = ingest_raws(cluster, archive)
    return ArchivedSite(cluster, archive, f"raw/{cluster.namespace}", ids)


def products(site: ArchivedSite, dataset_type: str) -> list[dict[str, Any]]:
    page = site.archive.call("POST", "/datasets/query", json={"dataset_type": dataset_type, "where": "", "limit": 100})
    prefix = site.outputs_collection_prefix
    return [d for d in page["items"] if str(d["run"]).startswith(prefix)]


def condition(cluster: Cluster, run: str, kind: str) -> dict[str, Any] | None:
    return next((c for c in cluster.run_status(run).get("conditions", []) if c["type"] == kind), None)


def wait_registered(cluster: Cluster, run: str) -> dict[str, Any]:
    found: dict[str, Any] = wait_for(
        lambda: (c := condition(cluster, run, "OutputsRegistered")) and c["status"] == "True" and c,
        f"run {run}'s outputs to be registered",
        timeout_s=120,
    )
    return found


def run_uid(cluster: Cluster, run: str) -> str:
    return str(cluster.get("runs", run)["metadata"]["uid"])


# ----------------------------------------------------------------------------------------------- end to end


def test_a_query_input_runs_on_its_replicas_and_outputs_are_registered_with_lineage(archived: ArchivedSite) -> None:
    cluster, archive = archived.cluster, archived.archive
    cluster.apply(chain_pipeline("chain"))
    cluster.apply(cluster.run("survey-7", pipeline="chain", inputs=query_input(archived.raw_collection)))

    status = cluster.wait_phase("survey-7", {"Succeeded", "Failed"}, timeout_s=180)
    registered = wait_registered(cluster, "survey-7")

    assert status["phase"] == "Succeeded", cluster.attempt_rows("survey-7")
    assert "2 output(s) registered" in registered["message"] and "1 not registered" in registered["message"]
    uid = run_uid(cluster, "survey-7")
    with psycopg.connect(cluster.dsn) as conn:
        recorded = conn.execute(
            "SELECT dataset_id::text, path FROM sgs_run_input WHERE run_uid = %s ORDER BY position", (uid,)
        ).fetchall()
    assert sorted(r[0] for r in recorded) == sorted(archived.raw_ids)  # the resolution, in PostgreSQL
    assert all(Path(r[1]).parent == cluster.store / "raw" for r in recorded)  # the replicas' own files
    stacks, reports = products(archived, "optest_stack"), products(archived, "optest_report")
    assert len(stacks) == 1 and len(reports) == 1
    stack, report = stacks[0], reports[0]
    assert stack["data_id"] == {"instrument": "NISP", "observation": OBSERVATION, "band": "H"}  # what the raws share
    assert report["data_id"] == stack["data_id"]  # through the unregistered intermediate
    with psycopg.connect(cluster.dsn) as conn:
        outbox = conn.execute(
            "SELECT task, state, dataset_id::text FROM sgs_registration WHERE run_uid = %s ORDER BY id", (uid,)
        ).fetchall()
    assert outbox == [
        ("stack", "registered", stack["id"]),
        ("scratch", "skipped", None),
        ("report", "registered", report["id"]),
    ]
    replica = archive.call("GET", f"/datasets/{stack['id']}/replicas")[0]
    stack_file = cluster.store / cluster.namespace / "survey-7" / "stack" / "out.txt"
    assert replica["site"] == SITE and replica["uri"] == stack_file.as_uri()
    assert {k: replica[k] for k in ("size", "adler32", "sha256")} == checksums(stack_file)
    up = archive.call("GET", f"/datasets/{report['id']}/lineage", params={"direction": "up", "depth": 5})
    edges = {(e["output"], e["input"]) for e in up["edges"]}
    assert (report["id"], stack["id"]) in edges  # report ← (scratch, not registered) ← stack
    assert {(stack["id"], raw) for raw in archived.raw_ids} <= edges
    provenance = next(n for n in up["nodes"] if n["id"] == stack["id"])["provenance"]
    assert provenance["task"] == "stack" and provenance["attempt"] == 0
    assert provenance["executable"] == "stack: optest_task"
    assert provenance["pipeline_run"] == f"{cluster.namespace}/survey-7"
    assert provenance["config_digest"].startswith("sha256:")
    shown = cluster.sgs("archive", "lineage", report["id"], "--url", archive.url, "--token", ADMIN).stdout
    assert "optest_report" in shown and "optest_stack" in shown and "nir_raw" in shown


def test_dataset_id_inputs_resolve_to_the_same_replicas(archived: ArchivedSite) -> None:
    cluster = archived.cluster
    cluster.apply(chain_pipeline("chain"))
    cluster.apply(cluster.run("by-ids", pipeline="chain", inputs={"images": {"datasetIds": archived.raw_ids[:2]}}))

    assert cluster.wait_phase("by-ids", {"Succeeded", "Failed"}, timeout_s=180)["phase"] == "Succeeded"
    wait_registered(cluster, "by-ids")
    stack = next(d for d in products(archived, "optest_stack") if d["run"].startswith(f"{cluster.namespace}/by-ids/"))
    up = archived.archive.call("GET", f"/datasets/{stack['id']}/lineage", params={"direction": "up", "depth": 1})
    assert {e["input"] for e in up["edges"]} == set(archived.raw_ids[:2])


def test_a_query_matching_nothing_leaves_the_run_pending_with_the_query(archived: ArchivedSite) -> None:
    cluster = archived.cluster
    cluster.apply(chain_pipeline("chain"))
    where = "instrument = 'NISP' AND observation = 999"
    cluster.apply(cluster.run("nothing", pipeline="chain", inputs=query_input(archived.raw_collection, where)))

    found = wait_for(lambda: condition(cluster, "nothing", "InputsReady"), "the InputsReady condition")

    assert cluster.run_status("nothing")["phase"] == "Pending"
    assert found["status"] == "False" and found["reason"] == "NoInputs"
    assert "spec.inputs.images.query" in found["message"] and where in found["message"]
    assert cluster.jobs("nothing") == []


# ----------------------------------------------------------------------------------------------- crash safety


@pytest.fixture
def restartable(operator: OperatorProcess) -> Iterator[OperatorProcess]:
    yield operator
    if operator.proc is None or operator.proc.poll() is not None:
        operator.start()


@pytest.mark.parametrize(
    "crash_at",
    [
        "after-finish-before-register:1",  # stack's success and its outbox row written, nothing registered
        "after-register-before-mark:1",  # stack registered at the archive, its row still pending
    ],
)
def test_a_kill_between_a_task_end_and_its_registration_registers_exactly_once(
    restartable: OperatorProcess, archived: ArchivedSite, crash_at: str
) -> None:
    cluster = archived.cluster
    restartable.stop()
    restartable.start(crash_at=crash_at)
    cluster.apply(chain_pipeline("chain"))
    run = "crash-" + crash_at.split(":")[0].split("-")[-1]
    cluster.apply(cluster.run(run, pipeline="chain", inputs=query_input(archived.raw_collection)))

    assert restartable.wait_exit(120) == -9  # it killed itself at the crash point
    restartable.start()
    status = cluster.wait_phase(run, {"Succeeded", "Failed"}, timeout_s=180)
    wait_registered(cluster, run)

    assert status["phase"] == "Succeeded"
    mine = [d for d in products(archived, "optest_stack") if d["run"].startswith(f"{cluster.namespace}/{run}/")]
    assert len(mine) == 1
    assert len(archived.archive.call("GET", f"/datasets/{mine[0]['id']}/replicas")) == 1
    with psycopg.connect(cluster.dsn) as conn:
        rows = conn.execute(
            "SELECT output, task, state FROM sgs_registration WHERE run_uid = %s ORDER BY id", (run_uid(cluster, run),)
        ).fetchall()
    assert rows == [("out", "stack", "registered"), ("out", "scratch", "skipped"), ("out", "report", "registered")]


# ----------------------------------------------------------------------------------------------- work to the data


def test_a_run_without_a_site_goes_where_the_archive_says_its_bytes_are(archived: ArchivedSite) -> None:
    cluster = archived.cluster
    cluster.wait_site_phase(SITE, {"Ready"})
    cluster.apply(chain_pipeline("chain"))
    run = cluster.run("anywhere", pipeline="chain", inputs=query_input(archived.raw_collection))
    del run["spec"]["site"]
    cluster.apply(run)

    status = cluster.wait_phase("anywhere", {"Succeeded", "Failed"}, timeout_s=180)

    assert status["site"] == SITE
    site_ready = condition(cluster, "anywhere", "SiteReady")
    assert site_ready is not None and site_ready["reason"] == "MostInputBytes"
    held = sum(checksums(cluster.store / "raw" / f"raw_{OBSERVATION}_{e}.txt")["size"] for e in EXPOSURES)
    assert f"({held:,} B;" in site_ready["message"]  # the bytes its replicas hold, per the archive


def placed_run(archived: ArchivedSite, name: str, observation: int, primary: str, secondary: str) -> dict[str, Any]:
    """A Run without spec.site over one observation's raws (held at SITE), the observation placed as given."""
    cluster = archived.cluster
    ingest_raws(
        cluster, archived.archive, observation=observation, exposures=tuple(observation * 100 + e for e in EXPOSURES)
    )
    placement = {"dimension": "observation", "value": observation, "primary_site": primary, "secondary_site": secondary}
    archived.archive.call("PUT", "/placements", json={"placements": [placement]})
    where = f"instrument = 'NISP' AND observation = {observation}"
    run = cluster.run(name, pipeline="chain", inputs=query_input(archived.raw_collection, where))
    del run["spec"]["site"]
    cluster.apply(run)
    status: dict[str, Any] = cluster.wait_phase(name, {"Succeeded", "Failed"}, timeout_s=180)
    return status


def test_a_placed_observation_runs_at_its_primary_or_at_its_secondary_while_the_primary_is_down(
    archived: ArchivedSite,
) -> None:
    cluster = archived.cluster
    cluster.wait_site_phase(SITE, {"Ready"})
    down = "site-nonode"  # a Site no node serves: never Ready
    cluster.apply(cluster.site(down))
    cluster.apply(chain_pipeline("chain"))

    primary = placed_run(archived, "placed-primary", 8, primary=SITE, secondary=down)
    secondary = placed_run(archived, "placed-secondary", 9, primary=down, secondary=SITE)

    assert (primary["phase"], primary["site"]) == ("Succeeded", SITE)
    chose = condition(cluster, "placed-primary", "SiteReady")
    assert chose is not None and chose["reason"] == "PlacedPrimary", chose
    assert (secondary["phase"], secondary["site"]) == ("Succeeded", SITE)
    chose = condition(cluster, "placed-secondary", "SiteReady")
    assert chose is not None and chose["reason"] == "PlacedSecondary", chose
    assert f"observation 9: primary {down} is " in chose["message"] and f"secondary {SITE} takes it" in chose["message"]


# ----------------------------------------------------------------------------------------------- campaigns


SITE_B = "site-b"


@pytest.fixture(scope="module")
def bridge_b(kube: KubePart, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BridgeProcess]:
    """The node of a second Site, `site-b`: another bridge process (the operator selects nodes by sgs.io/site)."""
    path = os.pathsep.join([str(EXAMPLE / "bin"), str(TEST_BIN), os.environ.get("PATH", "")])
    process = BridgeProcess(
        node_name="sgs-operator-test-node-b",
        site=SITE_B,
        kubeconfig=kube.kubeconfig,
        workdir=tmp_path_factory.mktemp("bridge-b"),
        poll_interval_s=0.2,
        env={"PATH": path},
    )
    with process:
        yield process


def input_rows(cluster: Cluster, run: str) -> list[tuple[str, str]]:
    with psycopg.connect(cluster.dsn) as conn:
        rows = conn.execute(
            "SELECT dataset_id::text, site FROM sgs_run_input WHERE run_uid = %s ORDER BY position",
            (run_uid(cluster, run),),
        ).fetchall()
    return [(str(r[0]), str(r[1])) for r in rows]


def test_a_campaign_over_two_sites_archives_runs_each_observation_where_its_raws_are(
    archived: ArchivedSite, bridge_b: BridgeProcess
) -> None:
    """Observation 7's raws are at site-a and observation 8's at site-b, one of them at both with a placement
    naming site-b: one query over all of them with spec.split gives one child per Site, each resolving and
    running only what its Site holds; the products' lineage shows which raws each read."""
    cluster, archive = archived.cluster, archived.archive
    cluster.apply(archive_site(cluster, archive, SITE_B))
    at_b = ingest_raws(cluster, archive, site=SITE_B, observation=8, exposures=(81, 82))
    both = ingest_raws(cluster, archive, site=SITE_B, observation=8, exposures=(83,))
    path = cluster.store / "raw" / "raw_8_83.txt"  # the same file, registered at site-a too
    archive.call(
        "POST", "/replicas", json={"dataset_id": both[0], "site": SITE, "uri": path.as_uri(), **checksums(path)}
    )
    placement = {"dimension": "observation", "value": 8, "primary_site": SITE_B, "secondary_site": SITE}
    archive.call("PUT", "/placements", json={"placements": [placement]})
    for site in (SITE, SITE_B):
        cluster.wait_site_phase(site, {"Ready"})
    cluster.apply(chain_pipeline("chain"))
    run = cluster.run("dr1", pipeline="chain", inputs=query_input(archived.raw_collection, "instrument = 'NISP'"))
    del run["spec"]["site"]
    run["spec"]["split"] = {"by": "site"}
    cluster.apply(run)

    status = cluster.wait_phase("dr1", {"Succeeded", "Failed"}, timeout_s=180)

    assert status["phase"] == "Succeeded", status
    assert [(c["name"], c["site"], c["inputs"], c["phase"]) for c in status["children"]] == [
        ("dr1-site-a", SITE, 4, "Succeeded"),
        ("dr1-site-b", SITE_B, 3, "Succeeded"),
    ]
    assert status["tasks"]["total"] == status["tasks"]["succeeded"] == 6 and status["progress"] == "6/6"
    assert sorted(input_rows(cluster, "dr1-site-a")) == sorted((i, SITE) for i in archived.raw_ids)
    assert sorted(input_rows(cluster, "dr1-site-b")) == sorted((i, SITE_B) for i in [*at_b, *both])
    assert sorted(cluster.get("runs", "dr1-site-b")["spec"]["inputs"]["images"]["datasetIds"]) == sorted([*at_b, *both])
    for child, raws in (("dr1-site-a", archived.raw_ids), ("dr1-site-b", [*at_b, *both])):
        wait_registered(cluster, child)
        [stack] = [
            d for d in products(archived, "optest_stack") if d["run"].startswith(f"{cluster.namespace}/{child}/")
        ]
        up = archive.call("GET", f"/datasets/{stack['id']}/lineage", params={"direction": "up", "depth": 1})
        assert {e["input"] for e in up["edges"]} == set(raws), child

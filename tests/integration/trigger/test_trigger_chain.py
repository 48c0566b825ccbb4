"""The whole path with nobody creating a Run: raw exposures registered in the archive trigger pipeline A's Run;
the operator runs it through the bridge and registers its product; that registration triggers pipeline B's Run,
which runs and registers its own product with lineage back to A's — on the real API server, operator, bridge
(process provider), archive on PostgreSQL with its events in NATS JetStream, and `sgs trigger`."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from operator_kit import SITE, Cluster, OperatorProcess, wait_for
from sgs_bridge.launch import BridgeProcess
from trigger_kit import Archive, TriggerProcess, archive_service, checksums

from sgs.testing.kube import KubePart
from sgs.testing.nats import NatsPart
from sgs.testing.postgres import PostgresPart

pytest_plugins = ["operator_kit"]
pytestmark = [pytest.mark.integration, pytest.mark.slow]

TYPES = {
    "nir_raw": ["instrument", "exposure"],
    "optest_stack": ["instrument", "observation"],
    "optest_report": ["instrument", "observation"],
}


@pytest.fixture(scope="module")
def archive(postgres: PostgresPart, nats_server: NatsPart) -> Iterator[Archive]:
    with archive_service(postgres, nats_server.url) as archive:
        for name, dimensions in TYPES.items():
            archive.dataset_type(name, dimensions)
        yield archive


@pytest.fixture(scope="module")
def trigger(
    kube: KubePart, nats_server: NatsPart, archive: Archive, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TriggerProcess]:
    service = TriggerProcess(kube, nats_server.url, archive.url, tmp_path_factory.mktemp("trigger"))
    service.start()
    yield service
    service.stop()


def one_step(name: str, input_name: str, output_type: str, trigger: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "sgs.io/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": name},
        "spec": {
            "inputs": [{"name": input_name}],
            "executables": [
                {
                    "name": name,
                    "command": "optest_task",
                    "inputs": [{"name": "mode"}, {"name": "input", "optional": True}],
                    "outputs": [{"name": "out", "suffix": ".txt", "datasetType": output_type}],
                    "resources": {"cores": 1, "ram": 0.25, "walltime": 0.05},
                }
            ],
            "steps": [
                {
                    "name": name,
                    "executable": name,
                    "inputs": {"mode": {"value": "ok"}, "input": {"input": input_name}},
                }
            ],
            "triggers": [trigger],
        },
    }


def site_with_archive(cluster: Cluster, archive: Archive) -> None:
    token = archive.ok("POST", "/tokens", (201,), json={"name": f"{cluster.namespace}-{SITE}", "site": SITE})["token"]
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": f"archive-{SITE}"},
        "data": {"token": base64.b64encode(token.encode()).decode()},
    }
    cluster.apply(secret)
    site = cluster.site(SITE, max_parallel=20)
    site["spec"]["archiveUrl"] = archive.url
    site["spec"]["archiveCredentials"] = {"name": f"archive-{SITE}"}
    cluster.apply(site)


def runs(cluster: Cluster, pipeline: str) -> list[dict[str, Any]]:
    listed = json.loads(cluster.kubectl("get", "runs", "-o", "json").stdout)["items"]
    return [r for r in listed if r["spec"]["pipeline"] == pipeline]


def products(archive: Archive, dataset_type: str, namespace: str) -> list[dict[str, Any]]:
    page = archive.ok("POST", "/datasets/query", json={"dataset_type": dataset_type, "where": "", "limit": 100})
    return [d for d in page["items"] if str(d["run"]).startswith(f"{namespace}/")]


def test_raw_data_arriving_runs_a_two_pipeline_chain_with_lineage(
    cluster: Cluster, bridge: BridgeProcess, operator: OperatorProcess, trigger: TriggerProcess, archive: Archive
) -> None:
    site_with_archive(cluster, archive)
    group = {"groupBy": ["instrument", "observation"], "where": "instrument = 'NISP'"}
    stack_trigger = {"name": "dithers", "input": "images", "datasetType": "nir_raw", "complete": {"count": 4}}
    report_trigger = {"name": "stacks", "input": "stacks", "datasetType": "optest_stack", "complete": {"count": 1}}
    served = trigger.log.read_text().count("serving ")
    cluster.apply(one_step("stack", "images", "optest_stack", {**stack_trigger, **group}))
    cluster.apply(one_step("report", "stacks", "optest_report", {**report_trigger, **group}))
    wait_for(lambda: trigger.log.read_text().count("serving ") >= served + 2, "the trigger service to serve both")

    directory = cluster.store / "raw"
    directory.mkdir()
    datasets = []
    for exposure in (71, 72, 73, 74):
        path = directory / f"raw_{exposure}.txt"
        path.write_text(f"raw exposure {exposure}\n")
        datasets.append(
            {
                "dataset_type": "nir_raw",
                "data_id": {"instrument": "NISP", "exposure": exposure, "observation": 7, "band": "H"},
                "run": f"raw/{cluster.namespace}",
                "replicas": [{"site": SITE, "uri": path.as_uri(), **checksums(path.read_bytes())}],
            }
        )
    raw_ids = archive.ok("POST", "/datasets/ingest", json={"datasets": datasets})["ids"]

    [first] = wait_for(lambda: runs(cluster, "stack"), "pipeline A's Run, created by the trigger", timeout_s=60)
    assert sorted(first["spec"]["inputs"]["images"]["datasetIds"]) == sorted(raw_ids)
    assert cluster.wait_phase(first["metadata"]["name"], {"Succeeded", "Failed"}, 180)["phase"] == "Succeeded"
    [second] = wait_for(lambda: runs(cluster, "report"), "pipeline B's Run, triggered by A's product", 120)
    assert cluster.wait_phase(second["metadata"]["name"], {"Succeeded", "Failed"}, 180)["phase"] == "Succeeded"

    [stack] = products(archive, "optest_stack", cluster.namespace)
    assert second["spec"]["inputs"]["stacks"]["datasetIds"] == [stack["id"]] and second["spec"]["site"] == SITE
    [report] = wait_for(lambda: products(archive, "optest_report", cluster.namespace), "B's product registered", 60)
    lineage = archive.ok("GET", f"/datasets/{report['id']}/lineage", params={"direction": "up", "depth": 5})
    edges = {(e["output"], e["input"]) for e in lineage["edges"]}
    assert (report["id"], stack["id"]) in edges and {(stack["id"], raw) for raw in raw_ids} <= edges
    assert len(runs(cluster, "stack")) == 1 and len(runs(cluster, "report")) == 1

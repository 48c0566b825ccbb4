"""Which Site a Run goes to: without spec.site, the Ready Site holding most of its input bytes, else the one with
the most free slots (the reason in the Run's status); none Ready, or a Site asking for Jobs in another namespace,
leaves the Run Pending saying why."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from operator_kit import EXAMPLE, Cluster, wait_for
from sgs_bridge.launch import BridgeProcess

pytest_plugins = ["operator_kit"]  # the operator fixtures (a conftest here would clash with mypy)
pytestmark = pytest.mark.integration

UNSERVED = {"sgs.io/test": "no-such-node"}


@pytest.fixture
def second_node(cluster: Cluster) -> Iterator[dict[str, str]]:
    """A Ready Node for Site `site-b` of this namespace only (no kubelet: its pods never start)."""
    name = f"optest-{cluster.namespace}"
    labels = {"sgs.io/site": "site-b", "sgs.io/test-namespace": cluster.namespace}
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}}
    cluster.kube.kubectl("apply", "-f", "-", input=json.dumps(node))
    ready = {"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "OptestNode"}]}}
    cluster.kube.kubectl("patch", "node", name, "--subresource=status", "--type=merge", "-p", json.dumps(ready))
    yield {"sgs.io/test-namespace": cluster.namespace}
    cluster.kube.kubectl("delete", "node", name, "--wait=false", check=False)


def site(cluster: Cluster, name: str, max_parallel: int, node_selector: dict[str, str] | None = None) -> dict[str, Any]:
    return cluster.site(name=name, max_parallel=max_parallel, node_selector=node_selector)


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    found: dict[str, Any] = next(c for c in status.get("conditions") or [] if c["type"] == kind)
    return found


def test_a_run_without_a_site_goes_to_the_ready_site_with_most_free_slots(
    cluster: Cluster, bridge: BridgeProcess, second_node: dict[str, str], example_pipeline: dict[str, Any]
) -> None:
    cluster.apply(site(cluster, "site-a", 2))  # Ready: the bridge's node
    cluster.apply(site(cluster, "site-b", 5, second_node))  # Ready: this test's node
    cluster.apply(site(cluster, "site-c", 50, UNSERVED))  # the most slots, but no node: Degraded
    for name, phase in (("site-a", "Ready"), ("site-b", "Ready"), ("site-c", "Degraded")):
        cluster.wait_site_phase(name, {phase})
    cluster.apply(example_pipeline)
    run = cluster.run("unplaced")
    del run["spec"]["site"]
    cluster.apply(run)

    job = wait_for(lambda: next(iter(cluster.jobs("unplaced")), None), "the first task's Job")
    status = cluster.run_status("unplaced")

    assert job["spec"]["template"]["spec"]["nodeSelector"] == {**second_node, "sgs.io/site": "site-b"}
    assert status["site"] == "site-b"
    chosen = condition(status, "SiteReady")
    assert (chosen["status"], chosen["reason"]) == ("True", "MostFreeSlots")
    assert "site-b is the Ready Site with the most free task slots (5 of 5)" in chosen["message"]
    assert "site-a 2" in chosen["message"] and "site-c Degraded" in chosen["message"]
    assert cluster.kubectl("get", "runs", "unplaced").stdout.splitlines()[1].split()[2] == "site-b"


def test_a_run_without_a_site_goes_to_the_ready_site_holding_its_inputs(
    cluster: Cluster,
    bridge: BridgeProcess,
    second_node: dict[str, str],
    example_pipeline: dict[str, Any],
    tmp_path: Path,
) -> None:
    inputs: dict[str, Any] = {}
    for port in ("images", "master_dark", "master_flat", "control_params"):
        copy = tmp_path / "site-a" / "inputs" / f"{port}.json"
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(EXAMPLE / "inputs" / f"{port}.json", copy)
        inputs[port] = {"uri": str(copy)}
    held = sum(Path(i["uri"]).stat().st_size for i in inputs.values())
    holding = site(cluster, "site-a", 2)  # Ready (the bridge's node), fewer free slots, but the inputs are here
    holding["spec"]["storage"]["path"] = str(tmp_path / "site-a")
    cluster.apply(holding)
    cluster.apply(site(cluster, "site-b", 5, second_node))
    for name in ("site-a", "site-b"):
        cluster.wait_site_phase(name, {"Ready"})
    cluster.apply(example_pipeline)
    run = cluster.run("near-data", inputs=inputs)
    del run["spec"]["site"]
    cluster.apply(run)

    job = wait_for(lambda: next(iter(cluster.jobs("near-data")), None), "the first task's Job")
    status = cluster.run_status("near-data")

    assert job["spec"]["template"]["spec"]["nodeSelector"]["sgs.io/site"] == "site-a"
    assert status["site"] == "site-a"
    chosen = condition(status, "SiteReady")
    assert (chosen["status"], chosen["reason"]) == ("True", "MostInputBytes")
    assert f"site-a is the Ready Site holding the most of the Run's input bytes ({held:,} B" in chosen["message"]
    assert "site-b 0 B" in chosen["message"]


def test_a_run_without_a_site_waits_while_no_site_is_ready(cluster: Cluster, example_pipeline: dict[str, Any]) -> None:
    cluster.apply(site(cluster, "site-c", 50, UNSERVED))
    cluster.wait_site_phase("site-c", {"Degraded"})
    cluster.apply(example_pipeline)
    run = cluster.run("waiting")
    del run["spec"]["site"]
    cluster.apply(run)

    status = wait_for(
        lambda: (s := cluster.run_status("waiting")).get("conditions") and s, "the Run's blocked condition"
    )

    assert status["phase"] == "Pending"
    blocked = condition(status, "SiteReady")
    assert (blocked["status"], blocked["reason"]) == ("False", "NoReadySite")
    assert f"no Site of {cluster.namespace} is Ready (site-c Degraded)" in blocked["message"]
    assert cluster.jobs("waiting") == []


def test_a_site_asking_for_jobs_in_another_namespace_is_refused_with_the_reason(
    cluster: Cluster, example_pipeline: dict[str, Any]
) -> None:
    elsewhere = site(cluster, "site-a", 10, UNSERVED)
    elsewhere["spec"]["compute"]["namespace"] = "compute-elsewhere"
    cluster.apply(elsewhere)
    cluster.apply(example_pipeline)
    cluster.apply(cluster.run("misplaced"))

    status = wait_for(
        lambda: (s := cluster.run_status("misplaced")).get("conditions") and s, "the Run's blocked condition"
    )

    refused = condition(status, "SiteReady")
    assert (refused["status"], refused["reason"]) == ("False", "SiteNamespaceUnsupported")
    assert "spec.compute.namespace 'compute-elsewhere' is not supported" in refused["message"]
    assert cluster.namespace in refused["message"]
    assert cluster.jobs("misplaced") == []

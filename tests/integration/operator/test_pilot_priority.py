"""`sgs run priority` re-ranks payloads already waiting in a pilot Site's queue, through the whole path: the CLI
patches the Run, the operator writes the new priority on the Run's waiting pods (their spec.priority is fixed at
creation), the bridge's pilot scheduler takes it at its next choice. One pilot of one core, so the order in which
the waiting payloads start is the scheduler's choice alone."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from operator_kit import EXAMPLE, TEST_BIN, Cluster, OperatorProcess, make_cluster, task_pipeline, wait_for
from sgs_bridge.launch import BridgeProcess

from sgs.testing.kube import KubePart
from sgs.testing.slurm import SlurmPart

pytest_plugins = ["operator_kit"]  # the operator fixtures (a conftest here would clash with mypy)
pytestmark = pytest.mark.integration

PILOT_SITE = "pilot-site"
ONE_CORE_PILOT = """
pipelinerunner.pilots.one.CPUcores=1
pipelinerunner.pilots.one.rssInMB=2048
pipelinerunner.pilots.one.walltimeInMin=20
pipelinerunner.pilots.one.maxInstances=1
pipelinerunner.pilots.one.maxQueued=1
pipelinerunner.pilots.policy.idleInSec=30
"""


@pytest.fixture(scope="module")
def pilot_bridge(kube: KubePart, slurm: SlurmPart, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BridgeProcess]:
    workdir = tmp_path_factory.mktemp("pilot-priority")
    settings = workdir / "pilots.properties"
    settings.write_text(ONE_CORE_PILOT)
    path = os.pathsep.join([str(EXAMPLE / "bin"), str(TEST_BIN), os.environ.get("PATH", "")])
    bridge = BridgeProcess(
        node_name="sgs-pilot-priority-node",
        site=PILOT_SITE,
        kubeconfig=kube.kubeconfig,
        workdir=workdir / "bridge",
        provider="slurm",
        poll_interval_s=0.3,
        extra_args=[f"--pilots={settings}"],
        env={**slurm.env, "PATH": path},
    )
    with bridge:
        yield bridge


@pytest.fixture
def pilot_cluster(kube: KubePart, operator: OperatorProcess, tmp_path: Path) -> Iterator[Cluster]:
    yield from make_cluster(kube, operator, tmp_path)


def started_at(cluster: Cluster, run: str, step: str) -> float:
    """When the task's (only) execution began: optest_task's first act is to append the time to out.runs."""
    runs = cluster.store / cluster.namespace / run / step / "out.runs"
    return float(runs.read_text().split()[0])


def test_a_priority_change_re_ranks_payloads_waiting_for_a_pilot(
    pilot_cluster: Cluster, pilot_bridge: BridgeProcess
) -> None:
    cluster = pilot_cluster
    cluster.apply(cluster.site(PILOT_SITE, max_parallel=20))
    cluster.wait_site_phase(PILOT_SITE, {"Ready"}, timeout_s=60)
    release = cluster.store / "release"
    # The blocker holds the pilot's only core; the other tasks of both Runs queue in the bridge meanwhile.
    cluster.apply(task_pipeline("holder", {"block": (f"wait-for:{release}", 0.25, None)}))
    cluster.apply(task_pipeline("early", {f"e{i}": ("ok", 0.25, None) for i in range(3)}))
    cluster.apply(task_pipeline("late", {f"l{i}": ("ok", 0.25, None) for i in range(3)}))
    cluster.apply(cluster.run("holder", pipeline="holder", site=PILOT_SITE, inputs={}, retry={"max": 0}))
    wait_for(lambda: (cluster.store / cluster.namespace / "holder" / "block" / "out.runs").exists(), "the blocker")
    cluster.apply(cluster.run("early", pipeline="early", site=PILOT_SITE, inputs={}, retry={"max": 0}))
    wait_for(lambda: len(cluster.jobs("early")) == 3, "the early Run's Jobs")
    cluster.apply(cluster.run("late", pipeline="late", site=PILOT_SITE, inputs={}, retry={"max": 0}))
    wait_for(lambda: len(cluster.jobs("late")) == 3, "the late Run's Jobs")

    cluster.sgs("run", "priority", "late", "500", "--namespace", cluster.namespace)

    def annotated() -> bool:
        pods = cluster.pods("late")
        return len(pods) == 3 and all(p["metadata"]["annotations"].get("sgs.io/priority") == "500" for p in pods)

    wait_for(annotated, "the late Run's waiting pods to carry priority 500", timeout_s=30)
    wait_for(lambda: "re-ranked: priority 500" in pilot_bridge.log_tail(200_000), "the bridge to re-rank", 30)
    release.write_text("go")
    for run in ("holder", "early", "late"):
        assert cluster.wait_phase(run, {"Succeeded", "Failed"}, timeout_s=180)["phase"] == "Succeeded"
    late = [started_at(cluster, "late", f"l{i}") for i in range(3)]
    early = [started_at(cluster, "early", f"e{i}") for i in range(3)]
    assert max(late) < min(early), (late, early)  # queued after them, started before them
    # Pods made after the change carry the new priority from the start (the operator writes it on every Job).
    assert all(p["metadata"]["annotations"].get("sgs.io/priority") == "0" for p in cluster.pods("early"))


def test_a_pod_that_says_another_priority_is_put_back_by_the_operator(
    pilot_cluster: Cluster, pilot_bridge: BridgeProcess
) -> None:
    """The annotation is the operator's: one edited by hand on a waiting pod is set back to the Run's priority
    at the next reconcile (level-triggered), so a user allowed to patch pods cannot jump the queue for long."""
    cluster = pilot_cluster
    cluster.apply(cluster.site(PILOT_SITE, max_parallel=20))
    cluster.wait_site_phase(PILOT_SITE, {"Ready"}, timeout_s=60)
    release = cluster.store / "release"
    cluster.apply(task_pipeline("holder", {"block": (f"wait-for:{release}", 0.25, None)}))
    cluster.apply(task_pipeline("queued", {"q": ("ok", 0.25, None)}))
    cluster.apply(cluster.run("holder", pipeline="holder", site=PILOT_SITE, inputs={}, retry={"max": 0}))
    wait_for(lambda: (cluster.store / cluster.namespace / "holder" / "block" / "out.runs").exists(), "the blocker")
    cluster.apply(cluster.run("queued", pipeline="queued", site=PILOT_SITE, inputs={}, retry={"max": 0}, priority=3))
    wait_for(lambda: len(cluster.pods("queued")) == 1, "the queued Run's pod")
    pod = cluster.pods("queued")[0]["metadata"]["name"]
    cluster.kubectl("annotate", "pod", pod, "sgs.io/priority=900", "--overwrite")

    def put_back() -> bool:
        return bool(cluster.pods("queued")[0]["metadata"]["annotations"].get("sgs.io/priority") == "3")

    wait_for(put_back, "the operator to put the Run's priority back on the pod", timeout_s=30)
    release.write_text("go")
    assert cluster.wait_phase("queued", {"Succeeded", "Failed"}, timeout_s=120)["phase"] == "Succeeded"

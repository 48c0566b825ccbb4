"""`sgs run priority` reaches the pods a Run already made: the CLI patches the Run, and the operator writes the new
priority on each of the Run's waiting pods (annotation sgs.io/priority; their spec.priority is fixed at creation),
which a bridge in pilot mode ranks by (tests/integration/bridge/test_slurm_pilots.py shows the order it then runs
them in). Here the Site is a pilot bridge on the single-host Slurm, whose one pilot a first task holds."""

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
ONE_PILOT = """
pipelinerunner.pilots.one.CPUcores=1
pipelinerunner.pilots.one.rssInMB=1024
pipelinerunner.pilots.one.walltimeInMin=20
pipelinerunner.pilots.one.maxInstances=1
pipelinerunner.pilots.one.maxQueued=1
pipelinerunner.pilots.policy.idleInSec=30
"""


@pytest.fixture(scope="module")
def pilot_bridge(kube: KubePart, slurm: SlurmPart, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BridgeProcess]:
    workdir = tmp_path_factory.mktemp("pilot-priority")
    settings = workdir / "pilots.properties"
    settings.write_text(ONE_PILOT)
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


def priorities(cluster: Cluster, run: str) -> list[str | None]:
    return [p["metadata"].get("annotations", {}).get("sgs.io/priority") for p in cluster.pods(run)]


def test_a_priority_change_is_written_on_the_runs_waiting_pods_and_kept_there(
    pilot_cluster: Cluster, pilot_bridge: BridgeProcess
) -> None:
    cluster = pilot_cluster
    cluster.apply(cluster.site(PILOT_SITE, max_parallel=20))
    cluster.wait_site_phase(PILOT_SITE, {"Ready"}, timeout_s=60)
    release = cluster.store / "release"
    cluster.apply(task_pipeline("holder", {"block": (f"wait-for:{release}", 0.25, None)}))
    cluster.apply(task_pipeline("early", {f"e{i}": ("ok", 0.25, None) for i in range(3)}))
    cluster.apply(task_pipeline("late", {f"l{i}": ("ok", 0.25, None) for i in range(3)}))
    cluster.apply(cluster.run("holder", pipeline="holder", site=PILOT_SITE, inputs={}, retry={"max": 0}))
    wait_for(lambda: (cluster.store / cluster.namespace / "holder" / "block" / "out.runs").exists(), "the blocker")
    cluster.apply(cluster.run("early", pipeline="early", site=PILOT_SITE, inputs={}, retry={"max": 0}))
    cluster.apply(cluster.run("late", pipeline="late", site=PILOT_SITE, inputs={}, retry={"max": 0}))
    wait_for(lambda: len(cluster.pods("early")) == len(cluster.pods("late")) == 3, "both Runs' pods")
    assert priorities(cluster, "late") == ["0", "0", "0"]  # written when the Job is made

    cluster.sgs("run", "priority", "late", "500", "--namespace", cluster.namespace)
    wait_for(lambda: priorities(cluster, "late") == ["500"] * 3, "the late Run's waiting pods to say 500", 30)
    assert priorities(cluster, "early") == ["0", "0", "0"]  # another Run's pods are not touched

    # The annotation is the operator's: one edited by hand on a waiting pod is put back at the next reconcile
    # (level-triggered), so whoever may patch pods cannot jump the queue for long.
    edited = cluster.pods("early")[0]["metadata"]["name"]
    cluster.kubectl("annotate", "pod", edited, "sgs.io/priority=900", "--overwrite")
    wait_for(lambda: priorities(cluster, "early") == ["0", "0", "0"], "the operator to put 0 back on the pod", 30)

    release.write_text("go")
    for run in ("holder", "early", "late"):
        assert cluster.wait_phase(run, {"Succeeded", "Failed"}, timeout_s=180)["phase"] == "Succeeded"

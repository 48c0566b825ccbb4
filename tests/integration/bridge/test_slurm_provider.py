"""The Slurm provider against the real API server and a real Slurm: sbatch options as Slurm records them,
logs through kubectl, OOM and pending reasons surfaced, deletion cancels, a killed bridge re-adopts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bridge_kit import (
    SLURM_SITE,
    Cluster,
    annotation,
    job_manifest,
    pod_manifest,
    pod_template,
    terminated,
)
from sgs_bridge.launch import BridgeProcess
from sgs_bridge.quantity import parse_quantity

from sgs.testing import wait_until
from sgs.testing.kube import KubePart
from sgs.testing.slurm import SlurmPart

pytest_plugins = ["bridge_kit"]  # the bridge fixtures (a conftest here would clash with mypy)
pytestmark = pytest.mark.integration


def slurm_job(slurm: SlurmPart, job_id: str) -> dict[str, str]:
    """`scontrol show job -o` as a dict."""
    line = slurm.run("scontrol", "show", "job", "-o", job_id).stdout.strip()
    return dict(field.split("=", 1) for field in line.split() if "=" in field)


def jobs_with_comment(slurm: SlurmPart, uid: str) -> list[str]:
    out = slurm.run("squeue", "-h", "--states=all", "-o", "%i|%k").stdout
    return [line.split("|")[0] for line in out.splitlines() if line.split("|")[-1] == f"sgs-pod:{uid}"]


def job_id_of(cluster: Cluster, name: str) -> str:
    wait_until(lambda: bool(annotation(cluster.pod(name), "sgs.io/job-id")), what=f"{name}'s job id", timeout_s=60)
    return annotation(cluster.pod(name), "sgs.io/job-id")


def test_node_capacity_comes_from_slurm(kube: KubePart, slurm: SlurmPart, slurm_bridge: BridgeProcess) -> None:
    node = json.loads(kube.kubectl("get", "node", slurm_bridge.node_name, "-o", "json").stdout)
    capacity = node["status"]["capacity"]
    assert capacity["cpu"] == str(slurm.cpus)
    assert capacity["nvidia.com/gpu"] == "2"
    assert parse_quantity(capacity["memory"]) == slurm.memory_mb * 2**20
    assert node["spec"]["taints"][0]["value"] == "slurm"


def test_job_runs_on_slurm_with_the_exact_sbatch_options(
    cluster: Cluster, slurm: SlurmPart, slurm_bridge: BridgeProcess
) -> None:
    resources = {
        "requests": {"cpu": "2", "memory": "1Gi", "nvidia.com/gpu": "1"},
        "limits": {"memory": "1Gi", "nvidia.com/gpu": "1"},
    }
    script = 'echo "job $SLURM_JOB_ID gpu=$CUDA_VISIBLE_DEVICES tmp=$TMPDIR"; touch "$TMPDIR/x" && echo scratch-ok'
    spec = pod_template(SLURM_SITE, script, resources=resources, deadline_s=600, tmpdir_limit="100Mi")
    cluster.apply(job_manifest("gpu-job", spec))
    name = cluster.job_pod("gpu-job")
    job_id = job_id_of(cluster, name)
    pod = cluster.wait_phase(name, {"Succeeded", "Failed"}, timeout_s=90)
    assert pod["status"]["phase"] == "Succeeded", pod["status"]
    recorded = slurm_job(slurm, job_id)
    uid = pod["metadata"]["uid"]
    assert recorded["NumCPUs"] == "2"
    assert recorded["CPUs/Task"] == "2"
    assert recorded["MinMemoryNode"] == "1G"
    assert recorded["TimeLimit"] == "00:10:00"
    assert recorded["TresPerNode"] == "gres:gpu:1"
    assert recorded["MinTmpDiskNode"] == "100M"
    assert recorded["Partition"] == "gpu"
    assert recorded["Comment"] == f"sgs-pod:{uid}"
    assert recorded["Requeue"] == "0"
    assert recorded["JobName"] == f"{cluster.namespace}.{name}"
    host_tmp = slurm_bridge.workdir / "pods" / uid / "volumes" / "scratch"
    logs = cluster.kubectl("logs", name).splitlines()
    assert logs[0] == f"job {job_id} gpu=0 tmp={host_tmp}" or logs[0] == f"job {job_id} gpu=1 tmp={host_tmp}"
    assert logs[1] == "scratch-ok"
    assert terminated(pod)["exitCode"] == 0
    usage = json.loads(annotation(pod, "sgs.io/usage"))
    assert usage["wall_s"] > 0 and "max_rss_mb" in usage


def test_over_memory_ends_oomkilled_with_the_slurm_reason(
    cluster: Cluster, slurm: SlurmPart, slurm_bridge: BridgeProcess
) -> None:
    script = "python3 -c 'import time; x = bytearray(700 * 2**20); time.sleep(60)'"
    resources = {"requests": {"cpu": "1", "memory": "256Mi"}, "limits": {"memory": "256Mi"}}
    cluster.apply(pod_manifest("hungry", pod_template(SLURM_SITE, script, resources=resources)))
    pod = cluster.wait_phase("hungry", {"Failed", "Succeeded"}, timeout_s=90)
    state = terminated(pod)
    assert state["reason"] == "OOMKilled"
    assert state["exitCode"] == 137
    assert "FAILED Reason=JobLaunchFailure ExitCode=0:9" in state["message"]
    assert "exceeded the limit of 256 MiB" in state["message"]
    described = cluster.kubectl("describe", "pod", "hungry")
    assert "OOMKilled" in described
    assert "JobLaunchFailure" in described


def test_unschedulable_job_shows_the_slurm_pending_reason_and_delete_cancels(
    cluster: Cluster, slurm: SlurmPart, slurm_bridge: BridgeProcess
) -> None:
    both_gpus = {"requests": {"cpu": "100m", "memory": "100Mi", "nvidia.com/gpu": "2"}}
    both_gpus["limits"] = dict(both_gpus["requests"])
    one_gpu = {"requests": {"cpu": "100m", "memory": "100Mi", "nvidia.com/gpu": "1"}}
    one_gpu["limits"] = dict(one_gpu["requests"])
    cluster.apply(pod_manifest("holder", pod_template(SLURM_SITE, "sleep 300", resources=both_gpus)))
    cluster.wait_phase("holder", {"Running"})
    # The Kubernetes scheduler sees 2 GPUs in use on the node, so bind the waiter directly, as a
    # second bridge user (or Slurm's own users) would leave Slurm short of GPUs.
    waiter = pod_template(SLURM_SITE, "echo never", resources=one_gpu)
    waiter["nodeName"] = slurm_bridge.node_name
    cluster.apply(pod_manifest("waiter", waiter))

    def waiting_for_resources() -> bool:
        statuses = cluster.pod("waiter").get("status", {}).get("containerStatuses") or [{}]
        return bool(statuses[0].get("state", {}).get("waiting", {}).get("reason") == "SlurmResources")

    wait_until(waiting_for_resources, what="waiter to show Slurm's Resources reason", timeout_s=60)
    waiter_job = job_id_of(cluster, "waiter")
    assert slurm_job(slurm, waiter_job)["JobState"] == "PENDING"
    described = cluster.kubectl("describe", "pod", "waiter")
    assert "Reason=Resources" in described
    assert "SlurmResources" in cluster.kubectl("get", "pod", "waiter")

    holder_job = job_id_of(cluster, "holder")
    cluster.kubectl("delete", "pod", "holder", "waiter", "--wait=true", "--timeout=60s")
    assert not cluster.pod_exists("holder") and not cluster.pod_exists("waiter")
    for job_id in (holder_job, waiter_job):
        assert slurm_job(slurm, job_id)["JobState"] == "CANCELLED"


def test_killed_bridge_restarts_and_loses_or_duplicates_nothing(
    kube: KubePart, slurm: SlurmPart, cluster: Cluster, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()

    def start_bridge() -> BridgeProcess:
        return BridgeProcess(
            node_name="sgs-bridge-slurm-restart",
            site="bridge-slurm-restart",
            kubeconfig=kube.kubeconfig,
            workdir=tmp_path / "bridge",
            provider="slurm",
            poll_interval_s=0.3,
            env=slurm.env,
        ).start()

    bridge = start_bridge()
    try:
        script = f'echo "run $SLURM_JOB_ID" >> {runs}/$POD; for i in 1 2 3 4 5 6; do echo "$POD $i"; sleep 1; done'
        env = [{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
        cluster.apply(pod_manifest("first", pod_template("bridge-slurm-restart", script, env=env)))
        cluster.wait_phase("first", {"Running"})
        bridge.kill()
        cluster.apply(pod_manifest("second", pod_template("bridge-slurm-restart", script, env=env)))
        bridge = start_bridge()
        for name in ("first", "second"):
            pod = cluster.wait_phase(name, {"Succeeded", "Failed"}, timeout_s=90)
            assert pod["status"]["phase"] == "Succeeded", pod["status"]
            job_id = annotation(pod, "sgs.io/job-id")
            assert jobs_with_comment(slurm, pod["metadata"]["uid"]) == [job_id]
            assert (runs / name).read_text() == f"run {job_id}\n"
            assert cluster.kubectl("logs", name).splitlines() == [f"{name} {i}" for i in range(1, 7)]
    finally:
        bridge.stop()


def test_node_turns_not_ready_when_slurm_is_unreachable(kube: KubePart, tmp_path: Path) -> None:
    broken = tmp_path / "slurm.conf"
    broken.write_text("ClusterName=nowhere\nSlurmctldHost=nowhere(127.0.0.1)\nSlurmctldPort=1\n")
    with BridgeProcess(
        node_name="sgs-bridge-unreachable",
        site="bridge-unreachable",
        kubeconfig=kube.kubeconfig,
        workdir=tmp_path / "bridge",
        provider="slurm",
        env={"SLURM_CONF": str(broken)},
    ):
        node = json.loads(kube.kubectl("get", "node", "sgs-bridge-unreachable", "-o", "json").stdout)
        ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "False"
        assert ready["reason"] == "BackendUnreachable"
        assert "slurm backend unreachable" in ready["message"]
    kube.kubectl("delete", "node", "sgs-bridge-unreachable", check=False)

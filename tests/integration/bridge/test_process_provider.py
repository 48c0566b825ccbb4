"""The process provider against the real API server: a node, Jobs that run as local processes, limits,
deletion, and a bridge killed mid-run."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import psutil
import pytest
from bridge_kit import (
    PROCESS_SITE,
    Cluster,
    annotation,
    job_manifest,
    pod_manifest,
    pod_template,
    terminated,
)
from sgs_bridge.launch import BridgeProcess

from sgs.testing import wait_until
from sgs.testing.kube import KubePart

pytest_plugins = ["bridge_kit"]  # the bridge fixtures (a conftest here would clash with mypy)
pytestmark = pytest.mark.integration
USAGE_KEYS = {"wall_s", "cpu_s", "cpu_percent", "max_rss_mb", "max_vms_mb", "read_mb", "write_mb"}


def test_node_registers_with_labels_taint_capacity_and_lease(kube: KubePart, process_bridge: BridgeProcess) -> None:
    node = json.loads(kube.kubectl("get", "node", process_bridge.node_name, "-o", "json").stdout)
    labels = node["metadata"]["labels"]
    assert labels["sgs.io/site"] == PROCESS_SITE
    assert labels["type"] == "virtual-kubelet"
    assert labels["kubernetes.io/role"] == "agent"
    assert labels["kubernetes.io/hostname"] == process_bridge.node_name
    assert node["spec"]["taints"] == [
        {"key": "virtual-kubelet.io/provider", "value": "process", "effect": "NoSchedule"}
    ]
    assert node["status"]["capacity"]["cpu"] == str(os.cpu_count())
    assert node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"] == process_bridge.port
    ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"]
    assert ready == "True"
    lease = json.loads(
        kube.kubectl("-n", "kube-node-lease", "get", "lease", process_bridge.node_name, "-o", "json").stdout
    )
    assert lease["spec"]["holderIdentity"] == process_bridge.node_name


def test_job_runs_as_a_process_with_env_tmpdir_logs_and_usage(cluster: Cluster, process_bridge: BridgeProcess) -> None:
    script = 'echo "hello $GREETING"; echo "tmp=$TMPDIR"; test -d "$TMPDIR" && echo scratch-ok; pwd; sleep 0.3; exit 3'
    spec = pod_template(PROCESS_SITE, script, env=[{"name": "GREETING", "value": "world"}], deadline_s=120)
    spec["containers"][0]["workingDir"] = "/sgs/tmp"
    cluster.apply(job_manifest("hello", spec))
    name = cluster.job_pod("hello")
    pod = cluster.wait_phase(name, {"Failed", "Succeeded"})
    assert pod["status"]["phase"] == "Failed"
    state = terminated(pod)
    assert (state["exitCode"], state["reason"]) == (3, "Error")
    logs = cluster.kubectl("logs", name).splitlines()
    host_tmp = str(process_bridge.workdir / "pods" / pod["metadata"]["uid"] / "volumes" / "scratch")
    assert logs == ["hello world", f"tmp={host_tmp}", "scratch-ok", host_tmp]
    usage = json.loads(annotation(pod, "sgs.io/usage"))
    assert set(usage) == USAGE_KEYS
    assert usage["wall_s"] >= 0.3
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["startedAt"]


def test_logs_follow_streams_until_the_container_ends(cluster: Cluster, process_bridge: BridgeProcess) -> None:
    script = "for i in 1 2 3 4; do echo tick $i; sleep 0.5; done"
    cluster.apply(pod_manifest("ticker", pod_template(PROCESS_SITE, script)))
    cluster.wait_phase("ticker", {"Running", "Succeeded"})
    followed = cluster.kubectl("logs", "-f", "ticker")
    assert followed.splitlines() == [f"tick {i}" for i in range(1, 5)]
    assert cluster.wait_phase("ticker", {"Succeeded"})["status"]["phase"] == "Succeeded"
    assert cluster.kubectl("logs", "--tail=2", "ticker").splitlines() == ["tick 3", "tick 4"]


def test_over_memory_is_oomkilled(cluster: Cluster, process_bridge: BridgeProcess) -> None:
    script = "python3 -c 'import time; x = bytearray(400 * 2**20); time.sleep(30)'"
    resources = {"requests": {"cpu": "100m", "memory": "100Mi"}, "limits": {"memory": "100Mi"}}
    cluster.apply(pod_manifest("hungry", pod_template(PROCESS_SITE, script, resources=resources)))
    pod = cluster.wait_phase("hungry", {"Failed", "Succeeded"}, timeout_s=60)
    state = terminated(pod)
    assert state["reason"] == "OOMKilled"
    assert "exceeded the limit of 100 MiB" in state["message"]
    assert json.loads(annotation(pod, "sgs.io/usage"))["max_rss_mb"] > 100
    assert "OOMKilled" in cluster.kubectl("describe", "pod", "hungry")


def test_walltime_from_active_deadline_is_enforced(cluster: Cluster, process_bridge: BridgeProcess) -> None:
    cluster.apply(pod_manifest("slow", pod_template(PROCESS_SITE, "sleep 60", deadline_s=2)))
    pod = cluster.wait_phase("slow", {"Failed", "Succeeded"}, timeout_s=40)
    assert terminated(pod)["reason"] == "DeadlineExceeded"
    assert pod["status"]["reason"] == "DeadlineExceeded"


def test_delete_pod_kills_the_process_then_removes_the_pod(cluster: Cluster, process_bridge: BridgeProcess) -> None:
    cluster.apply(pod_manifest("doomed", pod_template(PROCESS_SITE, "echo started; sleep 300")))
    pod = cluster.wait_phase("doomed", {"Running"})
    state = json.loads((process_bridge.workdir / "pods" / pod["metadata"]["uid"] / "state.json").read_text())
    task = psutil.Process(state["pid"])
    cluster.kubectl("delete", "pod", "doomed", "--wait=true", "--timeout=60s")
    assert not cluster.pod_exists("doomed")
    wait_until(lambda: not task.is_running() or task.status() == psutil.STATUS_ZOMBIE, what="task gone", timeout_s=10)


def test_pod_without_command_fails_naming_the_field(cluster: Cluster, process_bridge: BridgeProcess) -> None:
    spec = pod_template(PROCESS_SITE, "true")
    del spec["containers"][0]["command"]
    cluster.apply(pod_manifest("no-command", spec))
    pod = cluster.wait_phase("no-command", {"Failed"}, timeout_s=30)
    assert pod["status"]["reason"] == "InvalidPodSpec"
    assert pod["status"]["message"].startswith("spec.containers[0].command: required")


def test_killed_bridge_restarts_and_loses_or_duplicates_nothing(
    kube: KubePart, cluster: Cluster, tmp_path: Path
) -> None:
    """kill -9 the bridge while a task runs and a second pod arrives; the restarted bridge finishes both,
    each task having run exactly once (each appends one line to a file per run)."""
    runs = tmp_path / "runs"
    runs.mkdir()
    bridge = BridgeProcess(
        node_name="sgs-bridge-restart",
        site="bridge-restart",
        kubeconfig=kube.kubeconfig,
        workdir=tmp_path / "bridge",
        poll_interval_s=0.3,
    ).start()
    try:
        script = f'echo "run of $POD" >> {runs}/$POD; for i in 1 2 3 4 5 6; do echo "$POD $i"; sleep 0.5; done'
        env = [{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
        cluster.apply(pod_manifest("first", pod_template("bridge-restart", script, env=env)))
        cluster.wait_phase("first", {"Running"})
        bridge.kill()
        cluster.apply(pod_manifest("second", pod_template("bridge-restart", script, env=env)))
        bridge = BridgeProcess(
            node_name="sgs-bridge-restart",
            site="bridge-restart",
            kubeconfig=kube.kubeconfig,
            workdir=tmp_path / "bridge",
            poll_interval_s=0.3,
        ).start()
        for name in ("first", "second"):
            pod = cluster.wait_phase(name, {"Succeeded", "Failed"}, timeout_s=60)
            assert pod["status"]["phase"] == "Succeeded", pod["status"]
            assert (runs / name).read_text() == f"run of {name}\n"
            assert cluster.kubectl("logs", name).splitlines() == [f"{name} {i}" for i in range(1, 7)]
    finally:
        bridge.stop()


def _session(sid: int) -> list[psutil.Process]:
    """The live processes of session `sid` (a task runs in a session of its own)."""
    found = []
    for process in psutil.process_iter():
        try:
            if os.getsid(process.pid) == sid and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (ProcessLookupError, psutil.Error):
            continue
    return found


def test_a_killed_agent_fails_its_tasks_clearly_and_kills_what_they_left(
    kube: KubePart, cluster: Cluster, tmp_path: Path
) -> None:
    """kill -9 the node's agent while a task runs: the pod fails once, naming the agent, and the task's process
    (now unwatched) is killed by its identity; the next pod gets a new agent."""
    with BridgeProcess(
        node_name="sgs-agent-loss",
        site="agent-loss",
        kubeconfig=kube.kubeconfig,
        workdir=tmp_path / "bridge",
        poll_interval_s=0.3,
    ) as bridge:
        cluster.apply(pod_manifest("orphaned", pod_template("agent-loss", "echo started; sleep 300")))
        pod = cluster.wait_phase("orphaned", {"Running"})
        state = json.loads((bridge.workdir / "pods" / pod["metadata"]["uid"] / "state.json").read_text())
        task = psutil.Process(state["pid"])
        # The shell may exec `sleep` or fork it (dash and bash differ): count the task's session once sleep runs.
        wait_until(lambda: any(p.name() == "sleep" for p in _session(task.pid)), what="sleep", timeout_s=10)
        leftovers = len(_session(task.pid))
        os.kill(state["runner_pid"], signal.SIGKILL)  # the agent
        pod = cluster.wait_phase("orphaned", {"Failed", "Succeeded"}, timeout_s=60)
        assert pod["status"]["phase"] == "Failed"
        expected = f"the node's agent stopped while the task ran (killed {leftovers} leftover"
        assert expected in terminated(pod)["message"]
        wait_until(lambda: not task.is_running() or task.status() == psutil.STATUS_ZOMBIE, what="task", timeout_s=10)
        cluster.apply(pod_manifest("after", pod_template("agent-loss", "echo fine")))
        assert cluster.wait_phase("after", {"Failed", "Succeeded"}, timeout_s=60)["status"]["phase"] == "Succeeded"

"""Pilot mode of the Slurm provider against the real API server and a real Slurm: payload pods run inside a
pilot job (no sbatch per pod), a pilot scancelled mid-payload fails exactly its running payloads with
PilotLost (and the Job retries them in a new pilot, counted once), a payload bigger than every template is
refused at once, and an agent with a wrong token is refused."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from bridge_kit import Cluster, annotation, pod_manifest, pod_template, terminated
from sgs_bridge.launch import BridgeProcess
from sgs_bridge.providers.pilots import PAYLOAD_FILE

from sgs.testing import wait_until
from sgs.testing.kube import KubePart
from sgs.testing.slurm import SlurmPart

pytest_plugins = ["bridge_kit"]
pytestmark = pytest.mark.integration

PILOT_SITE = "bridge-pilots"
PILOTS = """
pipelinerunner.pilots.small.CPUcores=1
pipelinerunner.pilots.small.rssInMB=1024
pipelinerunner.pilots.small.walltimeInMin=20
pipelinerunner.pilots.small.maxInstances=2
pipelinerunner.pilots.small.maxQueued=1
pipelinerunner.pilots.policy.idleInSec=5
"""
SMALL = {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"memory": "64Mi"}}


def pilot_bridge_at(kube: KubePart, slurm: SlurmPart, workdir: Path, site: str, settings: str) -> BridgeProcess:
    """A bridge in pilot mode for one Site (node ``sgs-<site>``), its pilot settings written under ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "pilots.properties"
    path.write_text(settings)
    return BridgeProcess(
        node_name=f"sgs-{site}",
        site=site,
        kubeconfig=kube.kubeconfig,
        workdir=workdir / "bridge",
        provider="slurm",
        poll_interval_s=0.3,
        extra_args=[f"--pilots={path}"],
        env=slurm.env,
    )


@pytest.fixture(scope="module")
def pilot_bridge(kube: KubePart, slurm: SlurmPart, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BridgeProcess]:
    with pilot_bridge_at(kube, slurm, tmp_path_factory.mktemp("bridge-pilots"), PILOT_SITE, PILOTS) as bridge:
        yield bridge


def slurm_comments(slurm: SlurmPart) -> dict[str, str]:
    """Every job Slurm knows, {job id: comment}."""
    out = slurm.run("squeue", "-h", "--states=all", "-o", "%i|%k").stdout
    return dict(line.split("|", 1) for line in out.splitlines() if "|" in line)


def pilot_of(pod: dict[str, object]) -> str:
    """The Slurm job id of the pilot the pod's status names."""
    status = pod["status"]
    assert isinstance(status, dict)
    text = json.dumps(status)
    found = re.search(r"ran on pilot \S+ \(Slurm job (\d+), template small\)|on pilot \S+ \(Slurm job (\d+)", text)
    assert found, status
    return found.group(1) or found.group(2)


def pilot_endpoint(bridge: BridgeProcess) -> tuple[str, int]:
    found = re.search(r"pilot endpoint on ([\d.]+):(\d+)", bridge.log_tail(100_000))
    assert found, bridge.log_tail()
    return found.group(1), int(found.group(2))


def test_payload_pods_run_through_a_pilot_not_one_sbatch_each(
    cluster: Cluster, slurm: SlurmPart, pilot_bridge: BridgeProcess
) -> None:
    script = 'echo "pilot $SLURM_JOB_ID"; echo "tmp $TMPDIR"; touch "$TMPDIR/mine" && ls "$TMPDIR"'
    names = [f"payload-{index}" for index in range(6)]
    for name in names:
        cluster.apply(pod_manifest(name, pod_template(PILOT_SITE, script, resources=SMALL)))
    pods = [cluster.wait_phase(name, {"Succeeded", "Failed"}, timeout_s=120) for name in names]
    comments = slurm_comments(slurm)
    tmpdirs = set()
    for name, pod in zip(names, pods, strict=True):
        assert pod["status"]["phase"] == "Succeeded", pod["status"]
        assert terminated(pod)["reason"] == "Completed"
        pilot_job = pilot_of(pod)
        assert comments[pilot_job].startswith("sgs-pilot:small-"), comments
        logs = cluster.kubectl("logs", name).splitlines()
        assert logs[0] == f"pilot {pilot_job}"  # the payload ran inside the pilot's Slurm job
        assert logs[2] == "mine"  # its TMPDIR held only its own file
        tmpdirs.add(logs[1])
        assert json.loads(annotation(pod, "sgs.io/usage"))["wall_s"] > 0
    assert len(tmpdirs) == len(names)  # each payload its own private TMPDIR
    uids = {pod["metadata"]["uid"] for pod in pods}
    assert not [c for c in comments.values() if c.removeprefix("sgs-pod:") in uids]  # no sbatch per pod
    assert len({c for c in comments.values() if c.startswith("sgs-pilot:")}) <= 2  # maxInstances


def test_a_scancelled_pilot_fails_only_its_running_payloads_as_pilot_lost(
    cluster: Cluster, slurm: SlurmPart, pilot_bridge: BridgeProcess
) -> None:
    runs = pilot_bridge.workdir.parent / "runs"
    runs.mkdir(exist_ok=True)
    # The first attempt sleeps long (its pilot is scancelled under it); the retry (attempt 1) ends at once.
    script = f'echo "$SLURM_JOB_ID" >> {runs}/$POD_UID; [ -e {runs}/retry ] || sleep 120; echo done'
    env = [{"name": "POD_UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}}]
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "lost"},
        "spec": {"backoffLimit": 1, "template": {"spec": pod_template(PILOT_SITE, script, resources=SMALL, env=env)}},
    }
    cluster.apply(job)
    first = cluster.job_pod("lost")
    running = cluster.wait_phase(first, {"Running"}, timeout_s=120)
    pilot_job = pilot_of(running)
    (runs / "retry").touch()
    slurm.run("scancel", pilot_job)
    lost = cluster.wait_phase(first, {"Failed", "Succeeded"}, timeout_s=60)
    state = terminated(lost)
    assert state["reason"] == "PilotLost", lost["status"]
    assert f"Slurm job {pilot_job}" in state["message"]
    assert (runs / lost["metadata"]["uid"]).read_text() == f"{pilot_job}\n"  # ran once, in that pilot

    def job_done() -> bool:
        status = json.loads(cluster.kubectl("get", "job", "lost", "-o", "json"))["status"]
        return bool(status.get("succeeded"))

    wait_until(job_done, what="the Job's retry to succeed in another pilot", timeout_s=120)
    status = json.loads(cluster.kubectl("get", "job", "lost", "-o", "json"))["status"]
    assert (status.get("succeeded"), status.get("failed")) == (1, 1)  # each attempt counted once
    retry = next(p for p in cluster.pods_of_job("lost") if p["metadata"]["name"] != first)
    assert terminated(retry)["reason"] == "Completed"
    assert pilot_of(retry) != pilot_job
    assert (runs / retry["metadata"]["uid"]).read_text() == f"{pilot_of(retry)}\n"


def test_a_payload_bigger_than_every_template_is_refused_with_the_reason(
    cluster: Cluster, slurm: SlurmPart, pilot_bridge: BridgeProcess
) -> None:
    huge = {"requests": {"cpu": "2", "memory": "64Mi"}, "limits": {"memory": "64Mi"}}
    spec = pod_template(PILOT_SITE, "echo never", resources=huge)
    spec["nodeName"] = pilot_bridge.node_name  # the scheduler would fit it on the node: the pilots cannot
    before = set(slurm_comments(slurm))
    cluster.apply(pod_manifest("huge", spec))
    pod = cluster.wait_phase("huge", {"Failed", "Succeeded"}, timeout_s=30)
    assert pod["status"]["phase"] == "Failed"
    assert pod["status"]["reason"] == "NoPilotFits"
    assert "no pilot template fits this payload (2 cores" in pod["status"]["message"]
    assert "small: 1 cores, 1024 MiB, 20 min" in pod["status"]["message"]
    assert "NoPilotFits" in cluster.kubectl("describe", "pod", "huge")
    assert set(slurm_comments(slurm)) == before  # nothing submitted for it


def test_an_agent_with_a_wrong_token_is_refused(
    cluster: Cluster, slurm: SlurmPart, pilot_bridge: BridgeProcess
) -> None:
    host, port = pilot_endpoint(pilot_bridge)
    cluster.apply(pod_manifest("before", pod_template(PILOT_SITE, "sleep 3", resources=SMALL)))
    running = cluster.wait_phase("before", {"Running"}, timeout_s=120)
    found = re.search(r"on pilot (\S+) ", json.dumps(running["status"]))
    assert found, running["status"]
    pilot = found.group(1)
    assert (pilot_bridge.workdir / "pilots" / pilot / "token").stat().st_mode & 0o077 == 0  # only the bridge's user
    for name, token in [(pilot, "not-the-token"), ("nobody", "x"), (pilot, "")]:
        with socket.create_connection((host, port), timeout=10) as connection:
            hello = {"op": "hello", "pilot": name, "token": token, "job_id": "1"}
            connection.sendall(json.dumps(hello).encode() + b"\n")
            reply = json.loads(connection.makefile("rb").readline())
        assert reply["ok"] is False
        assert "refused" in reply["error"] and "wrong token" in reply["error"]
    assert "refused a pilot agent" in pilot_bridge.log_tail(100_000)
    # The bridge still serves real pilots after the strangers.
    cluster.apply(pod_manifest("after", pod_template(PILOT_SITE, "echo fine", resources=SMALL)))
    pod = cluster.wait_phase("after", {"Succeeded", "Failed"}, timeout_s=120)
    assert pod["status"]["phase"] == "Succeeded", pod["status"]
    assert cluster.kubectl("logs", "after").strip() == "fine"


def test_a_bridge_killed_while_a_pilot_runs_loses_and_repeats_nothing(
    kube: KubePart, slurm: SlurmPart, cluster: Cluster, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()

    def start_bridge() -> BridgeProcess:
        return pilot_bridge_at(kube, slurm, tmp_path, "bridge-pilots-restart", PILOTS).start()

    script = f'echo "$SLURM_JOB_ID" >> {runs}/$POD; for i in 1 2 3 4 5; do echo "$POD $i"; sleep 1; done'
    env = [{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
    spec = pod_template("bridge-pilots-restart", script, resources=SMALL, env=env)
    bridge = start_bridge()
    try:
        cluster.apply(pod_manifest("first", spec))
        first_pilot = pilot_of(cluster.wait_phase("first", {"Running"}, timeout_s=120))
        bridge.kill()  # its pilot's agent sees the connection close: it finishes "first" and drains
        cluster.apply(pod_manifest("second", spec))
        bridge = start_bridge()
        for name in ("first", "second"):
            pod = cluster.wait_phase(name, {"Succeeded", "Failed"}, timeout_s=120)
            assert pod["status"]["phase"] == "Succeeded", pod["status"]
            assert cluster.kubectl("logs", name).splitlines() == [f"{name} {i}" for i in range(1, 6)]
            assert (runs / name).read_text() == f"{pilot_of(pod)}\n"  # ran once, in the pilot the status names
        assert pilot_of(cluster.pod("first")) == first_pilot
        slurm_state = slurm.run("scontrol", "show", "job", "-o", first_pilot).stdout
        wait_until(
            lambda: "JobState=COMPLETED" in slurm.run("scontrol", "show", "job", "-o", first_pilot).stdout,
            what=f"the old bridge's pilot {first_pilot} to drain and end ({slurm_state[:200]})",
            timeout_s=60,
        )
    finally:
        bridge.stop()


def test_a_payload_is_held_to_its_own_memory_and_walltime_inside_the_pilot(
    cluster: Cluster, slurm: SlurmPart, pilot_bridge: BridgeProcess
) -> None:
    hungry = "python3 -c 'import time; x = bytearray(400 * 2**20); time.sleep(60)'"
    limited = {"requests": {"cpu": "250m", "memory": "128Mi"}, "limits": {"memory": "128Mi"}}
    cluster.apply(pod_manifest("hungry", pod_template(PILOT_SITE, hungry, resources=limited)))
    cluster.apply(pod_manifest("slow", pod_template(PILOT_SITE, "sleep 60", resources=SMALL, deadline_s=3)))
    cluster.apply(pod_manifest("neighbour", pod_template(PILOT_SITE, "sleep 6; echo still-here", resources=SMALL)))
    oom = terminated(cluster.wait_phase("hungry", {"Failed", "Succeeded"}, timeout_s=120))
    assert oom["reason"] == "OOMKilled", oom
    assert "exceeded the limit of 128 MiB" in oom["message"]
    slow = cluster.wait_phase("slow", {"Failed", "Succeeded"}, timeout_s=120)
    assert terminated(slow)["reason"] == "DeadlineExceeded", slow["status"]
    neighbour = cluster.wait_phase("neighbour", {"Failed", "Succeeded"}, timeout_s=120)
    assert neighbour["status"]["phase"] == "Succeeded", neighbour["status"]  # the pilot outlived both
    assert cluster.kubectl("logs", "neighbour").strip() == "still-here"


def test_deleting_a_running_payload_pod_kills_only_that_payload(
    cluster: Cluster, slurm: SlurmPart, pilot_bridge: BridgeProcess
) -> None:
    cluster.apply(pod_manifest("doomed", pod_template(PILOT_SITE, "sleep 300", resources=SMALL)))
    cluster.apply(pod_manifest("survivor", pod_template(PILOT_SITE, "sleep 5; echo survived", resources=SMALL)))
    doomed = cluster.wait_phase("doomed", {"Running"}, timeout_s=120)
    pilot_job = pilot_of(doomed)
    uid = doomed["metadata"]["uid"]
    state = json.loads((pilot_bridge.workdir / "pods" / uid / "state.json").read_text())
    cluster.kubectl("delete", "pod", "doomed", "--wait=true", "--timeout=60s")
    assert not cluster.pod_exists("doomed")
    wait_until(
        lambda: not Path(f"/proc/{state['pid']}").exists(), what="the deleted payload's process to end", timeout_s=30
    )
    assert "JobState=RUNNING" in slurm.run("scontrol", "show", "job", "-o", pilot_job).stdout  # the pilot lives on
    survivor = cluster.wait_phase("survivor", {"Failed", "Succeeded"}, timeout_s=120)
    assert survivor["status"]["phase"] == "Succeeded", survivor["status"]
    assert cluster.kubectl("logs", "survivor").strip() == "survived"


def test_a_template_slurm_refuses_shows_why_on_the_waiting_pod(
    kube: KubePart, slurm: SlurmPart, cluster: Cluster, tmp_path: Path
) -> None:
    refusing = PILOTS + "pipelinerunner.pilots.small.partition=nowhere\n"
    with pilot_bridge_at(kube, slurm, tmp_path, "bridge-pilots-refused", refusing) as bridge:
        cluster.apply(pod_manifest("stuck", pod_template("bridge-pilots-refused", "echo never", resources=SMALL)))

        def waiting_reason() -> str:
            statuses = cluster.pod("stuck").get("status", {}).get("containerStatuses") or [{}]
            waiting = statuses[0].get("state", {}).get("waiting", {})
            return f"{waiting.get('reason')}: {waiting.get('message', '')}"

        wait_until(lambda: "submitting one failed" in waiting_reason(), what="the pod to say why", timeout_s=60)
        reason = waiting_reason()
        assert reason.startswith("PilotPending: waiting for a pilot; submitting one failed: small: ")
        assert "invalid partition" in reason.lower(), reason
        assert cluster.phase("stuck") == "Pending"
        # One sbatch per template per PILOT_RETRY_S (30 s), not one per pass.
        assert bridge.log_tail(100_000).count("sbatch of a small pilot failed") == 1


def test_a_pilot_is_recycled_before_its_walltime_ends(
    kube: KubePart, slurm: SlurmPart, cluster: Cluster, tmp_path: Path
) -> None:
    short = PILOTS.replace("walltimeInMin=20", "walltimeInMin=2").replace("idleInSec=5", "idleInSec=600")
    site = "bridge-pilots-recycle"
    with pilot_bridge_at(
        kube, slurm, tmp_path, site, short + "pipelinerunner.pilots.policy.marginInSec=60\n"
    ) as bridge:
        cluster.apply(pod_manifest("early", pod_template(site, "echo early", resources=SMALL, deadline_s=10)))
        early = cluster.wait_phase("early", {"Succeeded", "Failed"}, timeout_s=120)
        assert early["status"]["phase"] == "Succeeded", early["status"]
        first = pilot_of(early)
        # 2 min of walltime, 60 s of margin: drained (not idle: idleInSec is 600) within about a minute.
        wait_until(
            lambda: "draining (walltime nearly over)" in bridge.log_tail(100_000), what="the drain", timeout_s=100
        )
        wait_until(
            lambda: "JobState=COMPLETED" in slurm.run("scontrol", "show", "job", "-o", first).stdout,
            what=f"pilot {first} to end on its own, before Slurm's walltime",
            timeout_s=30,
        )
        cluster.apply(pod_manifest("late", pod_template(site, "echo late", resources=SMALL, deadline_s=10)))
        late = cluster.wait_phase("late", {"Succeeded", "Failed"}, timeout_s=120)
        assert late["status"]["phase"] == "Succeeded", late["status"]
        assert pilot_of(late) != first  # a fresh pilot took it


def test_a_waiting_payload_is_re_ranked_by_the_priority_the_operator_writes_on_its_pod(
    cluster: Cluster, kube: KubePart, slurm: SlurmPart, tmp_path: Path
) -> None:
    """One pilot with room (memory) for one payload at a time, held by a first pod; four pods wait in the bridge.
    Two get the operator's sgs.io/priority annotation (what `sgs run priority` makes it write): they start first,
    the higher one before the other, then the rest in their waiting order."""
    one_pilot = PILOTS.replace("rssInMB=1024", "rssInMB=400").replace("maxInstances=2", "maxInstances=1")
    site = "bridge-pilots-rerank"
    runs = tmp_path / "runs"
    runs.mkdir()
    with pilot_bridge_at(kube, slurm, tmp_path, site, one_pilot) as bridge:
        one_at_a_time = {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "256Mi"}}
        hold = f"while [ ! -e {runs}/release ]; do sleep 0.1; done"
        cluster.apply(pod_manifest("hold", pod_template(site, hold, resources=one_at_a_time)))
        cluster.wait_phase("hold", {"Running"}, timeout_s=120)
        waiting = ["w0", "w1", "w2", "w3"]
        for name in waiting:
            script = f"date +%s.%N > {runs}/{name}"
            cluster.apply(pod_manifest(name, pod_template(site, script, resources=one_at_a_time)))

        def queued() -> bool:
            pods = [json.loads(cluster.kubectl("get", "pod", name, "-o", "json")) for name in waiting]
            return all((bridge.workdir / "pods" / p["metadata"]["uid"] / PAYLOAD_FILE).exists() for p in pods)

        wait_until(queued, what="the four pods to wait in the bridge", timeout_s=60)
        cluster.kubectl("annotate", "pod", "w3", "sgs.io/priority=500")
        cluster.kubectl("annotate", "pod", "w2", "sgs.io/priority=200")
        wait_until(
            lambda: all(f"re-ranked: priority {n}" in bridge.log_tail(200_000) for n in (500, 200)),
            what="the bridge to re-rank both",
            timeout_s=30,
        )
        (runs / "release").touch()
        for name in waiting:
            assert cluster.wait_phase(name, {"Succeeded", "Failed"}, timeout_s=120)["status"]["phase"] == "Succeeded"
        began = {name: float((runs / name).read_text()) for name in waiting}
        assert sorted(waiting, key=began.__getitem__) == ["w3", "w2", "w0", "w1"], began

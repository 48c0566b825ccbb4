"""The Slurm provider's container mode against the real API server and a real Slurm: the sbatch job runs the
pod's image with crun, with the process provider's bundle (sgs_bridge.container.ContainerMode), image checks,
mounts, limits and exit reporting; an image outside the stores is refused before any sbatch.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from bridge_kit import Cluster, annotation, pod_manifest, pod_template, terminated
from sgs_bridge.launch import BridgeProcess

from sgs.images import default_cache_dir
from sgs.testing import wait_until
from sgs.testing.images import debian_image
from sgs.testing.kube import KubePart
from sgs.testing.slurm import SlurmPart

pytest_plugins = ["bridge_kit"]
pytestmark = pytest.mark.integration
SITE = "site-slurm-crun"


@pytest.fixture(scope="session")
def image_digest() -> str:
    if shutil.which("crun") is None:
        pytest.fail("crun is not installed (tools/ci-setup.sh installs it)")
    return debian_image()[1]


@pytest.fixture(scope="session")
def slurm_crun_bridge(
    kube: KubePart, slurm: SlurmPart, image_digest: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BridgeProcess]:
    bridge = BridgeProcess(
        node_name="sgs-bridge-slurm-crun",
        site=SITE,
        kubeconfig=kube.kubeconfig,
        workdir=tmp_path_factory.mktemp("bridge-slurm-crun"),
        provider="slurm",
        poll_interval_s=0.3,
        extra_args=["--container-runtime=crun", f"--image-store={default_cache_dir()}"],
        env=slurm.env,
    )
    with bridge:
        yield bridge


def _slurm_job(slurm: SlurmPart, job_id: str) -> dict[str, str]:
    line = slurm.run("scontrol", "show", "job", "-o", job_id).stdout.strip()
    return dict(field.split("=", 1) for field in line.split() if "=" in field)


def _processes(command: str) -> list[int]:
    return [p.pid for p in psutil.process_iter(["cmdline"]) if " ".join(p.info["cmdline"] or []) == command]


def test_a_slurm_job_runs_the_pod_in_its_image_with_its_mounts_limits_and_digest(
    cluster: Cluster, slurm: SlurmPart, slurm_crun_bridge: BridgeProcess, image_digest: str, tmp_path: Path
) -> None:
    data = tmp_path / "data"  # the Site's data: a hostPath, read-only
    data.mkdir()
    (data / "in.txt").write_text("input\n")
    out = tmp_path / "out"
    out.mkdir()
    script = (
        'id -u; echo "tmp=$TMPDIR"; echo scratch > "$TMPDIR/s" && cat "$TMPDIR/s"; cat /data/in.txt; '
        "echo product > /out/product.txt; touch /data/x 2>/dev/null || echo data-read-only; "
        "touch /etc/x 2>/dev/null || echo root-read-only; grep -c . /etc/debian_version; "
        'grep CapEff /proc/self/status; grep NoNewPrivs /proc/self/status; echo "slurm=${SLURM_JOB_ID:-none}"; exit 3'
    )
    resources = {"requests": {"cpu": "500m", "memory": "96Mi"}, "limits": {"memory": "96Mi"}}
    spec = pod_template(SITE, script, resources=resources, deadline_s=120)
    spec["containers"][0]["volumeMounts"] += [
        {"name": "data", "mountPath": "/data", "readOnly": True},
        {"name": "out", "mountPath": "/out"},
    ]
    spec["volumes"] += [
        {"name": "data", "hostPath": {"path": str(data), "type": "Directory"}},
        {"name": "out", "hostPath": {"path": str(out), "type": "Directory"}},
    ]
    cluster.apply(pod_manifest("in-image", spec))
    pod = cluster.wait_phase("in-image", {"Failed", "Succeeded"}, timeout_s=120)
    state = terminated(pod)
    assert (pod["status"]["phase"], state["exitCode"], state["reason"]) == ("Failed", 3, "Error"), state
    container = pod["status"]["containerStatuses"][0]
    assert (container["image"], container["imageID"]) == ("debian:bookworm", image_digest)
    job_id = annotation(pod, "sgs.io/job-id")
    job = _slurm_job(slurm, job_id)
    assert (job["Comment"], job["JobState"], job["ExitCode"]) == (f"sgs-pod:{pod['metadata']['uid']}", "FAILED", "3:0")
    assert (job["MinMemoryNode"], job["NumCPUs"]) == ("96M", "1")  # Slurm holds the pod's resources
    assert cluster.kubectl("logs", "in-image").splitlines() == [
        "10001",
        "tmp=/sgs/tmp",
        "scratch",
        "input",
        "data-read-only",
        "root-read-only",
        "1",
        "CapEff:\t0000000000000000",
        "NoNewPrivs:\t1",
        f"slurm={job_id}",  # the job's own variables, under the image's and the pod's
    ]
    assert (out / "product.txt").read_text() == "product\n"
    assert (out / "product.txt").stat().st_uid == 0  # the bridge's (and the job's) user on the host
    task = json.loads((slurm_crun_bridge.workdir / "pods" / pod["metadata"]["uid"] / "task.json").read_text())
    assert task["container"]["cgroups"] is True  # the container's own memory and CPU limits, beside Slurm's
    bundle = json.loads((Path(task["container"]["bundle"]) / "config.json").read_text())
    assert bundle["linux"]["resources"] == {
        "memory": {"limit": 96 * 2**20, "swap": 96 * 2**20},
        "cpu": {"quota": 50000, "period": 100000},
    }


def test_the_container_s_memory_limit_holds_in_the_slurm_job(
    cluster: Cluster, slurm_crun_bridge: BridgeProcess
) -> None:
    script = "python3 -c 'x = bytearray(400 * 2**20); print(len(x))'"
    resources = {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "64Mi"}}
    cluster.apply(pod_manifest("greedy", pod_template(SITE, script, resources=resources)))
    pod = cluster.wait_phase("greedy", {"Failed", "Succeeded"}, timeout_s=90)
    assert pod["status"]["phase"] == "Failed"
    assert terminated(pod)["exitCode"] == 137, terminated(pod)


@pytest.mark.parametrize(
    ("image", "reason"),
    [("debian:sid", "ImageNotFound"), ("../../../etc:passwd", "ImageNotAllowed")],
)
def test_an_image_outside_the_stores_is_refused_at_the_slurm_site_before_sbatch(
    cluster: Cluster, slurm: SlurmPart, slurm_crun_bridge: BridgeProcess, image: str, reason: str
) -> None:
    spec = pod_template(SITE, "echo must not run")
    spec["containers"][0]["image"] = image
    name = f"refused-{reason.lower()}"
    cluster.apply(pod_manifest(name, spec))
    pod = cluster.wait_phase(name, {"Failed", "Succeeded"}, timeout_s=60)
    assert (pod["status"]["phase"], pod["status"]["reason"]) == ("Failed", reason), json.dumps(pod["status"])
    assert "image" in pod["status"]["message"]
    assert annotation(pod, "sgs.io/job-id") == ""
    listed = slurm.run("squeue", "-h", "--states=all", "-o", "%k").stdout.split()
    assert f"sgs-pod:{pod['metadata']['uid']}" not in listed  # no job was ever submitted


def test_deleting_a_running_pod_cancels_its_job_and_kills_its_container(
    cluster: Cluster, slurm: SlurmPart, slurm_crun_bridge: BridgeProcess
) -> None:
    marker = f"sleep {6000 + abs(hash(cluster.namespace)) % 1000}"  # a command line no other test runs
    cluster.apply(pod_manifest("long", pod_template(SITE, f"echo started; exec {marker}")))
    cluster.wait_phase("long", {"Running"})
    wait_until(lambda: bool(_processes(marker)), what=f"{marker} running in the container", timeout_s=30)
    job_id = annotation(cluster.pod("long"), "sgs.io/job-id")
    cluster.kubectl("delete", "pod", "long", "--wait=false")
    # scancel kills crun, not the container's pid 1 (a pid namespace's init ignores SIGTERM): the runner
    # deletes the container before the job ends.
    wait_until(lambda: not _processes(marker), what=f"{marker} gone after the pod's deletion", timeout_s=60)
    wait_until(lambda: _slurm_job(slurm, job_id)["JobState"] == "CANCELLED", what="the job cancelled", timeout_s=30)

"""The process provider's container mode against the real API server: pods run their image with crun.

The image is the smallest the image cache can hold (sgs.testing.images: the sgs images' Debian rootfs, user
10001), made once per machine; the bridge resolves pods' images only in that cache (`--image-store`).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from bridge_kit import Cluster, pod_manifest, pod_template, terminated
from sgs_bridge.launch import BridgeProcess

from sgs.images import default_cache_dir
from sgs.testing import wait_until
from sgs.testing.images import debian_image
from sgs.testing.kube import KubePart

pytest_plugins = ["bridge_kit"]
pytestmark = pytest.mark.integration
CRUN_SITE = "site-crun"


@pytest.fixture(scope="session")
def image_digest() -> str:
    if shutil.which("crun") is None:
        pytest.fail("crun is not installed (tools/ci-setup.sh installs it)")
    return debian_image()[1]


@pytest.fixture(scope="session")
def crun_bridge(kube: KubePart, image_digest: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BridgeProcess]:
    bridge = BridgeProcess(
        node_name="sgs-bridge-crun",
        site=CRUN_SITE,
        kubeconfig=kube.kubeconfig,
        workdir=tmp_path_factory.mktemp("bridge-crun"),
        poll_interval_s=0.3,
        extra_args=["--container-runtime=crun", f"--image-store={default_cache_dir()}"],
    )
    with bridge:
        yield bridge


def _container(pod: dict[str, object]) -> dict[str, object]:
    return pod["status"]["containerStatuses"][0]  # type: ignore[index, no-any-return]


def test_a_pod_runs_in_its_image_as_its_user_with_its_mounts_and_digest(
    cluster: Cluster, crun_bridge: BridgeProcess, image_digest: str, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "in.txt").write_text("input\n")
    out = tmp_path / "out"
    out.mkdir()
    script = (
        'id -u; echo "tmp=$TMPDIR"; echo scratch > "$TMPDIR/s" && cat "$TMPDIR/s"; cat /data/in.txt; '
        "echo product > /out/product.txt; touch /data/x 2>/dev/null || echo data-read-only; "
        "touch /etc/x 2>/dev/null || echo root-read-only; grep -c . /etc/debian_version; "
        "grep CapEff /proc/self/status; grep NoNewPrivs /proc/self/status; exit 3"
    )
    spec = pod_template(CRUN_SITE, script, deadline_s=120)
    container = spec["containers"][0]
    container["volumeMounts"] += [
        {"name": "data", "mountPath": "/data", "readOnly": True},
        {"name": "out", "mountPath": "/out"},
    ]
    spec["volumes"] += [
        {"name": "data", "hostPath": {"path": str(data), "type": "Directory"}},
        {"name": "out", "hostPath": {"path": str(out), "type": "Directory"}},
    ]
    cluster.apply(pod_manifest("in-image", spec))
    pod = cluster.wait_phase("in-image", {"Failed", "Succeeded"}, timeout_s=180)
    state = terminated(pod)
    assert (pod["status"]["phase"], state["exitCode"], state["reason"]) == ("Failed", 3, "Error")
    assert _container(pod)["imageID"] == image_digest
    assert _container(pod)["image"] == "debian:bookworm"
    logs = cluster.kubectl("logs", "in-image").splitlines()
    assert logs == [
        "10001",
        "tmp=/sgs/tmp",
        "scratch",
        "input",
        "data-read-only",
        "root-read-only",
        "1",
        "CapEff:\t0000000000000000",
        "NoNewPrivs:\t1",
    ]
    assert (out / "product.txt").read_text() == "product\n"
    assert (out / "product.txt").stat().st_uid == 0  # the bridge's own user on the host, as in process mode


def test_the_image_s_entrypoint_and_cmd_run_when_the_pod_names_no_command(
    cluster: Cluster, crun_bridge: BridgeProcess, image_digest: str
) -> None:
    spec = pod_template(CRUN_SITE, "unused")
    del spec["containers"][0]["command"], spec["containers"][0]["args"]
    cluster.apply(pod_manifest("entrypoint", spec))
    pod = cluster.wait_phase("entrypoint", {"Failed", "Succeeded"}, timeout_s=120)
    assert pod["status"]["phase"] == "Succeeded", json.dumps(pod["status"])
    assert cluster.kubectl("logs", "entrypoint").splitlines() == ["hello from the image"]
    assert _container(pod)["imageID"] == image_digest


def test_the_memory_limit_holds_in_the_container(cluster: Cluster, crun_bridge: BridgeProcess) -> None:
    script = "python3 -c 'x = bytearray(400 * 2**20); print(len(x))'"
    resources = {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "64Mi"}}
    cluster.apply(pod_manifest("greedy", pod_template(CRUN_SITE, script, resources=resources)))
    pod = cluster.wait_phase("greedy", {"Failed", "Succeeded"}, timeout_s=120)
    assert pod["status"]["phase"] == "Failed"
    assert terminated(pod)["exitCode"] == 137  # SIGKILL by the kernel (cgroup) or the node's sampler


@pytest.mark.parametrize(
    ("image", "reason"),
    [
        ("debian:sid", "ImageNotFound"),  # no store holds it
        ("ghcr.io/elsewhere/tool:1", "ImageNotFound"),
        ("../../../etc:passwd", "ImageNotAllowed"),  # a path, not a reference
        ("debian:bookworm/../../x", "ImageNotAllowed"),
    ],
)
def test_images_outside_the_stores_are_refused(
    cluster: Cluster, crun_bridge: BridgeProcess, image: str, reason: str
) -> None:
    spec = pod_template(CRUN_SITE, "echo must not run")
    spec["containers"][0]["image"] = image
    name = f"refused-{reason.lower()}-{abs(hash(image)) % 10_000}"
    cluster.apply(pod_manifest(name, spec))
    pod = cluster.wait_phase(name, {"Failed", "Succeeded"}, timeout_s=60)
    assert pod["status"]["phase"] == "Failed"
    assert pod["status"]["reason"] == reason, json.dumps(pod["status"])
    assert "image" in pod["status"]["message"]


def test_deleting_a_running_pod_kills_its_container(cluster: Cluster, crun_bridge: BridgeProcess) -> None:
    marker = f"sleep {4000 + abs(hash(cluster.namespace)) % 1000}"  # a command line no other test runs
    cluster.apply(pod_manifest("long", pod_template(CRUN_SITE, f"echo started; exec {marker}")))
    cluster.wait_phase("long", {"Running"})
    wait_until(lambda: bool(_processes(marker)), what=f"{marker} running in the container", timeout_s=30)
    cluster.kubectl("delete", "pod", "long", "--wait=false")
    # crun killed by the node leaves its container's processes behind unless the node deletes the container too.
    wait_until(lambda: not _processes(marker), what=f"{marker} gone after the pod's deletion", timeout_s=60)


def _processes(command: str) -> list[int]:
    return [p.pid for p in psutil.process_iter(["cmdline"]) if " ".join(p.info["cmdline"] or []) == command]


def test_memory_and_cpu_limits_are_the_container_s_cgroup(cluster: Cluster, crun_bridge: BridgeProcess) -> None:
    marker = f"sleep {5000 + abs(hash(cluster.namespace)) % 1000}"
    resources = {"requests": {"cpu": "500m", "memory": "96Mi"}, "limits": {"memory": "96Mi"}}
    cluster.apply(pod_manifest("limited", pod_template(CRUN_SITE, f"exec {marker}", resources=resources)))
    cluster.wait_phase("limited", {"Running"})
    wait_until(lambda: bool(_processes(marker)), what=f"{marker} running in the container", timeout_s=30)
    lines = Path(f"/proc/{_processes(marker)[0]}/cgroup").read_text().split()
    groups = {controller: path.lstrip("/") for _, controller, path in (line.split(":", 2) for line in lines)}
    if "memory" in groups:  # cgroup v1 (this machine: hybrid, crun uses the v1 hierarchies)
        memory = Path("/sys/fs/cgroup/memory", groups["memory"])
        cpu = Path("/sys/fs/cgroup/cpu", next(v for k, v in groups.items() if "cpu" in k.split(",")))
        assert int((memory / "memory.limit_in_bytes").read_text()) == 96 * 2**20
        quota = (int((cpu / "cpu.cfs_quota_us").read_text()), int((cpu / "cpu.cfs_period_us").read_text()))
        assert quota == (50000, 100000)
    else:  # cgroup v2
        unified = Path("/sys/fs/cgroup", groups[""])
        assert int((unified / "memory.max").read_text()) == 96 * 2**20
        assert (unified / "cpu.max").read_text().split() == ["50000", "100000"]
    cluster.kubectl("delete", "pod", "limited", "--wait=false")
    wait_until(lambda: not _processes(marker), what=f"{marker} gone", timeout_s=60)

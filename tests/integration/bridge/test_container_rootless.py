"""Container mode without root, as an ordinary user's Slurm job runs it: the Slurm provider's own preparation
(image resolved and unpacked, bundle, task.json, job.sh) and then the job script, both as uid 10001 (switched to
with setpriv when the tests run as root; as the tests' own user otherwise). sbatch is left out: the real-Slurm
tests (test_slurm_container_mode) submit as root, which this machine's Slurm runs jobs as.

The switched user keeps one capability, CAP_DAC_READ_SEARCH (read and search any file: the tests' interpreter
lives under /root, mode 700, where uid 10001 could not even start it); it grants no chown, mount or namespace
right, which is what running without root takes away from umoci and crun.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sgs.testing.images import debian_image

pytestmark = pytest.mark.integration
USER = 10001
PREPARE_AND_RUN = """
import json, subprocess, sys
from pathlib import Path
from sgs_bridge.podspec import task_from_pod
from sgs_bridge.providers.slurm import SlurmProvider

root, store, pod = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3])
provider = SlurmProvider(root / "pods", container_runtime="crun", image_stores=[store])
spec = task_from_pod(pod, root / "pods", container_runtime=True)
provider._prepare(spec)
job = subprocess.run(["bash", str(spec.pod_dir / "job.sh")], cwd=spec.working_dir, check=False)
print(json.dumps({"rc": job.returncode, "pod_dir": str(spec.pod_dir)}))
"""


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory the other user can use (pytest's are root's, mode 700)."""
    path = Path(tempfile.mkdtemp(prefix="sgs-rootless-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _as_user(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    caps = ["--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]
    return ["setpriv", f"--reuid={USER}", f"--regid={USER}", "--clear-groups", *caps, *argv]


def test_a_pod_runs_in_its_image_without_root(shared_dir: Path) -> None:
    layout = debian_image()[0]
    store = shared_dir / "store"
    shutil.copytree(layout, store / "debian" / "copy" / "oci")
    for path in [store, *store.rglob("*")]:  # readable by the other user (the cache is root's, mode 700)
        path.chmod(0o755 if path.is_dir() else 0o644)
    out = shared_dir / "out"
    work = shared_dir / "bridge"
    for path in (out, work):
        path.mkdir()
    if os.geteuid() == 0:
        for path in (out, work):
            os.chown(path, USER, USER)
    script = (
        'id -u; echo scratch > "$TMPDIR/s" && cat "$TMPDIR/s"; echo product > /out/product.txt; '
        "touch /etc/x 2>/dev/null || echo root-read-only; grep CapEff /proc/self/status; exit 3"
    )
    pod = {
        "metadata": {"name": "rootless", "namespace": "default", "uid": "0b0e7a55-0000-4000-8000-000000000001"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "main",
                    "image": "debian:bookworm",
                    "command": ["sh", "-c", script],
                    "env": [{"name": "TMPDIR", "value": "/sgs/tmp"}],
                    "volumeMounts": [
                        {"name": "scratch", "mountPath": "/sgs/tmp"},
                        {"name": "out", "mountPath": "/out"},
                    ],
                    "resources": {"limits": {"memory": "128Mi"}},
                }
            ],
            "volumes": [
                {"name": "scratch", "emptyDir": {}},
                {"name": "out", "hostPath": {"path": str(out), "type": "Directory"}},
            ],
        },
    }
    argv = [sys.executable, "-c", PREPARE_AND_RUN, str(work), str(store), json.dumps(pod)]
    done = subprocess.run(_as_user(argv), capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    pod_dir = Path(result["pod_dir"])
    log = (pod_dir / "main.log").read_text().splitlines()
    assert (result["rc"], log) == (3, ["10001", "scratch", "root-read-only", "CapEff:\t0000000000000000"]), done.stderr
    outcome = json.loads((pod_dir / "outcome.json").read_text())
    assert outcome["exit_code"] == 3
    expected_owner = USER if os.geteuid() == 0 else os.geteuid()
    assert (out / "product.txt").stat().st_uid == expected_owner  # the user on the host, not a subordinate id
    task = json.loads((pod_dir / "task.json").read_text())
    assert task["argv"][:3] == ["unshare", "--user", "--map-root-user"]
    assert task["container"]["cgroups"] is False  # no cgroup of its own without root: the node's limits hold

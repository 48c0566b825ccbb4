"""The README's cluster tour end to end: `examples/tour.sh` on a dev stack of its own (a fresh SGS_CACHE, the
real PostgreSQL, NATS, MinIO, control plane, archive, transfer service, operator and bridge nodes), the example
Run succeeding on site-a and the example DataPlacement planned."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sgs.testing.binaries import cache_root

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TOUR = ROOT / "examples" / "tour.sh"
RUN_DIR = Path("/tmp/sgs-dev/site-a/default/parallel-split-001")  # crds/examples/: site-a's store, namespace default
# Slurm, Prometheus and Jaeger play no part in the Run or the DataPlacement: left out to save time.
PARTS = "pg,nats,minio,kube,archive,transfer,sgs"


def tour_env(cache: Path) -> dict[str, str]:
    cache.mkdir()
    (cache / "bin").symlink_to(cache_root() / "bin")  # the Go binaries already built; state of its own
    env = {**os.environ, "SGS_CACHE": str(cache), "SGS_DEV_PARTS": PARTS}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.pop("KUBECONFIG", None)  # the tour's own cluster, from `sgs dev env`
    return env


def test_the_tour_script_runs_the_example_run_to_succeeded(tmp_path: Path) -> None:
    env = tour_env(tmp_path / "cache")
    started = time.time()
    try:
        tour = subprocess.run(["bash", str(TOUR)], env=env, capture_output=True, text=True, timeout=900, check=False)
    finally:  # a failed tour leaves the stack up on purpose (to look at it): not here
        subprocess.run([sys.executable, "-m", "sgs.cli.main", "dev", "down"], env=env, capture_output=True, check=False)
    wall_s = time.time() - started

    assert tour.returncode == 0, tour.stdout[-6000:] + tour.stderr[-6000:]
    print(f"tour wall time: {wall_s:.1f} s")
    assert "run parallel-split-001: priority 50" in tour.stdout
    assert "run.sgs.io/parallel-split-001 condition met" in tour.stdout
    rows = [line.split() for line in tour.stdout.splitlines() if line.startswith("run.sgs.io/parallel-split-001 ")]
    row = next(r for r in rows if len(r) >= 5)  # `kubectl get runs,sites`, not `kubectl apply` or `kubectl wait`
    assert row[1:5] == ["parallel-split", "site-a", "Succeeded", "10/10"], row
    placements = [line.split() for line in tour.stdout.splitlines() if line.startswith("dataplacement.sgs.io/")]
    placement = placements[-1]  # `kubectl get`'s row comes after `kubectl apply`'s "created"
    assert placement[0] == "dataplacement.sgs.io/wide-2027q1" and "Planned" in placement, placement
    combined = RUN_DIR / "ialtest_combine_images" / "combined.json"
    assert combined.stat().st_mtime >= started  # written by this Run, not left from an earlier one
    assert json.loads(combined.read_text())
    state = json.loads((tmp_path / "cache" / "dev" / "state.json").read_text())
    assert state["units"] == {}  # the tour's last command stopped everything

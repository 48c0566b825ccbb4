"""Stage-in: bytes staged against the minimum possible, for a 3-Site layout where a Run's inputs are split
unevenly (45 / 35 / 20 % of the bytes over site-a, site-b, site-c). Target: equal (ratio 1.00).

The minimum is what the best choice of Site would have had to copy: the bytes missing at the Site missing the
fewest. Staged is what the transfer service actually copied for the Run (its DONE transfers' bytes). The whole
stack runs, as in ``tests/integration/operator/test_stage_in.py`` (whose 3-Site test this runs): kube-apiserver,
PostgreSQL, NATS, the archive, the transfer service with its worker, the operator (choosing the Site from the
archive's replicas, then making one stage-in rule) and the bridge running the task on the copies.

    .venv/bin/python bench/stage_in.py [--unit 1000]   # bytes per percent of the split (1000: 100 kB in all)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEST = "tests/integration/operator/test_stage_in.py::test_a_run_without_a_site_stages_in_only_what_the_best_site_lacks"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unit", type=int, default=1000, help="bytes per percent of the split")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sgs-bench-stage-in-") as work:
        out = Path(work) / "figure.json"
        env = {**os.environ, "SGS_BENCH_STAGE_IN_OUT": str(out), "SGS_BENCH_STAGE_IN_UNIT": str(args.unit)}
        argv = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", f"--basetemp={work}/pt", TEST]
        done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True)
        if done.returncode != 0 or not out.exists():
            print(done.stdout[-4000:], done.stderr[-2000:], file=sys.stderr)
            return 1
        figure = json.loads(out.read_text())
    staged, minimum, total = figure["staged"], figure["minimum"], figure["total"]
    split = ", ".join(f"{site} {share} %" for site, share in figure["split"].items())
    print(f"inputs: {figure['datasets']} datasets, {total:,} bytes split {split}")
    print(f"staged: {staged:,} bytes in {figure['copies']} copies; minimum possible: {minimum:,} bytes")
    print(
        f"ratio staged / minimum: {staged / minimum:.2f} (target 1.00); Run created → Succeeded {figure['run_s']:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

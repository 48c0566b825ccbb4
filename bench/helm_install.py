"""The chart's figures: `helm template` time, and `helm install` → the operator pod Ready → the operator leading.

`helm template` is timed here (median of --rounds, HA values). The install figures come from the integration
test that does it on the real control plane (tests/integration/deploy/test_helm_install.py: its parts, bridge
node and Run are the test's fixtures), run with -s and its printed line read back. Each figure is printed with
its ratio to the target (README): template < 1 s, install → Ready < 30 s, → leading < 60 s.

    .venv/bin/python bench/helm_install.py [--rounds 5] [--no-install]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration" / "deploy"))
from chart_kit import CHART, template_text  # noqa: E402

TEMPLATE_TARGET_S = 1.0
READY_TARGET_S = 30.0
LEADING_TARGET_S = 60.0
INSTALL_LINE = re.compile(r"install → operator pod Ready ([0-9.]+) s; → operator leading ([0-9.]+) s")
RUN_LINE = re.compile(r"Succeeded by the chart's operator in ([0-9.]+) s")


def template_seconds(rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        template_text(CHART / "ci" / "ha-values.yaml")
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def install_figures() -> tuple[float, float, float]:
    test = REPO / "tests" / "integration" / "deploy" / "test_helm_install.py"
    argv = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", f"{test}::"]
    argv[-1] += "test_helm_install_runs_the_operator_which_reconciles_a_run"
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
    found, ran = INSTALL_LINE.search(done.stdout), RUN_LINE.search(done.stdout)
    if done.returncode != 0 or found is None or ran is None:
        raise SystemExit(f"the install test failed ({done.returncode}):\n{done.stdout[-4000:]}")
    return float(found.group(1)), float(found.group(2)), float(ran.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-install", action="store_true", help="only time helm template")
    args = parser.parse_args()
    each = template_seconds(args.rounds)
    print(
        f"helm template (ha values): {each * 1000:.0f} ms, median of {args.rounds}"
        f" = {each / TEMPLATE_TARGET_S:.2f} of the target"
    )
    if not args.no_install:
        ready, leading, run = install_figures()
        print(f"helm install → operator pod Ready: {ready:.1f} s = {ready / READY_TARGET_S:.2f} of the target")
        print(f"helm install → operator leading: {leading:.1f} s = {leading / LEADING_TARGET_S:.2f} of the target")
        print(f"then the example Run Succeeded in {run:.1f} s")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()

"""Size of a Run's status for a 100k-task Run, as the operator writes it to etcd (target < 64 KiB).

A 100,002-task Run (split → 100k-wide map → combine) is driven through the operator's planner to a bad
moment for size: thousands of tasks running, retrying and failed with long messages, most succeeded. The
status is built by the operator's own ``run_status`` and serialised as the merge patch it sends; the figure is
that patch's size in bytes, next to the whole Run object (spec + status).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from sgs_operator.status import run_status, status_patch, utc_now

from sgs.model.pipeline import RetryPolicy
from sgs.planner import Planner, PlannerConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plan_100k import wide_pipeline

TARGET_BYTES = 64 * 1024
LONG_MESSAGE = "Error: exit code 1: " + "traceback line that goes on and on " * 40


def drive(width: int, failed: int, running: int) -> Planner:
    """Succeed most tasks, fail ``failed`` for good (retries off), leave ``running`` in flight."""
    planner = Planner(
        wide_pipeline(1), "bench-run", {"data": "/data/input.json"}, PlannerConfig(retry=RetryPolicy(max=0))
    )
    split = planner.take(0.0, None, limit=1)[0]
    planner.succeed(split.id, {"y": "/out/split/y.json"}, {"y": [f"/out/item-{i}" for i in range(width)]})
    done = 0
    now = 1.0
    while True:
        batch = planner.take(now, None, limit=5000)
        if not batch:
            break
        for task in batch:
            if task.id == "combine":
                planner.requeue(task.id)
                continue
            if done < failed:
                planner.fail(task.id, now, LONG_MESSAGE)
            elif done < width - running:
                planner.succeed(task.id, {"y": f"/out/{task.id}/y"})
            done += 1
        now += 1.0
        if done >= width:
            break
    return planner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--width", type=int, default=100_000)
    parser.add_argument("--failed", type=int, default=5_000)
    parser.add_argument("--running", type=int, default=2_000)
    args = parser.parse_args()
    start = time.perf_counter()
    planner = drive(args.width, args.failed, args.running)
    status = run_status(
        planner,
        suspended=False,
        site="sdc-fr",
        start_time=utc_now(),
        completion_time=None,
        task_table="postgresql://archive.sdc-fr.example.org:5432/sgs#sgs_task?run_uid=0f8c2a7e-3d1b-4c55-9a0e-6b7d2c1e9f00",
        generation=3,
    )
    patch = json.dumps(status_patch(status), separators=(",", ":")).encode()
    elapsed = time.perf_counter() - start
    counts = status.tasks
    print(
        f"Run of {counts.total:,} tasks: {counts.succeeded:,} succeeded, {counts.failed:,} failed, "
        f"{counts.running:,} running, {counts.skipped:,} skipped, {counts.waiting:,} waiting"
    )
    print(f"failedTasks listed: {len(status.failed_tasks)} (bounded)")
    print(
        f"status: {len(patch):,} bytes = {len(patch) / 1024:.2f} KiB; target < {TARGET_BYTES // 1024} KiB; "
        f"ratio to target {len(patch) / TARGET_BYTES:.3f} ({'OK' if len(patch) < TARGET_BYTES else 'OVER'})"
    )
    print(f"(built in {elapsed:.2f} s)")


if __name__ == "__main__":
    main()

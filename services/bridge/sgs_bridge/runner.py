"""`python -m sgs_bridge.runner POD_DIR`: run one pod's task and leave its outcome on disk.

The bridge may die and restart while tasks run, so the task's parent must outlive it and must record what
a restarted bridge needs: `state.json` (pids, start time) once started, `outcome.json` (exit code, reason,
usage) once ended. The runner holds `lock` (inherited from the bridge, which took it before spawning) for
its whole life, so "lock free and no outcome" means the runner is gone. Under Slurm the same runner profiles
the task inside the job (Slurm enforces the limits there), a container's ``crun run`` as any other task.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from sgs.launcher.launcher import Finished, Launcher, LaunchSpec
from sgs.launcher.usage import Outcome
from sgs_bridge.container import add_job_environment, remove_container
from sgs_bridge.files import read_json, write_json_atomically

TASK_FILE = "task.json"
STATE_FILE = "state.json"
OUTCOME_FILE = "outcome.json"
LOCK_FILE = "lock"
INHERIT_ENV_KEY = "inherit_env_prefixes"


def inherited_environment(task: dict[str, Any]) -> dict[str, str]:
    """Under Slurm the job's own variables (SLURM_JOB_ID, CUDA_VISIBLE_DEVICES...) must reach the task."""
    prefixes = tuple(task.get(INHERIT_ENV_KEY) or ())
    return {key: value for key, value in os.environ.items() if prefixes and key.startswith(prefixes)}


def launch_spec(task: dict[str, Any]) -> LaunchSpec:
    """The task a pod's ``task.json`` describes (limits only where the node enforces them, not under Slurm)."""
    enforce = bool(task.get("enforce", True))
    ram = task.get("ram_limit_bytes") if enforce else None
    walltime = task.get("walltime_s") if enforce else None
    inherited = inherited_environment(task)
    return LaunchSpec(
        argv=list(task["argv"]),
        cwd=Path(task["cwd"]),
        env={**inherited, **task["env"]},
        log=Path(task["log"]),
        ram_limit_bytes=int(ram) if ram else None,
        walltime_s=float(walltime) if walltime else None,
    )


def run(pod_dir: Path) -> int:
    task = read_json(pod_dir / TASK_FILE)
    if task is None:
        print(f"runner: no readable {pod_dir / TASK_FILE}", file=sys.stderr)
        return 2
    container = task.get("container")
    launcher: Launcher[str] = Launcher()
    try:
        if isinstance(container, dict) and task.get(INHERIT_ENV_KEY):
            add_job_environment(Path(container["bundle"]), inherited_environment(task))  # into the container too
        child = launcher.start("task", launch_spec(task))
    except OSError as error:
        return record_start_failure(pod_dir, task, error)
    # A stop request kills the task; its exit then wakes the wait below (select retries after a handler).
    signal.signal(signal.SIGTERM, lambda *_: launcher.kill("task", "cancelled (SIGTERM)"))
    signal.signal(signal.SIGINT, lambda *_: launcher.kill("task", "cancelled (SIGINT)"))
    record_start(pod_dir, child.pid, child.started_at, os.getpid(), child.identity.as_dict())
    finished: list[Finished[str]] = []
    while not finished:
        finished = launcher.wait()
    if isinstance(container, dict):
        remove_container(container)  # crun killed (scancel, time limit) leaves its container's processes
    record_outcome(pod_dir, finished[0].outcome)
    return _exit_status(finished[0].outcome.exit_code)


def record_start(pod_dir: Path, pid: int, started_at: float, runner_pid: int, identity: dict[str, Any]) -> None:
    state = {"pid": pid, "runner_pid": runner_pid, "started_at": started_at, "process": identity}
    write_json_atomically(pod_dir / STATE_FILE, state)


def record_outcome(pod_dir: Path, outcome: Outcome) -> dict[str, Any]:
    record = outcome_record(outcome)
    write_json_atomically(pod_dir / OUTCOME_FILE, record)
    return record


def outcome_record(outcome: Outcome) -> dict[str, Any]:
    """What ``outcome.json`` holds: exit code, reason, message, usage, when it ended."""
    return {
        "exit_code": outcome.exit_code,
        "reason": outcome.reason,
        "message": outcome.message,
        "usage": outcome.usage.as_dict(),
        "finished_at": time.time(),
    }


def record_start_failure(pod_dir: Path, task: dict[str, Any], error: OSError) -> int:
    now = time.time()
    write_json_atomically(pod_dir / STATE_FILE, {"pid": 0, "runner_pid": os.getpid(), "started_at": now})
    message = f"cannot start {task['argv'][0]!r}: {error.strerror or error}"
    with Path(task["log"]).open("a") as log:
        log.write(message + "\n")
    write_json_atomically(
        pod_dir / OUTCOME_FILE,
        {"exit_code": 127, "reason": "Error", "message": message, "usage": {}, "finished_at": now},
    )
    return 127


def _exit_status(code: int) -> int:
    return 128 - code if code < 0 else min(code, 255)


def main() -> None:
    if len(sys.argv) != 2:
        print("usage: python -m sgs_bridge.runner POD_DIR", file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(run(Path(sys.argv[1])))


if __name__ == "__main__":
    main()

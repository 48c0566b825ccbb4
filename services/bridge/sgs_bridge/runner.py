"""`python -m sgs_bridge.runner POD_DIR`: run one pod's task and leave its outcome on disk.

The bridge may die and restart while tasks run, so the task's parent must outlive it and must record what
a restarted bridge needs: `state.json` (pids, start time) once started, `outcome.json` (exit code, reason,
usage) once ended. The runner holds `lock` (inherited from the bridge, which took it before spawning) for
its whole life, so "lock free and no outcome" means the runner is gone. Under Slurm the same runner profiles
the task inside the job (Slurm enforces the limits there).
"""

from __future__ import annotations

import importlib.util
import os
import signal
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from sgs_bridge.files import read_json, write_json_atomically

if TYPE_CHECKING:
    from sgs.local.process import Outcome, TaskProcess

TASK_FILE = "task.json"
STATE_FILE = "state.json"
OUTCOME_FILE = "outcome.json"
LOCK_FILE = "lock"
UNLIMITED = float(2**62)


def load_process_module() -> ModuleType:
    """sgs.local.process without the sgs.local package, whose __init__ pulls in the planner (~1 s per pod)."""
    import sgs

    path = Path(sgs.__file__).parent / "local" / "process.py"
    spec = importlib.util.spec_from_file_location("sgs_bridge._task_process", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while building the classes
    spec.loader.exec_module(module)
    return module


def build_task(task: dict[str, Any], module: ModuleType) -> TaskProcess:
    log = Path(task["log"])
    enforce = bool(task.get("enforce", True))
    ram = task.get("ram_limit_bytes") if enforce else None
    walltime = task.get("walltime_s") if enforce else None
    # Under Slurm the job's own variables (SLURM_JOB_ID, CUDA_VISIBLE_DEVICES...) must reach the task.
    prefixes = tuple(task.get("inherit_env_prefixes") or ())
    inherited = {key: value for key, value in os.environ.items() if prefixes and key.startswith(prefixes)}
    process: TaskProcess = module.TaskProcess(
        argv=list(task["argv"]),
        cwd=Path(task["cwd"]),
        env={**inherited, **task["env"]},
        stdout=log,
        stderr=log,
        ram_limit_bytes=int(ram) if ram else int(UNLIMITED),
        walltime_s=float(walltime) if walltime else UNLIMITED,
    )
    return process


def run(pod_dir: Path) -> int:
    task = read_json(pod_dir / TASK_FILE)
    if task is None:
        print(f"runner: no readable {pod_dir / TASK_FILE}", file=sys.stderr)
        return 2
    module = load_process_module()
    process = build_task(task, module)
    stop_requested: list[str] = []
    signal.signal(signal.SIGTERM, lambda *_: stop_requested.append("cancelled (SIGTERM)"))
    signal.signal(signal.SIGINT, lambda *_: stop_requested.append("cancelled (SIGINT)"))
    try:
        process.start()
    except OSError as error:
        return _record_start_failure(pod_dir, task, error)
    write_json_atomically(
        pod_dir / STATE_FILE, {"pid": process.pid, "runner_pid": os.getpid(), "started_at": time.time()}
    )
    outcome = _wait(process, stop_requested)
    _record(pod_dir, outcome)
    return _exit_status(outcome.exit_code)


def _wait(process: TaskProcess, stop_requested: list[str]) -> Outcome:
    pause = 0.01
    killed = False
    while True:
        if stop_requested and not killed:
            process.kill(stop_requested[0])
            killed = True
        outcome = process.poll(sample_every=0.5)
        if outcome is not None:
            return outcome
        time.sleep(pause)
        pause = min(0.25, pause * 1.5)  # quick tasks end quickly; long ones cost little CPU


def _record(pod_dir: Path, outcome: Outcome) -> None:
    write_json_atomically(
        pod_dir / OUTCOME_FILE,
        {
            "exit_code": outcome.exit_code,
            "reason": outcome.reason,
            "message": outcome.message,
            "usage": outcome.usage.as_dict(),
            "finished_at": time.time(),
        },
    )


def _record_start_failure(pod_dir: Path, task: dict[str, Any], error: OSError) -> int:
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

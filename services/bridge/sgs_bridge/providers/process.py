"""The process provider: each pod's task is a local subprocess, watched by a detached runner.

Node capacity is this machine's. A job id is the pod UID (the pod's directory); the runner's files in that
directory are the whole state, so a restarted bridge re-adopts every task from disk and, because the lock
is taken before the runner is spawned and held by it until it exits, never starts a task twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import fcntl
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import psutil

from sgs_bridge.podspec import TaskSpec
from sgs_bridge.providers.base import Capacity, prepare_pod_dir, read_json, tail_text, write_json_atomically
from sgs_bridge.runner import LOCK_FILE, OUTCOME_FILE, STATE_FILE, TASK_FILE
from sgs_bridge.state import JobState, Phase


class ProcessProvider:
    name = "process"

    def __init__(self, pods_root: Path, *, gpus: int = 0, python: str = sys.executable) -> None:
        self.pods_root = pods_root
        self.gpus = gpus
        self.python = python
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        pods_root.mkdir(parents=True, exist_ok=True)

    async def capacity(self) -> Capacity:
        disk = shutil.disk_usage(self.pods_root)
        return Capacity(
            cpus=os.cpu_count() or 1,
            memory_bytes=psutil.virtual_memory().total,
            gpus=self.gpus,
            ephemeral_storage_bytes=disk.total,
        )

    async def submit(self, spec: TaskSpec) -> str:
        return await asyncio.to_thread(self._submit, spec)

    def _submit(self, spec: TaskSpec) -> str:
        prepare_pod_dir(spec)
        lock_fd = os.open(spec.pod_dir / LOCK_FILE, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return spec.uid  # a runner holds the lock: the task is running
            if (spec.pod_dir / STATE_FILE).exists():
                return spec.uid  # it ran already (and ended)
            self._write_task(spec)
            self._spawn_runner(spec, lock_fd)
        finally:
            os.close(lock_fd)  # the runner keeps its inherited copy, and with it the lock
        return spec.uid

    def _write_task(self, spec: TaskSpec) -> None:
        task = {
            "argv": spec.argv,
            "env": spec.env,
            "cwd": str(spec.working_dir),
            "log": str(spec.log_path),
            "ram_limit_bytes": spec.memory_bytes,
            "walltime_s": spec.walltime_s,
            "enforce": True,
        }
        write_json_atomically(spec.pod_dir / TASK_FILE, task)

    def _spawn_runner(self, spec: TaskSpec, lock_fd: int) -> None:
        with (spec.pod_dir / "runner.log").open("ab") as runner_log:
            child = subprocess.Popen(
                [self.python, "-m", "sgs_bridge.runner", str(spec.pod_dir)],
                stdin=subprocess.DEVNULL,
                stdout=runner_log,
                stderr=runner_log,
                pass_fds=(lock_fd,),
                start_new_session=True,  # outlives the bridge; a Ctrl-C to the bridge does not reach it
            )
        self._children[spec.uid] = child

    async def observe(self, jobs: Mapping[str, str]) -> dict[str, JobState]:
        self._reap()
        return {uid: self._state(uid) for uid in jobs}

    def _reap(self) -> None:
        for uid, child in list(self._children.items()):
            if child.poll() is not None:
                del self._children[uid]

    def _state(self, uid: str) -> JobState:
        pod_dir = self.pods_root / uid
        outcome = read_json(pod_dir / OUTCOME_FILE)
        state = read_json(pod_dir / STATE_FILE)
        started = _moment(state.get("started_at")) if state else None
        if outcome is not None:
            return _finished(uid, outcome, started)
        if _lock_held(pod_dir / LOCK_FILE):
            if state is None:
                return JobState(Phase.PENDING, uid, reason="ContainerCreating", backend_state="STARTING")
            message = f"pid {state.get('pid')}"
            return JobState(Phase.RUNNING, uid, message=message, started_at=started, backend_state="RUNNING")
        if not pod_dir.exists() or not (pod_dir / TASK_FILE).exists():
            return JobState(Phase.UNKNOWN, uid, message="no such task on this node")
        runner_log = tail_text(pod_dir / "runner.log", 2000).strip()
        message = f"the task's runner ended without recording an outcome: {runner_log[-500:]}"
        return JobState(Phase.FAILED, uid, reason="Error", message=message, exit_code=1, started_at=started)

    async def cancel(self, job_id: str, uid: str) -> None:
        state = read_json(self.pods_root / uid / STATE_FILE)
        if not state:
            return
        runner_pid = state.get("runner_pid")
        if isinstance(runner_pid, int) and _lock_held(self.pods_root / uid / LOCK_FILE):
            with contextlib.suppress(ProcessLookupError):
                os.kill(runner_pid, signal.SIGTERM)  # the runner kills the task's process group

    def log_path(self, uid: str, container: str) -> Path:
        return self.pods_root / uid / f"{container}.log"

    def job_of(self, uid: str) -> str | None:
        return uid if (self.pods_root / uid / TASK_FILE).exists() else None

    async def close(self) -> None:
        self._reap()


def _finished(uid: str, outcome: dict[str, object], started: datetime.datetime | None) -> JobState:
    exit_code = outcome.get("exit_code")
    code = int(exit_code) if isinstance(exit_code, int) else 1
    if code < 0:
        code = 128 - code  # killed by signal N: reported as 128+N, as a shell would
    reason = str(outcome.get("reason") or ("Completed" if code == 0 else "Error"))
    if reason == "Killed":
        reason = "Error"
    usage = outcome.get("usage")
    return JobState(
        Phase.SUCCEEDED if reason == "Completed" else Phase.FAILED,
        uid,
        reason=reason,
        message=str(outcome.get("message") or ""),
        exit_code=code,
        started_at=started,
        finished_at=_moment(outcome.get("finished_at")),
        usage=usage if isinstance(usage, dict) else None,
        backend_state="COMPLETED" if code == 0 else "FAILED",
    )


def _lock_held(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops our probe lock too
    return False


def _moment(value: object) -> datetime.datetime | None:
    if isinstance(value, int | float):
        return datetime.datetime.fromtimestamp(value, datetime.UTC)
    return None

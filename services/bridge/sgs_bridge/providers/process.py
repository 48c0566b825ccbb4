"""The process provider: each pod's task is a local subprocess, launched and watched by the node's agent.

Node capacity is this machine's. A job id is the pod UID (the pod's directory); the agent's files in that
directory are the whole state, so a restarted bridge re-adopts every task from disk and, because the agent
takes the pod's lock before launching and holds it until the outcome is written, never starts a task twice.
The agent (``sgs_bridge.agent``, one per node, detached) outlives the bridge; if it dies, its tasks' locks are
released and each is reported failed once whatever it left running has been killed.

With a container runtime (``container_runtime="crun"``) each pod runs its image instead, resolved only against
the node's image stores (``sgs_bridge.container``): the task the agent launches is ``crun run`` of a bundle in
the pod's directory, whose config the provider writes at submission.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fcntl
import os
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil

from sgs.launcher.identity import ProcessIdentity, kill_leftover
from sgs_bridge import container as oci
from sgs_bridge.agent import AGENT_LOG_FILE, IDLE_EXIT_S, AgentClient, AgentError, AgentUnavailableError
from sgs_bridge.podspec import TaskSpec
from sgs_bridge.providers.base import (
    BackendUnavailableError,
    Capacity,
    moment,
    outcome_state,
    prepare_pod_dir,
    read_json,
    tail_text,
    write_json_atomically,
)
from sgs_bridge.runner import LOCK_FILE, OUTCOME_FILE, STATE_FILE, TASK_FILE
from sgs_bridge.state import JobState, Phase

CONTAINER_RUNTIMES = oci.CONTAINER_RUNTIMES


class ProcessProvider:
    name = "process"

    def __init__(
        self,
        pods_root: Path,
        *,
        gpus: int = 0,
        python: str = sys.executable,
        agent_idle_exit_s: float = IDLE_EXIT_S,
        container_runtime: str = "none",
        image_stores: Sequence[Path] = (),
        crun: str = "crun",
        umoci: str = "umoci",
    ) -> None:
        if container_runtime not in CONTAINER_RUNTIMES:
            raise ValueError(f"container runtime: must be one of {CONTAINER_RUNTIMES}, got {container_runtime!r}")
        self.pods_root = pods_root
        self.gpus = gpus
        pods_root.mkdir(parents=True, exist_ok=True)
        self.agent = AgentClient(pods_root, python, idle_exit_s=agent_idle_exit_s)
        self.container_runtime = container_runtime
        self.container_mode = (
            oci.ContainerMode(image_stores, pods_root.parent, crun=crun, umoci=umoci)
            if container_runtime != "none"
            else None
        )

    @property
    def containers(self) -> bool:
        return self.container_mode is not None

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
        if (spec.pod_dir / STATE_FILE).exists():
            return spec.uid  # it started already (and may have ended): a pod runs at most once
        container = self.container_mode.bundle(spec) if self.container_mode is not None else None
        prepare_pod_dir(spec)
        if not _lock_held(spec.pod_dir / LOCK_FILE):
            self._write_task(spec, container)
        try:
            self.agent.request("run", spec.uid)  # the agent refuses a second start itself (lock, state file)
        except (AgentUnavailableError, AgentError, OSError) as error:
            raise BackendUnavailableError(f"the node's agent: {error}") from error
        return spec.uid

    def _write_task(self, spec: TaskSpec, container: dict[str, Any] | None = None) -> None:
        task: dict[str, Any] = {
            "argv": spec.argv,
            "env": spec.env,
            "cwd": str(spec.working_dir),
            "log": str(spec.log_path),
            "ram_limit_bytes": spec.memory_bytes,
            "walltime_s": spec.walltime_s,
            "enforce": True,
        }
        if container is not None and self.container_mode is not None:
            # crun runs the image; the agent still enforces the walltime and samples the memory of its tree (the
            # cgroup holds the memory and CPU limits where the node has cgroups).
            task = self.container_mode.task(spec, task, container)
        write_json_atomically(spec.pod_dir / TASK_FILE, task)

    async def observe(self, jobs: Mapping[str, str]) -> dict[str, JobState]:
        self.agent.reap()
        return {uid: self._state(uid) for uid in jobs}

    def _state(self, uid: str) -> JobState:
        state = self._plain_state(uid)
        image_id = self.container_mode.image_id(self.pods_root / uid / TASK_FILE) if self.container_mode else ""
        return dataclasses.replace(state, extra={**state.extra, "imageID": image_id}) if image_id else state

    def _plain_state(self, uid: str) -> JobState:
        pod_dir = self.pods_root / uid
        outcome = read_json(pod_dir / OUTCOME_FILE)
        state = read_json(pod_dir / STATE_FILE)
        started = moment(state.get("started_at")) if state else None
        if outcome is not None:
            return outcome_state(uid, outcome, started)
        if _lock_held(pod_dir / LOCK_FILE):
            if state is None:
                return JobState(Phase.PENDING, uid, reason="ContainerCreating", backend_state="STARTING")
            message = f"pid {state.get('pid')}"
            return JobState(Phase.RUNNING, uid, message=message, started_at=started, backend_state="RUNNING")
        # The agent writes the outcome before it frees the lock, so a task that ended since the first read has
        # its outcome there now: only "lock free and still no outcome" means the agent died.
        outcome = read_json(pod_dir / OUTCOME_FILE)
        if outcome is not None:
            return outcome_state(uid, outcome, started)
        if not pod_dir.exists() or not (pod_dir / TASK_FILE).exists():
            return JobState(Phase.UNKNOWN, uid, message="no such task on this node")
        return outcome_state(uid, self._record_lost(pod_dir, state or {}), started)

    def _record_lost(self, pod_dir: Path, state: dict[str, object]) -> dict[str, object]:
        """The agent that ran the task is gone: kill what it left running, and record that once."""
        killed = kill_leftover(ProcessIdentity.from_dict(state.get("process")))
        container = (read_json(pod_dir / TASK_FILE) or {}).get("container")
        if isinstance(container, dict):
            oci.remove_container(container)  # crun's container outlives crun
        agent_log = tail_text(self.pods_root / AGENT_LOG_FILE, 2000).strip().splitlines()
        when = "while the task ran" if state else "before the task started"
        message = f"the node's agent stopped {when} (killed {killed} leftover process(es))"
        if agent_log:
            message += f"; its log ends: {agent_log[-1][-300:]}"
        outcome: dict[str, object] = {
            "exit_code": 1,
            "reason": "Error",
            "message": message,
            "usage": {},
            "finished_at": time.time(),
        }
        write_json_atomically(pod_dir / OUTCOME_FILE, outcome)
        return outcome

    async def cancel(self, job_id: str, uid: str) -> None:
        if not _lock_held(self.pods_root / uid / LOCK_FILE):
            return  # not running (an agent that died is handled by observe)
        try:
            await asyncio.to_thread(self.agent.request, "cancel", uid, start=False, why="cancelled (pod deleted)")
        except (AgentUnavailableError, AgentError, OSError) as error:
            raise BackendUnavailableError(f"the node's agent: {error}") from error

    def log_path(self, uid: str, container: str) -> Path:
        return self.pods_root / uid / f"{container}.log"

    def job_of(self, uid: str) -> str | None:
        return uid if (self.pods_root / uid / TASK_FILE).exists() else None

    async def close(self) -> None:
        self.agent.reap()


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

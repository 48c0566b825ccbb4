"""The contract every backend provider keeps, and the host-side preparation they share."""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from sgs_bridge.files import read_json, write_json_atomically
from sgs_bridge.podspec import TaskSpec
from sgs_bridge.state import JobState, Phase

__all__ = ["read_json", "write_json_atomically"]


class BackendUnavailableError(RuntimeError):
    """The backend cannot be reached right now (retry later; the node turns NotReady)."""


class SubmitRefusedError(RuntimeError):
    """The backend refused the job for good (e.g. an impossible request); the pod fails with this message,
    and with ``reason`` as its status reason."""

    def __init__(self, message: str, reason: str = "SubmitRefusedError") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Capacity:
    cpus: int
    memory_bytes: int
    gpus: int
    ephemeral_storage_bytes: int
    pods: int = 1000


class Provider(Protocol):
    """A backend. Job ids are strings the provider understands; every call is safe to repeat."""

    name: str

    async def capacity(self) -> Capacity:
        """What the node offers; raises BackendUnavailableError when the backend does not answer."""
        ...

    async def submit(self, spec: TaskSpec) -> str:
        """Start the task unless a job for `spec.uid` already exists; return the job id either way."""
        ...

    async def observe(self, jobs: Mapping[str, str]) -> dict[str, JobState]:
        """The state of each job ({pod uid: job id}) in one sweep; keyed by pod uid."""
        ...

    async def cancel(self, job_id: str, uid: str) -> None:
        """Stop the job (no error when it has already ended)."""
        ...

    def log_path(self, uid: str, container: str) -> Path:
        """Where the job's combined stdout and stderr are written."""
        ...

    def job_of(self, uid: str) -> str | None:
        """The job this node started for the pod's directory, if any (for a pod deleted while we were down)."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class Reprioritizable(Protocol):
    """A provider that queues pods itself (pilot mode) and can re-rank one still waiting."""

    def reprioritize(self, uid: str, priority: int) -> None: ...


def prepare_pod_dir(spec: TaskSpec) -> None:
    """Make the pod's host directories: work dir, one per volume (with ConfigMap/Secret files), the log."""
    spec.pod_dir.mkdir(parents=True, exist_ok=True)
    spec.working_dir.mkdir(parents=True, exist_ok=True)
    for volume in spec.volumes:
        volume.host_dir.mkdir(parents=True, exist_ok=True)
        for relative, content in volume.files.items():
            target = volume.host_dir / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
            target.chmod(volume.file_mode)
    spec.log_path.touch(exist_ok=True)


def spec_summary(spec: TaskSpec) -> dict[str, object]:
    summary = asdict(spec)
    summary["pod_dir"] = str(spec.pod_dir)
    summary["working_dir"] = str(spec.working_dir)
    summary.pop("volumes")
    summary.pop("env")
    summary.pop("call")
    return summary


def tail_text(path: Path, max_bytes: int = 64 * 1024) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            return handle.read().decode(errors="replace")
    except OSError:
        return ""


def last_lines(text: str, count: int = 3) -> Sequence[str]:
    return [line for line in text.splitlines() if line.strip()][-count:]


def outcome_state(job_id: str, outcome: Mapping[str, object], started: datetime.datetime | None) -> JobState:
    """The JobState of a task whose ``outcome.json`` (the runner's, an agent's) reads ``outcome``."""
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
        job_id,
        reason=reason,
        message=str(outcome.get("message") or ""),
        exit_code=code,
        started_at=started,
        finished_at=moment(outcome.get("finished_at")),
        usage=usage if isinstance(usage, dict) else None,
        backend_state="COMPLETED" if code == 0 else "FAILED",
    )


def moment(value: object) -> datetime.datetime | None:
    """A UTC datetime from epoch seconds (None for anything else)."""
    if isinstance(value, int | float):
        return datetime.datetime.fromtimestamp(value, datetime.UTC)
    return None

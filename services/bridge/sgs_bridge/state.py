"""What a backend says about one job, in backend-neutral terms, and how that becomes a pod's status.

Pure functions: the provider turns its own states (Slurm's JobState/Reason, a process's exit) into a
JobState, and `pod_status` turns a JobState into the pod status the bridge writes.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

JSON = dict[str, Any]


class Phase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    UNKNOWN = "Unknown"  # the backend does not know the job (yet, or any more)

    @property
    def terminal(self) -> bool:
        return self in (Phase.SUCCEEDED, Phase.FAILED)


@dataclass(frozen=True)
class JobState:
    """One job as the backend sees it; `reason` follows the kubelet's words (Completed, Error, OOMKilled,
    DeadlineExceeded) once terminated, and names the backend's wait (e.g. SlurmResources) while pending."""

    phase: Phase
    job_id: str
    reason: str = ""
    message: str = ""
    exit_code: int | None = None
    started_at: datetime.datetime | None = None
    finished_at: datetime.datetime | None = None
    usage: Mapping[str, float] | None = None
    backend_state: str = ""  # the backend's own word (PENDING, RUNNING, FAILED...), shown in events
    extra: Mapping[str, str] = field(default_factory=dict)


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def rfc3339(moment: datetime.datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def pod_status(state: JobState, container: str, *, created: datetime.datetime, image: str = "") -> JSON:
    """The full `status` of a pod whose only container is the job (merge-patched as a whole)."""
    started = state.started_at or (state.finished_at if state.phase.terminal else None)
    status: JSON = {
        "phase": _pod_phase(state.phase),
        "hostIP": "127.0.0.1",
        "hostIPs": [{"ip": "127.0.0.1"}],
        "startTime": rfc3339(created),
        "conditions": _conditions(state, created),
        "containerStatuses": [_container_status(state, container, image, started)],
    }
    if state.phase is Phase.FAILED and state.reason == "DeadlineExceeded":
        status["reason"] = "DeadlineExceeded"
        status["message"] = state.message
    elif state.phase is Phase.PENDING and state.reason:
        status["reason"] = state.reason
        status["message"] = state.message
    else:
        status["reason"] = None
        status["message"] = state.message or None
    return status


def failed_before_submit(reason: str, message: str, container: str, *, created: datetime.datetime) -> JSON:
    """A pod that never reached the backend (bad spec, refused by sbatch)."""
    state = JobState(Phase.FAILED, "", reason=reason, message=message, exit_code=1, finished_at=now())
    status = pod_status(state, container, created=created)
    status["reason"] = reason
    status["message"] = message
    return status


def _pod_phase(phase: Phase) -> str:
    return Phase.PENDING.value if phase is Phase.UNKNOWN else phase.value


def _condition(kind: str, ok: bool, moment: datetime.datetime, reason: str = "", message: str = "") -> JSON:
    condition: JSON = {
        "type": kind,
        "status": "True" if ok else "False",
        "lastProbeTime": None,
        "lastTransitionTime": rfc3339(moment),
    }
    if reason:
        condition["reason"] = reason
    if message:
        condition["message"] = message
    return condition


def _conditions(state: JobState, created: datetime.datetime) -> list[JSON]:
    running = state.phase is Phase.RUNNING
    moment = state.finished_at or state.started_at or created
    if state.phase.terminal:
        ready_reason = "PodCompleted" if state.phase is Phase.SUCCEEDED else "PodFailed"
    elif running:
        ready_reason = ""
    else:
        ready_reason = "ContainersNotReady"
    return [
        _condition("PodScheduled", True, created),
        _condition("Initialized", True, created),
        # The backend's own scheduling: False with its reason while the job waits in the queue.
        _condition(
            "sgs.io/BackendScheduled",
            state.phase not in (Phase.PENDING, Phase.UNKNOWN),
            moment,
            state.reason if state.phase is Phase.PENDING else "",
            state.message if state.phase is Phase.PENDING else "",
        ),
        _condition("ContainersReady", running, moment, ready_reason),
        _condition("Ready", running, moment, ready_reason),
    ]


def _container_status(state: JobState, container: str, image: str, started: datetime.datetime | None) -> JSON:
    status: JSON = {
        "name": container,
        "image": image or "none",
        "imageID": state.extra.get("imageID", ""),  # a container runtime's: the manifest digest it ran
        "ready": state.phase is Phase.RUNNING,
        "started": state.phase is Phase.RUNNING,
        "restartCount": 0,
        "containerID": f"sgs://{state.job_id}" if state.job_id else None,
    }
    if state.phase.terminal:
        terminated: JSON = {
            "exitCode": state.exit_code
            if state.exit_code is not None
            else (0 if state.phase is Phase.SUCCEEDED else 1),
            "reason": state.reason or ("Completed" if state.phase is Phase.SUCCEEDED else "Error"),
            "startedAt": rfc3339(started),
            "finishedAt": rfc3339(state.finished_at or now()),
        }
        if state.message:
            terminated["message"] = state.message
        status["state"] = {"terminated": terminated}
    elif state.phase is Phase.RUNNING:
        status["state"] = {"running": {"startedAt": rfc3339(state.started_at or now())}}
    else:
        waiting: JSON = {"reason": state.reason or "ContainerCreating"}
        if state.message:
            waiting["message"] = state.message
        status["state"] = {"waiting": waiting}
    return status


def signal_exit_code(signal_number: int) -> int:
    """The exit code a shell (and the kubelet) reports for a process killed by a signal."""
    return 128 + signal_number

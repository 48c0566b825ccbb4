"""The compact Run status: counts, phase, conditions, times, a bounded list of failures, a table pointer.

Its size does not grow with the number of tasks (the per-task records are in PostgreSQL), so a 100k-task Run
stays far from etcd's object limit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sgs.model.base import Condition, ConditionStatus
from sgs.model.run import MAX_FAILED_TASKS, FailedTask, RunPhase, RunStatus, TaskCounts
from sgs.planner import Planner, TaskState
from sgs.planner import RunPhase as PlannerPhase

_COUNT_FIELDS = {
    TaskState.WAITING: "waiting",
    TaskState.READY: "ready",
    TaskState.RUNNING: "running",
    TaskState.RETRYING: "retrying",
    TaskState.SUCCEEDED: "succeeded",
    TaskState.FAILED: "failed",
    TaskState.SKIPPED: "skipped",
}


def task_counts(planner: Planner) -> TaskCounts:
    counts: dict[str, int] = {_COUNT_FIELDS[state]: n for state, n in planner.counts.items()}
    return TaskCounts(total=len(planner.tasks), **counts)


def run_phase(planner: Planner, suspended: bool) -> RunPhase:
    phase = planner.phase
    if phase is PlannerPhase.SUCCEEDED:
        return RunPhase.SUCCEEDED
    if phase is PlannerPhase.FAILED:
        return RunPhase.FAILED
    if suspended and not planner.counts[TaskState.RUNNING]:
        return RunPhase.SUSPENDED
    return RunPhase.RUNNING if phase is PlannerPhase.RUNNING else RunPhase.PENDING


def failed_tasks(planner: Planner, limit: int = MAX_FAILED_TASKS) -> list[FailedTask]:
    """The first tasks that failed for good, in the order they failed (bounded)."""
    failed = sorted((t for t in planner.tasks.values() if t.state is TaskState.FAILED), key=lambda t: t.finished_seq)
    return [failed_entry(t.id, t.attempt, t.failure or "") for t in failed[:limit]]


def failed_entry(tid: str, attempt: int, failure: str) -> FailedTask:
    reason, _, message = failure.partition(": ")
    return FailedTask(task=tid, attempt=attempt, reason=reason or "Failed", message=message[:1024])


def run_status(
    planner: Planner,
    *,
    suspended: bool,
    site: str,
    start_time: datetime | None,
    completion_time: datetime | None,
    task_table: str | None,
    generation: int | None,
    site_reason: str = "SiteResolved",
    site_message: str | None = None,
    pipeline_digest: str | None = None,
    pipeline_change: Condition | None = None,
    extra: Sequence[Condition] = (),
) -> RunStatus:
    counts = task_counts(planner)
    phase = run_phase(planner, suspended)
    conditions = [
        condition("PipelineReady", True, "PipelineReady"),
        condition("SiteReady", True, site_reason, site_message or f"dispatched to {site}"),
        condition("Suspended", suspended, "Suspended" if suspended else "NotSuspended"),
        condition(
            "Complete",
            phase is RunPhase.SUCCEEDED,
            phase.value,
            f"{counts.succeeded}/{counts.total} tasks succeeded, {counts.failed} failed",
        ),
    ]
    if pipeline_change is not None:
        conditions.insert(1, pipeline_change)
    conditions.extend(extra)
    return RunStatus(
        phase=phase,
        site=site,
        tasks=counts,
        progress=f"{counts.succeeded}/{counts.total}",
        start_time=start_time,
        completion_time=completion_time,
        failed_tasks=failed_tasks(planner),
        task_table=task_table,
        pipeline_digest=pipeline_digest,
        observed_generation=generation,
        conditions=conditions,
    )


def pipeline_condition(name: str, pinned: str, current: str | None) -> Condition:
    """``PipelineChanged``: whether the Pipeline differs from the spec the Run started with (and keeps).

    ``current`` is the Pipeline's digest now: None when it is gone, "" when its spec is invalid.
    """
    if current == pinned:
        return condition("PipelineChanged", False, "PipelineUnchanged", f"Pipeline {name} is as the Run started it")
    if current is None:
        reason, now = "PipelineDeleted", "was deleted"
    else:
        reason, now = "PipelineEdited", f"changed: sha256 {pinned} → {current or 'an invalid spec'}"
    message = (
        f"Pipeline {name} {now} since this Run started (sha256 {pinned}); the Run keeps the spec it started "
        "with, the edit applies to new Runs"
    )
    return condition("PipelineChanged", True, reason, message)


def condition(kind: str, ok: bool, reason: str, message: str = "") -> Condition:
    return Condition(
        type=kind,
        status=ConditionStatus.TRUE if ok else ConditionStatus.FALSE,
        reason=reason,
        message=message[:1024],
    )


def merge_conditions(previous: Iterable[Mapping[str, Any]], current: list[Condition], now: datetime) -> list[Condition]:
    """Keep each condition's lastTransitionTime unless its status changed: kubectl shows real transitions."""
    before = {c.get("type"): c for c in previous}
    merged = []
    for cond in current:
        old = before.get(cond.type)
        if old is not None and old.get("status") == cond.status.value and old.get("lastTransitionTime"):
            stamp = datetime.fromisoformat(str(old["lastTransitionTime"]).replace("Z", "+00:00"))
        else:
            stamp = now
        merged.append(cond.model_copy(update={"last_transition_time": stamp}))
    return merged


def status_patch(status: RunStatus) -> dict[str, Any]:
    """The merge patch body: every field present (null clears), so a stale value never lingers."""
    wire = status.model_dump(mode="json", by_alias=True, exclude_none=False)
    wire.pop("abandoned", None)  # written once, at a re-dispatch (RunController.redispatch): never cleared here
    return {"status": wire}


def utc_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)

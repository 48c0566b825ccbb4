"""A task attempt's span, made by the bridge when its pod ends: the Job's ``TRACEPARENT`` names the span id.

The bridge is the one place that knows all of it at once: the Site and node the task ran on, the backend's
job, how it ended, and what it used against what its pod requested. Spans the task itself made (its archive
registrations, through ``TRACEPARENT``) hang under this one. A restarted bridge does not record it twice: the
pod already shows its end, and ended pods are never announced again.
"""

from __future__ import annotations

import datetime
from typing import Any

from sgs.kube import JSON
from sgs.telemetry import FinishedSpan
from sgs.telemetry.runs import task_span_from_env, usage_attributes
from sgs_bridge.quantity import QuantityError, parse_quantity
from sgs_bridge.state import JobState, Phase


def container_env(pod: JSON) -> dict[str, str]:
    """The literal env of the pod's task container (values from Secrets or fields are not trace context)."""
    containers = pod.get("spec", {}).get("containers") or [{}]
    return {
        str(item["name"]): str(item["value"])
        for item in containers[0].get("env") or []
        if "name" in item and isinstance(item.get("value"), str)
    }


def requested(pod: JSON) -> tuple[float, int]:
    """(cores, memory bytes) the pod asked for: the cpu request and the memory limit (what is enforced)."""
    containers = pod.get("spec", {}).get("containers") or [{}]
    resources = containers[0].get("resources") or {}
    requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
    return _quantity(requests.get("cpu", limits.get("cpu")), 1.0), int(
        _quantity(limits.get("memory", requests.get("memory")), 0.0)
    )


def _quantity(value: Any, default: float) -> float:
    if value is None:
        return default
    try:
        return float(parse_quantity(value))
    except QuantityError:
        return default  # the pod was admitted with it; a span attribute is no place to refuse it


def task_span(
    pod: JSON,
    state: JobState,
    *,
    site: str,
    node: str,
    provider: str,
    start: datetime.datetime,
    end: datetime.datetime,
) -> FinishedSpan | None:
    """The span of the attempt ``pod`` ran, or None for a pod that is not a Run's task."""
    cpus, memory = requested(pod)
    meta = pod.get("metadata", {})
    attributes: dict[str, str | int | float] = {
        "sgs.site": site,
        "k8s.node.name": node,
        "k8s.pod.name": str(meta.get("name", "")),
        "sgs.provider": provider,
        "sgs.backend.job_id": state.job_id,
        "sgs.exit.reason": state.reason or state.phase.value,
        **usage_attributes(state.usage, cpus, memory),
    }
    if state.exit_code is not None:
        attributes["sgs.exit.code"] = state.exit_code
    error = None
    if state.phase is Phase.FAILED:
        error = f"{state.reason}: {state.message}" if state.message else state.reason or "Failed"
    return task_span_from_env(container_env(pod), start, max(start, end), attributes, error)

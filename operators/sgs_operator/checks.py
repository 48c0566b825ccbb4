"""Pure checks behind the Site and Pipeline handlers and the admission webhook."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from sgs.model.pipeline import PipelinePhase, PipelineSpec, PipelineStatus
from sgs.model.site import SitePhase, SiteSpec, SiteStatus
from sgs.model.validate import PipelineError
from sgs_operator.status import condition

SITE_LABEL = "sgs.io/site"


def describe_errors(err: ValidationError, root: str = "spec") -> str:
    """Every problem as ``field.path: reason``; whole-graph problems already name their field."""
    parts: list[str] = []
    for error in err.errors():
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, PipelineError):
            parts.extend(f"{root}.{problem}" for problem in cause.problems)
            continue
        where = ".".join(str(p) for p in (root, *error["loc"]))
        message = str(error["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


def pipeline_status(spec: Mapping[str, Any], generation: int | None) -> PipelineStatus:
    try:
        parsed = PipelineSpec.model_validate(spec)
    except ValidationError as err:
        return PipelineStatus(
            phase=PipelinePhase.INVALID,
            observed_generation=generation,
            conditions=[condition("Ready", False, "Invalid", describe_errors(err))],
        )
    steps = sum(1 for s in parsed.steps if s.executable is not None)
    return PipelineStatus(
        phase=PipelinePhase.READY,
        tasks_per_run=steps,
        observed_generation=generation,
        conditions=[
            condition("Ready", True, "Valid", f"{steps} executable steps, {len(parsed.executables)} executables")
        ],
    )


def site_selector(name: str, spec: SiteSpec) -> dict[str, str]:
    return {**spec.compute.node_selector, SITE_LABEL: name}


def node_is_ready(node: Mapping[str, Any]) -> bool:
    if (node.get("spec") or {}).get("unschedulable"):
        return False
    conditions = (node.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def site_status(
    spec: SiteSpec,
    nodes: Sequence[Mapping[str, Any]],
    storage_ok: bool,
    storage_detail: str,
    now: datetime,
    generation: int | None,
) -> SiteStatus:
    ready = sum(1 for n in nodes if node_is_ready(n))
    in_maintenance = next((w for w in spec.maintenance if w.start <= now < w.end), None)
    if in_maintenance is not None:
        phase = SitePhase.MAINTENANCE
    elif ready and storage_ok:
        phase = SitePhase.READY
    elif ready or storage_ok:
        phase = SitePhase.DEGRADED
    else:
        phase = SitePhase.PENDING
    conditions = [
        condition(
            "ComputeReady",
            ready > 0,
            "NodesReady" if ready else "NoReadyNode",
            f"{ready} of {len(nodes)} matching node(s) Ready",
        ),
        condition("StorageReachable", storage_ok, "Reachable" if storage_ok else "Unreachable", storage_detail),
    ]
    if in_maintenance is not None:
        conditions.append(condition("Maintenance", True, "InWindow", in_maintenance.reason or "maintenance"))
    return SiteStatus(phase=phase, nodes_ready=ready, observed_generation=generation, conditions=conditions)

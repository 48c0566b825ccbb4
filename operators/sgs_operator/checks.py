"""Pure checks behind the Site and Pipeline handlers and the admission webhook."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from sgs.dynamic.registry import DynamicFunctions
from sgs.model.pipeline import PipelinePhase, PipelineSpec, PipelineStatus
from sgs.model.run import RunSpec
from sgs.model.site import SitePhase, SiteSpec, SiteStatus
from sgs.model.validate import PipelineError
from sgs_operator.status import condition
from sgs_operator.storage import Roots, path_problem, path_problems, run_paths

SITE_LABEL = "sgs.io/site"


def describe_errors(err: ValidationError, root: str = "spec") -> str:
    """Every problem as ``field.path: reason``; whole-graph problems already name their field."""
    parts: list[str] = []
    for error in err.errors():
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, PipelineError):
            parts.extend(f"{root}.{problem}" for problem in cause.problems)
            continue
        message = str(error["msg"]).removeprefix("Value error, ")
        parts.append(f"{field_path(root, error['loc'])}: {message}")
    return "; ".join(parts)


def field_path(root: str, loc: Sequence[int | str]) -> str:
    """``spec.executables[1].resources``: list indices in brackets, as the graph checks write them."""
    return root + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)


def pipeline_status(
    spec: Mapping[str, Any], generation: int | None, functions: DynamicFunctions | None = None
) -> PipelineStatus:
    try:
        parsed = PipelineSpec.model_validate(spec)
    except ValidationError as err:
        return invalid_pipeline(describe_errors(err), generation)
    refused = functions.pipeline_problems(parsed) if functions is not None else []
    if refused:
        return invalid_pipeline("; ".join(f"spec.{problem}" for problem in refused), generation)
    steps = sum(1 for s in parsed.steps if s.executable is not None)
    return PipelineStatus(
        phase=PipelinePhase.READY,
        tasks_per_run=steps,
        observed_generation=generation,
        conditions=[
            condition("Ready", True, "Valid", f"{steps} executable steps, {len(parsed.executables)} executables")
        ],
    )


def invalid_pipeline(message: str, generation: int | None) -> PipelineStatus:
    return PipelineStatus(
        phase=PipelinePhase.INVALID,
        observed_generation=generation,
        conditions=[condition("Ready", False, "Invalid", message)],
    )


def pipeline_digest(spec: Mapping[str, Any]) -> str:
    """The digest a Run pins, or "" for a spec that is not a valid Pipeline."""
    try:
        return PipelineSpec.model_validate(spec).digest()
    except ValidationError:
        return ""


def site_problems(name: str, spec: SiteSpec) -> list[str]:
    """What a valid SiteSpec may still get wrong as a Site the operator serves, named ``name``."""
    problems = list(_root_problems(spec))
    chosen = spec.compute.node_selector.get(SITE_LABEL)
    if chosen is not None and chosen != name:
        problems.append(
            f"spec.compute.nodeSelector[{SITE_LABEL}]: {chosen!r} is not this Site's name: the operator selects "
            f"a Site's nodes by {SITE_LABEL}={name} (the label the bridge gives its node); remove the key, or "
            f"name the Site {chosen!r}"
        )
    return problems


def _root_problems(spec: SiteSpec) -> Iterator[str]:
    """The declared host directories must be absolute (a Sites file may be relative: its loader resolves them)."""
    roots = [("spec.storage.path", spec.storage.path)]
    roots += [(f"spec.storage.readOnlyPaths[{i}]", p) for i, p in enumerate(spec.storage.read_only_paths)]
    for where, path in roots:
        if path is not None and not path.startswith("/"):
            yield f"{where}: {path!r} is not an absolute path"
        elif path is not None and path.rstrip("/") == "":
            yield f"{where}: '/' cannot be a storage root: every host path would be under it"


def admission_site_problems(name: str, spec: Mapping[str, Any]) -> list[str]:
    try:
        site = SiteSpec.model_validate(spec)
    except ValidationError as err:
        return [describe_errors(err)]
    return site_problems(name, site)


def run_path_problems(spec: RunSpec, site: str | None, sites: Mapping[str, SiteSpec]) -> list[str]:
    """The Run's paths that its Site (named, or else each Site of the namespace) would refuse.

    A Run naming a Site that does not exist yet is left to its start, which checks again.
    """
    if site is not None:
        found = sites.get(site)
        return path_problems(spec, Roots.of(site, found)) if found is not None else []
    if not sites:
        return []
    if spec.split is not None:
        return _split_path_problems(spec, sites)
    refusals = {name: path_problems(spec, Roots.of(name, s)) for name, s in sorted(sites.items())}
    if any(not problems for problems in refusals.values()):
        return []  # some Site can take it
    first = next(iter(refusals.values()))
    others = ", ".join(name for name in list(refusals)[1:])
    return [*first, *([f"(the namespace's other Sites refuse it too: {others})"] if others else [])]


def _split_path_problems(spec: RunSpec, sites: Mapping[str, SiteSpec]) -> list[str]:
    """A split Run's paths lie at several Sites: each must be taken by one of them (its child's Site checks it
    again when the child is made)."""
    roots = [Roots.of(name, site) for name, site in sorted(sites.items())]
    problems = []
    for where, uri in run_paths(spec):
        refused = [path_problem(where, uri, root) for root in roots]
        if all(refused):
            problems.append(
                f"{refused[0]} (and by every other Site of the namespace)" if len(roots) > 1 else refused[0]
            )
    return [p for p in problems if p]


def spec_unchanged(old: Mapping[str, Any] | None, spec: Mapping[str, Any]) -> bool:
    """Whether an admission UPDATE leaves the spec as it was.

    Only a spec is judged, and only when it changes: an update that keeps it (the operator's own finalizers and
    annotations, labels, a status written through the main resource) is admitted, or an object admitted under
    other rules (an allow-list since narrowed, a placement window since passed) could no longer be finalized,
    labelled or deleted.
    """
    return old is not None and dict(old.get("spec") or {}) == dict(spec)


def same_paths(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether an update leaves every path of a Run (and its Site) as it was."""
    return all(old.get(key) == new.get(key) for key in ("inputs", "outputPrefix", "site"))


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

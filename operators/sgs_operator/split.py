"""Campaigns across Sites: a Run with ``spec.split`` becomes one child Run per Site holding part of its inputs.

Rubin's per-facility graphs and Euclid's processing orders to the SDC holding the data: the work goes where the
data is, in as many parts as there are Sites holding it. Each item of a divided input (an archive dataset, a file
of a ``uris`` list) goes to one Site: the one the survey's placement gives its observation (primary, else the
secondary while the primary cannot take it), else among the Sites holding it a Ready one, the one holding most of
the Run's bytes (fewer, bigger children), then by name. Inputs not divided go whole to every child (a calibration
the children share; at a Site without it, stage-in or the child's own resolution gets it there).

A child is an ordinary Run (``spec.site`` set, the divided inputs as ``datasetIds`` or ``uris``): the usual path
runs it, at a Kubernetes or Slurm Site here or mirrored to a cluster Site. The parent is not run itself; each
reconcile it reads its children, pushes down what may change while a Run runs (priority, suspend, retryFailed,
maxParallel) and shows their phases and totals.

Idempotent and crash-safe like the mirror: the plan (child names, Sites, counts) is written to the parent's
status before any child is made; children have fixed names (``<parent>-<site>``), the parent's uid as a label and
the parent as owner (Kubernetes' garbage collector deletes them with it, also when this operator is down). A
restart adopts the children it finds; one planned but never made is made from a fresh resolution, without the
items its siblings already hold; one that existed and was deleted is not made again (``ChildGone``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import kopf
from pydantic import ValidationError

from sgs.kube import CONFLICT, KubeClient, KubeError
from sgs.model.base import GROUP, VERSION, Condition
from sgs.model.run import MAX_FAILED_TASKS, ChildRun, RunPhase, RunSpec, TaskCounts
from sgs.model.site import SitePhase, SiteSpec, StorageKind
from sgs.naming import dns_label, short_hash
from sgs_operator.blocked import RunBlockedError
from sgs_operator.inputs import Found
from sgs_operator.naming import MANAGED_BY, label_value
from sgs_operator.records import TaskStore
from sgs_operator.status import condition, merge_conditions, utc_now

PARENT_UID_LABEL = "sgs.io/parent-uid"
PARENT_RUN_LABEL = "sgs.io/parent-run"
PARENT_RUN_ANNOTATION = "sgs.io/parent-run"  # <namespace>/<name>
SPEC_DOWN = ("priority", "suspend", "retryFailed", "maxParallel")
MAX_CHILD_NAME = 63
FINISHED = (RunPhase.SUCCEEDED.value, RunPhase.FAILED.value)
BLOCKING = ("SpecValid", "PipelineReady", "SiteReady", "InputsReady", "SiteUnreachable")
SPLIT = "Split"
CHILDREN_READY = "ChildrenReady"


@dataclass(frozen=True)
class Item:
    """One item of a divided input: an archive dataset (its id) or a file (its URI as given)."""

    input: str
    value: str
    held: Mapping[str, int]  # Site → bytes of this item there
    observation: int | None = None


@dataclass
class ChildPlan:
    name: str
    site: str
    items: dict[str, list[str]] = field(default_factory=dict)  # divided input → its values at this Site

    @property
    def count(self) -> int:
        return sum(len(values) for values in self.items.values())


def child_name(parent: str, site: str) -> str:
    """``<parent>-<site>`` as a DNS label; beyond 63 characters, truncated plus a hash of the whole."""
    raw = f"{parent}-{site}"
    name = dns_label(raw)
    if len(name) <= MAX_CHILD_NAME:
        return name
    digest = short_hash(raw)
    return f"{name[: MAX_CHILD_NAME - len(digest) - 1].rstrip('-')}-{digest}"


# ----------------------------------------------------------------------------------------------- the plan


def archive_items(found: Iterable[Found], divided: Iterable[str], sites: Iterable[str]) -> list[Item]:
    """The divided archive inputs' datasets, each with the namespace's Sites holding an available replica."""
    wanted, known = set(divided), set(sites)
    items = []
    for item in sorted(found, key=lambda f: (f.input, f.position)):
        if item.input not in wanted:
            continue
        held = {site: size for site, (_, size) in item.replicas.items() if site in known}
        observation = item.data_id.get("observation")
        observed = observation if isinstance(observation, int) and not isinstance(observation, bool) else None
        items.append(Item(item.input, str(item.dataset_id), held, observed))
    return items


def file_items(spec: RunSpec, divided: Iterable[str], sites: Mapping[str, SiteSpec]) -> list[Item]:
    """The divided ``uris`` lists' files, each with the POSIX Sites whose storage path holds it (and its size)."""
    items = []
    for name in sorted(divided):
        given = spec.inputs[name]
        for uri in given.uris or []:
            path = _local_path(uri)
            held: dict[str, int] = {}
            for site_name, site in sites.items():
                root = site.storage.path if site.storage.kind is StorageKind.POSIX else None
                if path is not None and root and (path + "/").startswith(root.rstrip("/") + "/"):
                    held[site_name] = _size(path)
            items.append(Item(name, uri, held))
    return items


def plan(
    parent: str,
    spec: RunSpec,
    items: Sequence[Item],
    phases: Mapping[str, str],
    placed: Mapping[int, str | None] | None = None,
) -> list[ChildPlan]:
    """One child per Site holding items, by name; RunBlockedError naming what no Site holds or a divided input
    one child would get nothing of."""
    missing = [f"spec.inputs.{item.input}: {item.value}" for item in items if not item.held]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise RunBlockedError(
            "InputsReady",
            "InputsNotAtAnySite",
            f"split: {len(missing)} input(s) are held by no Site of this namespace: {shown} (replicate them to a "
            "Site, or drop them from the Run)",
        )
    if not items:
        raise RunBlockedError("InputsReady", "NoInputs", "split: the divided inputs are empty")
    bytes_at: dict[str, int] = {}
    for item in items:
        for site, size in item.held.items():
            bytes_at[site] = bytes_at.get(site, 0) + size
    children: dict[str, ChildPlan] = {}
    for item in items:
        site = _site_of(item, phases, bytes_at, placed or {})
        child = children.setdefault(site, ChildPlan(child_name(parent, site), site))
        child.items.setdefault(item.input, []).append(item.value)
    divided = {item.input for item in items}
    for child in children.values():
        empty = sorted(divided - set(child.items))
        if empty:
            raise RunBlockedError(
                "InputsReady",
                "SplitUneven",
                f"split: Site {child.site} holds nothing of spec.inputs.{empty[0]}, so its child would run without "
                "it; list in split.inputs only the inputs to divide (the others go whole to every child)",
            )
    return [children[site] for site in sorted(children)]


def _site_of(
    item: Item, phases: Mapping[str, str], bytes_at: Mapping[str, int], placed: Mapping[int, str | None]
) -> str:
    primary = placed.get(item.observation) if item.observation is not None else None
    if primary is not None and primary in item.held:
        return primary
    ready = [site for site in item.held if phases.get(site) == SitePhase.READY.value] or list(item.held)
    return min(ready, key=lambda site: (-bytes_at.get(site, 0), site))


def _local_path(uri: str) -> str | None:
    if uri.startswith("file://"):
        return unquote(urlsplit(uri).path)
    if uri.startswith("/"):
        return uri
    return None


def _size(path: str) -> int:
    try:
        return Path(path).stat().st_size
    except OSError:
        return 0


def child_spec(spec: RunSpec, child: ChildPlan, wire: Mapping[str, Any]) -> dict[str, Any]:
    """The parent's spec (as written) with the child's Site and its share of the divided inputs; no split."""
    out = {key: value for key, value in wire.items() if key != "split"}
    inputs = dict(wire.get("inputs") or {})
    for name, values in child.items.items():
        inputs[name] = {"datasetIds": values} if spec.inputs[name].from_archive else {"uris": values}
    return out | {"site": child.site, "inputs": inputs}


# ----------------------------------------------------------------------------------------------- the children


def runs_path(namespace: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/runs"


class RunSplitter:
    """A split Run's children: made once, adopted after a restart, their phases and totals shown on the parent."""

    def __init__(
        self,
        client: KubeClient,
        store: TaskStore,
        body: Mapping[str, Any],
        pinned: tuple[str, str, dict[str, Any]],
        log: kopf.Logger,
    ) -> None:
        meta = body["metadata"]
        self.client = client
        self.store = store
        self.body = body  # kopf's live view: spec changes flow down from here
        self.name: str = meta["name"]
        self.namespace: str = meta["namespace"]
        self.uid: str = meta["uid"]
        self.pipeline, self.digest, self.pipeline_spec = pinned
        self.log = log
        self.entries: list[ChildRun] = [
            ChildRun.model_validate(c) for c in (body.get("status") or {}).get("children") or []
        ]
        self._last: dict[str, Any] | None = None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def planned(self) -> bool:
        return bool(self.entries)

    def labels(self) -> dict[str, str]:
        return {PARENT_UID_LABEL: self.uid, PARENT_RUN_LABEL: label_value(self.name), **MANAGED_BY}

    # --- making them ---------------------------------------------------------------------------------------

    async def record_plan(self, plans: Sequence[ChildPlan], message: str) -> None:
        """The plan in the parent's status before any child exists: a restart knows which children to expect."""
        self.entries = [ChildRun(name=p.name, site=p.site, inputs=p.count) for p in plans]
        split = condition(SPLIT, True, "InputsAtSites", message)
        conditions = merge_conditions((self.body.get("status") or {}).get("conditions") or [], [split], utc_now())
        patch = {
            "status": {
                "children": [e.model_dump(mode="json", by_alias=True, exclude_none=True) for e in self.entries],
                "pipelineDigest": self.digest,
                "conditions": [c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in conditions],
            }
        }
        await self.client.merge_patch(f"{runs_path(self.namespace)}/{self.name}/status", patch)

    async def make_missing(self, spec: RunSpec, plans: Sequence[ChildPlan], wire: Mapping[str, Any]) -> None:
        """Create every planned child not made yet (never one that was made and is gone), pinned to the parent's
        Pipeline spec; items a sibling already holds are left out (a plan made again after a crash)."""
        existing = await self.children()
        taken = {(name, value) for child in existing.values() for name, value in _divided_values(spec, child)}
        by_name = {p.name: p for p in plans}
        for entry in self.entries:
            if entry.name in existing or entry.uid is not None:
                continue
            fresh = by_name.get(entry.name)
            if fresh is None:
                continue
            fresh.items = {name: [v for v in values if (name, v) not in taken] for name, values in fresh.items.items()}
            fresh.items = {name: values for name, values in fresh.items.items() if values}
            if not fresh.items:
                continue
            created = await self._create(child_spec(spec, fresh, wire), fresh)
            entry.uid = str(created["metadata"]["uid"])
            entry.inputs = fresh.count
            await self._pin(entry.name, entry.uid)

    async def _create(self, child: dict[str, Any], plan: ChildPlan) -> dict[str, Any]:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Run",
            "metadata": {
                "name": plan.name,
                "namespace": self.namespace,
                "labels": self.labels(),
                "annotations": {PARENT_RUN_ANNOTATION: self.key},
                "ownerReferences": [
                    {
                        "apiVersion": f"{GROUP}/{VERSION}",
                        "kind": "Run",
                        "name": self.name,
                        "uid": self.uid,
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": child,
        }
        try:
            made = await self.client.create(runs_path(self.namespace), body)
            self.log.info(f"run {self.key}: child {plan.name} at {plan.site} ({plan.count} input(s))")
            return made
        except KubeError as err:
            if err.status != CONFLICT:
                raise
        found = await self.client.get_or_none(f"{runs_path(self.namespace)}/{plan.name}")
        labels = ((found or {}).get("metadata") or {}).get("labels") or {}
        if found is not None and labels.get(PARENT_UID_LABEL) == self.uid:
            return found  # made by an earlier reconcile of this parent: adopted
        raise RunBlockedError(
            SPLIT,
            "ChildNameTaken",
            f"split: a Run {plan.name!r} that is not a child of this Run exists in {self.namespace}; rename or delete "
            "it (a child of an earlier Run of this name goes with it)",
        )

    async def _pin(self, name: str, uid: str) -> None:
        """The child runs the spec the parent was pinned to, even if the Pipeline is edited meanwhile."""
        digest, _ = await self.store.ensure_run(
            uid, self.namespace, name, self.pipeline, self.digest, self.pipeline_spec
        )
        if digest != self.digest:
            self.log.warning(f"run {self.key}: child {name} pinned to Pipeline sha256 {digest}, not {self.digest}")

    async def children(self) -> dict[str, dict[str, Any]]:
        listing = await self.client.get(runs_path(self.namespace), {"labelSelector": f"{PARENT_UID_LABEL}={self.uid}"})
        return {str(item["metadata"]["name"]): item for item in listing.get("items") or []}

    # --- each reconcile ------------------------------------------------------------------------------------

    async def step(self) -> None:
        """Push spec changes down, show the children's phases and totals."""
        children = await self.children()
        wanted = spec_down(self.body.get("spec") or {})
        for name, child in children.items():
            current = spec_down(child.get("spec") or {})
            changes = {k: v for k, v in wanted.items() if current.get(k) != v}
            if changes:
                with contextlib.suppress(KubeError):  # deleted meanwhile: the next reconcile shows it gone
                    await self.client.merge_patch(f"{runs_path(self.namespace)}/{name}", {"spec": changes})
        for entry in self.entries:
            seen = children.get(entry.name)
            if seen is not None:
                entry.uid = entry.uid or str(seen["metadata"]["uid"])
        await self._write(aggregate(self.entries, children, bool(wanted.get("suspend"))))

    async def _write(self, status: dict[str, Any]) -> None:
        previous = (self.body.get("status") or {}).get("conditions") or []
        conditions: list[Condition] = status.pop("conditions")
        comparable = status | {
            "conditions": [c.model_dump(mode="json", exclude={"last_transition_time"}) for c in conditions]
        }
        if comparable == self._last:
            return
        merged = merge_conditions(previous, conditions, utc_now())
        kept = [c for c in previous if c.get("type") not in {m.type for m in merged}]
        wire = status | {
            "children": [e.model_dump(mode="json", by_alias=True, exclude_none=True) for e in self.entries],
            "conditions": [*kept, *(c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in merged)],
        }
        await self.client.merge_patch(f"{runs_path(self.namespace)}/{self.name}/status", {"status": wire})
        self._last = comparable

    async def remove_children(self) -> None:
        """The parent was deleted: its children go too (the garbage collector would, later; this is at once)."""
        for name in await self.children():
            with contextlib.suppress(KubeError):
                await self.client.delete(f"{runs_path(self.namespace)}/{quote(name)}")


def spec_down(raw: Mapping[str, Any]) -> dict[str, Any]:
    """What may change while a Run runs, defaults filled in (a field removed from the parent is reset below)."""
    try:
        spec = RunSpec.model_validate(raw)
    except ValidationError:
        return {}
    wire = spec.model_dump(mode="json", by_alias=True)
    return {key: wire[key] for key in SPEC_DOWN}


def _divided_values(spec: RunSpec, child: Mapping[str, Any]) -> Iterable[tuple[str, str]]:
    inputs = (child.get("spec") or {}).get("inputs") or {}
    for name in spec.divided_inputs():
        given = inputs.get(name) or {}
        for value in given.get("datasetIds") or given.get("uris") or []:
            yield name, str(value)


def aggregate(entries: list[ChildRun], children: Mapping[str, Mapping[str, Any]], suspended: bool) -> dict[str, Any]:
    """The parent's status from its children's: phase, summed counts, times, failures, conditions."""
    totals = TaskCounts()
    phases: list[str] = []
    failed: list[dict[str, Any]] = []
    starts: list[str] = []
    ends: list[str] = []
    blocked: list[tuple[str, Mapping[str, Any]]] = []
    gone: list[str] = []
    for entry in entries:
        child = children.get(entry.name)
        if child is None:
            entry.phase = RunPhase.FAILED if entry.uid is not None else RunPhase.PENDING
            entry.progress = None
            if entry.uid is not None:
                gone.append(entry.name)
            phases.append(entry.phase.value)
            continue
        status = child.get("status") or {}
        phase = str(status.get("phase") or RunPhase.PENDING.value)
        entry.phase, entry.progress = RunPhase(phase), status.get("progress")
        phases.append(phase)
        counts = TaskCounts.model_validate(status.get("tasks") or {})
        totals = TaskCounts(**{k: getattr(totals, k) + getattr(counts, k) for k in TaskCounts.model_fields})
        failed.extend({**f, "task": f"{entry.name}/{f.get('task')}"} for f in status.get("failedTasks") or [])
        starts.extend([status["startTime"]] if status.get("startTime") else [])
        ends.extend([status["completionTime"]] if status.get("completionTime") else [])
        blocked.extend(
            (entry.name, c)
            for c in status.get("conditions") or []
            if c.get("type") in BLOCKING
            and c.get("status") == ("True" if c.get("type") == "SiteUnreachable" else "False")
        )
    phase = _phase(phases, suspended)
    done = phase in FINISHED
    return {
        "phase": phase,
        "site": None,
        "tasks": totals.model_dump(mode="json", by_alias=True),
        "progress": f"{totals.succeeded}/{totals.total}",
        "startTime": min(starts) if starts else None,
        "completionTime": max(ends) if done and ends else None,
        "failedTasks": failed[:MAX_FAILED_TASKS],
        "conditions": [_children_condition(entries, blocked, gone)],
    }


def _phase(phases: list[str], suspended: bool) -> str:
    if phases and all(p == RunPhase.SUCCEEDED.value for p in phases):
        return RunPhase.SUCCEEDED.value
    if phases and all(p in FINISHED for p in phases):
        return RunPhase.FAILED.value
    if any(p == RunPhase.RUNNING.value for p in phases):
        return RunPhase.RUNNING.value
    if suspended and phases and all(p in (*FINISHED, RunPhase.SUSPENDED.value) for p in phases):
        return RunPhase.SUSPENDED.value
    if any(p in FINISHED for p in phases):
        return RunPhase.RUNNING.value  # some done, the others not started yet
    return RunPhase.PENDING.value


def _children_condition(
    entries: list[ChildRun], blocked: list[tuple[str, Mapping[str, Any]]], gone: list[str]
) -> Condition:
    if gone:
        return condition(
            CHILDREN_READY,
            False,
            "ChildGone",
            f"child Run(s) {', '.join(gone)} were deleted; their inputs are not processed (not made again: their "
            "tasks may have run); re-create this Run to process them",
        )
    if blocked:
        name, cond = blocked[0]
        more = f" (and {len(blocked) - 1} more)" if len(blocked) > 1 else ""
        return condition(
            CHILDREN_READY, False, str(cond.get("reason") or "Blocked"), f"{name}: {cond.get('message', '')}{more}"
        )
    made = sum(1 for e in entries if e.uid is not None)
    return condition(CHILDREN_READY, True, "ChildrenMade", f"{made} of {len(entries)} child Run(s) made")


def plan_message(plans: Sequence[ChildPlan]) -> str:
    parts = [f"{p.name} at {p.site} ({p.count} input(s))" for p in plans]
    return f"{len(plans)} child Run(s), one per Site holding inputs: {', '.join(parts)}"


def placements_needed(items: Iterable[Item]) -> list[int]:
    return sorted({item.observation for item in items if item.observation is not None})

"""What an arrival means for the triggers, as pure functions: which groups it may complete, the archive query
that lists a group, whether a group is complete, and the Run a complete group becomes.

The archive is the source of truth for a group: a group's members are whatever the archive holds for its key,
asked again at every arrival, so nothing here is remembered between events and a restart loses nothing.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sgs.expression import SiteFacts, evaluate_sites
from sgs.expression.dimensions import DataIdMatcher, compile_matcher
from sgs.expression.sites import SiteNode, parse_sites
from sgs.model.base import API_VERSION
from sgs.model.dataset import DataId, DimensionUniverse, DimensionValue
from sgs.model.pipeline import TriggerSpec
from sgs.naming import dns_label, short_hash
from sgs.telemetry.context import CAUSE_ANNOTATION

PIPELINE_LABEL = "sgs.io/pipeline"
TRIGGER_LABEL = "sgs.io/trigger"
GROUP_ANNOTATION = "sgs.io/trigger-group"
MAX_RUN_NAME = 63  # the Run's name is a prefix of its Jobs' names: a DNS label keeps those readable
_HASH = 12

GroupKey = tuple[DimensionValue, ...]


@dataclass(frozen=True)
class CompiledTrigger:
    """One trigger of one Pipeline, its expressions compiled."""

    namespace: str
    pipeline: str
    spec: TriggerSpec
    matcher: DataIdMatcher
    sites: SiteNode | None

    def key_of(self, data_id: Mapping[str, DimensionValue]) -> GroupKey | None:
        """The group key of a data ID; None when it lacks a grouping dimension (it belongs to no group)."""
        values = [data_id.get(name) for name in self.spec.group_by]
        if any(v is None for v in values):
            return None
        return tuple(v for v in values if v is not None)


def compile_trigger(namespace: str, pipeline: str, spec: TriggerSpec, universe: DimensionUniverse) -> CompiledTrigger:
    """ExpressionError when ``where`` names a dimension the archive does not have (admission checked the syntax)."""
    for name in spec.group_by:
        universe.element(name)  # DataIdError naming an unknown grouping dimension
    return CompiledTrigger(
        namespace=namespace,
        pipeline=pipeline,
        spec=spec,
        matcher=compile_matcher(spec.where, universe),
        sites=parse_sites(spec.sites) if spec.sites is not None else None,
    )


@dataclass(frozen=True)
class Arrival:
    """A dataset that became available at a Site."""

    dataset_id: uuid.UUID
    dataset_type: str
    data_id: DataId
    run: str
    site: str


@dataclass(frozen=True)
class Group:
    """A candidate group: one trigger, one Site, one key. Equal groups are evaluated once per batch."""

    trigger: CompiledTrigger
    site: str
    key: GroupKey

    @property
    def observation(self) -> int | None:
        """The observation the group is of, when it is grouped by observation (a placement may say where)."""
        names = self.trigger.spec.group_by
        value = self.key[names.index("observation")] if "observation" in names else None
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def ident(self) -> tuple[str, str, str, str, GroupKey]:
        return (self.trigger.namespace, self.trigger.pipeline, self.trigger.spec.name, self.site, self.key)


def groups_of(
    arrivals: Iterable[Arrival], triggers: Sequence[CompiledTrigger], sites: Mapping[str, Sequence[SiteFacts]]
) -> list[Group]:
    """The groups the arrivals may complete: each trigger whose type, collections, expression and Sites match.

    ``sites``: the Sites of each namespace. An arrival counts only at a Site of the Pipeline's namespace (a Run
    is dispatched to a Site there).
    """
    found: dict[tuple[Any, ...], Group] = {}
    selected: dict[tuple[str, str, str], frozenset[str]] = {}
    for arrival in arrivals:
        for trigger in triggers:
            spec = trigger.spec
            if spec.dataset_type != arrival.dataset_type:
                continue
            if spec.collections is not None and arrival.run not in spec.collections:
                continue
            ident = (trigger.namespace, trigger.pipeline, spec.name)
            if ident not in selected:
                selected[ident] = _sites_of(trigger, sites.get(trigger.namespace, ()))
            if arrival.site not in selected[ident] or not trigger.matcher(arrival.data_id):
                continue
            key = trigger.key_of(arrival.data_id)
            if key is None:
                continue
            group = Group(trigger, arrival.site, key)
            found.setdefault(group.ident, group)
    return list(found.values())


def _sites_of(trigger: CompiledTrigger, sites: Sequence[SiteFacts]) -> frozenset[str]:
    if trigger.sites is None:
        return frozenset(s.name for s in sites)
    return evaluate_sites(trigger.sites, sites)


def literal(value: DimensionValue) -> str:
    """A value as a literal of the dimension expression language."""
    if isinstance(value, int):
        return str(value)
    return "'" + value.replace("'", "''") + "'"


def group_where(group: Group) -> str:
    """The archive query selecting the group's datasets: the trigger's expression and the key's values."""
    spec = group.trigger.spec
    parts = [f"({spec.where})"] if spec.where.strip() else []
    parts += [f"{name} = {literal(value)}" for name, value in zip(spec.group_by, group.key, strict=True)]
    return " AND ".join(parts)


@dataclass(frozen=True)
class Member:
    """A dataset of a group, as the archive knows it, and whether it is available at the group's Site."""

    dataset_id: uuid.UUID
    data_id: DataId
    run: str
    available: bool


def complete_members(group: Group, known: Sequence[Member]) -> list[Member] | None:
    """The members a complete group's Run takes, in data ID order; None while the group is incomplete.

    ``count``: at least that many available at the Site (all available ones are taken). ``allKnown``: every
    dataset the archive knows for the key (in the trigger's collections) is available at the Site.
    """
    spec = group.trigger.spec
    members = [m for m in known if spec.collections is None or m.run in spec.collections]
    available = sorted((m for m in members if m.available), key=_order)
    if not available:
        return None
    if spec.complete.count is not None:
        return available if len(available) >= spec.complete.count else None
    return available if len(available) == len(members) else None


def _order(member: Member) -> tuple[str, str]:
    return json.dumps(member.data_id, sort_keys=True), str(member.dataset_id)


def group_text(group: Group) -> str:
    """The group's identity as canonical text: what the Run's name hashes, and its annotation."""
    spec = group.trigger.spec
    key = dict(zip(spec.group_by, group.key, strict=True))
    return json.dumps({"trigger": spec.name, "site": group.site, "key": key}, sort_keys=True, separators=(",", ":"))


def run_name(group: Group) -> str:
    """``<pipeline>-<hash of trigger, Site and key>``: the same group always names the same Run."""
    digest = short_hash(f"{group.trigger.pipeline}\x1f{group_text(group)}", _HASH)
    prefix = dns_label(group.trigger.pipeline)[: MAX_RUN_NAME - _HASH - 1].rstrip("-")
    return f"{prefix}-{digest}"


def run_manifest(group: Group, members: Sequence[Member], cause: str | None = None) -> dict[str, Any]:
    """The Run a complete group becomes: at the group's Site, the members bound to the trigger's input.

    ``cause``: the traceparent of the span creating it, kept as an annotation (the Run's trace links to it)."""
    spec = group.trigger.spec
    inputs: dict[str, Any] = {name: bound.to_wire() for name, bound in spec.inputs.items()}
    inputs[spec.input] = {"datasetIds": [str(m.dataset_id) for m in members]}
    annotations = {GROUP_ANNOTATION: group_text(group)}
    if cause is not None:
        annotations[CAUSE_ANNOTATION] = cause
    return {
        "apiVersion": API_VERSION,
        "kind": "Run",
        "metadata": {
            "name": run_name(group),
            "namespace": group.trigger.namespace,
            "labels": {
                PIPELINE_LABEL: dns_label(group.trigger.pipeline)[:63],
                TRIGGER_LABEL: spec.name,
            },
            "annotations": annotations,
        },
        "spec": {"pipeline": group.trigger.pipeline, "site": group.site, "inputs": inputs, "priority": spec.priority},
    }

"""What a plan implies elsewhere: the replication rules that put each observation's raw data at its primary and
secondary Site, and which Site a Run for an observation goes to.

Both are pure: the operator sends the rules to the transfer service and asks ``run_site`` when it dispatches.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sgs.model.site import MaintenanceWindow, SitePhase
from sgs.placement.plan import Assignments

RAW_DATASET_TYPE = "raw"
MAX_WHERE_CHARS = 9_000  # a rule's "observation IN (...)" stays under the transfer service's 10,000 characters


@dataclass(frozen=True)
class RuleSpec:
    """Copies of the raw datasets of some observations, one at each of ``sites`` (primary first)."""

    name: str
    dataset_type: str
    observations: tuple[int, ...]
    sites: tuple[str, ...]

    @property
    def where(self) -> str:
        """The selector in the archive's expression language."""
        return f"observation IN ({', '.join(str(o) for o in self.observations)})"

    @property
    def copies(self) -> int:
        return len(self.sites)


def replication_rules(owner: str, plan: Assignments, dataset_type: str = RAW_DATASET_TYPE) -> list[RuleSpec]:
    """One rule per (primary, secondary) pair and chunk of observations, named deterministically."""
    groups: dict[tuple[str, ...], list[int]] = {}
    for obs in sorted(plan.observations):
        primary, secondary = plan.observations[obs]
        groups.setdefault((primary, secondary) if secondary else (primary,), []).append(obs)
    rules = []
    for sites in sorted(groups):
        chunks: list[list[int]] = [[]]
        length = 0
        for obs in groups[sites]:
            size = len(str(obs)) + 2
            if chunks[-1] and length + size > MAX_WHERE_CHARS:
                chunks.append([])
                length = 0
            chunks[-1].append(obs)
            length += size
        for part, chunk in enumerate(chunks):
            rules.append(RuleSpec(f"{owner}-{'-'.join(sites)}-{part}", dataset_type, tuple(chunk), sites))
    return rules


NOT_PLACED = "NotPlaced"


def placement_params(observation: int) -> dict[str, str]:
    """The archive's ``GET /placements`` query for one observation's row."""
    return {"dimension": "observation", "value": str(observation), "limit": "1"}


def placement_of(rows: list[dict[str, Any]]) -> tuple[str, str | None] | None:
    """(primary, secondary) from that query's answer; None: the observation is not placed."""
    return (str(rows[0]["primary_site"]), rows[0].get("secondary_site")) if rows else None


@dataclass(frozen=True)
class RunSite:
    site: str | None
    reason: str
    message: str


def _down(windows: list[MaintenanceWindow], now: datetime) -> bool:
    return any(w.start <= now < w.end for w in windows)


def run_site(
    observation: int,
    placement: tuple[str, str | None] | None,
    phases: Mapping[str, str],
    maintenance: Mapping[str, list[MaintenanceWindow]],
    now: datetime,
) -> RunSite:
    """A Run for ``observation`` goes to its primary Site; to the secondary when the primary is in maintenance
    (a window covering ``now`` or phase Maintenance) or not Ready; nowhere (site None) when neither can take it."""
    if placement is None:
        return RunSite(None, NOT_PLACED, f"observation {observation} has no placement")
    primary, secondary = placement

    def usable(site: str) -> tuple[bool, str]:
        phase = phases.get(site, SitePhase.PENDING.value)
        if _down(maintenance.get(site, []), now) or phase == SitePhase.MAINTENANCE.value:
            return False, "in maintenance"
        return phase == SitePhase.READY.value, phase

    ok, why = usable(primary)
    if ok:
        return RunSite(primary, "PlacedPrimary", f"observation {observation}: primary Site {primary}")
    if secondary is not None:
        backup, backup_why = usable(secondary)
        if backup:
            message = f"observation {observation}: primary {primary} is {why}; its secondary {secondary} takes it"
            return RunSite(secondary, "PlacedSecondary", message)
        message = f"observation {observation}: primary {primary} is {why}, secondary {secondary} is {backup_why}"
        return RunSite(None, "PlacedSitesUnavailable", message)
    return RunSite(None, "PlacedSitesUnavailable", f"observation {observation}: primary {primary} is {why}")

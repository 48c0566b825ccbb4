"""Which Site a Run without ``spec.site`` goes to, decided once and kept in its status.

The rule needs nothing but what the operator already sees: among the Run's namespace's Sites whose status is
``Ready``, the one with the most free task slots (``compute.maxParallel`` minus the tasks this operator runs
there), ties broken by name so the choice is reproducible. DESIGN.md's "work goes to the data" rule (the Site
holding most of the Run's input bytes) needs the archive's replica view, which the operator is not wired to
yet; when it is, input bytes come first and this rule breaks their ties.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sgs.model.site import SitePhase, SiteSpec

REASON_NAMED = "SiteNamed"  # spec.site
REASON_KEPT = "SiteKept"  # chosen before (status.site): a restart must not move running tasks
REASON_CHOSEN = "MostFreeSlots"


class NoReadySiteError(Exception):
    """No Site of the namespace can take the Run now (none, or none Ready)."""


@dataclass(frozen=True)
class SiteChoice:
    name: str
    reason: str
    message: str


def choose_site(
    sites: Mapping[str, SiteSpec], phases: Mapping[str, str], running: Mapping[str, int], namespace: str
) -> SiteChoice:
    """The Ready Site with the most free slots, ties by name; the message says why, naming the others."""
    if not sites:
        raise NoReadySiteError(f"spec.site: unset and no Site in namespace {namespace}")
    ready = sorted(name for name in sites if phases.get(name) == SitePhase.READY.value)
    if not ready:
        seen = ", ".join(f"{name} {phases.get(name) or SitePhase.PENDING.value}" for name in sorted(sites))
        raise NoReadySiteError(f"spec.site: unset and no Site of {namespace} is Ready ({seen})")
    free = {name: sites[name].compute.max_parallel - running.get(name, 0) for name in ready}
    best = min(ready, key=lambda name: (-free[name], name))
    others = [f"{name} {free[name]}" for name in ready if name != best]
    not_ready = [f"{name} {phases.get(name) or SitePhase.PENDING.value}" for name in sorted(sites) if name not in free]
    message = (
        f"spec.site unset: {best} is the Ready Site with the most free task slots "
        f"({free[best]} of {sites[best].compute.max_parallel})"
        + (f"; other Ready Sites' free slots: {', '.join(others)}" if others else "")
        + (f"; not Ready: {', '.join(not_ready)}" if not_ready else "")
    )
    return SiteChoice(best, REASON_CHOSEN, message)

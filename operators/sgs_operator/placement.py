"""Which Site a Run without ``spec.site`` goes to, decided once and kept in its status.

A Run whose inputs are all of one observation that the survey's placement (a DataPlacement, in the archive's
placement table) gives a primary and a secondary Site goes to its primary, or to its secondary when the primary
is in maintenance or not Ready (``sgs.placement.consequences.run_site``). Otherwise work goes to the data
(DESIGN.md): among the Run's namespace's Sites whose status is ``Ready``, the one whose
storage holds the most bytes of the Run's input files; then the most free task slots (``compute.maxParallel``
minus the tasks this operator runs there); then the name, so the choice is reproducible. What a Site holds of
path inputs is read from its POSIX storage path (the operator sees the files); of archive inputs (query,
datasetIds), from the archive's replicas, at POSIX and S3 Sites alike (``sgs_operator.inputs``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sgs.model.site import SitePhase, SiteSpec, StorageKind
from sgs.placement.consequences import NOT_PLACED, RunSite

REASON_NAMED = "SiteNamed"  # spec.site
REASON_KEPT = "SiteKept"  # chosen before (status.site): a restart must not move running tasks
REASON_CHOSEN = "MostFreeSlots"
REASON_DATA = "MostInputBytes"


class NoReadySiteError(Exception):
    """No Site of the namespace can take the Run now (none, or none Ready)."""


@dataclass(frozen=True)
class SiteChoice:
    name: str
    reason: str
    message: str


def input_bytes_by_site(sites: Mapping[str, SiteSpec], sizes: Mapping[str, int]) -> dict[str, int]:
    """Bytes of the Run's input files (path → size) under each POSIX Site's storage path."""
    held: dict[str, int] = {}
    for name, site in sites.items():
        root = site.storage.path if site.storage.kind is StorageKind.POSIX else None
        prefix = root.rstrip("/") + "/" if root else None
        held[name] = sum(size for path, size in sizes.items() if prefix and path.startswith(prefix))
    return held


def choose_site(
    sites: Mapping[str, SiteSpec],
    phases: Mapping[str, str],
    running: Mapping[str, int],
    namespace: str,
    held: Mapping[str, int] | None = None,
    placed: RunSite | None = None,
) -> SiteChoice:
    """The Ready Site holding most input bytes, then with most free slots, then by name; the message says why,
    naming the others. A Run of a placed observation (``placed``, from ``sgs.placement.consequences.run_site``)
    goes to its primary Site, or its secondary when the primary is down, before any of that."""
    if placed is not None and placed.site is not None and phases.get(placed.site) == SitePhase.READY.value:
        return SiteChoice(placed.site, placed.reason, f"spec.site unset: {placed.message}")
    choice = _by_data_and_slots(sites, phases, running, namespace, held)
    if placed is not None and placed.reason != NOT_PLACED:  # placed, but neither of its Sites can take it now
        return SiteChoice(choice.name, choice.reason, f"{choice.message}; placement: {placed.message}")
    return choice


def _by_data_and_slots(
    sites: Mapping[str, SiteSpec],
    phases: Mapping[str, str],
    running: Mapping[str, int],
    namespace: str,
    held: Mapping[str, int] | None,
) -> SiteChoice:
    if not sites:
        raise NoReadySiteError(f"spec.site: unset and no Site in namespace {namespace}")
    ready = sorted(name for name in sites if phases.get(name) == SitePhase.READY.value)
    if not ready:
        seen = ", ".join(f"{name} {phases.get(name) or SitePhase.PENDING.value}" for name in sorted(sites))
        raise NoReadySiteError(f"spec.site: unset and no Site of {namespace} is Ready ({seen})")
    data = {name: (held or {}).get(name, 0) for name in ready}
    free = {name: sites[name].compute.max_parallel - running.get(name, 0) for name in ready}
    best = min(ready, key=lambda name: (-data[name], -free[name], name))
    slots = f"{free[best]} of {sites[best].compute.max_parallel} task slots free"
    if data[best] > 0:
        reason = REASON_DATA
        why = f"{best} is the Ready Site holding the most of the Run's input bytes ({data[best]:,} B; {slots})"
        others = [f"{name} {data[name]:,} B" for name in ready if name != best]
        label = "other Ready Sites hold"
    else:
        reason = REASON_CHOSEN
        why = f"{best} is the Ready Site with the most free task slots ({free[best]} of "
        why += f"{sites[best].compute.max_parallel})"
        others = [f"{name} {free[name]}" for name in ready if name != best]
        label = "other Ready Sites' free slots"
    not_ready = [f"{name} {phases.get(name) or SitePhase.PENDING.value}" for name in sorted(sites) if name not in free]
    message = (
        f"spec.site unset: {why}"
        + (f"; {label}: {', '.join(others)}" if others else "")
        + (f"; not Ready: {', '.join(not_ready)}" if not_ready else "")
    )
    return SiteChoice(best, reason, message)

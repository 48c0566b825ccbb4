"""Where a rule's copies go, and which copy a transfer reads from.

Destinations: the Sites a rule's Site expression selects, minus those in maintenance or without room for the
file, ranked per dataset by weighted rendezvous hashing (highest random weight): each Site draws a
pseudo-random number from (dataset, Site) and scores ``weight × free share / -ln(u)``. A dataset thus lands
on the same Sites every time it is evaluated (a retried evaluation changes nothing), Sites receive data in
proportion to their weight and free storage, and adding or removing a Site moves only the datasets that
ranked it first — the Euclid distribution rules' "function of the SDC's size", without a central table.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass

SCORE_FLOOR = 1e-12


@dataclass(frozen=True)
class Candidate:
    """A Site as destination choice sees it."""

    name: str
    weight: float = 1.0
    capacity_bytes: int | None = None
    used_bytes: int = 0
    in_maintenance: bool = False

    @property
    def free_bytes(self) -> int | None:
        return None if self.capacity_bytes is None else max(self.capacity_bytes - self.used_bytes, 0)

    def free_share(self) -> float:
        if self.capacity_bytes is None or self.capacity_bytes <= 0:
            return 1.0
        return (self.free_bytes or 0) / self.capacity_bytes


@dataclass(frozen=True)
class Destinations:
    """The Sites that hold (or will hold) the rule's copies of one dataset, and why there are too few, if so."""

    sites: tuple[str, ...]
    new: tuple[str, ...]
    shortfall: int = 0
    reason: str | None = None


def _uniform(key: str, site: str) -> float:
    digest = hashlib.blake2b(f"{key}\x1f{site}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") + 0.5) / 2.0**64


def rendezvous_rank(key: str, candidates: Sequence[Candidate]) -> list[Candidate]:
    """Candidates best first for ``key`` (a dataset id, or a rule id for rules placing all datasets together)."""

    def score(candidate: Candidate) -> float:
        weight = max(candidate.weight * candidate.free_share(), SCORE_FLOOR)
        return weight / -math.log(_uniform(key, candidate.name))

    return sorted(candidates, key=lambda c: (-score(c), c.name))


def choose_destinations(
    key: str,
    copies: int,
    matching: Sequence[Candidate],
    holding: Collection[str],
    size: int = 0,
) -> Destinations:
    """``copies`` Sites among ``matching`` for one dataset, keeping the Sites that already hold (or are getting)
    a copy and adding the best-ranked others that are not in maintenance and have room for ``size`` bytes."""
    kept = sorted(c.name for c in matching if c.name in holding)[:copies]
    needed = copies - len(kept)
    if needed <= 0:
        return Destinations(tuple(kept), ())
    eligible = [
        c
        for c in matching
        if c.name not in holding and not c.in_maintenance and (c.free_bytes is None or c.free_bytes >= size)
    ]
    new = tuple(c.name for c in rendezvous_rank(key, eligible)[:needed])
    shortfall = needed - len(new)
    reason = _shortfall_reason(copies, matching, holding, size) if shortfall else None
    return Destinations(tuple(kept) + new, new, shortfall, reason)


def _shortfall_reason(copies: int, matching: Sequence[Candidate], holding: Collection[str], size: int) -> str:
    asked = f"{copies} {_plural(copies, 'copy', 'copies')} asked"
    if not matching:
        return f"{asked}, but the Site expression matches no Site"
    names = ", ".join(sorted(c.name for c in matching))
    text = f"{asked}, {len(matching)} {_plural(len(matching), 'Site matches', 'Sites match')} ({names})"
    unusable = []
    for c in matching:
        if c.name in holding:
            continue
        if c.in_maintenance:
            unusable.append(f"{c.name} in maintenance")
        elif c.free_bytes is not None and c.free_bytes < size:
            unusable.append(f"{c.name} full ({c.free_bytes} bytes free, {size} needed)")
    return text + (f"; not usable now: {'; '.join(unusable)}" if unusable else "")


def _plural(n: int, one: str, many: str) -> str:
    return one if n == 1 else many


@dataclass(frozen=True)
class SourceOption:
    """A replica a transfer could read from."""

    site: str
    healthy: bool = True
    active_transfers: int = 0


def choose_source(options: Sequence[SourceOption], preferred: Collection[str] = ()) -> str | None:
    """The healthy source to read from: a preferred Site first, then the one with fewest active transfers."""
    healthy = [o for o in options if o.healthy]
    if not healthy:
        return None
    best = min(healthy, key=lambda o: (o.site not in preferred, o.active_transfers, o.site))
    return best.site

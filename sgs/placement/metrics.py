"""The figures of a plan, computed from its observation and tile assignments alone (not the solver's state).

So a plan from the solver, the greedy baseline, the MILP or a file is judged by the same code: shares overall
and per sliding window, the longest time each Site goes without new data while up, tile coherence and copies,
secondary != primary, churn against the previous plan, frozen observations moved, maintenance recovery.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from sgs.placement.plan import Plan, PlanRequest
from sgs.placement.sites import target_shares
from sgs.placement.units import SECONDS_PER_DAY


class SiteFigures(BaseModel):
    model_config = ConfigDict(frozen=True)

    site: str
    target: float
    share: float
    primaries: int
    secondaries: int
    tiles: int
    worst_window_error: float = Field(description="Largest |window share - target| outside maintenance (0-1).")
    longest_gap_days: float = Field(description="Longest time with no new primary while the Site is up.")
    longest_gap_any_days: float = Field(description="The same counting secondary copies as new data.")
    recovery_error: float | None = Field(
        default=None, description="|cumulative share - target| recoveryDays after the Site's last maintenance."
    )


class PlanReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    observations: int
    frozen: int
    tiles: int
    pairs: int
    sites: list[SiteFigures]
    share_error: float = Field(description="Largest |overall share - target| over the Sites (0-1).")
    worst_window_error: float
    windows_counted: int
    longest_gap_days: float
    tiles_coherent: float = Field(description="Share of tiles whose observations are all at the tile's primary.")
    copied_pairs: float = Field(description="Share of (observation, tile) pairs at a Site other than the tile's.")
    secondary_equals_primary: int
    previous_observations: int = Field(description="Observations the previous plan also placed.")
    churn: float = Field(description="Share of those whose primary changed.")
    frozen_moved: int
    digest: str


def _longest_gaps(times: NDArray[np.int64], start: int, end: int, down: list[tuple[int, int]]) -> float:
    """Longest interval (days) between arrivals, from the first to the last observation, minus time down."""
    points = np.concatenate([[start], np.sort(times), [end]])
    best = 0.0
    gaps = np.diff(points)
    for k in np.argsort(-gaps, kind="stable")[:64].tolist():  # the longest raw gaps; downtime only shortens
        lo, hi = int(points[k]), int(points[k + 1])
        lost = sum(max(0, min(hi, e) - max(lo, s)) for s, e in down)
        best = max(best, (hi - lo - lost) / SECONDS_PER_DAY)
        if gaps[k] / SECONDS_PER_DAY <= best:
            break
    return best


def evaluate(request: PlanRequest, plan: Plan) -> PlanReport:
    survey, policy = request.survey, request.policy
    names = plan.sites
    count = len(names)
    shares = target_shares(request.sites, policy)
    index = survey.index_of()
    rows = np.array([index[int(i)] for i in plan.obs_ids.tolist()], dtype=np.int64)
    times = survey.times[rows]
    primary, secondary = plan.obs_primary, plan.obs_secondary
    n = int(rows.size)
    start = int(request.start.timestamp())
    down = [
        [(int(w.start.timestamp()), int(w.end.timestamp())) for w in site.maintenance]
        if policy.avoid_maintenance
        else []
        for site in request.sites
    ]
    primaries = np.bincount(primary, minlength=count) if n else np.zeros(count, dtype=np.int64)
    ok_secondary = secondary >= 0
    secondaries = np.bincount(secondary[ok_secondary], minlength=count)
    share = primaries / max(n, 1)

    windows, worst = _window_errors(request, times, primary, shares, down, start)
    first, last = (int(times.min()), int(times.max())) if n else (start, start)
    gaps = [_longest_gaps(times[primary == j], first, last, down[j]) for j in range(count)]
    gaps_any = [_longest_gaps(times[(primary == j) | (secondary == j)], first, last, down[j]) for j in range(count)]
    recovery = _recovery(request, times, primary, shares, down, start)

    pair_obs, pair_tile_ids = survey.pairs_of(rows)
    pair_tiles = np.searchsorted(plan.tile_ids, pair_tile_ids)
    copied = primary[pair_obs] != plan.tile_primary[pair_tiles]
    split = np.bincount(pair_tiles[copied], minlength=plan.tile_ids.size) > 0
    tile_counts = np.bincount(plan.tile_primary, minlength=count)

    previous = request.previous.observations if request.previous else {}
    ids = plan.obs_ids.tolist()
    before = [(k, previous[i]) for k, i in enumerate(ids) if i in previous]
    changed = sum(1 for k, (p, _) in before if names[primary[k]] != p)
    frozen_rows = [(k, previous[i]) for k, i in enumerate(ids) if i in request.frozen and i in previous]
    frozen_moved = sum(
        1
        for k, (p, s) in frozen_rows
        if names[primary[k]] != p or (secondary[k] >= 0 and names[secondary[k]] != s) or (secondary[k] < 0 and s)
    )
    figures = [
        SiteFigures(
            site=names[j],
            target=round(float(shares[j]), 6),
            share=round(float(share[j]), 6),
            primaries=int(primaries[j]),
            secondaries=int(secondaries[j]),
            tiles=int(tile_counts[j]),
            worst_window_error=round(float(worst[j]), 6),
            longest_gap_days=round(gaps[j], 4),
            longest_gap_any_days=round(gaps_any[j], 4),
            recovery_error=_rounded(recovery[j]),
        )
        for j in range(count)
    ]
    return PlanReport(
        observations=n,
        frozen=len(frozen_rows),
        tiles=int(plan.tile_ids.size),
        pairs=int(pair_obs.size),
        sites=figures,
        share_error=round(float(np.abs(share - shares).max()) if n else 0.0, 6),
        worst_window_error=round(float(worst.max()) if worst.size else 0.0, 6),
        windows_counted=windows,
        longest_gap_days=round(max(gaps) if gaps else 0.0, 4),
        tiles_coherent=round(1.0 - float(split.mean()) if split.size else 1.0, 6),
        copied_pairs=round(float(copied.mean()) if copied.size else 0.0, 6),
        secondary_equals_primary=int((primary == secondary).sum()),
        previous_observations=len(before),
        churn=round(changed / len(before), 6) if before else 0.0,
        frozen_moved=frozen_moved,
        digest=plan.digest(),
    )


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def _daily(times: NDArray[np.int64], sites: NDArray[np.int64], count: int, start: int, days: int) -> NDArray[np.int64]:
    day = (times - start) // SECONDS_PER_DAY
    keep = (day >= 0) & (day < days)
    out = np.zeros((count, days), dtype=np.int64)
    np.add.at(out, (sites[keep], day[keep]), 1)
    return out


def _window_errors(
    request: PlanRequest,
    times: NDArray[np.int64],
    primary: NDArray[np.int64],
    shares: NDArray[np.float64],
    down: list[list[tuple[int, int]]],
    start: int,
) -> tuple[int, NDArray[np.float64]]:
    """Sliding windows (1-day step) of windowDays inside the data span that touch no maintenance window nor
    the recoveryDays after one; worst |share - target| per Site over them."""
    count = shares.size
    if times.size == 0:
        return 0, np.zeros(count)
    policy = request.policy
    length = max(1, round(policy.window_days))
    first_day = int((times.min() - start) // SECONDS_PER_DAY)
    last_day = int((times.max() - start) // SECONDS_PER_DAY)
    days = last_day + 1
    daily = _daily(times, primary, count, start, days)
    cum = np.concatenate([np.zeros((count, 1), dtype=np.int64), np.cumsum(daily, axis=1)], axis=1)
    starts = np.arange(first_day, max(first_day, days - length) + 1)
    ends = np.minimum(starts + length, days)
    blocked = np.zeros(starts.size, dtype=bool)
    recovery = policy.recovery_days * SECONDS_PER_DAY
    for windows in down:
        for s, e in windows:
            lo = math.floor((s - start) / SECONDS_PER_DAY)
            hi = math.ceil((e + recovery - start) / SECONDS_PER_DAY)
            blocked |= (starts < hi) & (ends > lo)
    counts = cum[:, ends] - cum[:, starts]
    volume = counts.sum(axis=0)
    keep = ~blocked & (volume > 0)
    if not keep.any():
        return 0, np.zeros(count)
    error = np.abs(counts[:, keep] / volume[keep] - shares[:, None])
    return int(keep.sum()), np.asarray(error.max(axis=1), dtype=np.float64)


def _recovery(
    request: PlanRequest,
    times: NDArray[np.int64],
    primary: NDArray[np.int64],
    shares: NDArray[np.float64],
    down: list[list[tuple[int, int]]],
    start: int,
) -> list[float | None]:
    """|cumulative share since the horizon start - target|, recoveryDays after each Site's last maintenance."""
    out: list[float | None] = []
    recovery = int(request.policy.recovery_days * SECONDS_PER_DAY)
    for j, windows in enumerate(down):
        ends = [e for s, e in windows if e > start]
        if not ends or times.size == 0:
            out.append(None)
            continue
        at = max(ends) + recovery
        if at > int(times.max()):
            out.append(None)
            continue
        seen = times < at
        out.append(abs(float((primary[seen] == j).mean()) - float(shares[j])))
    return out

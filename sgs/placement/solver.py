"""The placement solver: units to Sites by a weighted objective, built in time order and refined by local search.

Formulation. Each placement unit (see ``units``) goes to one Site. The objective sums normalised terms, each
weighted by ``policy.weights``:

* **window share**: in every ``windowDays`` window (stepping by a sixth of it), sum over Sites of
  |primaries - target x window volume| / volume, the target re-normalised over the Sites up that window;
* **cumulative share**: the same on the cumulative counts since the horizon start, with the nominal targets,
  so a Site back from maintenance is given more until it has caught up (and its last checkpoint is the overall
  share);
* **gap**: the number of ``maxGapDays`` windows in which an available Site receives nothing;
* **copies** and **split tiles**: (observation, tile) pairs at a Site other than the tile's majority Site, and
  tiles not entirely at one Site (MER coherence across unit borders; a unit's inner tiles are always whole);
* **churn**: observations whose primary differs from the previous plan;
* **external**: observations needing ground data their Site does not ingest.

Maintenance is zero capacity: a unit with an observation inside a Site's maintenance window cannot go there.
Frozen observations are fixed where the previous plan put them and only enter the terms as constants.

Why not a min-cost flow: the share and churn terms alone form a transportation problem, but tile coherence is a
pairwise (Potts) term between neighbouring units that no flow expresses, and whole units spanning several
time windows make the capacities a generalised assignment (NP-hard). A greedy pass in time order (each unit to
the Site that lowers the objective most, given what came before) followed by local-search passes (each unit
re-placed given all others) is exact on the same objective, fast in numpy (a unit's move touches only its
windows, checkpoints and border tiles), deterministic, and ``exact.py`` checks it against the MILP optimum on
small instances.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
from numpy.typing import NDArray

from sgs.model.placement import PlacementPolicy, PlacementWeights
from sgs.placement.plan import Plan, PlanRequest
from sgs.placement.sites import target_shares
from sgs.placement.units import SECONDS_PER_DAY, Units, build_units, home_pixels

INFEASIBLE = math.inf


@dataclass(frozen=True)
class Scope:
    """What a request plans: survey rows in the horizon, which are fixed, and earlier rows kept as context."""

    rows: NDArray[np.int64]  # survey indices with start <= time < end, in time order
    fixed_primary: NDArray[np.int64]  # per scope row: site index if frozen, else -1
    fixed_secondary: NDArray[np.int64]
    prev_primary: NDArray[np.int64]  # per scope row: the previous plan's site, -1 if none
    prev_secondary: NDArray[np.int64]
    context: NDArray[np.int64]  # survey indices before the horizon that the previous plan placed
    context_primary: NDArray[np.int64]
    context_secondary: NDArray[np.int64]
    days: NDArray[np.int64]  # day of each scope row since the horizon start
    horizon_days: int

    @property
    def movable(self) -> NDArray[np.bool_]:
        return np.asarray(self.fixed_primary < 0)


def site_index(names: tuple[str, ...]) -> dict[str, int]:
    return {name: i for i, name in enumerate(names)}


def make_scope(request: PlanRequest) -> Scope:
    survey = request.survey
    names = tuple(s.name for s in request.sites)
    index = site_index(names)
    start, end = int(request.start.timestamp()), int(request.end.timestamp())
    rows = np.flatnonzero((survey.times >= start) & (survey.times < end)).astype(np.int64)
    previous = request.previous.observations if request.previous else {}

    def lookup(ids: NDArray[np.int64], slot: int) -> NDArray[np.int64]:
        out = np.full(ids.size, -1, dtype=np.int64)
        for k, obs in enumerate(ids.tolist()):
            pair = previous.get(obs)
            name = pair[slot] if pair else None
            if name is not None and name in index:
                out[k] = index[name]
        return out

    ids = survey.ids[rows]
    prev_primary, prev_secondary = lookup(ids, 0), lookup(ids, 1)
    frozen = np.array([obs in request.frozen for obs in ids.tolist()], dtype=bool) & (prev_primary >= 0)
    before = np.flatnonzero(survey.times < start).astype(np.int64)
    context_primary = lookup(survey.ids[before], 0)
    kept = context_primary >= 0
    context = before[kept]
    days = ((survey.times[rows] - start) // SECONDS_PER_DAY).astype(np.int64)
    return Scope(
        rows=rows,
        fixed_primary=np.where(frozen, prev_primary, -1),
        fixed_secondary=np.where(frozen, prev_secondary, -1),
        prev_primary=prev_primary,
        prev_secondary=prev_secondary,
        context=context,
        context_primary=context_primary[kept],
        context_secondary=lookup(survey.ids[context], 1),
        days=days,
        horizon_days=max(1, math.ceil((end - start) / SECONDS_PER_DAY)),
    )


def availability(request: PlanRequest, days: int) -> NDArray[np.bool_]:
    """Per Site and day since the horizon start: False on a day a maintenance window touches."""
    start = request.start.timestamp()
    up = np.ones((len(request.sites), days), dtype=bool)
    if not request.policy.avoid_maintenance:
        return up
    for j, site in enumerate(request.sites):
        for window in site.maintenance:
            first = math.floor((window.start.timestamp() - start) / SECONDS_PER_DAY)
            last = math.ceil((window.end.timestamp() - start) / SECONDS_PER_DAY)
            up[j, max(first, 0) : max(min(last, days), 0)] = False
    return up


def forbidden_rows(request: PlanRequest, times: NDArray[np.int64]) -> NDArray[np.bool_]:
    """Per observation and Site: True when the observation falls inside that Site's maintenance."""
    out = np.zeros((times.size, len(request.sites)), dtype=bool)
    if not request.policy.avoid_maintenance:
        return out
    for j, site in enumerate(request.sites):
        for window in site.maintenance:
            out[:, j] |= (times >= int(window.start.timestamp())) & (times < int(window.end.timestamp()))
    return out


def make_units(request: PlanRequest, scope: Scope) -> tuple[Units, NDArray[np.int64]]:
    """Units over the movable scope rows; returns them and the scope positions of those rows."""
    survey, policy = request.survey, request.policy
    movable = np.flatnonzero(scope.movable).astype(np.int64)
    rows = scope.rows[movable]
    home = home_pixels(survey.ra[rows], survey.dec[rows], survey.tile_order)
    down = forbidden_rows(request, survey.times[rows])
    phase = (down.astype(np.int64) << np.arange(down.shape[1], dtype=np.int64)).sum(axis=1) if down.size else None
    if policy.keep_tiles_together:
        units = build_units(
            survey.times[rows],
            home,
            survey.tile_order,
            policy.patch_order,
            policy.max_unit_observations,
            policy.segment_days,
            phase,
        )
    else:  # every observation on its own
        of_obs = np.arange(rows.size, dtype=np.int64)
        units = Units(of_obs, np.full(rows.size, survey.tile_order), home, survey.times[rows])
    return units, movable


@dataclass(frozen=True)
class WindowFamily:
    """Time windows of one length over the horizon's days, and each Site's target count in each."""

    name: str
    length: int
    step: int
    volume: NDArray[np.float64]
    target: NDArray[np.float64]  # site x window

    @property
    def count(self) -> int:
        return int(self.volume.size)


@dataclass(frozen=True)
class Geometry:
    """The horizon's window families and gap windows."""

    days: int
    gap: int
    shares: NDArray[np.float64]
    up: NDArray[np.bool_]  # site x day
    families: tuple[WindowFamily, ...]
    gap_up: NDArray[np.bool_]  # site x gap-window start: up all the gap and inside the data span


def window_range(
    day: NDArray[np.int64], length: int, step: int, count: int
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """First and last window (of ``count``, starting every ``step`` days) holding each day."""
    low = np.maximum(0, -((length - 1 - day) // step))  # ceil((day - length + 1) / step)
    high = np.minimum(count - 1, day // step)
    return low.astype(np.int64), high.astype(np.int64)


def _family(
    name: str,
    length: int,
    step: int,
    days: int,
    daily_cum: NDArray[np.float64],
    fair: NDArray[np.float64] | None,
    shares: NDArray[np.float64],
    up_cum: NDArray[np.float64],
) -> WindowFamily:
    count = 1 if days <= length else (days - length) // step + 1
    starts = np.arange(count) * step
    ends = np.minimum(starts + length, days) if count > 1 else np.full(1, days)
    volume = daily_cum[ends] - daily_cum[starts]
    if fair is None:  # nominal targets: a Site down still owes its share, to be caught up afterwards
        target = shares[:, None] * volume[None, :]
    else:  # targets re-normalised over the Sites up during the window
        up_frac = (up_cum[:, ends] - up_cum[:, starts]) / np.maximum(ends - starts, 1)
        weighted = shares[:, None] * up_frac
        total = weighted.sum(axis=0)
        share = np.divide(weighted, total, out=np.tile(shares[:, None], (1, count)), where=total > 0)
        target = share * volume[None, :]
    return WindowFamily(name, length if count > 1 else days, step if count > 1 else max(days, 1), volume, target)


def make_geometry(request: PlanRequest, scope: Scope) -> Geometry:
    policy = request.policy
    days = scope.horizon_days
    window = max(1, round(policy.window_days))
    step = max(1, window // 6)
    gap = max(1, math.ceil(policy.max_gap_days))
    shares = target_shares(request.sites, policy)
    up = availability(request, days)
    daily = np.bincount(scope.days, minlength=days).astype(np.float64)[:days]
    daily_cum = np.concatenate([[0.0], np.cumsum(daily)])
    up_cum = np.concatenate([np.zeros((up.shape[0], 1)), np.cumsum(up, axis=1)], axis=1)
    long = window + max(1, round(policy.recovery_days))
    families = (
        _family("window", window, step, days, daily_cum, np.ones(1), shares, up_cum),
        _family("long", long, step, days, daily_cum, None, shares, up_cum),
        _family("overall", days, days, days, daily_cum, None, shares, up_cum),
    )
    gap_starts = max(0, days - gap + 1)
    gap_up = np.zeros((up.shape[0], gap_starts), dtype=bool)
    if gap_starts and scope.days.size:
        window_up = (up_cum[:, gap : gap + gap_starts] - up_cum[:, :gap_starts]) == gap
        span = np.zeros(gap_starts, dtype=bool)
        first, last = int(scope.days.min()), int(scope.days.max())
        span[first : max(first, last - gap + 2)] = True
        gap_up = window_up & span[None, :]
    return Geometry(days=days, gap=gap, shares=shares, up=up, families=families, gap_up=gap_up)


@dataclass
class UnitTerms:
    """What one unit contributes to each term, precomputed once."""

    windows: list[NDArray[np.int64]]  # per family: windows holding the unit's observations
    window_counts: list[NDArray[np.float64]]  # per family: how many of them in each
    gap_starts: NDArray[np.int64]  # gap windows holding any of its observations
    gap_counts: NDArray[np.int64]
    tiles: NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # border tiles
    tile_pairs: NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


def _grouped(
    unit: NDArray[np.int64], index: NDArray[np.int64], weight: NDArray[np.int64], size: int, units: int
) -> tuple[list[NDArray[np.int64]], list[NDArray[np.int64]]]:
    """Per unit: the distinct ``index`` values it has and the summed ``weight`` of each."""
    if units == 0:
        return [], []
    keys, inverse = np.unique(unit * size + index, return_inverse=True)
    sums = np.bincount(inverse, weights=weight).astype(np.int64)
    bounds = np.searchsorted(keys // size, np.arange(units + 1))
    values = keys - (keys // size) * size
    return np.split(values, bounds[1:-1]), np.split(sums, bounds[1:-1])


def _expand(
    unit: NDArray[np.int64], low: NDArray[np.int64], high: NDArray[np.int64], weight: NDArray[np.int64]
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    spans = np.maximum(high - low + 1, 0)
    offsets = np.arange(int(spans.sum())) - np.repeat(np.cumsum(spans) - spans, spans)
    return np.repeat(unit, spans), np.repeat(low, spans) + offsets, np.repeat(weight, spans)


def time_terms(prep: Prepared) -> list[UnitTerms]:
    """Each unit's windows and gap windows (the same for the primary and the secondary pass)."""
    g, units = prep.geometry, prep.units
    days = prep.scope.days[prep.movable]
    keys, counts = np.unique(units.of_obs * g.days + days, return_counts=True)
    unit, day = keys // g.days, keys % g.days
    per_family: list[tuple[list[NDArray[np.int64]], list[NDArray[np.int64]]]] = []
    for family in g.families:
        low, high = window_range(day, family.length, family.step, family.count)
        u, w, c = _expand(unit, low, high, counts)
        per_family.append(_grouped(u, w, c, family.count, units.count))
    gap_windows = g.gap_up.shape[1]
    u, s, c = _expand(unit, np.maximum(0, day - g.gap + 1), np.minimum(gap_windows - 1, day), counts)
    gap_starts, gap_counts = _grouped(u, s, c, max(1, gap_windows), units.count)
    return [
        UnitTerms(
            windows=[f[0][k] for f in per_family],
            window_counts=[f[1][k].astype(np.float64) for f in per_family],
            gap_starts=gap_starts[k],
            gap_counts=gap_counts[k],
        )
        for k in range(units.count)
    ]


class Objective:
    """The objective's state for one assignment of units to Sites, with exact per-unit move costs.

    The window families are laid side by side in one array (``load``: site x every window of every family), so
    a unit's windows cost one gather and one scatter whatever the number of families.
    """

    def __init__(
        self,
        geometry: Geometry,
        weights: PlacementWeights,
        terms: list[UnitTerms],
        static: NDArray[np.float64],
        tile_total: NDArray[np.int64],
        tile_fixed: NDArray[np.int64],
        fixed_days: NDArray[np.int64],
        fixed_sites: NDArray[np.int64],
        pair_count: int,
        tile_count: int,
    ) -> None:
        g = geometry
        sites = g.shares.size
        self.geometry, self.weights, self.static = g, weights, static
        self.site = np.full(len(terms), -1, dtype=np.int64)
        family_weight = {
            "window": weights.window_share,
            "long": weights.cumulative_share / 2,
            "overall": weights.cumulative_share / 2,
        }
        used = [k for k, f in enumerate(g.families) if family_weight[f.name] > 0]
        offsets = np.cumsum([0] + [g.families[k].count for k in used])
        self.family_names = [g.families[k].name for k in used]
        self.family_slices = [slice(int(offsets[i]), int(offsets[i + 1])) for i in range(len(used))]
        self.target = np.concatenate([g.families[k].target for k in used], axis=1) if used else np.zeros((sites, 0))
        self.scale = (
            np.concatenate(
                [
                    family_weight[g.families[k].name] / g.families[k].count / np.maximum(g.families[k].volume, 1.0)
                    for k in used
                ]
            )
            if used
            else np.zeros(0)
        )
        self.windows = [
            np.concatenate([t.windows[k] + offsets[i] for i, k in enumerate(used)]).astype(np.int64)
            if used
            else np.zeros(0, dtype=np.int64)
            for t in terms
        ]
        self.window_counts = [
            np.concatenate([t.window_counts[k] for k in used]) if used else np.zeros(0) for t in terms
        ]
        self.unit_scale = [self.scale[w] for w in self.windows]
        self.unit_target = [self.target[:, w] for w in self.windows]
        self.terms = terms
        self.load = np.zeros((sites, int(offsets[-1])))
        self.gap_on = weights.gap > 0
        self.gap_scale = weights.gap / max(1, int(g.gap_up.sum()))
        self.copy_scale = weights.copies / max(1, pair_count)
        self.split_scale = weights.split_tiles / max(1, tile_count)
        self.tile_total = tile_total
        self.unit_tile_total = [tile_total[t.tiles][:, None] for t in terms]
        self.gap_fill = np.zeros((sites, g.gap_up.shape[1]), dtype=np.int64)
        self.tiles = tile_fixed.copy()
        self._add_fixed(fixed_days, fixed_sites)

    def _add_fixed(self, days: NDArray[np.int64], sites: NDArray[np.int64]) -> None:
        g = self.geometry
        keep = sites >= 0
        days, sites = days[keep], sites[keep]
        for name, part in zip(self.family_names, self.family_slices, strict=True):
            family = next(f for f in g.families if f.name == name)
            low, high = window_range(days, family.length, family.step, family.count)
            for j, lo, hi in zip(sites.tolist(), low.tolist(), high.tolist(), strict=True):
                self.load[j, part.start + lo : part.start + hi + 1] += 1
        for d, j in zip(days.tolist(), sites.tolist(), strict=True):
            self.gap_fill[j, max(0, d - g.gap + 1) : d + 1] += 1

    def costs(self, unit: int) -> NDArray[np.float64]:
        """The objective's change for placing ``unit`` (currently unplaced) at each Site."""
        t = self.terms[unit]
        windows = self.windows[unit]
        have = self.load[:, windows] - self.unit_target[unit]
        change = np.abs(have + self.window_counts[unit]) - np.abs(have)
        cost = self.static[unit] + (change * self.unit_scale[unit]).sum(axis=1)
        if self.gap_on and t.gap_starts.size:
            empty = (self.gap_fill[:, t.gap_starts] == 0) & self.geometry.gap_up[:, t.gap_starts]
            cost -= empty.sum(axis=1) * self.gap_scale
        if t.tiles.size:
            held = self.tiles[t.tiles]
            after = np.maximum(held.max(axis=1, keepdims=True), held + t.tile_pairs[:, None])
            short = self.unit_tile_total[unit] - after
            cost += short.sum(axis=0) * self.copy_scale + (short > 0).sum(axis=0) * self.split_scale
        return np.asarray(cost, dtype=np.float64)

    def breakdown(self, unit: int) -> dict[str, NDArray[np.float64]]:
        """``costs(unit)`` term by term (for ``sgs placement explain``; not on the hot path)."""
        t = self.terms[unit]
        sites = self.static.shape[1]
        out: dict[str, NDArray[np.float64]] = {}
        have = self.load[:, self.windows[unit]] - self.unit_target[unit]
        change = (np.abs(have + self.window_counts[unit]) - np.abs(have)) * self.unit_scale[unit]
        for name, part in zip(self.family_names, self.family_slices, strict=True):
            inside = (self.windows[unit] >= part.start) & (self.windows[unit] < part.stop)
            key = "window_share" if name == "window" else "cumulative_share"
            out[key] = out.get(key, np.zeros(sites)) + change[:, inside].sum(axis=1)
        out.setdefault("window_share", np.zeros(sites))
        out.setdefault("cumulative_share", np.zeros(sites))
        out["gap"] = np.zeros(sites)
        if self.gap_on and t.gap_starts.size:
            empty = (self.gap_fill[:, t.gap_starts] == 0) & self.geometry.gap_up[:, t.gap_starts]
            out["gap"] = -np.count_nonzero(empty, axis=1) * self.gap_scale
        out["copies"], out["split_tiles"] = np.zeros(sites), np.zeros(sites)
        if t.tiles.size:
            held = self.tiles[t.tiles]
            after = np.maximum(held.max(axis=1, keepdims=True), held + t.tile_pairs[:, None])
            short = self.unit_tile_total[unit] - after
            out["copies"] = short.sum(axis=0) * self.copy_scale
            out["split_tiles"] = np.count_nonzero(short, axis=0) * self.split_scale
        out["churn_external"] = self.static[unit].copy()
        return out

    def move(self, unit: int, site: int, sign: int) -> None:
        t = self.terms[unit]
        self.load[site, self.windows[unit]] += sign * self.window_counts[unit]
        self.gap_fill[site, t.gap_starts] += sign * t.gap_counts
        if t.tiles.size:
            self.tiles[t.tiles, site] += sign * t.tile_pairs
        self.site[unit] = site if sign > 0 else -1

    def place(self, unit: int) -> int:
        choice = int(np.argmin(self.costs(unit)))
        self.move(unit, choice, +1)
        return choice

    def refine(self, unit: int) -> bool:
        """Re-place one unit given all others; stays on ties. True if it moved."""
        current = int(self.site[unit])
        self.move(unit, current, -1)
        costs = self.costs(unit)
        choice = int(np.argmin(costs))
        if costs[choice] >= costs[current] - 1e-12:
            choice = current
        self.move(unit, choice, +1)
        return choice != current

    def swap(self, first: int, second: int) -> bool:
        """Exchange the Sites of two units if that lowers the objective. True if they swapped."""
        a, b = int(self.site[first]), int(self.site[second])
        if a == b:
            return False
        self.move(first, a, -1)
        self.move(second, b, -1)
        stay_first = self.costs(first)
        self.move(first, a, +1)
        stay = stay_first[a] + self.costs(second)[b]
        self.move(first, a, -1)
        self.move(first, b, +1)
        swapped = stay_first[b] + self.costs(second)[a]
        if swapped < stay - 1e-12:
            self.move(second, a, +1)
            return True
        self.move(first, b, -1)
        self.move(first, a, +1)
        self.move(second, b, +1)
        return False

    def value(self) -> dict[str, float]:
        """Each term of the objective for the current (complete) assignment, computed from the state."""
        g = self.geometry
        placed = self.site >= 0
        terms = {"window_share": 0.0, "cumulative_share": 0.0}
        deviation = np.abs(self.load - self.target) * self.scale
        for name, part in zip(self.family_names, self.family_slices, strict=True):
            terms["window_share" if name == "window" else "cumulative_share"] += float(deviation[:, part].sum())
        short = self.tile_total - self.tiles.max(axis=1) if self.tiles.size else np.zeros(0)
        terms["gap"] = float(((self.gap_fill == 0) & g.gap_up).sum() * self.gap_scale) if self.gap_on else 0.0
        terms["copies"] = float(short.sum() * self.copy_scale)
        terms["split_tiles"] = float((short > 0).sum() * self.split_scale)
        terms["churn_external"] = float(self.static[np.flatnonzero(placed), self.site[placed]].sum())
        terms["total"] = sum(terms.values())
        return terms


@dataclass(frozen=True)
class Prepared:
    """Everything the passes share: scope, units, geometry, tile pairs, time terms."""

    request: PlanRequest
    scope: Scope
    units: Units
    movable: NDArray[np.int64]  # scope positions of the movable rows (aligned with units.of_obs)
    geometry: Geometry
    pair_row: NDArray[np.int64]  # per pair: scope position (>= 0) or -1 - context position
    pair_tile: NDArray[np.int64]  # per pair: tile index into tile_ids
    tile_ids: NDArray[np.int64]
    forbidden: NDArray[np.bool_]  # unit x site
    terms: list[UnitTerms]


def prepare(request: PlanRequest) -> Prepared:
    scope = make_scope(request)
    units, movable = make_units(request, scope)
    geometry = make_geometry(request, scope)
    survey = request.survey
    position, tiles = survey.pairs_of(np.concatenate([scope.rows, scope.context]))
    inside = scope.rows.size
    pair_row = np.where(position < inside, position, inside - 1 - position).astype(np.int64)
    tile_ids, pair_tile = np.unique(tiles, return_inverse=True)
    by_row = forbidden_rows(request, survey.times[scope.rows[movable]])
    forbidden = np.zeros((units.count, len(request.sites)), dtype=bool)
    if by_row.size:
        np.logical_or.at(forbidden, units.of_obs, by_row)
    stuck = forbidden.all(axis=1)
    forbidden[stuck] = False  # every Site down: the objective decides, the report shows it
    prep = Prepared(
        request, scope, units, movable, geometry, pair_row, pair_tile.astype(np.int64), tile_ids, forbidden, []
    )
    prep.terms.extend(time_terms(prep))
    return prep


def _tile_terms(
    prep: Prepared, pair_owner: NDArray[np.int64], border: NDArray[np.bool_]
) -> tuple[list[NDArray[np.int64]], list[NDArray[np.int64]]]:
    """Per unit: its pairs on border tiles, by tile."""
    movable_pair = (pair_owner >= 0) & border[prep.pair_tile]
    weight = np.ones(int(movable_pair.sum()), dtype=np.int64)
    size = max(1, prep.tile_ids.size)
    return _grouped(pair_owner[movable_pair], prep.pair_tile[movable_pair], weight, size, prep.units.count)


def build_objective(
    prep: Prepared,
    weights: PlacementWeights,
    fixed: NDArray[np.int64],
    context: NDArray[np.int64],
    previous: NDArray[np.int64],
    extra_forbidden: NDArray[np.bool_] | None = None,
    external: NDArray[np.float64] | None = None,
) -> Objective:
    """The objective over ``prep``'s units, with fixed scope rows at ``fixed`` (-1 = movable) and context rows
    at ``context``; churn is counted against ``previous`` (per scope row, -1 = none)."""
    request, scope, units = prep.request, prep.scope, prep.units
    sites = len(request.sites)
    unit_of_row = np.full(scope.rows.size, -1, dtype=np.int64)
    unit_of_row[prep.movable] = units.of_obs
    row = prep.pair_row
    in_scope = row >= 0
    scope_row = np.where(in_scope, row, 0)
    context_row = np.where(in_scope, 0, -1 - row)
    owner = np.where(in_scope, unit_of_row[scope_row], -1)
    fixed_site = np.where(in_scope, fixed[scope_row], _at(context, context_row))
    owner = np.where(owner >= 0, owner, np.where(fixed_site >= 0, -1 - fixed_site, -(10**9)))
    tiles = prep.tile_ids.size
    counted = owner > -(10**9)
    span = sites + units.count
    code = np.where(owner >= 0, owner + sites, -1 - owner)[counted]
    distinct = np.unique(prep.pair_tile[counted] * span + code)
    owners_per_tile = np.bincount(distinct // span, minlength=tiles) if span else np.zeros(tiles, dtype=np.int64)
    border = owners_per_tile > 1
    tile_total = np.bincount(prep.pair_tile[counted], minlength=tiles)
    fixed_pairs = counted & (owner < 0)
    tile_fixed = np.zeros((tiles, sites), dtype=np.int64)
    np.add.at(tile_fixed, (prep.pair_tile[fixed_pairs], -1 - owner[fixed_pairs]), 1)
    remap = np.full(tiles, -1, dtype=np.int64)
    border_ids = np.flatnonzero(border)
    remap[border_ids] = np.arange(border_ids.size)
    unit_tiles, unit_pairs = _tile_terms(prep, owner, border)
    terms = [
        replace(t, tiles=remap[tiles_of], tile_pairs=pairs)
        for t, tiles_of, pairs in zip(prep.terms, unit_tiles, unit_pairs, strict=True)
    ]
    static = np.zeros((units.count, sites))
    moved = previous[prep.movable]
    has_prev = moved >= 0
    if has_prev.any():
        counts = np.zeros((units.count, sites))
        np.add.at(counts, (units.of_obs[has_prev], moved[has_prev]), 1)
        churn = counts.sum(axis=1, keepdims=True) - counts
        static += churn * (weights.churn / max(1, prep.movable.size))
    if external is not None:
        static += external * (weights.external / max(1, prep.movable.size))
    blocked = prep.forbidden.copy()
    if extra_forbidden is not None:
        blocked |= extra_forbidden
        stuck = blocked.all(axis=1)  # the only other Sites are down: maintenance gives way, not secondary != primary
        blocked[stuck] = extra_forbidden[stuck]
    static[blocked] = INFEASIBLE
    fixed_rows = fixed >= 0
    return Objective(
        prep.geometry,
        weights,
        terms,
        static,
        tile_total[border_ids].astype(np.int64),
        tile_fixed[border_ids],
        scope.days[fixed_rows],
        fixed[fixed_rows],
        pair_count=int(counted.sum()),
        tile_count=tiles,
    )


def _at(values: NDArray[np.int64], index: NDArray[np.int64]) -> NDArray[np.int64]:
    """``values[index]``, or -1 everywhere when ``values`` is empty (np.where evaluates both branches)."""
    if values.size == 0:
        return np.full(index.shape, -1, dtype=np.int64)
    return values[index]


def external_costs(prep: Prepared) -> NDArray[np.float64]:
    """Per unit and Site: observations needing ground data the Site does not ingest."""
    request = prep.request
    rows = prep.scope.rows[prep.movable]
    combos: dict[tuple[str, ...], int] = {}
    code = np.array([combos.setdefault(request.survey.needs[r], len(combos)) for r in rows.tolist()], dtype=np.int64)
    out = np.zeros((prep.units.count, len(request.sites)))
    for j, site in enumerate(request.sites):
        ingests = set(site.ingests)
        lacks = np.array([bool(needs) and not set(needs) <= ingests for needs in combos], dtype=np.float64)
        if code.size:
            out[:, j] = np.bincount(prep.units.of_obs, weights=lacks[code], minlength=prep.units.count)
    return out


def secondary_weights(weights: PlacementWeights) -> PlacementWeights:
    """Secondaries: balanced overall and per window, coherent, kept; no gap or ground-data terms."""
    return PlacementWeights(
        window_share=weights.window_share / 4,
        cumulative_share=weights.cumulative_share,
        gap=0.0,
        copies=weights.copies / 3,
        split_tiles=0.0,
        churn=weights.churn,
        external=0.0,
    )


def run_passes(objective: Objective, passes: int, partners: int = 0) -> int:
    """Greedy construction in unit (time) order, then up to ``passes`` local-search passes (each unit
    re-placed, then swapped with each of its next ``partners`` units in time order); returns the changes."""
    count = len(objective.terms)
    for unit in range(count):
        objective.place(unit)
    changes = 0
    for _ in range(passes):
        changed = sum(objective.refine(unit) for unit in range(count))
        for unit in range(count):
            for other in range(unit + 1, min(count, unit + 1 + partners)):
                changed += objective.swap(unit, other)
        changes += changed
        if not changed:
            break
    return changes


@dataclass(frozen=True)
class Solution:
    plan: Plan
    primary: Objective
    secondary: Objective | None
    prepared: Prepared


def solve(request: PlanRequest) -> Plan:
    """Primary and secondary Site per observation and tile for the request's horizon."""
    return solve_detailed(request).plan


def solve_detailed(request: PlanRequest) -> Solution:
    policy = request.policy
    prep = prepare(request)
    scope = prep.scope
    weights = effective_weights(policy)
    primary = build_objective(
        prep, weights, scope.fixed_primary, scope.context_primary, scope.prev_primary, external=external_costs(prep)
    )
    partners = min(prep.units.count - 1, policy.swap_budget // max(1, prep.units.count))
    run_passes(primary, policy.refine_passes, max(0, partners))
    unit_primary = primary.site
    secondary: Objective | None = None
    unit_secondary = np.full(prep.units.count, -1, dtype=np.int64)
    if policy.copies >= 2 and len(request.sites) >= 2:
        same = np.zeros_like(prep.forbidden)
        same[np.arange(prep.units.count), unit_primary] = True
        secondary = build_objective(
            prep,
            secondary_weights(weights),
            scope.fixed_secondary,
            scope.context_secondary,
            scope.prev_secondary,
            extra_forbidden=same,
        )
        run_passes(secondary, 0)  # construction only: secondaries carry no time or tile-split term
        unit_secondary = secondary.site
    plan = assemble(prep, unit_primary[prep.units.of_obs], unit_secondary[prep.units.of_obs])
    return Solution(plan, primary, secondary, prep)


def effective_weights(policy: PlacementPolicy) -> PlacementWeights:
    weights = policy.weights
    if not policy.linearise_in_time:
        weights = weights.model_copy(update={"window_share": 0.0, "gap": 0.0})
    if not policy.keep_tiles_together:
        weights = weights.model_copy(update={"copies": 0.0, "split_tiles": 0.0})
    return weights


def assemble(prep: Prepared, movable_primary: NDArray[np.int64], movable_secondary: NDArray[np.int64]) -> Plan:
    """The plan from the movable rows' Sites (fixed rows as they were); tile Sites by majority of their pairs."""
    request, scope = prep.request, prep.scope
    sites = len(request.sites)
    primary = scope.fixed_primary.copy()
    secondary = scope.fixed_secondary.copy()
    primary[prep.movable] = movable_primary
    secondary[prep.movable] = movable_secondary
    row = prep.pair_row
    in_scope = row >= 0
    scope_row, context_row = np.where(in_scope, row, 0), np.where(in_scope, 0, -1 - row)
    pair_primary = np.where(in_scope, _at(primary, scope_row), _at(scope.context_primary, context_row))
    pair_secondary = np.where(in_scope, _at(secondary, scope_row), _at(scope.context_secondary, context_row))
    scoped_tiles = np.unique(prep.pair_tile[in_scope])
    held = np.zeros((prep.tile_ids.size, sites), dtype=np.int64)
    np.add.at(held, (prep.pair_tile, pair_primary), 1)
    tile_primary = held.argmax(axis=1)
    backup = np.zeros_like(held)
    ok = pair_secondary >= 0
    np.add.at(backup, (prep.pair_tile[ok], pair_secondary[ok]), 1)
    backup[np.arange(prep.tile_ids.size), tile_primary] = -1
    tile_secondary = backup.argmax(axis=1) if request.policy.copies >= 2 and sites >= 2 else None
    if tile_secondary is None:
        tile_secondary = np.full(prep.tile_ids.size, -1, dtype=np.int64)
    return Plan(
        sites=tuple(s.name for s in request.sites),
        obs_ids=request.survey.ids[scope.rows],
        obs_primary=primary.astype(np.int64),
        obs_secondary=secondary.astype(np.int64),
        tile_ids=prep.tile_ids[scoped_tiles],
        tile_primary=tile_primary[scoped_tiles].astype(np.int64),
        tile_secondary=tile_secondary[scoped_tiles].astype(np.int64),
    )

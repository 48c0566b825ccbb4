"""The exact optimum of the solver's primary objective on small instances, as a MILP (scipy / HiGHS).

Variables: ``x[u, j]`` (unit u at Site j, binary); per window column and Site a deviation ``d >= |load -
target|``; per (Site, gap window) an emptiness ``e >= 1 - sum x``; per border tile a primary ``z[t, j]``
(binary, one per tile), covered pairs ``y[u, t, j] <= x[u, j], z[t, j]`` and a split indicator ``i[t]``
(binary, ``i >= short / total``). The objective has the solver's terms with the solver's scales, so the value
HiGHS reports and ``Objective.value()`` of the same assignment agree (the tests check it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_array

from sgs.placement.solver import Objective


@dataclass(frozen=True)
class ExactResult:
    sites: NDArray[np.int64]  # per unit
    value: float
    optimal: bool
    message: str


class _Builder:
    def __init__(self) -> None:
        self.cost: list[float] = []
        self.lower: list[float] = []
        self.upper: list[float] = []
        self.integer: list[int] = []
        self.rows: list[int] = []
        self.cols: list[int] = []
        self.vals: list[float] = []
        self.row_lo: list[float] = []
        self.row_hi: list[float] = []

    def var(self, cost: float, lower: float = 0.0, upper: float = 1.0, integer: bool = False) -> int:
        self.cost.append(cost)
        self.lower.append(lower)
        self.upper.append(upper)
        self.integer.append(1 if integer else 0)
        return len(self.cost) - 1

    def row(self, terms: list[tuple[int, float]], lo: float, hi: float) -> None:
        index = len(self.row_lo)
        for col, val in terms:
            self.rows.append(index)
            self.cols.append(col)
            self.vals.append(val)
        self.row_lo.append(lo)
        self.row_hi.append(hi)


def solve_exact(objective: Objective, time_limit_s: float = 60.0) -> ExactResult:
    """The assignment minimising ``objective`` (built but not yet placed: its loads hold only fixed rows)."""
    b = _Builder()
    units, sites = objective.static.shape
    x = np.zeros((units, sites), dtype=np.int64)
    constant = 0.0
    for u in range(units):
        for j in range(sites):
            blocked = math.isinf(objective.static[u, j])
            x[u, j] = b.var(
                0.0 if blocked else float(objective.static[u, j]), upper=0.0 if blocked else 1.0, integer=True
            )
        b.row([(int(x[u, j]), 1.0) for j in range(sites)], 1.0, 1.0)

    # Window shares: d >= +-(fixed load + placed counts - target).
    columns: dict[int, list[tuple[int, float]]] = {}
    for u in range(units):
        for w, count in zip(objective.windows[u].tolist(), objective.window_counts[u].tolist(), strict=True):
            columns.setdefault(w, []).append((u, count))
    for w in range(objective.load.shape[1]):
        scale = float(objective.scale[w])
        for j in range(sites):
            offset = float(objective.load[j, w] - objective.target[j, w])
            placed = [(int(x[u, j]), c) for u, c in columns.get(w, [])]
            if not placed:
                constant += abs(offset) * scale
                continue
            d = b.var(scale, upper=math.inf)
            b.row([(d, 1.0)] + [(col, -c) for col, c in placed], offset, math.inf)
            b.row([(d, 1.0)] + [(col, c) for col, c in placed], -offset, math.inf)

    # Gaps: e >= 1 - sum of the units that would fill the window.
    if objective.gap_on:
        fillers: dict[int, list[int]] = {}
        for u, t in enumerate(objective.terms):
            for s in t.gap_starts.tolist():
                fillers.setdefault(s, []).append(u)
        up = objective.geometry.gap_up
        for j in range(sites):
            for s in np.flatnonzero(up[j]).tolist():
                if objective.gap_fill[j, s] > 0:
                    continue
                if s not in fillers:
                    constant += objective.gap_scale
                    continue
                e = b.var(objective.gap_scale, upper=1.0)
                b.row([(e, 1.0)] + [(int(x[u, j]), 1.0) for u in fillers[s]], 1.0, math.inf)

    # Border tiles: a primary per tile, pairs covered only where both the unit and the tile are.
    touching: dict[int, list[tuple[int, int]]] = {}
    for u, t in enumerate(objective.terms):
        for tile, pairs in zip(t.tiles.tolist(), t.tile_pairs.tolist(), strict=True):
            touching.setdefault(tile, []).append((u, pairs))
    for tile in range(objective.tile_total.size):
        total = float(objective.tile_total[tile])
        fixed = objective.tiles[tile]
        if tile not in touching:
            short = total - float(fixed.max())
            constant += short * objective.copy_scale + (short > 0) * objective.split_scale
            continue
        z = [b.var(0.0, integer=True) for _ in range(sites)]
        b.row([(col, 1.0) for col in z], 1.0, 1.0)
        split = b.var(objective.split_scale, integer=True)
        covered: list[tuple[int, float]] = [(z[j], float(fixed[j])) for j in range(sites) if fixed[j]]
        for u, pairs in touching[tile]:
            for j in range(sites):
                y = b.var(0.0)
                b.row([(y, 1.0), (int(x[u, j]), -1.0)], -math.inf, 0.0)
                b.row([(y, 1.0), (z[j], -1.0)], -math.inf, 0.0)
                covered.append((y, float(pairs)))
        # copies = total - covered, counted through the covered pairs' (negative) cost
        constant += total * objective.copy_scale
        for col, pairs in covered:
            b.cost[col] -= pairs * objective.copy_scale
        # split >= (total - covered) / total
        b.row([(split, total), *covered], total, math.inf)

    matrix = coo_array((b.vals, (b.rows, b.cols)), shape=(len(b.row_lo), len(b.cost))).tocsr()
    result = milp(
        c=np.array(b.cost),
        integrality=np.array(b.integer),
        bounds=Bounds(np.array(b.lower), np.array(b.upper)),
        constraints=LinearConstraint(matrix, np.array(b.row_lo), np.array(b.row_hi)),
        options={"time_limit": time_limit_s, "disp": False},
    )
    if result.x is None:
        return ExactResult(np.full(units, -1, dtype=np.int64), math.inf, False, str(result.message))
    chosen = np.array([int(np.argmax(result.x[x[u]])) for u in range(units)], dtype=np.int64)
    return ExactResult(chosen, float(result.fun) + constant, result.status == 0, str(result.message))

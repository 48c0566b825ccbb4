"""Baselines the solver is measured against, over the same scope (frozen rows kept, maintenance avoided).

* **greedy**: the same placement units in time order, each to the available Site furthest below its target
  share (largest deficit), the secondary likewise among the others; no look-ahead, no tile, gap or churn term.
* **round robin**: every observation in time order to the next Site in turn, the one after as secondary (what
  `sgs demo` did before the solver).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from sgs.placement.plan import Plan, PlanRequest
from sgs.placement.solver import Prepared, assemble, prepare


def _largest_deficit(
    prep: Prepared, sizes: NDArray[np.int64], fixed: NDArray[np.int64], avoid: NDArray[np.int64] | None
) -> NDArray[np.int64]:
    shares = prep.geometry.shares
    placed = np.bincount(fixed[fixed >= 0], minlength=shares.size).astype(np.float64)
    chosen = np.full(prep.units.count, -1, dtype=np.int64)
    for unit in range(prep.units.count):
        deficit = shares * (placed.sum() + sizes[unit]) - placed
        deficit[prep.forbidden[unit]] = -np.inf
        if avoid is not None:
            deficit[avoid[unit]] = -np.inf
        site = int(np.argmax(deficit))
        chosen[unit] = site
        placed[site] += sizes[unit]
    return chosen


def greedy_plan(request: PlanRequest) -> Plan:
    prep = prepare(request)
    sizes = np.bincount(prep.units.of_obs, minlength=prep.units.count)
    primary = _largest_deficit(prep, sizes, prep.scope.fixed_primary, None)
    secondary = np.full(prep.units.count, -1, dtype=np.int64)
    if request.policy.copies >= 2 and len(request.sites) >= 2:
        secondary = _largest_deficit(prep, sizes, prep.scope.fixed_secondary, primary)
    return assemble(prep, primary[prep.units.of_obs], secondary[prep.units.of_obs])


def round_robin_plan(request: PlanRequest) -> Plan:
    prep = prepare(request)
    count = len(request.sites)
    turn = np.arange(prep.movable.size, dtype=np.int64)
    secondary = (turn + 1) % count if count >= 2 and request.policy.copies >= 2 else np.full(turn.size, -1)
    return assemble(prep, turn % count, secondary.astype(np.int64))

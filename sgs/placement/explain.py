"""Why an observation is where a plan put it: its unit, and each Site's cost term by term.

The plan is loaded into the solver's objective (every other unit where the plan has it), the observation's unit
is taken out, and the change of each term is computed for each Site: share in its windows, long-window and
overall share, gap, tile copies and splits, churn and ground data, maintenance (a Site down is impossible).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from sgs.placement.plan import Assignments, PlanError, PlanRequest
from sgs.placement.solver import build_objective, effective_weights, external_costs, prepare, site_index

TERMS = ("window_share", "cumulative_share", "gap", "copies", "split_tiles", "churn_external")


@dataclass(frozen=True)
class SiteCost:
    site: str
    target: float
    down: bool
    terms: dict[str, float]

    @property
    def total(self) -> float:
        return math.inf if self.down else sum(self.terms.values())


@dataclass(frozen=True)
class Explanation:
    observation: int
    time: datetime
    primary: str
    secondary: str | None
    frozen: bool
    unit_observations: int
    unit_patch: str
    unit_span_days: float
    tiles: int
    tiles_whole: int
    costs: list[SiteCost]

    @property
    def best(self) -> str:
        return min(self.costs, key=lambda c: (c.total, c.site)).site


def explain(request: PlanRequest, plan: Assignments, observation: int) -> Explanation:
    survey = request.survey
    index = survey.index_of()
    if observation not in index:
        raise PlanError(f"observation {observation}: not in the survey")
    if observation not in plan.observations:
        raise PlanError(f"observation {observation}: not in the plan (outside its horizon?)")
    prep = prepare(request)
    scope = prep.scope
    names = tuple(s.name for s in request.sites)
    sites = site_index(names)
    row = int(np.searchsorted(scope.rows, index[observation]))
    primary, secondary = plan.observations[observation]
    tiles = survey.tiles_of(index[observation])
    owner, pair_tiles = survey.pairs_of(np.arange(len(survey), dtype=np.int64))
    whole = 0
    for tile in tiles:
        tile_site = plan.tiles.get(tile, (primary, None))[0]
        members = survey.ids[owner[pair_tiles == tile]].tolist()
        whole += all(plan.observations.get(m, (tile_site, None))[0] == tile_site for m in members)
    when = datetime.fromtimestamp(int(survey.times[index[observation]]), UTC)
    frozen = bool(scope.fixed_primary[row] >= 0)
    position = np.flatnonzero(prep.movable == row)
    if frozen or not position.size:
        return Explanation(observation, when, primary, secondary, True, 1, "-", 0.0, len(tiles), whole, [])
    objective = build_objective(
        prep,
        effective_weights(request.policy),
        scope.fixed_primary,
        scope.context_primary,
        scope.prev_primary,
        external=external_costs(prep),
    )
    units = prep.units
    first_member = np.full(units.count, -1, dtype=np.int64)
    first_member[units.of_obs[::-1]] = prep.movable[::-1]
    for unit in range(units.count):
        name = plan.observations[int(survey.ids[scope.rows[first_member[unit]]])][0]
        objective.move(unit, sites[name], +1)
    unit = int(units.of_obs[position[0]])
    objective.move(unit, int(objective.site[unit]), -1)
    parts = objective.breakdown(unit)
    members = scope.rows[prep.movable[units.of_obs == unit]]
    span = float(survey.times[members].max() - survey.times[members].min()) / 86_400
    costs = [
        SiteCost(
            names[j],
            float(prep.geometry.shares[j]),
            bool(prep.forbidden[unit, j]),
            {term: float(parts[term][j]) for term in TERMS},
        )
        for j in range(len(names))
    ]
    patch = f"HEALPix order {int(units.order[unit])} pixel {int(units.patch[unit])}"
    return Explanation(
        observation, when, primary, secondary, False, int(members.size), patch, span, len(tiles), whole, costs
    )

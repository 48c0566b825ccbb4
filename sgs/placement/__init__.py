"""Placement of a survey's observations and MER tiles on primary and secondary Sites (Euclid's distribution).

Pure: no I/O, no clock; the same request gives a byte-identical plan. Modules:

* ``survey`` (survey plans as columns; CSV / YAML / JSON readers), ``sites`` (Sites and target shares),
* ``units`` (HEALPix-patch placement units cut in time), ``solver`` (the objective, greedy + local search),
* ``baselines`` (greedy, round robin), ``exact`` (MILP optimum on small instances), ``metrics`` (the figures),
* ``plan`` (request, plan, plan files), ``explain``, ``consequences`` (replication rules, a Run's Site),
* ``generator`` (the synthetic Euclid-like survey), ``plot`` (a PNG of a plan).
"""

from sgs.placement.plan import Assignments, Plan, PlanError, PlanRequest
from sgs.placement.solver import solve

__all__ = ["Assignments", "Plan", "PlanError", "PlanRequest", "solve"]

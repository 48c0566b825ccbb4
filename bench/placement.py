"""Placement figures of issue #16 on the synthetic Euclid-like survey (45,000 observations x 9 Sites).

Each figure is printed for the solver, the greedy baseline (same units, largest share deficit first), round robin
per observation (the demo's old rule) and, on a small instance, the MILP optimum of the same objective:

* plan time: the whole survey in one horizon, and a 90-day horizon (target < 1 s);
* share error overall (target <= 0.5 %) and in every 30-day window outside maintenance (target +-3 points);
* longest gap without new data at any Site while up (target <= 3 days; also counting secondary copies);
* MER tiles entirely at one primary (target >= 95 %) and (observation, tile) pairs copied (target <= 5 %);
* re-plan after a 5 % survey change: observations changing primary (target <= 5 %), frozen ones moved (0);
* a 30-day maintenance at the largest Site: |cumulative share - target| 60 days after it ends (target <= 1 %);
* small instance: objective value of solver and greedy over the MILP optimum.

Run: ``.venv/bin/python bench/placement.py [--rounds 3]``. Times are CPU seconds of this process (the
machine is shared) with the wall time beside them; load averages are printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from datetime import timedelta

from sgs.model.placement import PlacementPolicy, PlacementWeights
from sgs.placement.baselines import greedy_plan, round_robin_plan
from sgs.placement.exact import solve_exact
from sgs.placement.generator import DEFAULT_START, euclid_sites, generate_survey
from sgs.placement.metrics import PlanReport, evaluate
from sgs.placement.plan import Plan, PlanRequest
from sgs.placement.solver import (
    assemble,
    build_objective,
    effective_weights,
    external_costs,
    prepare,
    run_passes,
    solve,
)
from sgs.placement.survey import Survey, build_survey

Planner = Callable[[PlanRequest], Plan]
PLANNERS: dict[str, Planner] = {"solver": solve, "greedy": greedy_plan, "round-robin": round_robin_plan}


def timed(planner: Planner, request: PlanRequest, rounds: int) -> tuple[Plan, float, float]:
    cpu, wall = [], []
    plan: Plan | None = None
    for _ in range(rounds):
        c, w = time.process_time(), time.perf_counter()
        plan = planner(request)
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - w)
    assert plan is not None
    return plan, statistics.median(cpu), statistics.median(wall)


def pct(value: float) -> str:
    return f"{100 * value:.2f} %"


def row(label: str, target: str, values: dict[str, str]) -> None:
    cells = "".join(f"{values.get(name, '-'):>22}" for name in (*PLANNERS, "optimum (small)"))
    print(f"{label:<44}{target:>12}{cells}")


def changed_survey(survey: Survey) -> Survey:
    """5 % of the observations rescheduled 3 days later (the survey plan changed)."""
    rows = [survey.row(i) for i in range(len(survey))]
    moved = [
        r.model_copy(update={"time": r.time + timedelta(days=3)}) if i % 20 == 7 else r for i, r in enumerate(rows)
    ]
    return build_survey(moved)


def small_instance() -> tuple[PlanRequest, dict[str, float], PlanReport]:
    survey = generate_survey(wide=70, deep=30, sky_fields=29_000)
    policy = PlacementPolicy(window_days=4, recovery_days=4, max_gap_days=1, max_unit_observations=20)
    request = PlanRequest(survey, euclid_sites(3), DEFAULT_START, DEFAULT_START + timedelta(days=6), policy=policy)
    prep = prepare(request)
    scope = prep.scope

    def objective() -> object:
        return build_objective(
            prep,
            effective_weights(policy),
            scope.fixed_primary,
            scope.context_primary,
            scope.prev_primary,
            external=external_costs(prep),
        )

    values: dict[str, float] = {}
    partners = min(prep.units.count - 1, policy.swap_budget // max(1, prep.units.count))
    for name, passes, swap in (("solver", policy.refine_passes, partners), ("no-swaps", policy.refine_passes, 0)):
        heuristic = objective()
        run_passes(heuristic, passes, swap)  # type: ignore[arg-type]
        values[name] = heuristic.value()["total"]  # type: ignore[attr-defined]
    greedy = objective()
    plan = greedy_plan(request)
    for unit in range(prep.units.count):
        rows = prep.units.of_obs == unit
        greedy.move(unit, int(plan.obs_primary[prep.movable[rows][0]]), +1)  # type: ignore[attr-defined]
    values["greedy"] = greedy.value()["total"]  # type: ignore[attr-defined]
    exact = solve_exact(objective(), time_limit_s=300)  # type: ignore[arg-type]
    values["optimum"] = exact.value
    values["proven"] = 1.0 if exact.optimal else 0.0
    optimum_plan = assemble(prep, exact.sites[prep.units.of_obs], plan.obs_secondary[prep.movable])
    return request, values, evaluate(request, optimum_plan)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="timed repeats of each plan (median)")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}")
    survey = generate_survey()
    sites = euclid_sites()
    span = timedelta(seconds=int(survey.times[-1] - survey.times[0]) + 86_400)
    full = PlanRequest(survey, sites, DEFAULT_START, DEFAULT_START + span)
    horizon = PlanRequest(survey, sites, DEFAULT_START, DEFAULT_START + timedelta(days=90))
    print(
        f"survey: {len(survey):,} observations, {survey.tile_ids.size:,} (observation, tile) pairs, {len(sites)} Sites"
    )

    plans: dict[str, Plan] = {}
    reports: dict[str, PlanReport] = {}
    times: dict[str, str] = {}
    times90: dict[str, str] = {}
    for name, planner in PLANNERS.items():
        plan, cpu, wall = timed(planner, full, args.rounds)
        plans[name], reports[name] = plan, evaluate(full, plan)
        times[name] = f"{cpu:.2f} s (wall {wall:.2f})"
        _, cpu90, wall90 = timed(planner, horizon, args.rounds)
        times90[name] = f"{cpu90:.3f} s (wall {wall90:.3f})"

    # Re-plan after a 5 % change: the first tenth of the survey is processed (frozen).
    changed = changed_survey(survey)
    cutoff = int(survey.times[len(survey) // 10])
    frozen = frozenset(int(i) for i, t in zip(survey.ids.tolist(), survey.times.tolist(), strict=True) if t < cutoff)
    replans = {
        name: evaluate(
            replanned := PlanRequest(
                changed, sites, DEFAULT_START, DEFAULT_START + span, previous=plans[name].assignments(), frozen=frozen
            ),
            planner(replanned),
        )
        for name, planner in PLANNERS.items()
    }

    # A 30-day maintenance of the largest Site, days 30-60 of a 180-day horizon.
    largest = max(sites, key=lambda s: s.cores).name
    down = (DEFAULT_START + timedelta(days=30), DEFAULT_START + timedelta(days=60))
    maintained = PlanRequest(
        survey, euclid_sites(maintenance={largest: down}), DEFAULT_START, DEFAULT_START + timedelta(days=180)
    )
    recovery = {}
    for name, planner in PLANNERS.items():
        figures = next(s for s in evaluate(maintained, planner(maintained)).sites if s.site == largest)
        recovery[name] = figures.recovery_error

    small_request, small_values, optimum_report = small_instance()
    small_reports = {name: evaluate(small_request, planner(small_request)) for name, planner in PLANNERS.items()}

    print(f"load average after: {os.getloadavg()}\n")
    row("figure", "target", {n: n for n in PLANNERS} | {"optimum (small)": "optimum (small)"})
    row("plan time, whole survey (CPU)", "< 1 s", times)
    row("plan time, 90-day horizon (CPU)", "< 1 s", times90)
    row("share error overall (worst Site)", "<= 0.5 %", {n: pct(r.share_error) for n, r in reports.items()})
    row("share error, worst 30-day window", "<= 3 pts", {n: pct(r.worst_window_error) for n, r in reports.items()})
    row("longest gap without new primary", "<= 3 d", {n: f"{r.longest_gap_days:.1f} d" for n, r in reports.items()})
    any_gap = {n: f"{max(s.longest_gap_any_days for s in r.sites):.1f} d" for n, r in reports.items()}
    row("  counting secondary copies", "<= 3 d", any_gap)
    row("MER tiles at one primary", ">= 95 %", {n: pct(r.tiles_coherent) for n, r in reports.items()})
    row("(observation, tile) pairs copied", "<= 5 %", {n: pct(r.copied_pairs) for n, r in reports.items()})
    row("re-plan after 5 % change: primary changed", "<= 5 %", {n: pct(r.churn) for n, r in replans.items()})
    row("re-plan: frozen observations moved", "0", {n: str(r.frozen_moved) for n, r in replans.items()})
    row(
        f"{largest} 30 d down: cum. share error +60 d",
        "<= 1 %",
        {n: pct(v) if v is not None else "n/a" for n, v in recovery.items()},
    )
    optimum = small_values["optimum"]
    row(
        "small instance: objective / optimum",
        "1.00",
        {
            "solver": f"{small_values['solver'] / optimum:.3f} (no swaps {small_values['no-swaps'] / optimum:.2f})",
            "greedy": f"{small_values['greedy'] / optimum:.3f}",
            "optimum (small)": f"{optimum:.4f}{'' if small_values['proven'] else ' (time limit)'}",
        },
    )
    row(
        "small: tiles at one primary / copies",
        "",
        {n: f"{pct(r.tiles_coherent)} / {pct(r.copied_pairs)}" for n, r in small_reports.items()}
        | {"optimum (small)": f"{pct(optimum_report.tiles_coherent)} / {pct(optimum_report.copied_pairs)}"},
    )
    row(
        "small: worst window / overall share error",
        "",
        {n: f"{pct(r.worst_window_error)} / {pct(r.share_error)}" for n, r in small_reports.items()}
        | {"optimum (small)": f"{pct(optimum_report.worst_window_error)} / {pct(optimum_report.share_error)}"},
    )

    print("\ntrade-off (solver, whole survey): the policy weights move along it")
    for label, weights in (
        ("default", PlacementWeights()),
        ("tiles first", PlacementWeights(window_share=1, cumulative_share=1, copies=20, split_tiles=6)),
        ("steady arrivals", PlacementWeights(gap=4, copies=6, split_tiles=2)),
    ):
        r = evaluate(
            full, solve(PlanRequest(survey, sites, full.start, full.end, policy=PlacementPolicy(weights=weights)))
        )
        print(
            f"  {label:<16} share {pct(r.share_error):>8}  window {pct(r.worst_window_error):>8}  gap "
            f"{r.longest_gap_days:5.1f} d  tiles whole {pct(r.tiles_coherent):>8}  copies {pct(r.copied_pairs):>8}"
        )


if __name__ == "__main__":
    main()

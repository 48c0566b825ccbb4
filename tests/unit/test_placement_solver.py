"""The placement solver: property tests over random surveys and Sites (secondary != primary, frozen observations
never move, determinism, maintenance, shares), the objective's move costs against a full recomputation, the MILP
against the same objective, and the figures on hand-made plans."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import astropy.units as u
import numpy as np
import pytest
from astropy_healpix import lonlat_to_healpix
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sgs.model.placement import PlacementPolicy, PlacementWeights
from sgs.model.site import MaintenanceWindow
from sgs.placement.baselines import greedy_plan, round_robin_plan
from sgs.placement.exact import solve_exact
from sgs.placement.generator import euclid_sites, generate_survey
from sgs.placement.metrics import evaluate
from sgs.placement.plan import Assignments, Plan, PlanRequest, read_plan
from sgs.placement.sites import PlacementSite
from sgs.placement.solver import build_objective, effective_weights, external_costs, prepare, run_passes, solve
from sgs.placement.survey import ObservationRow, Survey, build_survey

START = datetime(2027, 3, 1, tzinfo=UTC)
PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def survey_from(points: list[tuple[float, float, float]]) -> Survey:
    """Observations at (hours after START, ra, dec); tiles under the corners of a 0.6-degree footprint."""
    rows = []
    for number, (hours, ra, dec) in enumerate(points, start=1):
        corners_ra = np.array([ra - 0.3, ra + 0.3, ra - 0.3, ra + 0.3]) % 360
        corners_dec = np.clip(np.array([dec - 0.3, dec - 0.3, dec + 0.3, dec + 0.3]), -89.9, 89.9)
        tiles = lonlat_to_healpix(corners_ra * u.deg, corners_dec * u.deg, 128, order="nested")
        rows.append(
            ObservationRow(
                id=number * 7,
                time=START + timedelta(hours=hours),
                ra=ra,
                dec=dec,
                tiles=tuple(sorted({int(t) for t in tiles})),
                needs=("des",) if dec < -30 else (),
            )
        )
    return build_survey(rows)


observations = st.lists(
    st.tuples(
        st.floats(0, 24 * 20, allow_nan=False), st.floats(10, 20, allow_nan=False), st.floats(-40, -30, allow_nan=False)
    ),
    min_size=1,
    max_size=60,
)
site_specs = st.lists(st.tuples(st.integers(1, 5000), st.floats(0.5, 5), st.booleans()), min_size=1, max_size=5)


def sites_from(specs: list[tuple[int, float, bool]], maintenance: bool = True) -> list[PlacementSite]:
    sites = []
    for k, (cores, weight, down) in enumerate(specs):
        windows = (
            [MaintenanceWindow(start=START + timedelta(days=3 + k), end=START + timedelta(days=6 + k))]
            if down and maintenance
            else []
        )
        sites.append(
            PlacementSite(name=f"site-{k}", cores=cores, storage_tb=cores / 10, weight=weight, maintenance=windows)
        )
    return sites


def request(survey: Survey, sites: list[PlacementSite], **policy: object) -> PlanRequest:
    return PlanRequest(survey, sites, START, START + timedelta(days=21), policy=PlacementPolicy.model_validate(policy))


def names(plan: Plan) -> dict[int, tuple[str, str | None]]:
    return dict(plan.assignments().observations)


@PROPERTY
@given(observations, site_specs)
def test_every_observation_and_tile_gets_a_primary_and_a_different_secondary(
    points: list[tuple[float, float, float]], specs: list[tuple[int, float, bool]]
) -> None:
    survey, sites = survey_from(points), sites_from(specs)
    plan = solve(request(survey, sites))
    assert plan.obs_ids.tolist() == survey.ids.tolist()
    assert (plan.obs_primary >= 0).all()
    if len(sites) >= 2:
        assert (plan.obs_secondary >= 0).all() and (plan.obs_secondary != plan.obs_primary).all()
        assert (plan.tile_secondary != plan.tile_primary).all()
    else:
        assert (plan.obs_secondary == -1).all()
    assert set(plan.tile_ids.tolist()) == set(survey.tile_ids.tolist())
    assert evaluate(request(survey, sites), plan).secondary_equals_primary == 0


@PROPERTY
@given(observations, site_specs)
def test_the_same_request_gives_a_byte_identical_plan(
    points: list[tuple[float, float, float]], specs: list[tuple[int, float, bool]]
) -> None:
    survey, sites = survey_from(points), sites_from(specs)
    first, second = solve(request(survey, sites)), solve(request(survey_from(points), sites_from(specs)))
    assert first.to_csv() == second.to_csv()
    assert (
        evaluate(request(survey, sites), first).model_dump_json()
        == evaluate(request(survey, sites), second).model_dump_json()
    )


@PROPERTY
@given(observations, site_specs, st.data())
def test_frozen_observations_never_move_when_the_survey_and_sites_change(
    points: list[tuple[float, float, float]], specs: list[tuple[int, float, bool]], data: st.DataObject
) -> None:
    survey, sites = survey_from(points), sites_from(specs)
    before = solve(request(survey, sites))
    frozen = frozenset(data.draw(st.sets(st.sampled_from(survey.ids.tolist()))))
    # The re-plan sees a changed survey (a few observations dropped, one moved in time) and other weights.
    kept = [p for k, p in enumerate(points) if k % 5 != 4 or survey.ids[k] in frozen] or points[:1]
    changed = survey_from(kept)
    reweighted = [(c, w * 3 if k == 0 else w, d) for k, (c, w, d) in enumerate(specs)]
    after = solve(
        PlanRequest(
            changed,
            sites_from(reweighted),
            START,
            START + timedelta(days=21),
            previous=before.assignments(),
            frozen=frozen,
        )
    )
    old, new = names(before), names(after)
    for obs in frozen & set(new):
        assert new[obs] == old[obs], f"frozen observation {obs} moved from {old[obs]} to {new[obs]}"


@PROPERTY
@given(observations, site_specs)
def test_nothing_arrives_at_a_site_during_its_maintenance_when_another_is_up(
    points: list[tuple[float, float, float]], specs: list[tuple[int, float, bool]]
) -> None:
    survey, sites = survey_from(points), sites_from(specs)
    plan = solve(request(survey, sites))
    times = survey.times
    for k, obs in enumerate(plan.obs_ids.tolist()):
        at = int(times[survey.index_of()[obs]])
        down = [any(int(w.start.timestamp()) <= at < int(w.end.timestamp()) for w in s.maintenance) for s in sites]
        if not all(down):
            assert not down[int(plan.obs_primary[k])], f"observation {obs} placed at a Site in maintenance"


@PROPERTY
@given(observations, site_specs)
def test_shares_follow_the_targets_when_observations_are_placed_one_by_one(
    points: list[tuple[float, float, float]], specs: list[tuple[int, float, bool]]
) -> None:
    survey, sites = survey_from(points), sites_from(specs, maintenance=False)
    req = request(survey, sites, keep_tiles_together=False, linearise_in_time=False, weights={"external": 0})
    report = evaluate(req, solve(req))
    n = len(survey)
    # One observation is the finest unit: every Site is within one observation (plus rounding) of its target.
    assert report.share_error <= 1.0 / n + 1e-9, report.sites


def test_the_objective_move_costs_match_a_full_recomputation() -> None:
    survey = generate_survey(wide=120, deep=40, sky_fields=29_000)
    sites = euclid_sites(4, maintenance={"sdc-it": (START + timedelta(days=1), START + timedelta(days=3))})
    policy = PlacementPolicy(window_days=4, recovery_days=4, max_gap_days=1, max_unit_observations=15)
    req = PlanRequest(survey, sites, START - timedelta(days=60), START + timedelta(days=30), policy=policy)
    prep = prepare(req)
    scope = prep.scope
    objective = build_objective(
        prep,
        effective_weights(policy),
        scope.fixed_primary,
        scope.context_primary,
        scope.prev_primary,
        external=external_costs(prep),
    )
    run_passes(objective, 0)
    assert prep.units.count > 10
    for unit in range(prep.units.count):
        here = int(objective.site[unit])
        objective.move(unit, here, -1)
        costs = objective.costs(unit)
        totals = []
        for site in range(len(sites)):
            objective.move(unit, site, +1)
            totals.append(objective.value()["total"])
            objective.move(unit, site, -1)
        objective.move(unit, here, +1)
        finite = np.isfinite(costs)
        assert np.allclose(
            (costs - costs[finite].min())[finite], (np.array(totals) - np.array(totals)[finite].min())[finite]
        )


def test_the_milp_optimum_is_no_worse_than_the_solver_and_agrees_with_the_objective() -> None:
    survey = generate_survey(wide=40, deep=16, sky_fields=29_000)
    policy = PlacementPolicy(window_days=2, recovery_days=2, max_gap_days=1, max_unit_observations=12)
    req = PlanRequest(survey, euclid_sites(2), START - timedelta(days=60), START + timedelta(days=10), policy=policy)
    prep = prepare(req)
    scope = prep.scope

    def fresh() -> object:
        return build_objective(
            prep,
            effective_weights(policy),
            scope.fixed_primary,
            scope.context_primary,
            scope.prev_primary,
            external=external_costs(prep),
        )

    heuristic = fresh()
    run_passes(heuristic, 5, prep.units.count)  # type: ignore[arg-type]
    exact = solve_exact(fresh(), time_limit_s=60)  # type: ignore[arg-type]
    assert exact.optimal, exact.message
    check = fresh()
    for unit, site in enumerate(exact.sites.tolist()):
        check.move(unit, site, +1)  # type: ignore[attr-defined]
    assert check.value()["total"] == pytest.approx(exact.value, abs=1e-7)  # type: ignore[attr-defined]
    assert exact.value <= heuristic.value()["total"] + 1e-9  # type: ignore[attr-defined]


def test_figures_of_a_hand_made_plan() -> None:
    # Two Sites of equal size; four observations a day apart; two share a tile.
    rows = [
        ObservationRow(
            id=i, time=START + timedelta(days=i), ra=10.0, dec=0.0, tiles=(100, 101) if i < 2 else (200 + i,)
        )
        for i in range(4)
    ]
    survey = build_survey(rows)
    sites = [PlacementSite(name="a", cores=10, storage_tb=1), PlacementSite(name="b", cores=10, storage_tb=1)]
    req = PlanRequest(survey, sites, START, START + timedelta(days=10), policy=PlacementPolicy(window_days=2))
    plan = Plan(
        sites=("a", "b"),
        obs_ids=survey.ids,
        obs_primary=np.array([0, 1, 0, 0]),
        obs_secondary=np.array([1, 0, 1, 1]),
        tile_ids=np.array([100, 101, 202, 203]),
        tile_primary=np.array([0, 0, 0, 0]),
        tile_secondary=np.array([1, 1, 1, 1]),
    )
    report = evaluate(req, plan)
    assert [s.primaries for s in report.sites] == [3, 1]
    assert report.share_error == pytest.approx(0.25)
    assert report.tiles_coherent == pytest.approx(0.5)  # tiles 100 and 101 hold observation 1 at b
    assert report.copied_pairs == pytest.approx(2 / 6)
    assert report.sites[1].longest_gap_days == pytest.approx(2.0)  # b: day 1 only, of days 0-3
    assert report.sites[0].longest_gap_days == pytest.approx(2.0)  # a: days 0, 2, 3


def test_baselines_make_valid_plans_and_the_solver_keeps_tiles_together_better() -> None:
    survey = generate_survey(wide=800, deep=200, sky_fields=29_000)
    req = PlanRequest(survey, euclid_sites(), START - timedelta(days=60), START + timedelta(days=60))
    reports = {
        name: evaluate(req, make(req))
        for name, make in (("solver", solve), ("greedy", greedy_plan), ("rr", round_robin_plan))
    }
    for report in reports.values():
        assert report.observations == 1000 and report.secondary_equals_primary == 0
    assert reports["solver"].copied_pairs < reports["rr"].copied_pairs
    assert reports["solver"].tiles_coherent > reports["rr"].tiles_coherent


def test_a_replan_keeps_nearly_everything_and_a_five_percent_change_moves_at_most_that() -> None:
    survey = generate_survey(wide=1500, deep=500, sky_fields=29_000)
    start, end = START - timedelta(days=60), START + timedelta(days=120)
    first = solve(PlanRequest(survey, euclid_sites(), start, end))
    same = PlanRequest(survey, euclid_sites(), start, end, previous=first.assignments())
    assert evaluate(same, solve(same)).churn <= 0.01
    rows = [survey.row(i) for i in range(len(survey)) if i % 20 != 7]  # 5 % of the survey dropped
    changed = PlanRequest(build_survey(rows), euclid_sites(), start, end, previous=first.assignments())
    report = evaluate(changed, solve(changed))
    assert report.previous_observations == len(rows)
    assert report.churn <= 0.05
    assert read_plan(first.to_csv()) == first.assignments()
    assert isinstance(read_plan(first.to_csv()), Assignments)


def test_policy_weights_zero_switch_terms_off() -> None:
    weights = effective_weights(PlacementPolicy(linearise_in_time=False, keep_tiles_together=False))
    assert (weights.window_share, weights.gap, weights.copies, weights.split_tiles) == (0, 0, 0, 0)
    assert PlacementWeights().churn > 0

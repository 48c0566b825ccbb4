"""A plan's consequences: replication rules per (primary, secondary) pair, and a Run's Site for an observation
(primary; the secondary when the primary is in maintenance or not Ready)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sgs.model.site import MaintenanceWindow
from sgs.placement.consequences import replication_rules, run_site
from sgs.placement.plan import Assignments

NOW = datetime(2027, 5, 1, tzinfo=UTC)


def test_one_rule_per_site_pair_naming_the_observations() -> None:
    plan = Assignments({3: ("sdc-fr", "sdc-it"), 1: ("sdc-fr", "sdc-it"), 2: ("sdc-it", "sdc-fr"), 4: ("sdc-de", None)})
    rules = replication_rules("euclid-q2", plan)
    assert [(r.name, r.sites, r.observations) for r in rules] == [
        ("euclid-q2-sdc-de-0", ("sdc-de",), (4,)),
        ("euclid-q2-sdc-fr-sdc-it-0", ("sdc-fr", "sdc-it"), (1, 3)),
        ("euclid-q2-sdc-it-sdc-fr-0", ("sdc-it", "sdc-fr"), (2,)),
    ]
    assert rules[1].where == "observation IN (1, 3)" and rules[1].copies == 2


def test_a_run_goes_to_the_primary_unless_it_is_down_then_to_the_secondary() -> None:
    ready = {"sdc-fr": "Ready", "sdc-it": "Ready"}
    placed = ("sdc-fr", "sdc-it")
    assert run_site(7, placed, ready, {}, NOW).site == "sdc-fr"
    window = {"sdc-fr": [MaintenanceWindow(start=NOW - timedelta(days=1), end=NOW + timedelta(days=1))]}
    moved = run_site(7, placed, ready, window, NOW)
    assert (moved.site, moved.reason) == ("sdc-it", "PlacedSecondary")
    assert "primary sdc-fr is in maintenance; its secondary sdc-it takes it" in moved.message
    assert run_site(7, placed, ready, window, NOW + timedelta(days=2)).site == "sdc-fr"  # the window is over
    degraded = run_site(7, placed, {"sdc-fr": "Degraded", "sdc-it": "Ready"}, {}, NOW)
    assert degraded.site == "sdc-it"
    none = run_site(7, placed, {"sdc-fr": "Maintenance", "sdc-it": "Pending"}, {}, NOW)
    assert (none.site, none.reason) == (None, "PlacedSitesUnavailable")
    assert run_site(8, None, ready, {}, NOW).reason == "NotPlaced"


def test_the_operators_site_choice_takes_the_placed_site_first() -> None:
    from sgs_operator.placement import choose_site

    from sgs.model.site import SiteSpec

    spec = SiteSpec.model_validate(
        {"storage": {"kind": "posix", "path": "/x"}, "capacity": {"cores": 1, "storageTb": 1}}
    )
    sites = {
        "sdc-fr": spec,
        "sdc-it": spec.model_copy(update={"compute": spec.compute.model_copy(update={"max_parallel": 500})}),
    }
    phases = {"sdc-fr": "Ready", "sdc-it": "Ready"}
    window = {"sdc-fr": [MaintenanceWindow(start=NOW - timedelta(days=1), end=NOW + timedelta(days=1))]}
    placed = run_site(7, ("sdc-fr", "sdc-it"), phases, window, NOW)
    assert choose_site(sites, phases, {}, "ns", placed=placed).name == "sdc-it"
    primary = run_site(7, ("sdc-fr", "sdc-it"), phases, {}, NOW)
    chosen = choose_site(sites, phases, {}, "ns", placed=primary)
    assert (chosen.name, chosen.reason) == ("sdc-fr", "PlacedPrimary")  # not the Site with the most free slots
    assert choose_site(sites, phases, {}, "ns").name == "sdc-it"


def test_rules_stay_under_the_transfer_services_expression_limit_and_reconcile_to_exactly_the_plan() -> None:
    from sgs_operator.placements import rule_body, rule_changes

    plan = Assignments({obs: ("sdc-fr", "sdc-it") for obs in range(10**6, 10**6 + 5000)})
    rules = replication_rules("placement.ns.wide", plan)
    assert len(rules) > 1 and all(len(r.where) < 10_000 for r in rules)
    assert sum(len(r.observations) for r in rules) == 5000
    wanted = [rule_body(r, "placement.ns.wide") for r in rules]
    assert wanted[0]["site_expression"] == "sdc-fr | sdc-it" and wanted[0]["copies"] == 2
    create, delete = rule_changes(wanted, [])
    assert len(create) == len(rules) and delete == []
    existing = [{**body, "id": f"id-{k}"} for k, body in enumerate(wanted)]
    assert rule_changes(wanted, existing) == ([], [])  # a repeat changes nothing
    stale = [*existing, {**wanted[0], "where": "observation IN (1)", "id": "old"}]
    assert rule_changes(wanted[1:], stale) == ([], ["id-0", "old"])

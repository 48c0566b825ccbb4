"""The demo's replication rules: one per (product type, secondary Site), found again on a re-run."""

from __future__ import annotations

from pathlib import Path

from sgs.demo.replication import RuleSpec, expected_copies, rule_specs, sites_manifests
from sgs.demo.survey import plan_survey
from sgs.storage.sites import resolve


def test_a_rule_per_product_type_and_secondary_site_over_the_observations_placed_there(tmp_path: Path) -> None:
    plan = plan_survey(tmp_path, observations=4, tiles=2, sites=2)
    specs = rule_specs(plan.observations)
    by_secondary: dict[str, list[int]] = {}
    for obs in plan.observations:
        by_secondary.setdefault(obs.secondary.name, []).append(obs.number)
    assert {(s.site, s.observations) for s in specs} == {(k, tuple(v)) for k, v in by_secondary.items()}
    assert sorted({s.dataset_type for s in specs}) == ["nir_catalog", "nir_stack"]
    assert len(specs) == 2 * len(by_secondary)


def test_one_site_survey_needs_no_rule(tmp_path: Path) -> None:
    assert rule_specs(plan_survey(tmp_path, observations=2, tiles=1, sites=1).observations) == []


def test_a_rule_matches_only_its_own_selector() -> None:
    spec = RuleSpec("nir_stack", "sdc-fr", (1, 3))
    rule = {**spec.body(), "dataset_ids": [], "collections": []}
    assert spec.body()["where"] == "observation IN (1, 3)" and spec.matches(rule)
    assert not spec.matches({**rule, "site_expression": "sdc-it"})
    assert not spec.matches({**rule, "where": "observation IN (1)"})
    assert not spec.matches({**rule, "copies": 2})


def test_failed_observations_are_not_expected_at_the_secondary() -> None:
    specs = [RuleSpec("nir_stack", "a", (1, 2)), RuleSpec("nir_catalog", "a", (1, 2))]
    assert expected_copies(specs, [2]) == [1, 1]


def test_the_sites_file_loads_with_the_transfer_services_loader(tmp_path: Path) -> None:
    plan = plan_survey(tmp_path, observations=2, tiles=2, sites=2)
    documents = sites_manifests(plan.sites, "http://127.0.0.1:1", {s.name: f"token-{s.name}" for s in plan.sites})
    sites = resolve(
        [d for d in documents if d["kind"] == "Site"], [d for d in documents if d["kind"] == "Secret"], tmp_path
    )
    assert not sites.errors and set(sites.sites) == {s.name for s in plan.sites}
    assert sites.sites["sdc-it"].archive_token == "token-sdc-it"

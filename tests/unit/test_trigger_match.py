"""The trigger service's pure core: which groups an arrival touches, the archive query of a group, when a group is
complete, and the Run it becomes (a deterministic name, a valid Run)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from sgs_trigger.match import (
    Arrival,
    Group,
    Member,
    compile_trigger,
    complete_members,
    group_where,
    groups_of,
    literal,
    run_manifest,
    run_name,
)

from sgs.expression import ExpressionError, SiteFacts
from sgs.model.dataset import DataIdError, DimensionUniverse
from sgs.model.pipeline import TriggerSpec
from sgs.model.run import Run

UNIVERSE = DimensionUniverse.model_validate(
    yaml.safe_load((Path(__file__).resolve().parents[2] / "services/archive/sgs_archive/dimensions.yaml").read_text())
)
SITES = {"ns": [SiteFacts("site-a", {"tier": "primary"}), SiteFacts("site-b", {"tier": "secondary"})]}


def trigger(**changes: Any) -> TriggerSpec:
    spec: dict[str, Any] = {
        "name": "per-observation",
        "input": "exposures",
        "datasetType": "raw",
        "where": "instrument = 'NISP'",
        "groupBy": ["instrument", "observation"],
        "complete": {"count": 4},
        "inputs": {"master_dark": {"uri": "/data/dark.fits"}},
        **changes,
    }
    return TriggerSpec.model_validate({k: v for k, v in spec.items() if v is not None})


def arrival(observation: int, exposure: int, site: str = "site-a", **changes: Any) -> Arrival:
    fields: dict[str, Any] = {
        "dataset_id": uuid.uuid4(),
        "dataset_type": "raw",
        "data_id": {"instrument": "NISP", "observation": observation, "exposure": exposure},
        "run": "raw/nisp",
        "site": site,
        **changes,
    }
    return Arrival(**fields)


def test_arrivals_of_one_observation_touch_one_group_per_site() -> None:
    compiled = compile_trigger("ns", "nir", trigger(), UNIVERSE)
    arrivals = [arrival(7, 1), arrival(7, 2), arrival(8, 1), arrival(7, 3, site="site-b")]

    groups = groups_of(arrivals, [compiled], SITES)

    assert sorted((g.site, g.key) for g in groups) == [
        ("site-a", ("NISP", 7)),
        ("site-a", ("NISP", 8)),
        ("site-b", ("NISP", 7)),
    ]


@pytest.mark.parametrize(
    ("changes", "arriving"),
    [
        ({}, arrival(7, 1, dataset_type="calexp")),  # another dataset type
        ({}, arrival(7, 1, data_id={"instrument": "VIS", "observation": 7})),  # the expression says no
        ({}, arrival(7, 1, data_id={"instrument": "NISP", "exposure": 3})),  # no observation: no group key
        ({"sites": "tier=primary"}, arrival(7, 1, site="site-b")),  # a Site the trigger does not watch
        ({}, arrival(7, 1, site="site-z")),  # not a Site of the Pipeline's namespace
        ({"collections": ["raw/vis"]}, arrival(7, 1)),  # another RUN collection
    ],
)
def test_arrivals_outside_a_trigger_touch_no_group(changes: dict[str, Any], arriving: Arrival) -> None:
    compiled = compile_trigger("ns", "nir", trigger(**changes), UNIVERSE)
    assert groups_of([arriving], [compiled], SITES) == []


def test_a_trigger_naming_dimensions_the_archive_lacks_does_not_compile() -> None:
    with pytest.raises(ExpressionError, match="unknown dimension 'colour'"):
        compile_trigger("ns", "nir", trigger(where="colour = 'red'"), UNIVERSE)
    with pytest.raises(DataIdError, match="unknown dimension"):
        compile_trigger("ns", "nir", trigger(groupBy=["colour"]), UNIVERSE)


def test_the_group_query_adds_the_key_to_the_expression_with_quoted_literals() -> None:
    compiled = compile_trigger("ns", "nir", trigger(groupBy=["instrument", "observation"]), UNIVERSE)
    group = Group(compiled, "site-a", ("O'Brien", 7))
    assert group_where(group) == "(instrument = 'NISP') AND instrument = 'O''Brien' AND observation = 7"
    assert literal(12) == "12"
    without = compile_trigger("ns", "nir", trigger(where=""), UNIVERSE)
    assert group_where(Group(without, "site-a", ("NISP", 7))) == "instrument = 'NISP' AND observation = 7"


def members(available: int, unavailable: int = 0) -> list[Member]:
    return [
        Member(uuid.uuid4(), {"instrument": "NISP", "observation": 7, "exposure": i}, "raw/nisp", i < available)
        for i in range(available + unavailable)
    ]


def test_a_count_group_is_complete_at_that_many_available_datasets() -> None:
    group = Group(compile_trigger("ns", "nir", trigger(), UNIVERSE), "site-a", ("NISP", 7))
    assert complete_members(group, members(3, 5)) is None
    chosen = complete_members(group, list(reversed(members(4, 1))))
    assert chosen is not None and [m.data_id["exposure"] for m in chosen] == [0, 1, 2, 3]  # data ID order
    assert complete_members(group, []) is None


def test_an_all_known_group_is_complete_when_every_known_dataset_is_available() -> None:
    group = Group(compile_trigger("ns", "nir", trigger(complete={"allKnown": True}), UNIVERSE), "site-a", ("NISP", 7))
    assert complete_members(group, members(3, 1)) is None
    chosen = complete_members(group, members(4))
    assert chosen is not None and len(chosen) == 4


def test_the_run_name_is_the_same_for_the_same_group_and_differs_otherwise() -> None:
    compiled = compile_trigger("ns", "nir-stack", trigger(), UNIVERSE)
    one = Group(compiled, "site-a", ("NISP", 7))
    assert run_name(one) == run_name(
        Group(compile_trigger("ns", "nir-stack", trigger(), UNIVERSE), "site-a", ("NISP", 7))
    )
    others = {
        run_name(Group(compiled, "site-b", ("NISP", 7))),
        run_name(Group(compiled, "site-a", ("NISP", 8))),
        run_name(Group(compile_trigger("ns", "nir-stack", trigger(name="other"), UNIVERSE), "site-a", ("NISP", 7))),
    }
    assert run_name(one) not in others and len(others) == 3
    assert run_name(one).startswith("nir-stack-") and len(run_name(one)) <= 63
    long = Group(compile_trigger("ns", "p" * 200, trigger(), UNIVERSE), "site-a", ("NISP", 7))
    assert len(run_name(long)) <= 63


def test_the_run_is_a_valid_run_at_the_groups_site_with_the_members_as_dataset_ids() -> None:
    group = Group(compile_trigger("ns", "nir", trigger(priority=7), UNIVERSE), "site-a", ("NISP", 7))
    chosen = members(4)

    manifest = run_manifest(group, chosen)

    run = Run.model_validate(manifest)
    assert run.metadata.name == run_name(group) and run.metadata.namespace == "ns"
    assert run.spec.site == "site-a" and run.spec.pipeline == "nir" and run.spec.priority == 7
    assert run.spec.inputs["exposures"].dataset_ids == [m.dataset_id for m in chosen]
    assert run.spec.inputs["master_dark"].uri == "/data/dark.fits"
    assert run.metadata.labels["sgs.io/trigger"] == "per-observation"


def test_a_group_by_observation_names_its_observation_and_others_none() -> None:
    by_observation = compile_trigger("ns", "nir", trigger(), UNIVERSE)
    by_exposure = compile_trigger("ns", "nir", trigger(groupBy=["exposure"]), UNIVERSE)
    assert Group(by_observation, "site-a", ("NISP", 7)).observation == 7
    assert Group(by_exposure, "site-a", (3,)).observation is None

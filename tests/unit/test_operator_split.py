"""Splitting a campaign into one child Run per Site: which Site gets which input, the child's spec, the parent's
status from its children's, and the spec checks."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sgs_operator.blocked import RunBlockedError
from sgs_operator.inputs import Found
from sgs_operator.split import (
    ChildPlan,
    Item,
    aggregate,
    archive_items,
    child_name,
    child_spec,
    file_items,
    plan,
    spec_down,
)

from sgs.model.run import ChildRun, RunSpec
from sgs.model.site import SiteSpec

READY = {"a": "Ready", "b": "Ready", "c": "Ready"}


def spec(**inputs: Any) -> RunSpec:
    return RunSpec.model_validate({"pipeline": "p", "inputs": inputs, "split": {"by": "site"}})


def ids(n: int) -> list[str]:
    return [str(uuid.UUID(int=i + 1)) for i in range(n)]


def test_each_dataset_goes_to_the_site_holding_it() -> None:
    items = [Item("images", "d1", {"a": 10}), Item("images", "d2", {"b": 10}), Item("images", "d3", {"a": 5})]

    children = plan("survey", spec(images={"datasetIds": ids(1)}), items, READY)

    assert [(c.name, c.site, c.items) for c in children] == [
        ("survey-a", "a", {"images": ["d1", "d3"]}),
        ("survey-b", "b", {"images": ["d2"]}),
    ]


def test_a_dataset_at_several_sites_goes_where_most_of_the_run_is_then_by_name() -> None:
    items = [Item("x", "d1", {"a": 1, "b": 1}), Item("x", "d2", {"b": 5}), Item("x", "d3", {"a": 1, "c": 1})]

    children = plan("r", spec(x={"datasetIds": ids(1)}), items, READY)

    # b holds most of the Run's bytes (6): d1 goes there; d3 is at a (2 B) and c (1 B): a.
    assert {c.site: c.items["x"] for c in children} == {"a": ["d3"], "b": ["d1", "d2"]}


def test_a_ready_site_is_preferred_and_the_placement_before_anything() -> None:
    items = [Item("x", "d1", {"a": 1, "b": 1}, observation=7), Item("x", "d2", {"a": 9, "b": 1})]
    phases = {"a": "Pending", "b": "Ready"}

    assert {c.site: c.items["x"] for c in plan("r", spec(x={"datasetIds": ids(1)}), items, phases)} == {
        "b": ["d1", "d2"]
    }
    placed = plan("r", spec(x={"datasetIds": ids(1)}), items, READY, placed={7: "b"})
    assert {c.site: c.items["x"] for c in placed} == {"a": ["d2"], "b": ["d1"]}


def test_an_input_no_site_holds_blocks_the_split_naming_it() -> None:
    items = [Item("x", "d1", {"a": 1}), Item("x", "lost", {})]

    with pytest.raises(RunBlockedError) as err:
        plan("r", spec(x={"datasetIds": ids(1)}), items, READY)

    assert err.value.reason == "InputsNotAtAnySite" and "spec.inputs.x: lost" in str(err.value)


def test_a_divided_input_a_child_gets_nothing_of_is_refused() -> None:
    items = [Item("x", "d1", {"a": 1}), Item("x", "d2", {"b": 1}), Item("y", "d3", {"a": 1})]

    with pytest.raises(RunBlockedError) as err:
        plan("r", spec(x={"datasetIds": ids(1)}, y={"datasetIds": ids(1)}), items, READY)

    assert err.value.reason == "SplitUneven" and "Site b holds nothing of spec.inputs.y" in str(err.value)


def test_files_are_split_by_the_sites_storage_paths(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "f1").write_text("x" * 3)
    sites = {
        name: SiteSpec.model_validate(
            {"storage": {"kind": "posix", "path": str(tmp_path / name)}, "capacity": {"cores": 1, "storageTb": 1}}
        )
        for name in "ab"
    }
    uris = [str(tmp_path / "a" / "f1"), (tmp_path / "b" / "f2").as_uri(), str(tmp_path / "ab" / "f3")]
    run = spec(files={"uris": uris})

    items = file_items(run, ["files"], sites)

    assert [dict(i.held) for i in items] == [{"a": 3}, {"b": 0}, {}]  # "ab" is not under "a"


def test_archive_items_take_only_the_namespaces_sites_and_the_divided_inputs() -> None:
    one, two = uuid.uuid4(), uuid.uuid4()
    found = [
        Found("x", 0, one, "raw", {"observation": 3}, {"a": ("file:///a/1", 4), "elsewhere": ("file:///e/1", 4)}),
        Found("calib", 0, two, "flat", {}, {"a": ("file:///a/2", 4)}),
    ]

    items = archive_items(found, ["x"], ["a", "b"])

    assert items == [Item("x", str(one), {"a": 4}, 3)]


def test_the_child_gets_its_share_and_the_rest_whole_without_split_and_with_its_site() -> None:
    wire = {
        "pipeline": "p",
        "priority": 5,
        "inputs": {"x": {"query": "tile = 1", "datasetType": "raw"}, "calib": {"uri": "/data/flat"}},
        "split": {"by": "site"},
    }
    run = RunSpec.model_validate(wire)

    child = child_spec(run, ChildPlan("r-a", "a", {"x": ["d1", "d2"]}), wire)

    assert child == {
        "pipeline": "p",
        "priority": 5,
        "site": "a",
        "inputs": {"x": {"datasetIds": ["d1", "d2"]}, "calib": {"uri": "/data/flat"}},
    }
    RunSpec.model_validate(child | {"inputs": {**child["inputs"], "x": {"datasetIds": ids(2)}}})  # a valid Run


def test_child_names_are_dns_labels_and_long_ones_stay_unique() -> None:
    assert child_name("Survey.7", "sdc_fr") == "survey-7-sdc-fr"
    long_a, long_b = child_name("r" * 60, "site-a"), child_name("r" * 60, "site-b")
    assert len(long_a) == 63 and long_a != long_b


def child(phase: str, **status: Any) -> dict[str, Any]:
    return {"metadata": {"uid": "u"}, "status": {"phase": phase, **status}}


def test_the_parent_shows_its_childrens_phase_and_totals() -> None:
    entries = [ChildRun(name="r-a", site="a", uid="1"), ChildRun(name="r-b", site="b", uid="2")]
    children = {
        "r-a": child(
            "Succeeded",
            tasks={"total": 3, "succeeded": 3},
            startTime="2026-01-01T00:00:05Z",
            completionTime="2026-01-01T00:01:00Z",
        ),
        "r-b": child(
            "Running",
            tasks={"total": 4, "succeeded": 1, "running": 1, "failed": 1},
            startTime="2026-01-01T00:00:02Z",
            failedTasks=[{"task": "t", "attempt": 1, "reason": "Error"}],
        ),
    }

    status = aggregate(entries, children, suspended=False)

    assert status["phase"] == "Running" and status["progress"] == "4/7"
    assert status["tasks"]["running"] == 1 and status["tasks"]["failed"] == 1
    assert status["startTime"] == "2026-01-01T00:00:02Z" and status["completionTime"] is None
    assert status["failedTasks"] == [{"task": "r-b/t", "attempt": 1, "reason": "Error"}]
    assert [(e.phase, e.progress) for e in entries] == [("Succeeded", None), ("Running", None)]

    children["r-b"] = child("Failed", completionTime="2026-01-01T00:02:00Z")
    done = aggregate(entries, children, suspended=False)
    assert done["phase"] == "Failed" and done["completionTime"] == "2026-01-01T00:02:00Z"


def test_a_deleted_child_fails_the_parent_and_a_blocked_one_is_named() -> None:
    entries = [ChildRun(name="r-a", site="a", uid="1"), ChildRun(name="r-b", site="b", uid="2")]
    blocked = {"type": "SiteReady", "status": "False", "reason": "NoReadySite", "message": "site b is down"}
    status = aggregate(entries, {"r-b": child("Pending", conditions=[blocked])}, suspended=False)

    [cond] = status["conditions"]
    assert status["phase"] == "Running" and cond.reason == "ChildGone" and "r-a" in cond.message

    status = aggregate(entries[1:], {"r-b": child("Pending", conditions=[blocked])}, suspended=False)
    [cond] = status["conditions"]
    assert cond.reason == "NoReadySite" and cond.message == "r-b: site b is down"


def test_what_flows_down_has_its_defaults_so_a_removed_field_resets_the_child() -> None:
    assert spec_down({"pipeline": "p", "suspend": True, "priority": 3}) == {
        "priority": 3,
        "suspend": True,
        "retryFailed": 0,
        "maxParallel": 50,
    }
    assert spec_down({"pipeline": "p"})["suspend"] is False


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"site": "a"}, "leave spec.site unset"),
        ({"split": {"inputs": ["nope"]}}, "'nope' is not one of spec.inputs"),
        ({"split": {"inputs": ["one"]}}, "'one' is one uri"),
    ],
)
def test_a_split_the_operator_cannot_do_is_refused_naming_the_field(extra: dict[str, Any], field: str) -> None:
    raw = {"pipeline": "p", "inputs": {"one": {"uri": "/x"}, "many": {"uris": ["/y"]}}, "split": {"by": "site"}}

    with pytest.raises(ValidationError) as err:
        RunSpec.model_validate(raw | extra if "site" in extra else {**raw, **extra})

    assert field in str(err.value) and "split" in str(err.value)


def test_a_split_of_nothing_divisible_is_refused() -> None:
    with pytest.raises(ValidationError, match="no archive input or uris list"):
        RunSpec.model_validate({"pipeline": "p", "inputs": {"one": {"uri": "/x"}}, "split": {}})

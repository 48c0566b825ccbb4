"""The stage-in's plan: what is copied to the Run's Site, the least any Site would have needed, the rule's owner
and priority."""

from __future__ import annotations

import uuid

import pytest
from sgs_operator.blocked import RunBlockedError
from sgs_operator.inputs import Found, Resolution
from sgs_operator.stage_in import MAX_STAGE_IN_DATASETS, owner_of, plan_row, progress, rule_priority


def found(size: int, *sites: str) -> Found:
    replicas = {site: (f"file:///{site}/{size}", size) for site in sites}
    return Found("images", 0, uuid.uuid4(), "raw", {}, replicas)


RESOLUTION = Resolution([found(100, "a"), found(50, "b"), found(30, "b", "c"), found(7, "c")])


def test_the_plan_counts_bytes_missing_at_the_site_and_at_the_best_site() -> None:
    row = plan_row(RESOLUTION, "run:x", "c", ["a", "b", "c"])
    assert (row.bytes_total, row.bytes_to_stage) == (187, 150)
    # a misses 87, b misses 107, c misses 150: the best Site is a, whatever Site the Run was sent to.
    assert (row.best_site, row.bytes_minimum) == ("a", 87)
    assert len(row.dataset_ids) == 4


def test_progress_shows_counts_staged_and_minimum() -> None:
    row = plan_row(RESOLUTION, "run:x", "a", ["a", "b", "c"])
    message = progress(RESOLUTION, row, {"id": "r1", "state": "REPLICATING"})
    assert message == (
        "1/4 input datasets at a; staged 0 of 87 bytes to stage (minimum possible 87: missing at the best Site, a); "
        "rule r1 REPLICATING"
    )


def test_too_many_datasets_for_one_rule_are_refused() -> None:
    many = Resolution([found(1, "a") for _ in range(MAX_STAGE_IN_DATASETS + 1)])
    with pytest.raises(RunBlockedError) as info:
        plan_row(many, "run:x", "b", ["a", "b"])
    assert info.value.reason == "TooManyToStage"


@pytest.mark.parametrize(("run", "rule"), [(-1000, 1), (-300, 2), (0, 3), (200, 4), (1000, 5)])
def test_the_run_priority_maps_onto_the_rule_priority(run: int, rule: int) -> None:
    assert rule_priority(run) == rule


def test_the_owner_names_the_run_and_fits_the_transfer_services_limit() -> None:
    uid = str(uuid.uuid4())
    assert owner_of("ns", "survey-7", uid) == f"run:ns/survey-7:{uid}"
    assert owner_of("n" * 63, "r" * 100, uid) == f"run:{uid}"

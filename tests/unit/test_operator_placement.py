"""The operator's choice of a Site for a Run that names none (pure: no API server needed)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sgs_operator.placement import REASON_CHOSEN, REASON_DATA, NoReadySiteError, choose_site, input_bytes_by_site

from sgs.model.site import Capacity, Compute, SiteSpec, Storage, StorageKind
from sgs.placement.consequences import RunSite, run_site


def site(max_parallel: int, path: str = "/data") -> SiteSpec:
    return SiteSpec(
        compute=Compute(max_parallel=max_parallel),
        storage=Storage(kind=StorageKind.POSIX, path=path),
        capacity=Capacity(cores=64, storage_tb=1.0),
    )


def test_the_ready_site_with_most_free_slots_wins_and_the_message_says_why() -> None:
    sites = {"sdc-de": site(10), "sdc-fr": site(20), "sdc-it": site(50)}
    phases = {"sdc-de": "Ready", "sdc-fr": "Ready", "sdc-it": "Maintenance"}
    choice = choose_site(sites, phases, running={"sdc-fr": 15}, namespace="survey")
    assert (choice.name, choice.reason) == ("sdc-de", REASON_CHOSEN)
    assert "10 of 10" in choice.message and "sdc-fr 5" in choice.message and "sdc-it Maintenance" in choice.message


def test_ties_go_to_the_first_name_whatever_the_order_sites_are_listed_in() -> None:
    phases = {"b": "Ready", "a": "Ready", "c": "Ready"}
    for order in (["b", "a", "c"], ["c", "b", "a"]):
        sites = {name: site(8) for name in order}
        assert choose_site(sites, phases, running={}, namespace="survey").name == "a"


@pytest.mark.parametrize(
    ("sites", "phases", "fragment"),
    [
        ({}, {}, "no Site in namespace survey"),
        ({"sdc-fr": site(4)}, {"sdc-fr": "Degraded"}, "no Site of survey is Ready (sdc-fr Degraded)"),
        ({"sdc-fr": site(4)}, {}, "(sdc-fr Pending)"),
    ],
)
def test_no_ready_site_is_an_error_naming_each_sites_phase(
    sites: dict[str, SiteSpec], phases: dict[str, str], fragment: str
) -> None:
    with pytest.raises(NoReadySiteError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        choose_site(sites, phases, running={}, namespace="survey")


def test_the_site_holding_most_input_bytes_wins_over_free_slots_and_the_message_says_why() -> None:
    sites = {"sdc-de": site(10, "/sdc/de"), "sdc-fr": site(200, "/sdc/fr"), "sdc-it": site(5, "/sdc/it")}
    phases = dict.fromkeys(sites, "Ready")
    held = {"sdc-de": 3_000, "sdc-fr": 0, "sdc-it": 7_000}
    choice = choose_site(sites, phases, running={}, namespace="survey", held=held)
    assert (choice.name, choice.reason) == ("sdc-it", REASON_DATA)
    assert "most of the Run's input bytes (7,000 B; 5 of 5 task slots free)" in choice.message
    assert "sdc-de 3,000 B, sdc-fr 0 B" in choice.message


def test_equal_input_bytes_fall_back_to_free_slots_then_name() -> None:
    sites = {"b": site(4, "/b"), "a": site(4, "/a"), "c": site(9, "/c")}
    phases = dict.fromkeys(sites, "Ready")
    held = {"a": 10, "b": 10, "c": 1}
    assert choose_site(sites, phases, running={}, namespace="survey", held=held).name == "a"
    assert choose_site(sites, phases, running={"a": 1}, namespace="survey", held=held).name == "b"


def test_a_site_that_is_not_ready_is_not_chosen_for_its_data() -> None:
    sites = {"sdc-de": site(10, "/sdc/de"), "sdc-fr": site(10, "/sdc/fr")}
    phases = {"sdc-de": "Degraded", "sdc-fr": "Ready"}
    choice = choose_site(sites, phases, running={}, namespace="survey", held={"sdc-de": 10**9})
    assert (choice.name, choice.reason) == ("sdc-fr", REASON_CHOSEN)
    assert "not Ready: sdc-de Degraded" in choice.message


def test_input_bytes_count_files_under_each_posix_sites_path_only() -> None:
    s3 = SiteSpec(
        compute=Compute(max_parallel=1),
        storage=Storage(kind=StorageKind.S3, endpoint="s3.example:9000", bucket="b"),
        capacity=Capacity(cores=1, storage_tb=1.0),
    )
    sites = {"a": site(1, "/data/a"), "ab": site(1, "/data/ab/"), "s3": s3}
    sizes = {"/data/a/x.fits": 5, "/data/ab/y.fits": 7, "/data/abc/z.fits": 11, "/elsewhere/w.fits": 13}
    assert input_bytes_by_site(sites, sizes) == {"a": 5, "ab": 7, "s3": 0}


def test_a_placed_observation_goes_to_its_primary_before_data_or_slots() -> None:
    sites = {"sdc-de": site(10), "sdc-fr": site(50)}
    phases = {"sdc-de": "Ready", "sdc-fr": "Ready"}
    placed = RunSite("sdc-de", "PlacedPrimary", "observation 7: primary Site sdc-de")
    choice = choose_site(sites, phases, {}, "survey", held={"sdc-fr": 10**9}, placed=placed)
    assert (choice.name, choice.reason) == ("sdc-de", "PlacedPrimary")


def test_when_neither_placed_site_can_take_it_the_usual_choice_says_so() -> None:
    sites = {"sdc-de": site(10), "sdc-fr": site(50), "sdc-it": site(5)}
    phases = {"sdc-de": "Maintenance", "sdc-fr": "Ready", "sdc-it": "NotReady"}
    placed = run_site(7, ("sdc-de", "sdc-it"), phases, {}, datetime.now(UTC))
    assert placed.site is None
    choice = choose_site(sites, phases, {}, "survey", placed=placed)
    assert (choice.name, choice.reason) == ("sdc-fr", REASON_CHOSEN)
    assert "placement: observation 7: primary sdc-de is in maintenance, secondary sdc-it is NotReady" in choice.message


def test_an_observation_without_placement_changes_nothing() -> None:
    sites = {"sdc-de": site(10), "sdc-fr": site(50)}
    phases = {"sdc-de": "Ready", "sdc-fr": "Ready"}
    placed = run_site(7, None, phases, {}, datetime.now(UTC))
    assert choose_site(sites, phases, {}, "survey", placed=placed) == choose_site(sites, phases, {}, "survey")

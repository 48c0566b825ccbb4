"""The operator's choice of a Site for a Run that names none (pure: no API server needed)."""

from __future__ import annotations

import pytest
from sgs_operator.placement import REASON_CHOSEN, NoReadySiteError, choose_site

from sgs.model.site import Capacity, Compute, SiteSpec, Storage, StorageKind


def site(max_parallel: int) -> SiteSpec:
    return SiteSpec(
        compute=Compute(max_parallel=max_parallel),
        storage=Storage(kind=StorageKind.POSIX, path="/data"),
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

"""Bad placement input is refused naming the line or field: survey files (duplicate id, no time zone, bad tile),
Sites (zero capacity with a weight), horizons (in the past, reversed), plan files; the generator's survey."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from sgs.model.placement import PlacementPolicy
from sgs.placement.generator import euclid_sites, generate_survey
from sgs.placement.plan import PlanError, PlanRequest, check_horizon, read_plan
from sgs.placement.sites import SitesError, read_sites, target_shares
from sgs.placement.survey import SurveyError, read_csv, read_survey, read_yaml, write_csv, write_json

CSV = """id,time,ra,dec,tiles,kind
1,2027-03-01T00:00:00Z,10.0,-35.0,100 101,wide
2,2027-03-01T01:12:00Z,10.7,-35.0,101 102,wide
1,2027-03-01T02:24:00Z,11.4,-35.0,102,deep
"""


def test_a_csv_survey_with_a_duplicate_id_is_refused_naming_both_lines() -> None:
    with pytest.raises(SurveyError, match=r"^line 4: id: duplicate observation id 1 \(first on line 2\)"):
        read_csv(CSV)


def test_a_yaml_survey_with_a_duplicate_id_is_refused_naming_the_line() -> None:
    text = """tileOrder: 7
observations:
  - {id: 5, time: "2027-03-01T00:00:00Z", ra: 1, dec: 2, tiles: [3]}
  - id: 5
    time: "2027-03-01T01:00:00Z"
    ra: 1
    dec: 2
    tiles: [4]
"""
    with pytest.raises(SurveyError, match=r"^line 4: id: duplicate observation id 5 \(first on line 3\)"):
        read_yaml(text)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("3,2027-03-01T00:00:00,1,2,5,wide", r"line 2: time: .*time zone"),
        ("3,2027-03-01T00:00:00Z,400,2,5,wide", r"line 2: ra: .*less than 360"),
        ("3,2027-03-01T00:00:00Z,1,2,,wide", r"line 2: tiles: .*at least 1"),
        ("3,2027-03-01T00:00:00Z,1,2,999999999,wide", r"line 2: tiles: 999999999 is not a HEALPix pixel of order 7"),
        ("3,2027-03-01T00:00:00Z,1,2,5 5,wide", r"line 2: tiles: .*twice"),
        ("x,2027-03-01T00:00:00Z,1,2,5,wide", r"line 2: id: "),
    ],
)
def test_bad_survey_rows_are_refused_naming_line_and_field(row: str, message: str) -> None:
    with pytest.raises(SurveyError, match=message):
        read_csv("id,time,ra,dec,tiles,kind\n" + row + "\n")


def test_a_survey_missing_columns_or_of_unknown_format_is_refused() -> None:
    with pytest.raises(SurveyError, match="line 1: header: missing column"):
        read_csv("id,time\n1,2027-03-01T00:00:00Z\n")
    with pytest.raises(SurveyError, match="unknown survey format"):
        read_survey("", "plan.parquet")
    with pytest.raises(SurveyError, match="line 1: extra: unknown field"):
        read_yaml("extra: 1\nobservations: []\n")


def test_a_site_with_zero_capacity_and_a_weight_is_refused_naming_the_field() -> None:
    text = """- {name: sdc-fr, cores: 100, storageTb: 10}
- name: sdc-xx
  cores: 0
  storageTb: 0
  weight: 2
"""
    with pytest.raises(SitesError, match=r"^line 2 \(sdc-xx\): capacity: zero cores and storage with weight 2 > 0"):
        read_sites(text)
    zero_weight = read_sites("- {name: sdc-fr, cores: 100, storageTb: 10}\n- {name: sdc-xx, weight: 0}\n")
    assert target_shares(zero_weight, PlacementPolicy()).tolist() == [1.0, 0.0]


def test_sites_from_site_manifests_and_their_shares() -> None:
    text = """apiVersion: sgs.io/v1alpha1
kind: Site
metadata: {name: sdc-a, labels: {survey: euclid}}
spec: {storage: {kind: posix, path: /a}, capacity: {cores: 300, storageTb: 100}}
---
apiVersion: sgs.io/v1alpha1
kind: Site
metadata: {name: sdc-b}
spec: {storage: {kind: posix, path: /b}, capacity: {cores: 100, storageTb: 300}, weight: 2}
"""
    sites = read_sites(text)
    assert [s.name for s in sites] == ["sdc-a", "sdc-b"] and sites[0].labels == {"survey": "euclid"}
    assert np.allclose(target_shares(sites, PlacementPolicy()), [1 / 3, 2 / 3])
    assert np.allclose(target_shares(sites, PlacementPolicy(weigh_by=["cores"])), [0.6, 0.4])
    with pytest.raises(SitesError, match=r"policy\.weighBy: unknown measure 'power'"):
        target_shares(sites, PlacementPolicy(weigh_by=["power"]))
    with pytest.raises(SitesError, match="sites: sdc-a is listed twice"):
        read_sites(text.split("---")[0] + "---\n" + text.split("---")[0])


def test_a_horizon_in_the_past_or_reversed_is_refused_naming_the_field() -> None:
    now = datetime(2027, 6, 1, tzinfo=UTC)
    with pytest.raises(PlanError, match=r"^horizon.end: 2027-05-01T00:00:00\+00:00 is in the past"):
        check_horizon(datetime(2027, 5, 1, tzinfo=UTC), now)
    check_horizon(now + timedelta(days=90), now)
    survey = generate_survey(wide=10, deep=0, sky_fields=29_000)
    with pytest.raises(PlanError, match=r"horizon\.end: .* is not after horizon\.start"):
        PlanRequest(survey, euclid_sites(2), now, now - timedelta(days=1))
    with pytest.raises(PlanError, match=r"horizon\.start: needs a time zone"):
        PlanRequest(survey, euclid_sites(2), datetime(2027, 1, 1), now)


def test_bad_plan_files_are_refused_naming_the_line() -> None:
    header = "dimension,value,primary,secondary\n"
    with pytest.raises(PlanError, match="line 3: value: observation 1 appears twice"):
        read_plan(header + "observation,1,a,b\nobservation,1,a,c\n")
    with pytest.raises(PlanError, match="line 2: secondary: equals primary a"):
        read_plan(header + "tile,1,a,a\n")
    with pytest.raises(PlanError, match="line 2: dimension: 'exposure'"):
        read_plan(header + "exposure,1,a,b\n")


def test_the_generator_makes_a_euclid_like_survey_deterministically() -> None:
    survey = generate_survey(wide=2900, deep=1600, sky_fields=29_000, seed=3)
    again = generate_survey(wide=2900, deep=1600, sky_fields=29_000, seed=3)
    assert write_csv(survey) == write_csv(again)
    assert len(survey) == 4500 and survey.kinds.count("deep") == 1600
    days = (survey.times[-1] - survey.times[0]) / 86_400
    assert 18 <= len(survey) / days <= 22  # ~20 a day
    per_obs = np.diff(survey.tile_ptr)
    assert per_obs.min() >= 1 and per_obs.max() <= 12
    assert (survey.tile_ids < 12 * 4**7).all()
    assert survey.ids.tolist() == list(range(1, 4501)) and (np.diff(survey.times) >= 0).all()
    assert read_yaml(write_json(survey)).ids.tolist() == survey.ids.tolist()
    assert write_csv(read_csv(write_csv(survey))) == write_csv(survey)

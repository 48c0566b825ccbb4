"""Pipeline.spec.triggers: what admission refuses (naming the field) and what it keeps."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from sgs.model.pipeline import PipelineSpec

BASE: dict[str, Any] = {
    "inputs": [{"name": "exposures"}, {"name": "master_dark"}, {"name": "notes", "optional": True}],
    "executables": [
        {
            "name": "stack",
            "command": "stack",
            "inputs": [{"name": "exposures"}, {"name": "master_dark"}],
            "outputs": [{"name": "out"}],
        }
    ],
    "steps": [
        {
            "name": "stack",
            "executable": "stack",
            "inputs": {"exposures": {"input": "exposures"}, "master_dark": {"input": "master_dark"}},
        }
    ],
}

TRIGGER: dict[str, Any] = {
    "name": "per-observation",
    "input": "exposures",
    "datasetType": "raw",
    "where": "instrument = 'NISP' AND detector IN (1..4)",
    "sites": "tier=primary",
    "groupBy": ["observation"],
    "complete": {"count": 4},
    "inputs": {"master_dark": {"uri": "/data/dark.fits"}},
}


def spec_with(**changes: Any) -> dict[str, Any]:
    spec = copy.deepcopy(BASE)
    trigger = {**copy.deepcopy(TRIGGER), **changes}
    spec["triggers"] = [{k: v for k, v in trigger.items() if v is not None}]
    return spec


def problems(spec: dict[str, Any]) -> str:
    from sgs_operator.checks import describe_errors

    with pytest.raises(ValidationError) as caught:
        PipelineSpec.model_validate(spec)
    return describe_errors(caught.value)


def test_a_valid_trigger_is_kept_and_round_trips() -> None:
    spec = PipelineSpec.model_validate(spec_with())
    trigger = spec.triggers[0]
    assert trigger.group_by == ["observation"] and trigger.complete.count == 4
    wire = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert wire["triggers"][0]["groupBy"] == ["observation"]
    assert PipelineSpec.model_validate(wire) == spec


def test_all_known_is_a_completeness_rule() -> None:
    spec = PipelineSpec.model_validate(spec_with(complete={"allKnown": True}))
    assert spec.triggers[0].complete.all_known and spec.triggers[0].complete.count is None


def test_triggers_change_the_digest() -> None:
    without = PipelineSpec.model_validate(BASE)
    assert PipelineSpec.model_validate(spec_with()).digest() != without.digest()


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"where": "instrument = "}, "spec.triggers[0].where", "not a dimension expression"),
        ({"where": "detector IN (1..4"}, "spec.triggers[0].where", "not a dimension expression"),
        ({"sites": "(tier=primary"}, "spec.triggers[0].sites", "not a Site expression"),
        ({"groupBy": []}, "spec.triggers[0].groupBy", "at least 1 item"),
        ({"groupBy": ["Observation"]}, "spec.triggers[0].groupBy", "is not a dimension name"),
        ({"groupBy": ["exposure", "exposure"]}, "spec.triggers[0].groupBy", "dimensions named twice"),
        ({"complete": {}}, "spec.triggers[0].complete", "exactly one of count or allKnown"),
        ({"complete": {"count": 4, "allKnown": True}}, "spec.triggers[0].complete", "exactly one of count"),
        ({"complete": {"count": 0}}, "spec.triggers[0].complete.count", "greater than or equal to 1"),
        ({"datasetType": "no spaces"}, "spec.triggers[0].datasetType", "should match pattern"),
        ({"name": "Not_A_Label"}, "spec.triggers[0].name", "should match pattern"),
        ({"input": "nothing"}, "spec.triggers[0].input", "'nothing' is not an input of the pipeline"),
        ({"inputs": {}}, "spec.triggers[0].inputs", "required pipeline inputs left unbound: master_dark"),
        (
            {"inputs": {"master_dark": {"uri": "/d"}, "exposures": {"uri": "/e"}}},
            "spec.triggers[0].inputs.exposures",
            "the trigger's own input",
        ),
        (
            {"inputs": {"master_dark": {"uri": "/d"}, "other": {"uri": "/e"}}},
            "spec.triggers[0].inputs.other",
            "not an input of the pipeline",
        ),
        (
            {"inputs": {"master_dark": {"uri": "/d", "uris": ["/e"]}}},
            "spec.triggers[0].inputs.master_dark",
            "exactly one of uri or uris",
        ),
        ({"priority": 5000}, "spec.triggers[0].priority", "less than or equal to 1000"),
        ({"colour": "red"}, "spec.triggers[0].colour", "Extra inputs are not permitted"),
    ],
)
def test_bad_triggers_are_refused_naming_the_field(changes: dict[str, Any], field: str, message: str) -> None:
    found = problems(spec_with(**changes))
    assert f"{field}: " in found and message in found, found


def test_two_triggers_of_one_name_are_refused() -> None:
    spec = spec_with()
    spec["triggers"].append(copy.deepcopy(spec["triggers"][0]))
    assert "spec.triggers: name 'per-observation' used twice" in problems(spec)

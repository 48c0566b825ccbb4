"""What the archive sees of a Pipeline and a Run: outputs name a dataset type and a data-ID rule, Run inputs may be
archive queries or dataset ids, and a bad one is refused naming its field."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from pydantic import ValidationError
from sgs_operator.checks import describe_errors

from sgs.dsl import DslError, Executable, Input, Output, pipeline
from sgs.model.dataset import DataIdError
from sgs.model.pipeline import OutputSpec
from sgs.model.run import RunInput, RunSpec

DITHERS: list[dict[str, int | str]] = [
    {"instrument": "NISP", "observation": 7, "exposure": 70 + i, "band": "H"} for i in range(1, 5)
]


# ----------------------------------------------------------------------------------------------- outputs


def test_the_default_data_id_is_what_every_input_shares() -> None:
    stacked = OutputSpec(name="stacked").derive_data_id(DITHERS)

    assert stacked == {"instrument": "NISP", "observation": 7, "band": "H"}


def test_one_input_gives_its_own_data_id() -> None:
    assert OutputSpec(name="calibrated").derive_data_id(DITHERS[:1]) == DITHERS[0]


def test_inputs_without_data_ids_give_an_empty_one() -> None:
    assert OutputSpec(name="log").derive_data_id([]) == {}


def test_named_dimensions_are_taken_from_whichever_input_has_them() -> None:
    output = OutputSpec(name="cal", dimensions=["exposure", "tile"])

    assert output.derive_data_id([DITHERS[0], {"tile": 102345}]) == {"exposure": 71, "tile": 102345}


def test_inputs_disagreeing_on_a_named_dimension_are_an_error_naming_it() -> None:
    with pytest.raises(DataIdError) as info:
        OutputSpec(name="cal", dimensions=["exposure"]).derive_data_id(DITHERS[:2])

    assert info.value.field == "exposure"
    assert "inputs disagree on 'exposure' (71, 72)" in str(info.value)


def test_a_named_dimension_no_input_has_is_an_error_naming_it() -> None:
    with pytest.raises(DataIdError, match="no input data ID has dimension 'tile'"):
        OutputSpec(name="cal", dimensions=["tile"]).derive_data_id(DITHERS)


def test_the_dataset_type_defaults_to_the_output_name() -> None:
    assert OutputSpec(name="stacked").registered_type() == "stacked"
    assert OutputSpec(name="stacked", dataset_type="nir_stack").registered_type() == "nir_stack"


def test_output_keywords_reach_the_manifest_and_defaults_stay_out_of_it() -> None:
    stack = Executable(
        command="stack",
        inputs=[Input("images")],
        outputs=[
            Output("stacked", dataset_type="nir_stack", dimensions=["observation"]),
            Output("scratch", register=False),
            Output("log"),
        ],
    )

    @pipeline(outputs=("out",))
    def p(images):  # type: ignore[no-untyped-def]
        return stack(images=images)[0]

    wire = p.spec().executable("stack").to_wire()["outputs"]

    assert wire == [
        {"name": "stacked", "datasetType": "nir_stack", "dimensions": ["observation"]},
        {"name": "scratch", "register": False},
        {"name": "log"},
    ]


@pytest.mark.parametrize(
    ("keywords", "message"),
    [
        ({"dataset_type": "9lives"}, "output 'x': dataset_type: String should match pattern"),
        ({"dimensions": ["band", "band"]}, "dimensions named twice: ['band']"),
        ({"dimensions": ["not a name"]}, "'not a name' is not a dimension name"),
    ],
)
def test_a_bad_output_keyword_is_a_dsl_error_naming_it(keywords: dict[str, Any], message: str) -> None:
    with pytest.raises(DslError) as info:
        Output("x", **keywords)

    assert message in str(info.value)


def test_a_manifest_output_field_error_names_the_field() -> None:
    with pytest.raises(ValidationError) as info:
        OutputSpec.model_validate({"name": "x", "register": "sometimes"})

    assert info.value.errors()[0]["loc"] == ("register",)


# ----------------------------------------------------------------------------------------------- run inputs


def _refusal(inputs: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        RunSpec.model_validate({"pipeline": "p", "inputs": inputs})
    return describe_errors(info.value)


def test_dataset_ids_are_an_input_form() -> None:
    ids = [uuid.uuid4(), uuid.uuid4()]

    given = RunInput.model_validate({"datasetIds": [str(i) for i in ids]})

    assert given.dataset_ids == ids and given.from_archive


def test_a_query_is_an_archive_input_and_a_path_is_not() -> None:
    assert RunInput(query="tile = 3", dataset_type="raw").from_archive
    assert not RunInput(uri="/data/a.fits").from_archive


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"uri": "/a", "datasetIds": [str(uuid.uuid4())]}, "spec.inputs.images: give exactly one of uri, uris, query "),
        ({}, "spec.inputs.images: give exactly one of uri, uris, query or datasetIds"),
        ({"query": "tile = 3"}, "spec.inputs.images: a query needs datasetType"),
        ({"uri": "/a", "collections": ["raw"]}, "spec.inputs.images: datasetType and collections go with a query"),
        ({"datasetIds": []}, "spec.inputs.images.datasetIds: List should have at least 1 item"),
        ({"datasetIds": ["nope"]}, "spec.inputs.images.datasetIds[0]: Input should be a valid UUID"),
        ({"query": "tile = 3", "datasetType": "9raw"}, "spec.inputs.images.datasetType: String should match"),
    ],
)
def test_a_bad_run_input_is_refused_naming_the_field(given: dict[str, Any], message: str) -> None:
    assert message in _refusal({"images": given})


def test_an_id_given_twice_is_refused() -> None:
    twice = str(uuid.uuid4())

    assert "datasetIds: an id is given twice" in _refusal({"images": {"datasetIds": [twice, twice]}})


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("tile = ", "expected a value"),
        ("tile = 3 AND", "at position"),
        ("band IN ('H'", "at position"),
        ("tile === 3", "at position"),
    ],
)
def test_a_query_that_does_not_parse_is_refused_naming_the_field(query: str, reason: str) -> None:
    refusal = _refusal({"images": {"query": query, "datasetType": "nir_raw"}})

    assert refusal.startswith("spec.inputs.images.query: not a dimension expression: ")
    assert reason in refusal


def test_a_query_that_parses_is_kept_as_written() -> None:
    query = "instrument = 'NISP' AND observation = 7 AND exposure IN (71..74)"

    assert RunInput(query=query, dataset_type="nir_raw").query == query

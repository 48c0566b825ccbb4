"""Triggers in the DSL: ``@pipeline(triggers=[Trigger(...)])`` compiles into spec.triggers; a bad one is a
DslError naming the trigger and the field."""

from __future__ import annotations

from typing import Any

import pytest

from sgs.dsl import DslError, Executable, Input, Output, Trigger, pipeline

stack = Executable(command="stack", inputs=[Input("exposures"), Input("dark")], outputs=[Output("stacked")])


def compiled(**trigger: Any) -> Any:
    fields: dict[str, Any] = {
        "name": "per-observation",
        "input": "exposures",
        "dataset_type": "raw",
        "where": "instrument = 'NISP'",
        "group_by": ["instrument", "observation"],
        "count": 4,
        "inputs": {"dark": "/data/dark.fits"},
        **trigger,
    }

    @pipeline(outputs=("stacked",), triggers=[Trigger(**fields)])
    def nir(exposures: Any, dark: Any) -> Any:
        return stack(exposures=exposures, dark=dark)

    return nir.spec()


def test_a_trigger_compiles_into_the_manifest() -> None:
    spec = compiled()
    wire = spec.model_dump(mode="json", by_alias=True, exclude_none=True)["triggers"][0]
    assert wire["groupBy"] == ["instrument", "observation"] and wire["complete"] == {"count": 4, "allKnown": False}
    assert wire["inputs"] == {"dark": {"uri": "/data/dark.fits"}} and wire["datasetType"] == "raw"
    assert compiled(count=None, all_known=True).triggers[0].complete.all_known


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"where": "instrument ="}, "trigger per-observation: 1 validation error for TriggerSpec\nwhere"),
        ({"count": None}, "give exactly one of count or allKnown"),
        ({"input": "nothing"}, "triggers[0].input: 'nothing' is not an input of the pipeline"),
        ({"inputs": {}}, "triggers[0].inputs: required pipeline inputs left unbound: dark"),
    ],
)
def test_a_bad_trigger_is_a_dsl_error_naming_the_field(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(DslError) as caught:
        compiled(**changes)
    assert message in str(caught.value)


def test_triggers_must_be_a_list_of_triggers() -> None:
    with pytest.raises(DslError, match=r"a list of sgs\.dsl\.Trigger"):
        pipeline(triggers=[{"name": "x"}])

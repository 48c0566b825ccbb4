"""sgs.chart.values_schema: values.yaml's keys and nothing else, and no guessing at shapes it cannot tell."""

from __future__ import annotations

import pytest

from sgs.chart import ChartSchemaError, values_schema


def test_every_mapping_is_closed_and_typed_by_its_default() -> None:
    schema = values_schema({"operator": {"replicas": 1, "webhook": {"enabled": True, "host": ""}}})
    operator = schema["properties"]["operator"]
    assert schema["additionalProperties"] is False and operator["additionalProperties"] is False
    assert operator["properties"]["replicas"] == {"type": "integer", "minimum": 0}  # a constraint of *.replicas
    webhook = operator["properties"]["webhook"]
    assert webhook["additionalProperties"] is False
    assert webhook["properties"] == {"enabled": {"type": "boolean"}, "host": {"type": "string"}}


@pytest.mark.parametrize(("values", "path"), [({"operator": {"labels": {}}}, "operator.labels"), ({"x": []}, "x")])
def test_a_shape_the_default_cannot_tell_is_refused_naming_the_key(values: dict[str, object], path: str) -> None:
    with pytest.raises(ChartSchemaError, match=path):
        values_schema(values)

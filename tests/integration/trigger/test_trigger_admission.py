"""A Pipeline whose trigger cannot work is refused at the door by the operator's validating webhook, naming the
field; a good one is admitted and becomes Ready."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from operator_kit import OperatorProcess, wait_for
from trigger_kit import API, Namespace, pipeline

from sgs.testing.kube import KubePart

pytest_plugins = ["operator_kit"]  # the operator fixtures (a conftest here would clash with mypy)

pytestmark = pytest.mark.integration

GOOD: dict[str, Any] = {
    "name": "per-observation",
    "input": "exposures",
    "datasetType": "raw",
    "where": "instrument = 'NISP'",
    "groupBy": ["observation"],
    "complete": {"count": 4},
}


@pytest.fixture
def namespace(kube: KubePart, operator: OperatorProcess) -> Iterator[Namespace]:
    ns = Namespace(kube, f"trig-adm-{uuid.uuid4().hex[:6]}")
    wait_for(lambda: webhook_in_force(ns), "the API server to call the operator's webhook")
    yield ns
    ns.close()


def webhook_in_force(ns: Namespace) -> bool:
    """The API server picks up a new webhook configuration a moment after the operator registers it."""
    probe = pipeline("probe", [{**GOOD, "complete": {}}])
    path = f"{API}/namespaces/{ns.name}/pipelines"
    if ns.call("POST", path, json=probe).status_code == 201:
        ns.api.delete(f"{path}/probe")
        return False
    return True


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"where": "instrument = "}, "spec.triggers[0].where", "not a dimension expression"),
        ({"sites": "tier=primary &"}, "spec.triggers[0].sites", "not a Site expression"),
        ({"input": "nothing"}, "spec.triggers[0].input", "'nothing' is not an input of the pipeline"),
        ({"complete": {}}, "spec.triggers[0].complete", "give exactly one of count or allKnown"),
    ],
)
def test_a_bad_trigger_is_refused_at_admission_naming_the_field(
    namespace: Namespace, changes: dict[str, Any], field: str, message: str
) -> None:
    manifest = pipeline("refused", [{**GOOD, **changes}])

    response = namespace.call("POST", f"{API}/namespaces/{namespace.name}/pipelines", json=manifest)

    assert response.status_code == 422, response.text
    assert f"{field}: " in response.text and message in response.text, response.text
    gone = namespace.api.get(f"{API}/namespaces/{namespace.name}/pipelines/refused")
    assert gone.status_code == 404, "nothing half-written"


def test_a_good_trigger_is_admitted_and_the_pipeline_becomes_ready(namespace: Namespace) -> None:
    namespace.create("pipelines", pipeline("admitted", [GOOD]))

    def phase() -> str | None:
        found = namespace.api.get(f"{API}/namespaces/{namespace.name}/pipelines/admitted").json()
        return (found.get("status") or {}).get("phase") if (found.get("status") or {}).get("phase") == "Ready" else None

    assert wait_for(phase, "the Pipeline to be Ready") == "Ready"

"""The spec-changed match condition on the operator's webhooks (the API server evaluates it; see the cluster and
admission integration tests for the real thing)."""

from __future__ import annotations

from kopf._core.engines import admission as kopf_admission
from sgs_operator import admission


def hook(*operations: str) -> dict[str, object]:
    return {"name": "h", "rules": [{"operations": list(operations)}]}


def test_updates_get_the_condition_and_creates_alone_do_not() -> None:
    update, create, every = hook("CREATE", "UPDATE"), hook("CREATE"), hook("*")
    admission.with_spec_condition([update, create, every])
    assert update["matchConditions"] == [admission.SPEC_CHANGED]
    assert every["matchConditions"] == [admission.SPEC_CHANGED]
    assert "matchConditions" not in create


def test_the_condition_is_not_added_twice_and_others_stay() -> None:
    other = {"name": "mine", "expression": "true"}
    webhook = hook("UPDATE") | {"matchConditions": [other, dict(admission.SPEC_CHANGED)]}
    admission.with_spec_condition([webhook])
    admission.with_spec_condition([webhook])
    assert webhook["matchConditions"] == [other, admission.SPEC_CHANGED]


def test_kopf_builds_our_webhooks_with_it() -> None:
    assert getattr(kopf_admission.build_webhooks, "sgs_spec_condition", False)

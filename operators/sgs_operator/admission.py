"""The API server asks the admission webhook only about updates that change a spec.

Every validating handler of this operator admits an UPDATE that leaves the spec as it was without looking at it
(``checks.spec_unchanged``: the operator's own finalizer, kopf's annotations, labels), yet each such update still
cost a round trip from the API server to the webhook: a new Run's finalizer doubled the webhook calls of a burst
of Runs. A ``matchConditions`` entry (CEL, Kubernetes ≥ 1.30) on each of our webhooks with UPDATE in its rules lets
the API server skip the call when the spec did not change; the handler's own check stays for older API servers
and for any call that still arrives. kopf builds the webhook configuration it manages without matchConditions,
so its builder is wrapped here (once, at import).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kopf._core.engines import admission as kopf_admission

SPEC_CHANGED = {
    "name": "spec-changed",
    # CREATE (no oldObject), or an UPDATE whose spec is new, differs or went away.
    "expression": "request.operation != 'UPDATE' || !has(object.spec) || !has(oldObject.spec)"
    " || object.spec != oldObject.spec",
}


def with_spec_condition(webhooks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each webhook whose rules include UPDATE (or ``*``), given the spec-changed match condition."""
    for hook in webhooks:
        operations = {op for rule in hook.get("rules") or [] for op in rule.get("operations") or []}
        if operations & {"UPDATE", "*"}:
            kept = [c for c in hook.get("matchConditions") or [] if c.get("name") != SPEC_CHANGED["name"]]
            hook["matchConditions"] = [*kept, dict(SPEC_CHANGED)]
    return webhooks


def _wrapped(build: Callable[..., list[dict[str, Any]]]) -> Callable[..., list[dict[str, Any]]]:
    if getattr(build, "sgs_spec_condition", False):
        return build

    def build_with_condition(*args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        return with_spec_condition(build(*args, **kwargs))

    build_with_condition.sgs_spec_condition = True  # type: ignore[attr-defined]
    return build_with_condition


kopf_admission.build_webhooks = _wrapped(kopf_admission.build_webhooks)

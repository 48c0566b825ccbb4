"""Label values and PriorityClass names: derived, never stored, so a restart agrees (trace ids: sgs.telemetry.ids)."""

from __future__ import annotations

from sgs.naming import dns_label, short_hash

LABEL_RUN = "sgs.io/run"
LABEL_TASK = "sgs.io/task"
LABEL_ATTEMPT = "sgs.io/attempt"
LABEL_SITE = "sgs.io/site"
ANNOTATION_TASK_ID = "sgs.io/task-id"
ANNOTATION_USAGE = "sgs.io/usage"
# The Run's priority now, on each of its pods: a pod's spec.priority is fixed at creation, and a bridge that queues
# pods itself (pilot mode) re-ranks them by this when `sgs run priority` changes it.
ANNOTATION_PRIORITY = "sgs.io/priority"
MANAGED_BY = {"app.kubernetes.io/managed-by": "sgs-operator"}
MAX_LABEL = 63


def label_value(text: str) -> str:
    """A valid label value (≤ 63 chars, alphanumeric ends); long ones are truncated plus a hash."""
    value = dns_label(text)
    if len(value) <= MAX_LABEL:
        return value
    digest = short_hash(text)
    return f"{value[: MAX_LABEL - len(digest) - 1].rstrip('-')}-{digest}"


def priority_class_name(priority: int) -> str:
    sign = "m" if priority < 0 else ""
    return f"sgs-priority-{sign}{abs(priority)}"

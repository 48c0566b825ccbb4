"""Label values, PriorityClass names and trace ids: all derived, never stored, so a restart agrees."""

from __future__ import annotations

import hashlib

from sgs.naming import dns_label, short_hash

LABEL_RUN = "sgs.io/run"
LABEL_TASK = "sgs.io/task"
LABEL_ATTEMPT = "sgs.io/attempt"
LABEL_SITE = "sgs.io/site"
ANNOTATION_TASK_ID = "sgs.io/task-id"
ANNOTATION_USAGE = "sgs.io/usage"
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


def trace_parent(run_uid: str, tid: str, attempt: int) -> str:
    """W3C traceparent: one trace per Run, one span per task attempt."""
    trace_id = hashlib.sha256(run_uid.encode()).hexdigest()[:32]
    span_id = hashlib.sha256(f"{run_uid}/{tid}/{attempt}".encode()).hexdigest()[:16]
    return f"00-{trace_id}-{span_id}-01"

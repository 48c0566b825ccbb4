"""Trace and span ids derived from a Run, never stored: every component computes the same ones.

A Run's trace id is a hash of its uid, so the operator, the bridge, a task, the archive and the transfer
service all join the one trace without asking anyone. The Run's root span and each task attempt's span get
derived ids too, so a span made in one process can be the parent of spans made in another.
"""

from __future__ import annotations

import hashlib
import re

TRACEPARENT_ENV = "TRACEPARENT"
TRACESTATE_ENV = "TRACESTATE"
_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
SAMPLED = 0x01


def _hash(text: str, hex_digits: int) -> int:
    value = int(hashlib.sha256(text.encode()).hexdigest()[:hex_digits], 16)
    return value or 1  # an all-zero id is invalid in W3C trace context


def run_trace_id(run_uid: str) -> int:
    """The 128-bit trace id of a Run."""
    return _hash(run_uid, 32)


def run_span_id(run_uid: str) -> int:
    """The 64-bit id of a Run's root span (recorded by the operator when the Run ends)."""
    return _hash(f"{run_uid}/run", 16)


def task_span_id(run_uid: str, tid: str, attempt: int) -> int:
    """The 64-bit id of one task attempt's span (recorded by whoever ran it: the bridge, the task wrapper)."""
    return _hash(f"{run_uid}/{tid}/{attempt}", 16)


def format_traceparent(trace_id: int, span_id: int, flags: int = SAMPLED) -> str:
    return f"00-{trace_id:032x}-{span_id:016x}-{flags:02x}"


def parse_traceparent(text: str | None) -> tuple[int, int, int] | None:
    """(trace id, span id, flags) of a W3C traceparent; None for anything malformed or all-zero."""
    match = _TRACEPARENT.match((text or "").strip().lower())
    if match is None or match.group(1) == "ff":
        return None
    trace_id, span_id = int(match.group(2), 16), int(match.group(3), 16)
    if not trace_id or not span_id:
        return None
    return trace_id, span_id, int(match.group(4), 16)


def task_traceparent(run_uid: str, tid: str, attempt: int) -> str:
    """The ``TRACEPARENT`` a task attempt's Job carries: the Run's trace, the attempt's span as parent.

    Flagged sampled: each component applies its own sampling share to the trace id, so the Job spec stays a
    pure function of the task."""
    return format_traceparent(run_trace_id(run_uid), task_span_id(run_uid, tid, attempt))

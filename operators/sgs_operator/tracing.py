"""The operator's part of a Run's trace: the Run's root span, each reconcile that did work, each Job created.

A reconcile runs every second for the life of a Run; most find nothing to do. Recording those would bury the
trace, so a reconcile is recorded after the fact (``Tracing.record``) and only when it started, finished or
re-created something. Its span id is chosen up front, so the live "create job" spans made inside it can name
it as their parent before it is recorded.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind

from sgs.telemetry import FinishedSpan, Tracing, remote_parent
from sgs.telemetry.context import span_context_of
from sgs.telemetry.ids import run_span_id, run_trace_id
from sgs.telemetry.runs import run_span


@dataclass
class Reconcile:
    """One reconcile of one Run, while it runs: what it did, and the context its Job creations go under."""

    span_id: int
    context: Context | None
    start_ns: int = field(default_factory=time.time_ns)
    started: int = 0
    finished: int = 0
    created: int = 0

    @property
    def did_work(self) -> bool:
        return bool(self.started or self.finished or self.created)


class RunTracer:
    """The spans one RunController makes; every method is a no-op while tracing is off."""

    def __init__(self, tracing: Tracing, uid: str, key: str, cause: str | None = None) -> None:
        """``cause``: the traceparent the Run's creator left on it (``CAUSE_ANNOTATION``), linked from the root."""
        self.tracing = tracing
        self.uid = uid
        self.key = key
        self.trace_id = run_trace_id(uid)
        found = span_context_of(cause)
        self.causes = (found,) if found is not None else ()
        self.current: Reconcile | None = None

    @contextmanager
    def reconcile(self, site: str | None) -> Iterator[Reconcile]:
        """Around one reconcile: recorded under the Run's root span if it did work."""
        if not self.tracing.enabled:
            self.current = Reconcile(0, None)
        else:
            span_id = random.getrandbits(64) or 1
            self.current = Reconcile(span_id, remote_parent(self.trace_id, span_id))
        try:
            yield self.current
        finally:
            done, self.current = self.current, None
            if self.tracing.enabled and done.did_work:
                self.tracing.record(
                    FinishedSpan(
                        name="reconcile",
                        trace_id=self.trace_id,
                        span_id=done.span_id,
                        parent_span_id=run_span_id(self.uid),
                        start_ns=done.start_ns,
                        end_ns=time.time_ns(),
                        attributes={
                            "sgs.run": self.key,
                            "sgs.site": site or "",
                            "sgs.tasks.started": done.started,
                            "sgs.tasks.finished": done.finished,
                            "sgs.jobs.created": done.created,
                        },
                    )
                )

    def count(self, *, started: int = 0, finished: int = 0, created: int = 0) -> None:
        if self.current is not None:
            self.current.started += started
            self.current.finished += finished
            self.current.created += created

    @contextmanager
    def job_creation(self, job: str, tid: str, attempt: int, site: str) -> Iterator[trace.Span]:
        """A client span around one Job POST, under the reconcile that made it (the Run's root span outside one)."""
        parent = self.current.context if self.current is not None and self.current.context is not None else None
        if parent is None and self.tracing.enabled:
            parent = remote_parent(self.trace_id, run_span_id(self.uid))
        attributes: dict[str, str | int] = {
            "k8s.job.name": job,
            "sgs.task": tid,
            "sgs.attempt": attempt,
            "sgs.site": site,
        }
        with self.tracing.tracer.start_as_current_span(
            "create job", context=parent, kind=SpanKind.CLIENT, attributes=attributes
        ) as span:
            yield span

    def run_ended(
        self, start: datetime, end: datetime, phase: str, site: str, pipeline: str, counts: dict[str, int]
    ) -> None:
        """The Run's root span, once its end is known (a failed Run's span has the error status), linked to the
        span that created the Run when another component did (a trigger: the event's trace)."""
        attributes: dict[str, str | int] = {"sgs.site": site, "sgs.pipeline": pipeline, "sgs.phase": phase}
        attributes.update({f"sgs.tasks.{state}": count for state, count in counts.items()})
        error = phase if phase == "Failed" else None
        self.tracing.record(run_span(self.uid, self.key, start, end, attributes, error, self.causes))

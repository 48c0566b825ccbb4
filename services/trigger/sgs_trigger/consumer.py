"""The archive's events in, Runs out: a durable JetStream pull consumer with explicit acknowledgements.

Each batch: the arrivals it announces (datasets registered with an available replica, replicas that became
available) are matched against every trigger; each group they touch is looked up in the archive (its datasets
and which are available at the Site); a complete group's Run is created under its deterministic name; only
then are the messages acknowledged. A crash before the acknowledgement redelivers the batch and re-running it
creates nothing new (the API server answers 409 AlreadyExists, which is success). A group's state is the
archive's: nothing is kept here between events, so a restart mid-group loses nothing.

Traces: each message gets a consumer span in its publisher's trace (the request that registered the dataset:
an upstream Run's task, say); each group it may complete an "evaluate group" span under it, and a complete
group's "create run" span under that. The Run carries that span's traceparent (``CAUSE_ANNOTATION``), which the
operator turns into a link from the Run's own trace (derived from its uid) back to the event's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanKind
from pydantic import ValidationError

from sgs.events import DATASET_REGISTERED, STREAM, DatasetRegistered, ReplicaStateChanged, replica_subject
from sgs.kube import CONFLICT, NOT_FOUND, KubeClient, KubeError
from sgs.model.base import GROUP, VERSION
from sgs.model.dataset import DimensionUniverse
from sgs.model.replica import ReplicaState
from sgs.placement.consequences import run_site
from sgs.service.jetstream import bind_new_arrivals
from sgs.telemetry import Tracing
from sgs.telemetry.context import traceparent_of
from sgs.telemetry.messaging import consuming_batch
from sgs_trigger.archive import ArchiveReader
from sgs_trigger.book import PipelineBook, SiteBook
from sgs_trigger.match import (
    Arrival,
    CompiledTrigger,
    Group,
    Member,
    complete_members,
    group_where,
    groups_of,
    run_manifest,
    run_name,
)
from sgs_trigger.metrics import TriggerMetrics
from sgs_trigger.settings import TriggerSettings

log = logging.getLogger(__name__)

REPLICA_AVAILABLE = replica_subject(ReplicaState.AVAILABLE)
SUBJECTS = [DATASET_REGISTERED, REPLICA_AVAILABLE]
FETCH_TIMEOUT_S = 1.0
GATHER_S = 0.01
PENDING_REFRESH_S = 5.0
T = TypeVar("T")
FORBIDDEN = 403


@dataclass
class Outcome:
    """What one batch did (for tests, logs and the latency figure)."""

    groups: int = 0
    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    incomplete: int = 0
    elsewhere: int = 0  # groups at a Site that their observation's placement does not send the Run to


class Universe:
    """The archive's dimension universe, fetched at start and refreshed now and then."""

    def __init__(self, archive: ArchiveReader, refresh_s: float) -> None:
        self.archive = archive
        self.refresh_s = refresh_s
        self._value: DimensionUniverse | None = None
        self._fetched = 0.0

    async def get(self) -> DimensionUniverse:
        if self._value is None or time.monotonic() - self._fetched > self.refresh_s:
            try:
                fresh = await self.archive.universe()
            except Exception:
                if self._value is None:
                    raise
                log.warning("archive universe refresh failed; keeping the one fetched before", exc_info=True)
            else:
                if fresh != self._value:
                    self._value = fresh
            self._fetched = time.monotonic()
        assert self._value is not None
        return self._value


class Consumer:
    def __init__(
        self,
        settings: TriggerSettings,
        js: JetStreamContext,
        kube: KubeClient,
        archive: ArchiveReader,
        pipelines: PipelineBook,
        sites: SiteBook,
        metrics: TriggerMetrics,
        tracing: Tracing | None = None,
    ) -> None:
        self.settings = settings
        self.tracing = tracing or Tracing.off()
        self.js = js
        self.kube = kube
        self.archive = archive
        self.pipelines = pipelines
        self.sites = sites
        self.metrics = metrics
        self.universe = Universe(archive, settings.universe_refresh_s)
        self._limit = asyncio.Semaphore(settings.concurrency)
        metrics.known_series(SUBJECTS, settings.durable)

    async def subscribe(self) -> JetStreamContext.PullSubscription:
        # A trigger reacts to arrivals from the moment it is served (no backfill).
        subscription, _ = await bind_new_arrivals(
            self.js, self.settings.durable, SUBJECTS, self.settings.ack_wait_s, who="trigger"
        )
        return subscription

    async def run(self, subscription: JetStreamContext.PullSubscription) -> None:
        """Until cancelled: fetch, handle, acknowledge. Up to ``batches_in_flight`` batches are handled at once
        (most of a batch's time is spent waiting for the archive and the API server: the next events need not
        wait for it); a failed batch is redelivered after ``retry_s``. Cancelled, the batches in flight are
        dropped unacknowledged: JetStream redelivers them to whoever consumes next."""
        slots = asyncio.Semaphore(self.settings.batches_in_flight)
        running: set[asyncio.Task[None]] = set()
        try:
            while True:
                await slots.acquire()
                try:
                    messages = await self.fetch(subscription)
                except (nats.errors.TimeoutError, TimeoutError):
                    slots.release()
                    continue
                except BaseException:
                    slots.release()
                    raise
                task = asyncio.create_task(self._batch(messages))
                running.add(task)
                task.add_done_callback(running.discard)
                task.add_done_callback(lambda _: slots.release())
        finally:
            for task in running:
                task.cancel()

    async def _batch(self, messages: Sequence[Msg]) -> None:
        try:
            await self.handle(messages)
        except asyncio.CancelledError:
            raise
        except Exception:  # an archive or API server outage: the batch comes back
            log.exception("a batch of %d events failed; it will be redelivered", len(messages))
            self.metrics.failed_batches.inc()
            for message in messages:
                with contextlib.suppress(Exception):
                    await message.nak(delay=self.settings.retry_s)

    async def fetch(self, subscription: JetStreamContext.PullSubscription) -> list[Msg]:
        """The next event as soon as it is stored, with whatever else is there within GATHER_S.

        One fetch of a whole batch would wait for the batch to fill (nats.py keeps reading until ``batch``
        messages or its timeout): a lone event would wait the full timeout, the latency of every trigger.
        """
        messages: list[Msg] = await subscription.fetch(batch=1, timeout=FETCH_TIMEOUT_S)
        if self.settings.batch > 1:
            with contextlib.suppress(nats.errors.TimeoutError, TimeoutError):
                messages += await subscription.fetch(batch=self.settings.batch - 1, timeout=GATHER_S)
        return messages

    async def handle(self, messages: Sequence[Msg]) -> Outcome:
        for message in messages:
            self.metrics.events.labels(message.subject).inc()
            if _delivered(message) > 1:
                self.metrics.redelivered.labels(message.subject).inc()
        with consuming_batch(self.tracing, messages, "trigger") as spans:
            outcome = await self.evaluate(messages, spans)
            for message in messages:
                await message.ack()
        return outcome

    async def evaluate(self, messages: Sequence[Msg], spans: Sequence[Span] | None = None) -> Outcome:
        """``spans``: each message's consumer span (the groups' spans go under those of their arrivals)."""
        triggers = self.pipelines.triggers(await self.universe.get()) if self.pipelines.pipelines else []
        if not triggers:
            return Outcome()
        types = {t.spec.dataset_type for t in triggers}
        traced = await self.arrivals(messages, types, spans)
        arrivals = [arrival for arrival, _ in traced]
        groups = groups_of(arrivals, triggers, self.sites.facts())
        oldest = min((t for m in messages if (t := _stored_at(m)) is not None), default=None)
        outcome = Outcome(groups=len(groups))
        arrived = {(a.dataset_id, a.site) for a in arrivals}
        await asyncio.gather(
            *(self._group(group, outcome, oldest, arrived, _causes(group, traced)) for group in groups)
        )
        return outcome

    async def arrivals(
        self, messages: Sequence[Msg], types: set[str], spans: Sequence[Span] | None = None
    ) -> list[tuple[Arrival, Span]]:
        """Each arrival the messages announce, with the consumer span of the message that announced it."""
        found: list[tuple[Arrival, Span]] = []
        lookups: list[tuple[ReplicaStateChanged, Span]] = []
        for message, span in zip(messages, spans or [trace.INVALID_SPAN] * len(messages), strict=True):
            try:
                if message.subject == DATASET_REGISTERED:
                    event = DatasetRegistered.model_validate_json(message.data)
                    found += [
                        (Arrival(d.id, d.dataset_type, dict(d.data_id), d.run, r.site), span)
                        for d in event.datasets
                        if d.dataset_type in types
                        for r in d.replicas
                        if r.state is ReplicaState.AVAILABLE
                    ]
                elif message.subject == REPLICA_AVAILABLE:
                    change = ReplicaStateChanged.model_validate_json(message.data)
                    if change.dataset_type not in types:
                        continue
                    if change.data_id is not None and change.run is not None:
                        arrival = Arrival(
                            change.dataset_id, change.dataset_type, dict(change.data_id), change.run, change.site
                        )
                        found.append((arrival, span))
                    else:
                        lookups.append((change, span))
            except ValidationError as error:  # no version of this code can read it: keep it out of the way
                log.error("unreadable %s event dropped: %s", message.subject, error)
        # A replica event from an archive older than its data_id/run fields names only its dataset: ask the archive.
        datasets = await asyncio.gather(*(self._lookup(change, span) for change, span in lookups))
        for (change, span), dataset in zip(lookups, datasets, strict=True):
            if dataset is not None:
                arrival = Arrival(
                    change.dataset_id, change.dataset_type, dataset["data_id"], dataset["run"], change.site
                )
                found.append((arrival, span))
        return found

    async def _lookup(self, change: ReplicaStateChanged, span: Span) -> dict[str, Any] | None:
        with trace.use_span(span, end_on_exit=False):  # the archive's request joins the event's trace
            return await self._limited(self.archive.dataset(change.dataset_id))

    async def _limited(self, work: Awaitable[T]) -> T:
        async with self._limit:
            return await work

    async def _group(
        self,
        group: Group,
        outcome: Outcome,
        since: datetime | None,
        arrived: set[tuple[uuid.UUID, str]],
        causes: Sequence[Span] = (),
    ) -> None:
        async with self._limit:
            began = time.monotonic()
            with self._group_span(group, causes) as span:
                placed = await self.placed_site(group)
                if placed is not None and placed != group.site:
                    span.set_attribute("sgs.group.placed_site", placed)
                    outcome.elsewhere += 1
                    self.metrics.evaluation.observe(time.monotonic() - began)
                    return
                members = await self.members(group, {i for i, site in arrived if site == group.site})
                chosen = complete_members(group, members)
                span.set_attribute("sgs.group.members", len(members))
                span.set_attribute("sgs.group.complete", chosen is not None)
                if chosen is None:
                    outcome.incomplete += 1
                    self.metrics.evaluation.observe(time.monotonic() - began)
                    return
                name, created = await self.create_run(group, chosen)
            self.metrics.evaluation.observe(time.monotonic() - began)
        if created is None:
            return
        (outcome.created if created else outcome.existing).append(name)
        if created:
            self.metrics.runs.labels("created").inc()
            if since is not None:
                self.metrics.latency.observe((datetime.now(UTC) - since).total_seconds())
            log.info(
                "run %s/%s created: pipeline %s, trigger %s, site %s, %d dataset(s)",
                group.trigger.namespace,
                name,
                group.trigger.pipeline,
                group.trigger.spec.name,
                group.site,
                len(chosen),
            )
        else:
            self.metrics.runs.labels("existing").inc()

    async def placed_site(self, group: Group) -> str | None:
        """The Site the survey's placement sends the group's observation to: its primary, or its secondary
        while the primary is in maintenance or not Ready. None: no placement applies (not grouped by
        observation, not placed, or neither Site can take it), and the group completes wherever its data is.
        Without this a replicated observation, complete at its primary and at its secondary, would run twice."""
        observation = group.observation
        if observation is None:
            return None
        where = await self.archive.placement(observation)
        phases, maintenance = self.sites.states(group.trigger.namespace)
        return run_site(observation, where, phases, maintenance, datetime.now(UTC)).site

    def _group_span(self, group: Group, causes: Sequence[Span]) -> contextlib.AbstractContextManager[Span]:
        """Under the consumer span of the first message announcing one of the group's arrivals, linked to the
        others' (several events of one batch can complete one group)."""
        parent = trace.set_span_in_context(causes[0]) if causes else None
        links = [Link(c.get_span_context()) for c in causes[1:] if c.get_span_context().is_valid]
        attributes = {
            "sgs.namespace": group.trigger.namespace,
            "sgs.pipeline": group.trigger.pipeline,
            "sgs.trigger": group.trigger.spec.name,
            "sgs.site": group.site,
        }
        return self.tracing.tracer.start_as_current_span(
            "evaluate group", context=parent, links=links, attributes=attributes
        )

    async def members(self, group: Group, arrived: AbstractSet[uuid.UUID] = frozenset()) -> list[Member]:
        """The group's datasets as the archive knows them now, and which are available at the group's Site.

        ``arrived``: datasets this batch's events announce as available there; the archive is asked only about
        the others (one request less for a group completed by the arrival itself, the usual last dithers). The
        operator checks every input's replica again when the Run starts."""
        spec = group.trigger.spec
        items = await self.archive.query(spec.dataset_type, [], group_where(group))
        ids = [uuid.UUID(str(item["id"])) for item in items]
        unknown = [i for i in ids if i not in arrived]
        held = (await self.archive.available_at(unknown, group.site) if unknown else set()) | (arrived & set(ids))
        return [
            Member(dataset_id=i, data_id=item["data_id"], run=item["run"], available=i in held)
            for i, item in zip(ids, items, strict=True)
        ]

    async def create_run(self, group: Group, members: Sequence[Member]) -> tuple[str, bool | None]:
        """Create the group's Run; (name, False) when it exists already (a redelivery, a restart, a replica),
        (name, None) when its namespace is gone or going (the Pipeline goes with it: nothing to retry)."""
        name = run_name(group)
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{group.trigger.namespace}/runs"
        attributes: dict[str, str | int] = {
            "sgs.run": f"{group.trigger.namespace}/{name}",
            "sgs.run.inputs": len(members),
        }
        with self.tracing.tracer.start_as_current_span(
            "create run", kind=SpanKind.CLIENT, attributes=attributes
        ) as span:
            # Off, the span is the event's own context: the Run still links to the trace of its cause.
            body = run_manifest(group, members, cause=traceparent_of(span))
            try:
                await self.kube.create(path, body)
            except KubeError as error:
                if error.status == CONFLICT:
                    span.set_attribute("sgs.run.existed", True)
                    return name, False
                if error.status == NOT_FOUND or (error.status == FORBIDDEN and "being terminated" in str(error)):
                    log.warning("run %s/%s not created: %s", group.trigger.namespace, name, error)
                    return name, None
                raise
            span.set_attribute("sgs.run.existed", False)
        return name, True

    async def refresh_pending(self, stopped: asyncio.Event, every_s: float = PENDING_REFRESH_S) -> None:
        """Until ``stopped``: the consumer's backlog and unacknowledged count, from JetStream's own counters."""
        while not stopped.is_set():
            try:
                info = await self.js.consumer_info(STREAM, self.settings.durable)
            except Exception as error:  # NATS away, the consumer not made yet: keep the last values
                log.debug("consumer info unavailable: %s", error)
            else:
                self.metrics.consumer_pending.labels(self.settings.durable).set(info.num_pending or 0)
                self.metrics.consumer_ack_pending.labels(self.settings.durable).set(info.num_ack_pending or 0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopped.wait(), every_s)


def _causes(group: Group, traced: Sequence[tuple[Arrival, Span]]) -> list[Span]:
    """The consumer spans of the messages announcing arrivals of ``group`` (each once, in message order)."""
    found: dict[int, Span] = {}
    spec = group.trigger.spec
    for arrival, span in traced:
        same_group = arrival.site == group.site and arrival.dataset_type == spec.dataset_type
        if same_group and group.trigger.key_of(arrival.data_id) == group.key:
            found.setdefault(id(span), span)
    return list(found.values())


def _delivered(message: Msg) -> int:
    try:
        return int(message.metadata.num_delivered)
    except Exception:  # a core NATS message (tests) has no JetStream metadata
        return 1


def _stored_at(message: Msg) -> datetime | None:
    try:
        stamp: datetime = message.metadata.timestamp
    except Exception:  # a core NATS message (tests) has no JetStream metadata
        return None
    return stamp


__all__ = ["CompiledTrigger", "Consumer", "Outcome"]

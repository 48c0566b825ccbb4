"""Rule evaluation: push-driven, with the archive's events, and in bulk for a new (or resumed) rule.

- Events: a durable JetStream pull consumer of ``sgs.dataset.registered`` and ``sgs.replica.*``. Each batch of
  messages is matched against the active rules; the locks and transfers it implies are committed, the new
  transfers published to the work queue, and only then are the messages acknowledged. A crash anywhere
  before the acknowledgement redelivers the batch, and re-running it changes nothing (unique keys).
- Bulk: a new rule is evaluated against the datasets already in the archive, a page of up to 10,000 at a
  time (query + replica lookup over HTTP, one transaction per page, one publish burst per page).
- Replica events repair: a copy declared ``bad`` or ``deleted`` at a Site where a rule wants one is queued
  again at once, instead of waiting for a periodic scan.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from opentelemetry.trace import Span
from pydantic import ValidationError

from sgs.events import DATASET_REGISTERED, REPLICA_ANY, STREAM, DatasetRegistered, ReplicaStateChanged
from sgs.expression import ExpressionError, SiteFacts, evaluate_sites, parse_sites
from sgs.expression.sites import SiteNode
from sgs.model.dataset import DimensionUniverse
from sgs.replication.placement import choose_destinations
from sgs.replication.rules import CompiledSelector, Grouping, glob_prefix, is_glob
from sgs.service.jetstream import bind_new_arrivals
from sgs.telemetry.context import traceparent_of
from sgs.telemetry.messaging import consuming_batch
from sgs_transfer.db import Conn
from sgs_transfer.deps import TransferState
from sgs_transfer.queue import QueuedTransfer, TransferQueue
from sgs_transfer.rules import unsatisfiable
from sgs_transfer.store import plan
from sgs_transfer.store import replicas as replica_rows
from sgs_transfer.store import rules as rule_rows
from sgs_transfer.store.plan import DatasetFacts, LockRow, ReplicaFacts, TransferRow
from sgs_transfer.store.rules import StoredRule

log = logging.getLogger(__name__)

EVENT_BATCH = 64
FETCH_TIMEOUT_S = 1.0
# Datasets per archive page in a rule's bulk evaluation: pages small enough that fetching, writing and publishing
# overlap (a pipeline), large enough that each round trip carries thousands.
BULK_PAGE = 2_500
ID_PAGE = 500  # datasets of a dataset-id rule fetched and evaluated per transaction
LOOKUPS_IN_FLIGHT = 16


@dataclass
class CompiledRule:
    stored: StoredRule
    selector: CompiledSelector
    sites: SiteNode
    sources: SiteNode | None

    @property
    def id(self) -> uuid.UUID:
        return self.stored.id


def compile_rule(rule: StoredRule, universe: DimensionUniverse) -> CompiledRule:
    return CompiledRule(
        stored=rule,
        selector=rule.selector.compile(universe),
        sites=parse_sites(rule.site_expression),
        sources=parse_sites(rule.source_expression) if rule.source_expression else None,
    )


@dataclass
class Decisions:
    """What one evaluation pass asks for."""

    locks: list[LockRow] = field(default_factory=list)
    transfers: list[TransferRow] = field(default_factory=list)
    unsatisfied: dict[uuid.UUID, str] = field(default_factory=dict)
    chosen: dict[uuid.UUID, tuple[str, ...]] = field(default_factory=dict)


def decide(
    pairs: Sequence[tuple[CompiledRule, DatasetFacts]],
    holdings: plan.Holdings,
    state: TransferState,
    used: dict[str, int],
    now: datetime,
) -> Decisions:
    """Locks and transfers for matched (rule, dataset) pairs; pure over what it is given."""
    facts: list[SiteFacts] = state.sites.facts(now)
    decisions = Decisions()
    matching_of: dict[uuid.UUID, frozenset[str]] = {}
    for rule, dataset in pairs:
        if rule.id not in matching_of:
            matching_of[rule.id] = evaluate_sites(rule.sites, facts)
        candidates = state.sites.candidates(matching_of[rule.id], used, now)
        if rule.stored.grouping is Grouping.ALL:
            chosen = rule.stored.chosen_sites or decisions.chosen.get(rule.id)
            if chosen is None:
                placed = choose_destinations(str(rule.id), rule.stored.copies, candidates, holding=())
                chosen = placed.sites
                decisions.chosen[rule.id] = chosen
                if placed.reason:
                    decisions.unsatisfied.setdefault(rule.id, placed.reason)
            sites: tuple[str, ...] = chosen
        else:
            placed = choose_destinations(
                str(dataset.id), rule.stored.copies, candidates, holdings.holding(dataset.id), dataset.size
            )
            sites = placed.sites
            if placed.reason:
                decisions.unsatisfied.setdefault(rule.id, placed.reason)
        for site in sites:
            if site in holdings.available[dataset.id]:
                decisions.locks.append(LockRow(rule.id, dataset.id, site, "OK"))
                continue
            stuck = site in holdings.stuck[dataset.id]
            decisions.locks.append(LockRow(rule.id, dataset.id, site, "STUCK" if stuck else "REPLICATING"))
            if site not in holdings.open[dataset.id]:
                decisions.transfers.append(TransferRow(dataset.id, site, rule.stored.priority))
                holdings.open[dataset.id].add(site)
                used[site] = used.get(site, 0) + dataset.size
    return decisions


def facts_from_archive(item: dict[str, Any], replicas: list[dict[str, Any]]) -> DatasetFacts | None:
    """A dataset from the archive's query and locate answers; None without an available replica (nothing to copy)."""
    if not replicas:
        return None
    first = replicas[0]
    return DatasetFacts(
        id=uuid.UUID(str(item["id"])),
        dataset_type=item["dataset_type"],
        run=item["run"],
        data_id=item["data_id"],
        size=int(first["size"]),
        adler32=str(first["adler32"]),
        sha256=str(first["sha256"]),
        replicas=tuple(ReplicaFacts(r["site"], r["uri"], r["state"]) for r in replicas),
    )


def facts_from_event(event: DatasetRegistered) -> list[DatasetFacts]:
    found = []
    for dataset in event.datasets:
        available = [r for r in dataset.replicas if r.state.value == "available"]
        if not available:
            continue  # nothing to copy yet; its first sgs.replica.available brings it back
        first = available[0]
        found.append(
            DatasetFacts(
                id=dataset.id,
                dataset_type=dataset.dataset_type,
                run=dataset.run,
                data_id=dict(dataset.data_id),
                size=first.size,
                adler32=str(first.adler32),
                sha256=str(first.sha256),
                replicas=tuple(ReplicaFacts(r.site, r.uri, r.state.value) for r in dataset.replicas),
            )
        )
    return found


class RuleSet:
    """The active rules, compiled; reloaded when the rule_version row says they changed."""

    def __init__(self, state: TransferState) -> None:
        self.state = state
        self.version = -1
        self.rules: list[CompiledRule] = []

    async def current(self, conn: Conn) -> list[CompiledRule]:
        version = await rule_rows.rule_version(conn)
        if version != self.version:
            stored = await rule_rows.active(conn)
            universe = await self.state.universe.get(("rules",)) if any(r.selector.where for r in stored) else None
            compiled = []
            for rule in stored:
                try:
                    compiled.append(compile_rule(rule, universe or _EMPTY_UNIVERSE))
                except ExpressionError as error:  # the universe changed under a stored rule: say so, skip it
                    log.error("rule %s no longer compiles (%s); it is not evaluated", rule.id, error)
            self.rules, self.version = compiled, version
        return self.rules


_EMPTY_UNIVERSE = DimensionUniverse(namespace="none", version=0, elements={})


class Evaluator:
    def __init__(self, state: TransferState, js: JetStreamContext, queue: TransferQueue, durable: str) -> None:
        self.state = state
        self.js = js
        self.queue = queue
        self.durable = durable
        self.rules = RuleSet(state)
        self._scheduled: asyncio.Queue[uuid.UUID] = asyncio.Queue()
        self._pending: set[uuid.UUID] = set()
        self.connected = False
        self.bulk_running = 0
        self.last_event_at: float | None = None

    # ------------------------------------------------------------------ shared core

    async def evaluate(
        self, conn: Conn, datasets: Sequence[DatasetFacts], rules: Sequence[CompiledRule], *, bulk: bool = False
    ) -> Decisions:
        """Match, decide and write one batch in the caller's transaction (``bulk``: a page of a rule's bulk
        evaluation, thousands of rows, staged by COPY)."""
        pairs = [
            (rule, d)
            for d in datasets
            for rule in rules
            if rule.selector.matches(d.dataset_type, d.run, d.data_id, d.id)
        ]
        if not pairs:
            return Decisions()
        involved = list({d.id: d for _, d in pairs}.values())
        if bulk:
            await plan.stage_datasets(conn, involved)
            holdings = await plan.holdings(conn, None)
        else:
            await plan.remember_datasets(conn, involved)
            holdings = await plan.holdings(conn, [d.id for d in involved])
        used = await plan.used_bytes(conn)
        decisions = decide(pairs, holdings, self.state, used, datetime.now(UTC))
        # Rule rows first (the lock order: rule -> lock -> transfer -> replica).
        for rule_id, chosen in decisions.chosen.items():
            await rule_rows.set_chosen_sites(conn, rule_id, chosen)
        await rule_rows.note_unsatisfied(conn, decisions.unsatisfied)
        await plan.write(conn, decisions.locks, decisions.transfers, staged=bulk)
        return decisions

    async def publish_open(
        self, dataset_ids: Sequence[uuid.UUID], traces: Mapping[uuid.UUID, str | None] | None = None
    ) -> int:
        """Publish the batch's transfers the queue was not told about yet, then stamp them (``traces``: the
        traceparent of the event each dataset came in, carried on to the copy)."""
        traces = traces or {}
        async with self.state.pool.connection() as conn:
            cursor = await conn.execute(
                """SELECT id, generation, destination, dataset_id FROM transfer
                    WHERE dataset_id = ANY(%s) AND published_gen < generation AND state IN ('QUEUED', 'STUCK')""",
                (list(dataset_ids),),
            )
            items = [
                QueuedTransfer(r["id"], r["generation"], r["destination"], traces.get(r["dataset_id"]))
                for r in await cursor.fetchall()
            ]
        await self.publish(items)
        return len(items)

    async def publish(self, items: Sequence[QueuedTransfer]) -> None:
        if not items:
            return
        await self.queue.publish(items)
        async with self.state.pool.connection() as conn:
            await plan.mark_published(conn, items)
        self.state.metrics.queued.inc(len(items))

    # ------------------------------------------------------------------ events

    async def run_events(self) -> None:
        """Until cancelled: consume the archive's events, evaluate, commit, publish, acknowledge."""
        subscription = await self._subscribe()
        self.connected = True
        try:
            while True:
                try:
                    messages = await subscription.fetch(batch=EVENT_BATCH, timeout=FETCH_TIMEOUT_S)
                except (nats.errors.TimeoutError, TimeoutError):
                    continue
                try:
                    await self.handle(messages)
                except asyncio.CancelledError:
                    raise
                except Exception:  # the loop must survive a DB or archive outage; the batch is redelivered
                    log.exception("evaluator: a batch of %d events failed; they will be redelivered", len(messages))
                    for message in messages:
                        with contextlib.suppress(Exception):
                            await message.nak(delay=self.state.settings.retry_base_s)
        finally:
            self.connected = False

    async def _subscribe(self) -> JetStreamContext.PullSubscription:
        # What the archive held before the consumer existed is reached by evaluating every rule against the
        # archive itself (below), not by replaying its whole history of events one by one.
        subscription, created = await bind_new_arrivals(
            self.js, self.durable, [DATASET_REGISTERED, REPLICA_ANY], self.state.settings.ack_wait_s, who="evaluator"
        )
        if created:
            await self._evaluate_every_rule()
        return subscription

    async def _evaluate_every_rule(self) -> None:
        """A consumer created now has seen no event: every active rule is evaluated against the archive once."""
        async with self.state.pool.connection() as conn:
            for rule in await rule_rows.active(conn):
                self.schedule(rule.id)

    async def handle(self, messages: Sequence[Msg]) -> None:
        with consuming_batch(self.state.tracing, messages, "evaluate") as spans:
            await self._handle(messages, spans)

    async def _handle(self, messages: Sequence[Msg], spans: Sequence[Span]) -> None:
        datasets: dict[uuid.UUID, DatasetFacts] = {}
        traces: dict[uuid.UUID, str | None] = {}
        changes: list[ReplicaStateChanged] = []
        for message, span in zip(messages, spans, strict=True):
            self.state.metrics.events.labels(message.subject).inc()
            if _redelivered(message):
                self.state.metrics.redelivered.labels(message.subject).inc()
            try:
                if message.subject == DATASET_REGISTERED:
                    for facts in facts_from_event(DatasetRegistered.model_validate_json(message.data)):
                        datasets[facts.id] = facts
                        traces[facts.id] = traceparent_of(span)
                else:
                    changes.append(ReplicaStateChanged.model_validate_json(message.data))
            except ValidationError as error:  # a message no version of this code can read: keep it out of the way
                log.error("evaluator: unreadable %s event dropped: %s", message.subject, error)
        self.last_event_at = time.monotonic()
        async with self.state.pool.connection() as conn:
            rules = await self.rules.current(conn)
        requeued = await self._replica_changes(changes, rules, datasets)
        async with self.state.pool.connection() as conn:
            await self.evaluate(conn, list(datasets.values()), rules)
        await self.publish(requeued)
        await self.publish_open(list(datasets), traces)
        for message in messages:
            await message.ack()

    async def _replica_changes(
        self,
        changes: Sequence[ReplicaStateChanged],
        rules: Sequence[CompiledRule],
        datasets: dict[uuid.UUID, DatasetFacts],
    ) -> list[QueuedTransfer]:
        """One short transaction per change (each takes its row locks in the service's order, holding nothing
        else); datasets this service never heard of are fetched to be evaluated with the batch."""
        requeued: list[QueuedTransfer] = []
        for change in changes:
            async with self.state.pool.connection() as conn:
                known = await replica_rows.dataset_known(conn, change.dataset_id)
                if known and change.state.value == "available":
                    await replica_rows.seen_available(
                        conn, change.dataset_id, change.site, change.uri, change.replica_id
                    )
                elif known:
                    requeued += await replica_rows.lost(conn, change.dataset_id, change.site, change.state.value)
            if (
                not known
                and change.state.value == "available"
                and change.dataset_id not in datasets
                and any(r.stored.selector.dataset_type in (None, change.dataset_type) for r in rules)
            ):
                facts = await self._dataset_from_archive(change.dataset_id)
                if facts is not None:
                    datasets[facts.id] = facts
        return requeued

    async def _dataset_from_archive(self, dataset_id: uuid.UUID) -> DatasetFacts | None:
        url, token = self._archive()
        if url is None:
            return None
        item = await self.state.archive.dataset(url, token, dataset_id)
        if item is None:
            return None
        located = await self.state.archive.locate(url, token, [dataset_id])
        return facts_from_archive(item, located.get(str(dataset_id), []))

    def _archive(self) -> tuple[str | None, str | None]:
        settings = self.state.settings
        return settings.archive_url, settings.archive_token.get_secret_value() if settings.archive_token else None

    async def lag(self) -> int:
        """Events not yet evaluated (delivered and unacknowledged, or not delivered yet)."""
        info = await self.js.consumer_info(STREAM, self.durable)
        return int(info.num_pending or 0) + int(info.num_ack_pending or 0)

    # ------------------------------------------------------------------ bulk

    def schedule(self, rule_id: uuid.UUID) -> None:
        if rule_id not in self._pending:
            self._pending.add(rule_id)
            self._scheduled.put_nowait(rule_id)

    @property
    def busy(self) -> bool:
        return bool(self._pending) or self.bulk_running > 0

    async def run_bulk(self) -> None:
        """Until cancelled: evaluate scheduled rules against the datasets already in the archive."""
        while True:
            rule_id = await self._scheduled.get()
            self.bulk_running += 1
            self._pending.discard(rule_id)
            try:
                await self.evaluate_rule(rule_id)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("evaluator: bulk evaluation of rule %s failed; the repair pass retries it", rule_id)
            finally:
                self.bulk_running -= 1

    async def evaluate_rule(self, rule_id: uuid.UUID) -> int:
        """Evaluate one rule against every dataset it selects in the archive; returns the transfers queued."""
        started = time.perf_counter()
        async with self.state.pool.connection() as conn:
            stored = await rule_rows.stored(conn, rule_id)
        if stored is None or stored.suspended:
            return 0
        rule = compile_rule(
            stored, await self.state.universe.get(("rules",)) if stored.selector.where else _EMPTY_UNIVERSE
        )
        url, token = self._archive()
        queued = 0
        reasons: dict[uuid.UUID, str] = {}
        if url is not None:
            collections = await self._resolve_collections(url, token, stored.selector.collections)
            if collections is not None:
                pages = (
                    self._by_id(url, token, stored.id, stored.selector.dataset_ids, reasons)
                    if stored.selector.dataset_ids
                    else self.state.archive.datasets(
                        url, token, stored.selector.dataset_type, collections, stored.selector.where, BULK_PAGE
                    )
                )
                evaluated = await self._evaluate_pages(rule, url, token, pages, reasons)
                if evaluated is None:
                    return 0  # deleted while being evaluated
                queued = evaluated
        async with self.state.pool.connection() as conn:
            creation = self._creation_reason(stored)
            await rule_rows.mark_evaluated(conn, rule_id, None, reasons.get(rule_id) or creation)
        log.info("rule %s evaluated: %d transfers queued in %.2f s", rule_id, queued, time.perf_counter() - started)
        return queued

    def _creation_reason(self, rule: StoredRule) -> str | None:
        matching = evaluate_sites(parse_sites(rule.site_expression), self.state.sites.facts(datetime.now(UTC)))
        return unsatisfiable(rule.copies, matching)

    async def _evaluate_pages(
        self,
        rule: CompiledRule,
        url: str,
        token: str | None,
        pages: AsyncIterator[list[dict[str, Any]]],
        reasons: dict[uuid.UUID, str],
    ) -> int | None:
        """A pipeline over the archive's pages: the next page (query + replicas) is fetched while this one is
        decided and written, and the one before is published meanwhile, so the archive, PostgreSQL and JetStream
        work at the same time instead of in turn. Returns the transfers queued, None if the rule was deleted."""
        queued = 0
        ahead: asyncio.Task[list[DatasetFacts] | None] = asyncio.create_task(self._next_page(url, token, pages))
        publishing: asyncio.Task[int] | None = None
        try:
            while (datasets := await ahead) is not None:
                ahead = asyncio.create_task(self._next_page(url, token, pages))
                async with self.state.pool.connection() as conn:
                    decisions = await self.evaluate(conn, datasets, [rule], bulk=True)
                for rule_id, reason in decisions.unsatisfied.items():
                    reasons.setdefault(rule_id, reason)
                queued += await publishing if publishing is not None else 0
                publishing = asyncio.create_task(self.publish_open([d.id for d in datasets]))
                async with self.state.pool.connection() as conn:
                    refreshed = await rule_rows.stored(conn, rule.id)
                if refreshed is None:
                    return None
                rule.stored = refreshed
            return queued + (await publishing if publishing is not None else 0)
        finally:
            for task in (ahead, publishing):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task

    async def _next_page(
        self, url: str, token: str | None, pages: AsyncIterator[list[dict[str, Any]]]
    ) -> list[DatasetFacts] | None:
        """The next page of datasets with their available replicas (the archive's query, then one locate)."""
        items = await anext(pages, None)
        if items is None:
            return None
        located = await self.state.archive.locate(url, token, [uuid.UUID(str(i["id"])) for i in items])
        return [f for i in items if (f := facts_from_archive(i, located.get(str(i["id"]), []))) is not None]

    async def _by_id(
        self, url: str, token: str | None, rule_id: uuid.UUID, ids: Sequence[uuid.UUID], reasons: dict[uuid.UUID, str]
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """A dataset-id rule's datasets, a page at a time (the archive has no bulk get: a few GETs in flight);
        ids the archive does not know make the rule STUCK, naming them (a copy of nothing cannot succeed)."""
        unknown: list[uuid.UUID] = []
        for start in range(0, len(ids), ID_PAGE):
            chunk = ids[start : start + ID_PAGE]
            found: list[dict[str, Any]] = []
            for lookup in range(0, len(chunk), LOOKUPS_IN_FLIGHT):
                part = chunk[lookup : lookup + LOOKUPS_IN_FLIGHT]
                answers = await asyncio.gather(*(self.state.archive.dataset(url, token, i) for i in part))
                found += [item for item in answers if item is not None]
                unknown += [i for i, item in zip(part, answers, strict=True) if item is None]
            if found:
                yield found
        if unknown:
            shown = ", ".join(str(i) for i in unknown[:3]) + (
                f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
            )
            reasons.setdefault(rule_id, f"{len(unknown)} of the rule's dataset_ids are not in the archive: {shown}")

    async def _resolve_collections(self, url: str, token: str | None, patterns: Sequence[str]) -> list[str] | None:
        """Exact names for the archive's query; None when patterns match no RUN collection (nothing to do)."""
        if not patterns:
            return []
        names: set[str] = set()
        for pattern in patterns:
            if not is_glob(pattern):
                names.add(pattern)
                continue
            listed = await self.state.archive.collections(url, token, glob_prefix(pattern))
            names.update(c["name"] for c in listed if c["type"] == "RUN" and fnmatch.fnmatchcase(c["name"], pattern))
        return sorted(names) or None


def _redelivered(message: Msg) -> bool:
    try:
        return int(message.metadata.num_delivered) > 1
    except Exception:  # a core NATS message has no JetStream metadata
        return False

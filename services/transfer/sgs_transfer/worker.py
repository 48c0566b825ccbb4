"""Transfer workers: one fetch loop per destination Site, each a pull consumer of that Site's queue.

For each message: claim the row (an attempt, under a lease), pick a source (a preferred Site first, then the
least busy healthy one), stream the copy with adler32 + sha256 computed on the way, re-read the destination
to verify it, register the replica as available in the destination Site's archive with that Site's token
(the archive then announces ``sgs.replica.available``: ingestion on arrival), mark the row DONE, and only
then acknowledge the message. A failure is retried with exponential backoff and jitter (``nak(delay)``),
then shown STUCK with its last error while still retried slowly.

Nothing a worker does is lost if it dies: the message is redelivered after ``ack_wait_s`` (the worker keeps
it alive with ``in_progress`` while it works), the row's lease runs out, the next attempt lands on the same
deterministic key (a verified object already there is reused, not copied again) and what an interrupted
write left behind is removed by ``clean_partials``.

Isolation: a destination whose store keeps failing is paused (its loop stops fetching, its messages wait in
the stream) and probed; the other destinations' loops never wait for it. Copies into one destination, over
one link and out of one source are bounded separately.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

import nats.errors
from nats.aio.msg import Msg

from sgs.expression import ExpressionError, select_sites
from sgs.model.checksum import Adler32, Checksums
from sgs.model.replica import ReplicaState
from sgs.replication.placement import SourceOption, choose_source
from sgs.replication.retry import RetryPolicy, after_failure
from sgs.storage import (
    ChecksumMismatchError,
    CopyAbortedError,
    ObjectNotFoundError,
    S3Store,
    StorageError,
    Store,
    StoreUnavailableError,
    copy,
    replica_key,
    suffix_of,
    verify,
)
from sgs.telemetry import Tracing
from sgs.telemetry.messaging import consuming
from sgs_transfer.archive_client import ArchiveClient, ArchiveError, ReplicaRegistration
from sgs_transfer.db import Pool
from sgs_transfer.metrics import TransferMetrics
from sgs_transfer.queue import QueuedTransfer, TransferQueue
from sgs_transfer.settings import TransferSettings
from sgs_transfer.sites import KnownSite, SiteBook
from sgs_transfer.store import transfers as rows
from sgs_transfer.store.plan import mark_published
from sgs_transfer.store.transfers import Claimed

log = logging.getLogger(__name__)

FETCH_TIMEOUT_S = 1.0
PROBE_KEY = "sgs-probe/reachable"
SITES_CHECK_S = 5.0
SOURCE_QUARANTINE_PROBES = 4
"""A source found down is avoided for this many probe intervals."""


def worker_id(settings: TransferSettings) -> str:
    return settings.worker_name or f"{socket.gethostname()}:{os.getpid()}"


def _transfer_attributes(claimed: Claimed) -> dict[str, str | int]:
    return {
        "sgs.transfer.id": claimed.id,
        "sgs.dataset_type": claimed.dataset_type,
        "sgs.destination": claimed.destination,
        "sgs.attempt": claimed.attempts,
        "sgs.bytes": claimed.size,
    }


class AttemptFailedError(Exception):
    """One attempt failed; ``kind`` decides what else happens (pausing a destination, avoiding a source)."""

    def __init__(self, kind: str, message: str, *, permanent: bool = False, source: str | None = None) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.permanent = permanent
        self.source = source


@dataclass
class Gate:
    """One destination's health as this worker sees it."""

    failures: int = 0
    paused: bool = False
    reason: str = ""


class Worker:
    def __init__(
        self,
        settings: TransferSettings,
        pool: Pool,
        sites: SiteBook,
        archive: ArchiveClient,
        queue: TransferQueue,
        metrics: TransferMetrics,
        tracing: Tracing | None = None,
    ) -> None:
        self.settings = settings
        self.tracing = tracing or Tracing.off()
        self.pool = pool
        self.sites = sites
        self.archive = archive
        self.queue = queue
        self.metrics = metrics
        self.name = worker_id(settings)
        self.policy = RetryPolicy(
            settings.retry_base_s, settings.retry_max_s, settings.fast_attempts, settings.stuck_after_s
        )
        workers = min(64, settings.destination_concurrency * max(len(sites.names), 1))
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sgs-transfer-copy")
        self.gates: dict[str, Gate] = {}
        self.link_slots: dict[tuple[str, str], asyncio.Semaphore] = {}
        self.source_slots: dict[str, asyncio.Semaphore] = {}
        self.quarantined: dict[str, float] = {}
        self.loops: dict[str, asyncio.Task[None]] = {}
        self.running = False
        self.stopping = threading.Event()

    def close(self) -> None:
        self.stopping.set()
        self.executor.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ loops

    async def run(self) -> None:
        """Until cancelled: one loop per destination Site (Sites added later get theirs within seconds)."""
        await asyncio.to_thread(self._clean_partials)
        self.running = True
        cleaned = time.monotonic()
        try:
            while True:
                for name in self.destinations():
                    if name not in self.loops or self.loops[name].done():
                        self.loops[name] = asyncio.create_task(self._supervise(name), name=f"to-{name}")
                await asyncio.sleep(min(SITES_CHECK_S, self.settings.partials_interval_s))
                if time.monotonic() - cleaned >= self.settings.partials_interval_s:
                    await asyncio.to_thread(self._clean_partials)
                    cleaned = time.monotonic()
        finally:
            self.running = False
            for task in self.loops.values():
                task.cancel()
            await asyncio.gather(*self.loops.values(), return_exceptions=True)

    def destinations(self) -> list[str]:
        """The Sites this worker copies into: every known Site, or those of ``SGS_TRANSFER_DESTINATIONS``."""
        wanted = self.settings.destinations
        return [name for name in self.sites.names if not wanted or name in wanted]

    def _clean_partials(self) -> None:
        """What killed copies left behind (temporary files, incomplete multipart uploads) is removed at start."""
        mine = set(self.destinations())  # another Site's worker cleans its own store
        for known in self.sites.all():
            if known.store is None or known.name not in mine:
                continue
            try:
                removed = known.store.clean_partials(older_than_s=self.settings.partial_max_age_s)
            except StorageError as error:
                log.warning("worker: cannot clean partial writes at %s: %s", known.name, error)
                continue
            if removed:
                log.info("worker: removed %d partial writes at %s", removed, known.name)

    async def _supervise(self, destination: str) -> None:
        while True:
            try:
                await self.destination_loop(destination)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("worker: the loop for %s failed; restarting in 1 s", destination)
                await asyncio.sleep(1.0)

    async def destination_loop(self, destination: str) -> None:
        consumer = await self.queue.ensure_consumer(destination)
        subscription = await self.queue.js.pull_subscribe_bind(consumer, stream=self.queue.names.stream)
        gate = self.gates.setdefault(destination, Gate())
        in_flight: set[asyncio.Task[None]] = set()
        limit = self.settings.destination_concurrency
        try:
            while True:
                if gate.paused:
                    await self._probe_until_reachable(destination, gate)
                    continue
                if len(in_flight) >= limit:
                    _, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                    continue
                try:
                    messages = await subscription.fetch(batch=limit - len(in_flight), timeout=FETCH_TIMEOUT_S)
                except (nats.errors.TimeoutError, TimeoutError):
                    continue
                for message in messages:
                    in_flight.add(asyncio.create_task(self.handle(destination, message)))
        finally:
            for task in in_flight:
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()

    # ------------------------------------------------------------------ one message

    async def handle(self, destination: str, message: Msg) -> None:
        item = QueuedTransfer.parse(message.data, destination)
        async with self.pool.connection() as conn:
            claimed = await rows.claim(conn, item.id, item.generation, self.name, self.settings.ack_wait_s)
            if claimed is None:
                verdict = await rows.why_not_claimed(conn, item.id, item.generation)
        if claimed is None:
            if verdict.drop:
                log.debug("worker: transfer %s dropped (%s)", item.msg_id, verdict.why)
                await message.ack()
            else:
                await message.nak(delay=verdict.retry_in_s)
            return
        heartbeat = asyncio.create_task(self._heartbeat(message, claimed))
        try:
            with consuming(self.tracing, message, "transfer") as span:
                span.set_attributes(_transfer_attributes(claimed))
                await self._attempt(claimed)
        except asyncio.CancelledError:
            raise  # shutting down: the message comes back after ack_wait_s, the lease runs out
        except Exception as error:
            failure = error if isinstance(error, AttemptFailedError) else _unexpected(error)
            heartbeat.cancel()
            delay = await self._failed(claimed, failure)
            await message.nak(delay=delay)
            return
        finally:
            heartbeat.cancel()
        await message.ack()

    async def _heartbeat(self, message: Msg, claimed: Claimed) -> None:
        """Keep the message and the row's lease alive while a long copy runs."""
        interval = max(self.settings.ack_wait_s / 3, 0.2)
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(Exception):
                await message.in_progress()
                async with self.pool.connection() as conn:
                    await rows.extend_lease(conn, claimed.id, self.name, self.settings.ack_wait_s)

    async def _attempt(self, claimed: Claimed) -> None:
        destination = self._site(claimed.destination)
        expected = Checksums(size=claimed.size, adler32=Adler32.parse(claimed.adler32), sha256=claimed.sha256)
        async with self.pool.connection() as conn:
            found = await rows.sources(conn, claimed)
        source_name = self._choose_source(found)
        if source_name is None:
            known = ", ".join(sorted(found.replicas)) or "none"
            raise AttemptFailedError("no-source", f"no healthy Site holds an available copy (copies at: {known})")
        source = self._site(source_name)
        assert source.store is not None and destination.store is not None
        try:
            source_key = source.store.key_of(found.replicas[source_name])
        except StorageError as error:
            raise AttemptFailedError("source", str(error), permanent=True, source=source_name) from error
        key = replica_key(claimed.dataset_type, claimed.dataset_id, suffix_of(found.replicas[source_name]))
        started = time.perf_counter()
        async with self._slots(source_name, claimed.destination):
            with self.tracing.tracer.start_as_current_span("copy", attributes={"sgs.source": source_name}):
                result = await self._copy(
                    source_name, source.store, source_key, destination.store, key, expected, claimed
                )
        self.metrics.copy_seconds.labels(claimed.destination).observe(time.perf_counter() - started)
        if result:
            self.metrics.bytes.labels(claimed.destination).inc(claimed.size)
        uri = destination.store.uri(key)
        async with self.pool.connection() as conn:
            await rows.mark_copied(conn, claimed, source_name, uri, claimed.size)
        registered = time.perf_counter()
        with self.tracing.tracer.start_as_current_span("register", attributes={"sgs.site": claimed.destination}):
            archive_id = await self._register(destination, claimed, uri)
        async with self.pool.connection() as conn:
            await rows.finish(conn, claimed, archive_id)
        self.metrics.register_seconds.observe(time.perf_counter() - registered)
        self.metrics.copies.labels(claimed.destination, "done").inc()
        self.gates.setdefault(claimed.destination, Gate()).failures = 0

    def _site(self, name: str) -> KnownSite:
        known = self.sites.get(name)
        if known is None or known.store is None:
            raise AttemptFailedError("site", f"Site {name!r} is not known to this worker (or has no store)")
        return known

    def _choose_source(self, found: rows.Sources) -> str | None:
        now = time.monotonic()
        preferred: set[str] = set()
        facts = self.sites.facts(datetime.now(UTC))
        for text in found.expressions:
            with contextlib.suppress(ExpressionError):
                preferred |= select_sites(text, facts)
        options = [
            SourceOption(
                site, healthy=self.quarantined.get(site, 0.0) <= now, active_transfers=found.active.get(site, 0)
            )
            for site in found.replicas
            if site in self.sites and (site != found.avoid or len(found.replicas) == 1)
        ]
        # A quarantine is a preference, not a ban: with every source quarantined, try them anyway.
        return choose_source(options, preferred) or choose_source(
            [SourceOption(o.site, True, o.active_transfers) for o in options], preferred
        )

    @contextlib.asynccontextmanager
    async def _slots(self, source: str, destination: str):  # type: ignore[no-untyped-def]
        link = self.link_slots.setdefault((source, destination), asyncio.Semaphore(self.settings.link_concurrency))
        out = self.source_slots.setdefault(source, asyncio.Semaphore(self.settings.source_concurrency))
        async with link, out:
            yield

    async def _copy(
        self,
        source_name: str,
        source: Store,
        source_key: str,
        destination: Store,
        key: str,
        expected: Checksums,
        claimed: Claimed,
    ) -> bool:
        """Copy and verify in a thread; True when bytes were copied (False: a verified copy was already there)."""
        corrupt = self.settings.fault_corrupt_after_copy == claimed.destination and claimed.attempts == 1
        abort = threading.Event()
        reuse = claimed.copied_at is not None or claimed.attempts > 1

        def blocking() -> bool:
            if reuse:
                try:
                    verify(destination, key, expected)
                    return False
                except (ObjectNotFoundError, ChecksumMismatchError):
                    pass
                if isinstance(destination, S3Store):
                    # Only the holder of the claim writes this key: an upload left under it is an earlier
                    # attempt's (a killed worker's), never a live one.
                    removed = destination.clean_partials(0.0, prefix=key)
                    if removed:
                        log.info(
                            "worker: aborted %d uploads an earlier attempt left at %s:%s",
                            removed,
                            destination.site,
                            key,
                        )
            copy(source, source_key, destination, key, expected=expected, verify_destination=False, abort=abort)
            if corrupt:
                _damage(destination, key)
            try:
                verify(destination, key, expected)
            except ChecksumMismatchError:
                destination.delete(key)  # never leave a bad copy under the replica's key
                raise
            return True

        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.executor, blocking)
        except asyncio.CancelledError:
            abort.set()
            raise
        except ChecksumMismatchError as error:
            raise AttemptFailedError("checksum", str(error), source=source_name) from error
        except StoreUnavailableError as error:
            # Which side is down decides what pauses: ask both stores rather than parse the message. Both
            # answering now (one came back a moment ago) is a plain retry that blames nobody.
            if not await asyncio.to_thread(_reachable, destination):
                raise AttemptFailedError("destination-down", str(error), source=source_name) from error
            if not await asyncio.to_thread(_reachable, source):
                raise AttemptFailedError("source-down", str(error), source=source_name) from error
            raise AttemptFailedError("storage", str(error), source=source_name) from error
        except ObjectNotFoundError as error:
            raise AttemptFailedError("source-missing", str(error), source=source_name) from error
        except (StorageError, CopyAbortedError, OSError) as error:
            raise AttemptFailedError("storage", str(error), source=source_name) from error

    async def _register(self, destination: KnownSite, claimed: Claimed, uri: str) -> int | None:
        """Ingestion on arrival: the destination Site's archive records the copy (with that Site's token)."""
        if destination.archive_url is None:
            return None
        replica = ReplicaRegistration(
            dataset_id=claimed.dataset_id,
            site=claimed.destination,
            uri=uri,
            size=claimed.size,
            adler32=claimed.adler32,
            sha256=claimed.sha256,
        )
        url, token = destination.archive_url, destination.archive_token
        try:
            found = await self.archive.register_replica(url, token, replica)
            if found["state"] != ReplicaState.AVAILABLE.value:
                # The same copy registered before and since declared bad (the repair pass re-copied it onto the
                # same key): the verified bytes make it available again, announced as a state change.
                await self.archive.set_replica_state(url, token, int(found["id"]), ReplicaState.AVAILABLE)
        except ArchiveError as error:
            raise AttemptFailedError("archive", str(error), permanent=not error.retryable) from error
        return int(found["id"])

    async def _failed(self, claimed: Claimed, failure: AttemptFailedError) -> float:
        """Record the failure and decide the retry; returns the delay before the message comes back."""
        now = datetime.now(UTC)
        failing_for = (now - claimed.first_failed_at).total_seconds() if claimed.first_failed_at else 0.0
        attempts = max(claimed.attempts, self.policy.fast_attempts) if failure.permanent else claimed.attempts
        decision = after_failure(attempts, failing_for, self.policy, random.random())
        if failure.kind == "source-down" and failure.source:
            until = time.monotonic() + SOURCE_QUARANTINE_PROBES * self.settings.probe_interval_s
            self.quarantined[failure.source] = until
        avoid = failure.source if failure.kind == "checksum" else None
        delay = 0.0 if failure.kind == "checksum" and claimed.attempts == 1 else decision.delay_s
        async with self.pool.connection() as conn:
            await rows.fail(conn, claimed, str(failure), delay, decision.stuck, failure.source, avoid)
        outcome = "stuck" if decision.stuck else "retry"
        self.metrics.copies.labels(claimed.destination, outcome).inc()
        log.warning(
            "worker: transfer %s to %s failed (attempt %d, %s in %.1f s): %s",
            claimed.id,
            claimed.destination,
            claimed.attempts,
            outcome,
            delay,
            failure,
        )
        if failure.kind == "destination-down":
            await self._destination_failed(claimed.destination, str(failure))
        return delay

    # ------------------------------------------------------------------ destination health

    async def _destination_failed(self, destination: str, reason: str) -> None:
        gate = self.gates.setdefault(destination, Gate())
        gate.failures += 1
        if not gate.paused and gate.failures >= self.settings.pause_after_failures:
            gate.paused, gate.reason = True, reason
            self.metrics.paused.labels(destination).set(1)
            log.error("worker: %s paused after %d failures in a row: %s", destination, gate.failures, reason)
            async with self.pool.connection() as conn:
                await rows.record_pause(conn, destination, self.name, reason)

    async def _probe_until_reachable(self, destination: str, gate: Gate) -> None:
        await asyncio.sleep(self.settings.probe_interval_s)
        store = self._site(destination).store
        assert store is not None
        if not await asyncio.to_thread(_reachable, store):
            async with self.pool.connection() as conn:
                stuck = await rows.stick_waiting(
                    conn, destination, f"{destination} unreachable, paused: {gate.reason}", self.settings.stuck_after_s
                )
            if stuck:
                log.warning("worker: %d transfers to %s are STUCK while it is unreachable", stuck, destination)
            return
        gate.paused, gate.failures, gate.reason = False, 0, ""
        self.metrics.paused.labels(destination).set(0)
        async with self.pool.connection() as conn:
            await rows.record_resume(conn, destination, self.name)
            woken = await rows.wake_destination(conn, destination)
        await self._publish(woken)
        log.info("worker: %s reachable again; %d waiting transfers resumed", destination, len(woken))

    async def _publish(self, items: list[QueuedTransfer]) -> None:
        if not items:
            return
        await self.queue.publish(items)
        async with self.pool.connection() as conn:
            await mark_published(conn, items)


def _unexpected(error: Exception) -> AttemptFailedError:
    """A failure nobody classified (a bug, an archive answer we cannot read): recorded, retried, never lost."""
    log.exception("worker: unexpected failure", exc_info=error)
    return AttemptFailedError("internal", f"{type(error).__name__}: {error}")


def _reachable(store: Store) -> bool:
    try:
        store.stat(PROBE_KEY)
    except ObjectNotFoundError:
        return True
    except StorageError:
        return False
    return True


def _damage(store: Store, key: str) -> None:
    """The fault hook: flip one byte of a copy between its writing and its verification (tests only)."""
    data = bytearray(store.read_bytes(key))
    if data:
        data[len(data) // 2] ^= 0xFF
    store.put_bytes(key, bytes(data))


async def serve_worker(settings: TransferSettings, sites: SiteBook | None = None) -> None:
    """``sgs transfer worker``: a worker process on its own (the service's schema, queue and Sites)."""
    import signal

    import nats

    from sgs.telemetry import TracingSettings, configure
    from sgs_transfer.db import create_pool, migrate
    from sgs_transfer.queue import QueueNames
    from sgs_transfer.sites import load_site_book

    if not settings.nats_url:
        raise SystemExit("sgs transfer worker needs SGS_TRANSFER_NATS_URL")
    await asyncio.to_thread(migrate, settings.dsn, settings.db_schema)
    book = sites if sites is not None else await asyncio.to_thread(load_site_book, settings)
    unknown = sorted(set(settings.destinations) - set(book.names))
    if unknown and not settings.sites_from_cluster:  # a cluster's Sites may appear later; a file's will not
        known = ", ".join(book.names) or "none"
        raise SystemExit(f"SGS_TRANSFER_DESTINATIONS: {', '.join(unknown)} not among the Sites ({known})")
    pool = create_pool(settings.dsn, settings.db_schema, settings.pool_min_size, settings.pool_max_size, "sgs-worker")
    await pool.open(wait=True)
    tracing = configure("sgs-transfer-worker", TracingSettings(), resource={"service.instance.id": worker_id(settings)})
    archive = ArchiveClient(settings.archive_timeout_s, tracing)
    nc = await nats.connect(settings.nats_url, max_reconnect_attempts=-1, reconnect_time_wait=0.5)
    queue = TransferQueue(nc.jetstream(), QueueNames(settings.namespace), settings.ack_wait_s, settings.max_ack_pending)
    await queue.ensure_stream()
    metrics = TransferMetrics()
    if settings.worker_metrics_port is not None:  # a worker on its own is a deployable: it is scraped too
        from prometheus_client import start_http_server

        start_http_server(settings.worker_metrics_port, settings.worker_metrics_address, registry=metrics.registry)
    unknown = sorted(set(settings.destinations) - set(book.names))
    if unknown and not settings.sites_from_cluster:  # a cluster's Sites may appear later; a file's will not
        raise SystemExit(
            f"SGS_TRANSFER_DESTINATIONS: {', '.join(unknown)} not among the Sites ({', '.join(book.names)})"
        )
    worker = Worker(settings, pool, book, archive, queue, metrics, tracing)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    task = asyncio.create_task(worker.run(), name="worker")
    log.info("worker %s: copying into %s", worker.name, ", ".join(worker.destinations()) or "no Site yet")
    try:
        await asyncio.wait({task, asyncio.create_task(stop.wait())}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        worker.close()
        await nc.drain()
        await archive.close()
        await pool.close()
        tracing.shutdown()

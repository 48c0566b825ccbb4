"""The repair pass: the slow safety net behind the event-driven paths (push, not poll).

Every ``repair_interval_s`` it catches what events and acknowledgements could have missed:

- transfers committed but never published (a crash between commit and publish), and ACTIVE ones whose worker
  stopped renewing its lease (killed without its message being redelivered yet): published again;
- rules whose bulk evaluation never finished (a restart mid-way) or that cannot be met as asked (a Site may
  have been added, or have left maintenance): evaluated again;
- expired rules: deleted, releasing their locks;
- copies this service made whose bytes went missing or bad at their Site: a batch of the least recently
  verified ones is re-read; one that fails is declared ``bad`` at its archive and queued again.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from sgs.model.checksum import Adler32, Checksums
from sgs.model.replica import ReplicaState
from sgs.storage import ChecksumMismatchError, ObjectNotFoundError, StorageError, Store, StoreUnavailableError, verify
from sgs_transfer.archive_client import ArchiveError
from sgs_transfer.deps import TransferState
from sgs_transfer.queue import QueuedTransfer, TransferQueue
from sgs_transfer.store import plan
from sgs_transfer.store import replicas as replica_rows
from sgs_transfer.store import rules as rule_rows

log = logging.getLogger(__name__)

BATCH = 10_000
REEVALUATE_UNSATISFIED_EVERY = 10
"""Passes between re-evaluations of rules that cannot be met (they are also re-evaluated when Sites change)."""


class Repair:
    def __init__(self, state: TransferState, queue: TransferQueue) -> None:
        self.state = state
        self.queue = queue
        self.passes = 0
        self._sites_seen: tuple[str, ...] = ()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.state.settings.repair_interval_s)
            await self.once()

    async def once(self) -> dict[str, int]:
        """One pass; returns what it did, by kind."""
        self.passes += 1
        done = {
            "republished": await self.republish(),
            "expired_rules": await self.expire_rules(),
            "evaluations": await self.reevaluate(),
            "bad_copies": await self.verify_copies(),
        }
        for kind, count in done.items():
            if count:
                self.state.metrics.repaired.labels(kind).inc(count)
                log.info("repair: %s %d", kind, count)
        return done

    async def republish(self) -> int:
        settings = self.state.settings
        async with self.state.pool.connection() as conn:
            cursor = await conn.execute(
                """UPDATE transfer SET state = 'QUEUED', generation = generation + 1, queued_at = now(),
                          lease_until = NULL
                    WHERE state = 'ACTIVE' AND lease_until < now() - make_interval(secs => %s)
                   RETURNING id""",
                (settings.ack_wait_s,),
            )
            expired = len(await cursor.fetchall())
            items = await plan.unpublished(conn, settings.republish_after_s if not expired else 0.0, BATCH)
        if expired:
            log.warning("repair: %d transfers held by workers that stopped renewing their lease", expired)
        await self._publish(items)
        return len(items)

    async def _publish(self, items: list[QueuedTransfer]) -> None:
        if not items:
            return
        await self.queue.publish(items)
        async with self.state.pool.connection() as conn:
            await plan.mark_published(conn, items)

    async def expire_rules(self) -> int:
        async with self.state.pool.connection() as conn:
            expired = await rule_rows.expired(conn, BATCH)
            for rule_id in expired:
                released = await rule_rows.delete(conn, rule_id)
                log.info("repair: rule %s expired; %d locks released", rule_id, released)
        return len(expired)

    async def reevaluate(self) -> int:
        evaluator = self.state.evaluator
        if evaluator is None:
            return 0
        sites = tuple(self.state.sites.names)
        changed = sites != self._sites_seen
        self._sites_seen = sites
        again = changed or self.passes % REEVALUATE_UNSATISFIED_EVERY == 0
        async with self.state.pool.connection() as conn:
            cursor = await conn.execute(
                """SELECT id FROM rule WHERE NOT suspended
                      AND (evaluated_at IS NULL OR (%s AND unsatisfied IS NOT NULL))""",
                (again,),
            )
            rule_ids: list[uuid.UUID] = [row["id"] for row in await cursor.fetchall()]
        for rule_id in rule_ids:
            evaluator.schedule(rule_id)
        return len(rule_ids)

    async def verify_copies(self) -> int:
        """Re-read the least recently verified copies this service made; re-queue those that are bad."""
        batch = self.state.settings.verify_batch
        if batch == 0:
            return 0
        async with self.state.pool.connection() as conn:
            cursor = await conn.execute(
                """SELECT r.dataset_id, r.site, r.uri, r.archive_replica_id, d.size, d.adler32, d.sha256
                     FROM replica r JOIN dataset d ON d.id = r.dataset_id
                    WHERE r.origin = 'transfer' AND r.state = 'available'
                    ORDER BY r.verified_at NULLS FIRST LIMIT %s""",
                (batch,),
            )
            candidates = await cursor.fetchall()
        bad = 0
        for row in candidates:
            known = self.state.sites.get(row["site"])
            if known is None or known.store is None:
                continue
            problem = await asyncio.to_thread(
                _check_copy, known.store, row["uri"], int(row["size"]), str(row["adler32"]), str(row["sha256"])
            )
            if problem is None:
                async with self.state.pool.connection() as conn:
                    await conn.execute(
                        "UPDATE replica SET verified_at = now() WHERE dataset_id = %s AND site = %s",
                        (row["dataset_id"], row["site"]),
                    )
                continue
            if problem == "unreachable":
                continue  # a Site that is down is not a bad copy; the next pass looks again
            bad += 1
            log.error("repair: copy of %s at %s is bad: %s", row["dataset_id"], row["site"], problem)
            await self._declare_bad(row["dataset_id"], row["site"], row["archive_replica_id"])
        return bad

    async def _declare_bad(self, dataset_id: uuid.UUID, site: str, archive_replica_id: int | None) -> None:
        known = self.state.sites.get(site)
        if known is not None and known.archive_url and archive_replica_id:
            try:
                await self.state.archive.set_replica_state(
                    known.archive_url, known.archive_token, archive_replica_id, ReplicaState.BAD
                )
            except ArchiveError as error:  # still re-copied; the archive hears of it from the new registration
                log.warning("repair: could not mark the copy at %s bad in its archive: %s", site, error)
        async with self.state.pool.connection() as conn:
            requeued = await replica_rows.lost(conn, dataset_id, site, "bad")
        await self._publish(requeued)


def _check_copy(store: Store, uri: str, size: int, adler32: str, sha256: str) -> str | None:
    """None if the object is there with the expected content, else what is wrong ('unreachable' if the store is)."""
    try:
        verify(store, store.key_of(uri), Checksums(size=size, adler32=Adler32.parse(adler32), sha256=sha256))
    except ObjectNotFoundError:
        return "missing"
    except ChecksumMismatchError as error:
        return "; ".join(error.differences)
    except StoreUnavailableError:
        return "unreachable"
    except StorageError as error:
        return str(error)
    return None

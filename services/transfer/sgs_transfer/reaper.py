"""The reaper: deletes copies no rule needs any more — never the last available copy of a dataset, never a copy
a transfer is reading, never one it did not make, and not at all while rule evaluation lags.

A copy becomes a candidate when the last lock on it is released (its rule deleted or expired): it gets a
tombstone. Each candidate is taken in its own transaction that locks every replica row of its dataset and
re-checks, under that lock, that another copy is ``available`` (so two tombstoned copies of one dataset can
never both go: the first is 'deleting' when the second is checked), then marks it ``deleting`` before any
byte is removed. Evaluation lag (events not yet evaluated, a rule's bulk evaluation pending) pauses reaping:
a rule created a moment ago may want exactly the copy about to go (rucio#1578, #8366); a copy that is the only
source of a pending transfer is never reaped (rucio#6513).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass

from sgs.model.replica import ReplicaState
from sgs_transfer.archive_client import ArchiveError
from sgs_transfer.db import Conn
from sgs_transfer.deps import TransferState

log = logging.getLogger(__name__)

BATCH = 500


@dataclass(frozen=True)
class Candidate:
    dataset_id: uuid.UUID
    site: str
    uri: str
    archive_replica_id: int | None


@dataclass
class ReapReport:
    reaped: int = 0
    kept: int = 0
    paused: str | None = None


class Reaper:
    def __init__(self, state: TransferState) -> None:
        self.state = state

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.state.settings.reaper_interval_s)
            report = await self.once()
            if report.paused:
                log.info("reaper: paused (%s)", report.paused)
            elif report.reaped:
                log.info("reaper: %d copies deleted, %d kept", report.reaped, report.kept)

    async def lagging(self) -> str | None:
        """Why reaping must wait now, or None."""
        evaluator = self.state.evaluator
        if evaluator is None or not evaluator.connected:
            return "the rule evaluator is not consuming events"
        lag = await evaluator.lag()
        if lag:
            return f"{lag} archive events not evaluated yet"
        if evaluator.busy:
            return "a rule's datasets are being evaluated"
        async with self.state.pool.connection() as conn:
            row = await (
                await conn.execute("SELECT count(*) AS n FROM rule WHERE evaluated_at IS NULL AND NOT suspended")
            ).fetchone()
        if row and row["n"]:
            return f"{row['n']} rules not evaluated yet"
        return None

    async def once(self) -> ReapReport:
        report = ReapReport()
        report.paused = await self.lagging()
        self.state.metrics.reaper_passes.labels("paused" if report.paused else "ran").inc()
        if report.paused:
            return report
        async with self.state.pool.connection() as conn:
            cursor = await conn.execute(
                """SELECT r.dataset_id, r.site, r.uri, r.archive_replica_id FROM replica r
                    WHERE r.tombstone <= now() - make_interval(secs => %s) AND r.origin = 'transfer'
                      AND r.state IN ('available', 'deleting')
                    ORDER BY r.tombstone LIMIT %s""",
                (self.state.settings.tombstone_grace_s, BATCH),
            )
            candidates = [Candidate(**row) for row in await cursor.fetchall()]
        for candidate in candidates:
            if await self.reap(candidate):
                report.reaped += 1
            else:
                report.kept += 1
        return report

    async def reap(self, candidate: Candidate) -> bool:
        async with self.state.pool.connection() as conn:
            if not await _claim(conn, candidate):
                return False
        known = self.state.sites.get(candidate.site)
        if known is None or known.store is None:
            log.warning("reaper: %s is not a known Site with a store; its copy stays 'deleting'", candidate.site)
            return False
        if known.archive_url and candidate.archive_replica_id:
            try:
                await self.state.archive.set_replica_state(
                    known.archive_url, known.archive_token, candidate.archive_replica_id, ReplicaState.DELETED
                )
            except ArchiveError as error:  # stays 'deleting' (not a source any more); retried next pass
                log.warning("reaper: archive at %s refused the deletion for now: %s", candidate.site, error)
                return False
        store = known.store
        await asyncio.to_thread(lambda: store.delete(store.key_of(candidate.uri)))
        async with self.state.pool.connection() as conn:
            await conn.execute(
                "UPDATE replica SET state = 'deleted', updated_at = now() WHERE dataset_id = %s AND site = %s",
                (candidate.dataset_id, candidate.site),
            )
        self.state.metrics.reaped.inc()
        return True


async def _claim(conn: Conn, candidate: Candidate) -> bool:
    """Under a lock on the dataset's replica rows: still unlocked, another copy available, nobody reading it."""
    await conn.execute("SELECT 1 FROM replica WHERE dataset_id = %s FOR UPDATE", (candidate.dataset_id,))
    cursor = await conn.execute(
        """SELECT
             (SELECT state FROM replica WHERE dataset_id = %(d)s AND site = %(s)s) AS state,
             EXISTS (SELECT 1 FROM lock WHERE dataset_id = %(d)s AND site = %(s)s) AS locked,
             (SELECT count(*) FROM replica WHERE dataset_id = %(d)s AND site <> %(s)s AND state = 'available')
               AS others,
             EXISTS (SELECT 1 FROM transfer WHERE dataset_id = %(d)s AND source = %(s)s AND state = 'ACTIVE')
               AS reading""",
        {"d": candidate.dataset_id, "s": candidate.site},
    )
    row = await cursor.fetchone()
    assert row is not None
    if row["state"] == "deleting":
        return True  # claimed by an earlier pass that did not finish
    if row["state"] != "available" or row["locked"] or row["others"] == 0 or row["reading"]:
        if row["locked"]:
            await conn.execute(
                "UPDATE replica SET tombstone = NULL WHERE dataset_id = %s AND site = %s",
                (candidate.dataset_id, candidate.site),
            )
        return False
    await conn.execute(
        "UPDATE replica SET state = 'deleting', updated_at = now() WHERE dataset_id = %s AND site = %s",
        (candidate.dataset_id, candidate.site),
    )
    return True

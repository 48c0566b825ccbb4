"""Transfer rows: listing by state, and the state machine a worker drives (claim, copied, done, failed)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sgs.replication.rules import TransferState
from sgs.service.errors import NotFoundError
from sgs_transfer.db import Conn
from sgs_transfer.queue import QueuedTransfer
from sgs_transfer.schemas import TransferPage, TransferPublic

_COLUMNS = """t.id, t.dataset_id, t.destination, t.source, t.state, t.priority, t.attempts, t.last_error,
    t.bytes, t.next_attempt_at, t.queued_at, t.started_at, t.copied_at, t.registered_at, t.done_at"""


async def page(
    conn: Conn,
    state: TransferState | None,
    destination: str | None,
    rule_id: uuid.UUID | None,
    limit: int,
    cursor_id: int | None,
) -> TransferPage:
    by_rule = (
        "AND EXISTS (SELECT 1 FROM lock l WHERE l.rule_id = %s AND l.dataset_id = t.dataset_id "
        "AND l.site = t.destination)"
        if rule_id
        else "AND %s::uuid IS NULL"
    )
    cursor = await conn.execute(
        f"""SELECT {_COLUMNS} FROM transfer t
             WHERE (%s::text IS NULL OR t.state = %s) AND (%s::text IS NULL OR t.destination = %s)
               {by_rule} AND t.id > %s
             ORDER BY t.id LIMIT %s""",
        (
            state.value if state else None,
            state.value if state else None,
            destination,
            destination,
            rule_id,
            cursor_id or 0,
            limit + 1,
        ),
    )
    rows = await cursor.fetchall()
    items = [TransferPublic.model_validate(row) for row in rows[:limit]]
    return TransferPage(items=items, next_cursor=items[-1].id if len(rows) > limit else None)


async def get(conn: Conn, transfer_id: int) -> TransferPublic:
    cursor = await conn.execute(f"SELECT {_COLUMNS} FROM transfer t WHERE t.id = %s", (transfer_id,))
    row = await cursor.fetchone()
    if row is None:
        raise NotFoundError(("path", "transfer_id"), f"no transfer {transfer_id}")
    return TransferPublic.model_validate(row)


async def counts(conn: Conn) -> dict[str, int]:
    cursor = await conn.execute("SELECT state, count(*) AS n FROM transfer GROUP BY state")
    return {str(row["state"]): int(row["n"]) for row in await cursor.fetchall()}


@dataclass(frozen=True)
class Claimed:
    """A transfer a worker now holds (until ``lease_until``), with what it needs to make the copy."""

    id: int
    generation: int
    dataset_id: uuid.UUID
    dataset_type: str
    destination: str
    attempts: int
    size: int
    adler32: str
    sha256: str
    copied_at: datetime | None
    first_failed_at: datetime | None


def _claimed(row: dict[str, Any]) -> Claimed:
    return Claimed(
        id=row["id"],
        generation=row["generation"],
        dataset_id=row["dataset_id"],
        dataset_type=row["dataset_type"],
        destination=row["destination"],
        attempts=row["attempts"],
        size=row["size"],
        adler32=row["adler32"],
        sha256=row["sha256"],
        copied_at=row["copied_at"],
        first_failed_at=row["first_failed_at"],
    )


async def claim(conn: Conn, transfer_id: int, generation: int, worker: str, lease_s: float) -> Claimed | None:
    """Take a transfer for one attempt: only a QUEUED or STUCK one of this generation, or an ACTIVE one whose
    holder's lease ran out, and only while some unsuspended rule still wants it."""
    cursor = await conn.execute(
        """UPDATE transfer t SET state = 'ACTIVE', attempts = t.attempts + 1, worker = %s,
                  lease_until = now() + make_interval(secs => %s), started_at = COALESCE(t.started_at, now())
             FROM dataset d
            WHERE t.id = %s AND t.generation = %s AND d.id = t.dataset_id
              AND (t.state IN ('QUEUED', 'STUCK') OR (t.state = 'ACTIVE' AND t.lease_until < now()))
              AND EXISTS (SELECT 1 FROM lock l JOIN rule r ON r.id = l.rule_id
                           WHERE l.dataset_id = t.dataset_id AND l.site = t.destination AND NOT r.suspended)
           RETURNING t.id, t.generation, t.dataset_id, d.dataset_type, t.destination, t.attempts, d.size, d.adler32,
                     d.sha256, t.copied_at, t.first_failed_at""",
        (worker, lease_s, transfer_id, generation),
    )
    row = await cursor.fetchone()
    return _claimed(row) if row else None


@dataclass(frozen=True)
class NotClaimed:
    """Why a message's transfer could not be taken, and what to do with the message."""

    drop: bool
    retry_in_s: float = 0.0
    why: str = ""


async def why_not_claimed(conn: Conn, transfer_id: int, generation: int) -> NotClaimed:
    cursor = await conn.execute(
        """SELECT t.state, t.generation, GREATEST(extract(epoch FROM t.lease_until - now()), 0)::float AS lease_left,
                  EXISTS (SELECT 1 FROM lock l JOIN rule r ON r.id = l.rule_id
                           WHERE l.dataset_id = t.dataset_id AND l.site = t.destination AND NOT r.suspended) AS wanted
             FROM transfer t WHERE t.id = %s""",
        (transfer_id,),
    )
    row = await cursor.fetchone()
    if row is None:
        return NotClaimed(True, why="no such transfer (its dataset or rule was deleted)")
    if row["generation"] != generation:
        return NotClaimed(True, why=f"superseded by generation {row['generation']}")
    if row["state"] in ("DONE", "CANCELLED"):
        return NotClaimed(True, why=f"already {row['state']}")
    if row["state"] == "ACTIVE":
        return NotClaimed(False, float(row["lease_left"]) + 1.0, "held by another worker")
    if not row["wanted"]:
        # Only suspended rules want it: park it; a resume re-publishes it under a new generation.
        await conn.execute(
            "UPDATE transfer SET generation = generation + 1, queued_at = now() WHERE id = %s", (transfer_id,)
        )
        return NotClaimed(True, why="wanted only by suspended rules")
    return NotClaimed(False, 1.0, "not claimable yet")


async def extend_lease(conn: Conn, transfer_id: int, worker: str, lease_s: float) -> None:
    await conn.execute(
        """UPDATE transfer SET lease_until = now() + make_interval(secs => %s)
            WHERE id = %s AND worker = %s AND state = 'ACTIVE'""",
        (lease_s, transfer_id, worker),
    )


@dataclass(frozen=True)
class Sources:
    replicas: dict[str, str]
    """Site -> URI of every available copy but the destination's."""
    expressions: list[str]
    """Source preferences of the rules that want this copy."""
    active: dict[str, int]
    """Transfers reading from each Site right now."""
    avoid: str | None


async def sources(conn: Conn, claimed: Claimed) -> Sources:
    cursor = await conn.execute(
        "SELECT site, uri FROM replica WHERE dataset_id = %s AND state = 'available' AND site <> %s",
        (claimed.dataset_id, claimed.destination),
    )
    replicas = {str(r["site"]): str(r["uri"]) for r in await cursor.fetchall()}
    cursor = await conn.execute(
        """SELECT DISTINCT r.source_expression FROM lock l JOIN rule r ON r.id = l.rule_id
            WHERE l.dataset_id = %s AND l.site = %s AND r.source_expression IS NOT NULL""",
        (claimed.dataset_id, claimed.destination),
    )
    expressions = [str(r["source_expression"]) for r in await cursor.fetchall()]
    active: dict[str, int] = {}
    if replicas:
        cursor = await conn.execute(
            """SELECT source, count(*) AS n FROM transfer WHERE state = 'ACTIVE' AND source = ANY(%s)
                GROUP BY source""",
            (list(replicas),),
        )
        active = {str(r["source"]): int(r["n"]) for r in await cursor.fetchall()}
    row = await (await conn.execute("SELECT avoid_source FROM transfer WHERE id = %s", (claimed.id,))).fetchone()
    return Sources(replicas, expressions, active, row["avoid_source"] if row else None)


async def mark_copied(conn: Conn, claimed: Claimed, source: str, uri: str, size: int) -> None:
    """The copy is at the destination and verified; not yet announced (the replica stays 'copying')."""
    await conn.execute(
        """UPDATE transfer SET copied_at = now(), source = %s, bytes = %s WHERE id = %s""",
        (source, size, claimed.id),
    )
    await conn.execute(
        """INSERT INTO replica (dataset_id, site, uri, state, origin, verified_at)
           VALUES (%s, %s, %s, 'copying', 'transfer', now())
           ON CONFLICT (dataset_id, site) DO UPDATE
              SET uri = EXCLUDED.uri, state = 'copying', origin = 'transfer', verified_at = now(), tombstone = NULL,
                  updated_at = now()""",
        (claimed.dataset_id, claimed.destination, uri),
    )


async def lock_rules_of(conn: Conn, dataset_id: uuid.UUID, site: str) -> None:
    """Lock (in id order) the rules that hold locks on this (dataset, Site): the first step of the lock order."""
    await conn.execute(
        """SELECT 1 FROM rule WHERE id IN (SELECT rule_id FROM lock WHERE dataset_id = %s AND site = %s)
            ORDER BY id FOR NO KEY UPDATE""",
        (dataset_id, site),
    )


async def finish(conn: Conn, claimed: Claimed, archive_replica_id: int | None) -> None:
    """Registered at the destination: the locks on it OK, the transfer DONE, the copy available."""
    await lock_rules_of(conn, claimed.dataset_id, claimed.destination)
    await conn.execute(
        "UPDATE lock SET state = 'OK' WHERE dataset_id = %s AND site = %s AND state <> 'OK'",
        (claimed.dataset_id, claimed.destination),
    )
    await conn.execute(
        """UPDATE transfer SET state = 'DONE', registered_at = now(), done_at = now(), lease_until = NULL,
                  last_error = NULL, first_failed_at = NULL, avoid_source = NULL
            WHERE id = %s""",
        (claimed.id,),
    )
    await conn.execute(
        """UPDATE replica SET state = 'available', archive_replica_id = COALESCE(%s, archive_replica_id),
                  updated_at = now(),
                  tombstone = CASE WHEN EXISTS (SELECT 1 FROM lock l WHERE l.dataset_id = %s AND l.site = %s)
                                   THEN NULL ELSE now() END
            WHERE dataset_id = %s AND site = %s""",
        (archive_replica_id, claimed.dataset_id, claimed.destination, claimed.dataset_id, claimed.destination),
    )


async def fail(
    conn: Conn,
    claimed: Claimed,
    error: str,
    delay_s: float,
    stuck: bool,
    source: str | None,
    avoid_source: str | None,
) -> None:
    state = "STUCK" if stuck else "REPLICATING"
    await lock_rules_of(conn, claimed.dataset_id, claimed.destination)
    await conn.execute(
        "UPDATE lock SET state = %s WHERE dataset_id = %s AND site = %s AND state NOT IN ('OK', %s)",
        (state, claimed.dataset_id, claimed.destination, state),
    )
    await conn.execute(
        """UPDATE transfer SET state = %s, last_error = %s, next_attempt_at = now() + make_interval(secs => %s),
                  first_failed_at = COALESCE(first_failed_at, now()), lease_until = NULL,
                  source = COALESCE(%s, source), avoid_source = %s
            WHERE id = %s AND state = 'ACTIVE'""",
        ("STUCK" if stuck else "QUEUED", error[:2000], delay_s, source, avoid_source, claimed.id),
    )


async def wake_destination(conn: Conn, destination: str) -> list[QueuedTransfer]:
    """A destination is reachable again: its waiting transfers get a new generation (published at once; the old
    messages, delayed by backoff, are dropped as superseded when they come)."""
    cursor = await conn.execute(
        """UPDATE transfer SET generation = generation + 1, next_attempt_at = now(), queued_at = now()
            WHERE destination = %s AND state IN ('QUEUED', 'STUCK')
           RETURNING id, generation, destination""",
        (destination,),
    )
    return [QueuedTransfer(r["id"], r["generation"], r["destination"]) for r in await cursor.fetchall()]


async def record_pause(conn: Conn, destination: str, worker: str, reason: str) -> None:
    await conn.execute(
        "INSERT INTO destination_pause (site, worker, reason) VALUES (%s, %s, %s)", (destination, worker, reason[:500])
    )


async def record_resume(conn: Conn, destination: str, worker: str) -> None:
    await conn.execute(
        "UPDATE destination_pause SET resumed_at = now() WHERE site = %s AND worker = %s AND resumed_at IS NULL",
        (destination, worker),
    )


async def stick_waiting(conn: Conn, destination: str, reason: str, stuck_after_s: float) -> int:
    """A paused destination's transfers that have waited (or failed) longer than ``stuck_after_s`` are STUCK
    with the reason: a rule says why it is not progressing even when no attempt is made."""
    waiting = """SELECT id, dataset_id FROM transfer WHERE destination = %(d)s AND state = 'QUEUED'
                  AND COALESCE(first_failed_at, queued_at) < now() - make_interval(secs => %(s)s)"""
    params = {"d": destination, "s": stuck_after_s, "e": reason[:2000]}
    await conn.execute(
        f"""SELECT 1 FROM rule WHERE id IN (SELECT l.rule_id FROM lock l JOIN ({waiting}) w
                 ON w.dataset_id = l.dataset_id WHERE l.site = %(d)s)
            ORDER BY id FOR NO KEY UPDATE""",
        params,
    )
    await conn.execute(
        f"""UPDATE lock l SET state = 'STUCK' FROM ({waiting}) w
             WHERE l.dataset_id = w.dataset_id AND l.site = %(d)s AND l.state = 'REPLICATING'""",
        params,
    )
    cursor = await conn.execute(
        f"""UPDATE transfer t SET state = 'STUCK', last_error = %(e)s,
                  first_failed_at = COALESCE(first_failed_at, now())
              FROM ({waiting}) w WHERE t.id = w.id""",
        params,
    )
    return cursor.rowcount

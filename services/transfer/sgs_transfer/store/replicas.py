"""Replica rows: what the archive's events say about copies, and re-queueing a copy that was lost."""

from __future__ import annotations

import uuid

from sgs_transfer.db import Conn
from sgs_transfer.queue import QueuedTransfer


async def dataset_known(conn: Conn, dataset_id: uuid.UUID) -> bool:
    row = await (await conn.execute("SELECT 1 FROM dataset WHERE id = %s", (dataset_id,))).fetchone()
    return row is not None


async def seen_available(conn: Conn, dataset_id: uuid.UUID, site: str, uri: str, archive_replica_id: int) -> None:
    """An ``sgs.replica.available`` event: a copy we did not know becomes a possible source (ours is kept, and
    learns its archive id). Only rows that change are locked."""
    await conn.execute(
        """INSERT INTO replica (dataset_id, site, uri, state, origin, archive_replica_id)
           VALUES (%s, %s, %s, 'available', 'archive', %s) ON CONFLICT (dataset_id, site) DO NOTHING""",
        (dataset_id, site, uri, archive_replica_id),
    )
    await conn.execute(
        """UPDATE replica SET archive_replica_id = %s
            WHERE dataset_id = %s AND site = %s AND archive_replica_id IS NULL AND state = 'available'""",
        (archive_replica_id, dataset_id, site),
    )


async def lost(conn: Conn, dataset_id: uuid.UUID, site: str, state: str) -> list[QueuedTransfer]:
    """A copy was declared ``bad`` or ``deleted`` (by the archive's users or our repair pass): where a rule
    still wants it, its locks go back to REPLICATING and a transfer is queued again."""
    row = await (
        await conn.execute("SELECT state FROM replica WHERE dataset_id = %s AND site = %s", (dataset_id, site))
    ).fetchone()
    if row is None or row["state"] in (state, "deleting", "deleted"):
        return []
    queued = await requeue(conn, [(dataset_id, site)])
    await conn.execute(
        """UPDATE replica SET state = %s, updated_at = now()
            WHERE dataset_id = %s AND site = %s AND state NOT IN (%s, 'deleting', 'deleted')""",
        (state, dataset_id, site, state),
    )
    return queued


async def requeue(conn: Conn, pairs: list[tuple[uuid.UUID, str]]) -> list[QueuedTransfer]:
    """For (dataset, Site) pairs some rule locks: locks back to REPLICATING, a (new generation of the) transfer
    queued. Returns what to publish. Takes row locks in the service's order: rule, lock, transfer."""
    if not pairs:
        return []
    datasets, sites = [d for d, _ in pairs], [s for _, s in pairs]
    await conn.execute(
        """SELECT 1 FROM rule WHERE id IN (SELECT l.rule_id FROM lock l
                 JOIN unnest(%s::uuid[], %s::text[]) AS p(dataset_id, site)
                   ON l.dataset_id = p.dataset_id AND l.site = p.site)
            ORDER BY id FOR NO KEY UPDATE""",
        (datasets, sites),
    )
    await conn.execute(
        """UPDATE lock l SET state = 'REPLICATING' FROM unnest(%s::uuid[], %s::text[]) AS p(dataset_id, site)
            WHERE l.dataset_id = p.dataset_id AND l.site = p.site AND l.state = 'OK'""",
        (datasets, sites),
    )
    cursor = await conn.execute(
        """INSERT INTO transfer (dataset_id, destination, priority, state)
           SELECT p.dataset_id, p.site, max(r.priority), 'QUEUED'
             FROM unnest(%s::uuid[], %s::text[]) AS p(dataset_id, site)
             JOIN lock l ON l.dataset_id = p.dataset_id AND l.site = p.site JOIN rule r ON r.id = l.rule_id
            GROUP BY p.dataset_id, p.site
           ON CONFLICT (dataset_id, destination) DO UPDATE
              SET state = 'QUEUED', generation = transfer.generation + 1, attempts = 0, next_attempt_at = now(),
                  first_failed_at = NULL, last_error = NULL, lease_until = NULL, worker = NULL, queued_at = now(),
                  started_at = NULL, copied_at = NULL, registered_at = NULL, done_at = NULL
            WHERE transfer.state IN ('DONE', 'CANCELLED')
           RETURNING id, generation, destination""",
        (datasets, sites),
    )
    return [QueuedTransfer(row["id"], row["generation"], row["destination"]) for row in await cursor.fetchall()]

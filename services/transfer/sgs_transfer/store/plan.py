"""Rule evaluation in SQL: what the service knows of a batch of datasets, and writing the locks and transfers
a batch of decisions asks for, idempotently (re-running a batch changes nothing)."""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sgs.model.dataset import DataId
from sgs_transfer.db import Conn
from sgs_transfer.queue import QueuedTransfer


@dataclass(frozen=True)
class ReplicaFacts:
    site: str
    uri: str
    state: str


@dataclass(frozen=True)
class DatasetFacts:
    """A dataset as an event or the archive describes it: identity, data ID, file checksums and replicas."""

    id: uuid.UUID
    dataset_type: str
    run: str
    data_id: DataId
    size: int
    adler32: str
    sha256: str
    replicas: tuple[ReplicaFacts, ...] = ()


@dataclass
class Holdings:
    """Per dataset: Sites with an available copy, Sites with an open transfer (and which of those are STUCK)."""

    available: dict[uuid.UUID, set[str]] = field(default_factory=lambda: defaultdict(set))
    open: dict[uuid.UUID, set[str]] = field(default_factory=lambda: defaultdict(set))
    stuck: dict[uuid.UUID, set[str]] = field(default_factory=lambda: defaultdict(set))

    def holding(self, dataset_id: uuid.UUID) -> set[str]:
        return self.available[dataset_id] | self.open[dataset_id]


@dataclass(frozen=True)
class LockRow:
    rule_id: uuid.UUID
    dataset_id: uuid.UUID
    site: str
    state: str


@dataclass(frozen=True)
class TransferRow:
    dataset_id: uuid.UUID
    destination: str
    priority: int


async def remember_datasets(conn: Conn, datasets: Sequence[DatasetFacts]) -> None:
    """Record datasets and the replicas their announcement named (what is known already is kept)."""
    if not datasets:
        return
    await conn.execute(
        """INSERT INTO dataset (id, dataset_type, run, data_id, size, adler32, sha256)
           SELECT * FROM unnest(%s::uuid[], %s::text[], %s::text[], %s::jsonb[], %s::bigint[], %s::text[], %s::text[])
           ON CONFLICT (id) DO NOTHING""",
        (
            [d.id for d in datasets],
            [d.dataset_type for d in datasets],
            [d.run for d in datasets],
            [json.dumps(d.data_id) for d in datasets],
            [d.size for d in datasets],
            [d.adler32 for d in datasets],
            [d.sha256 for d in datasets],
        ),
    )
    replicas = [(d.id, r) for d in datasets for r in d.replicas]
    if replicas:
        await conn.execute(
            """INSERT INTO replica (dataset_id, site, uri, state, origin)
               SELECT *, 'archive' FROM unnest(%s::uuid[], %s::text[], %s::text[], %s::text[])
               ON CONFLICT (dataset_id, site) DO NOTHING""",
            (
                [d for d, _ in replicas],
                [r.site for _, r in replicas],
                [r.uri for _, r in replicas],
                [r.state for _, r in replicas],
            ),
        )


async def holdings(conn: Conn, dataset_ids: Sequence[uuid.UUID]) -> Holdings:
    found = Holdings()
    cursor = await conn.execute(
        "SELECT dataset_id, site FROM replica WHERE dataset_id = ANY(%s) AND state = 'available'", (list(dataset_ids),)
    )
    for row in await cursor.fetchall():
        found.available[row["dataset_id"]].add(row["site"])
    cursor = await conn.execute(
        """SELECT dataset_id, destination, state FROM transfer
            WHERE dataset_id = ANY(%s) AND state IN ('QUEUED', 'ACTIVE', 'STUCK')""",
        (list(dataset_ids),),
    )
    for row in await cursor.fetchall():
        found.open[row["dataset_id"]].add(row["destination"])
        if row["state"] == "STUCK":
            found.stuck[row["dataset_id"]].add(row["destination"])
    return found


async def used_bytes(conn: Conn) -> dict[str, int]:
    """Bytes held (or being copied) at each Site, as far as this service knows."""
    cursor = await conn.execute(
        """SELECT r.site, sum(d.size)::bigint AS used FROM replica r JOIN dataset d ON d.id = r.dataset_id
            WHERE r.state IN ('available', 'copying') GROUP BY r.site"""
    )
    return {str(row["site"]): int(row["used"]) for row in await cursor.fetchall()}


async def write(conn: Conn, locks: Sequence[LockRow], transfers: Sequence[TransferRow]) -> list[QueuedTransfer]:
    """Insert locks and transfers; returns the transfers (new, or re-queued after DONE/CANCELLED) to publish."""
    if locks:
        await conn.execute(
            """INSERT INTO lock (rule_id, dataset_id, site, state)
               SELECT * FROM unnest(%s::uuid[], %s::uuid[], %s::text[], %s::text[])
               ON CONFLICT (rule_id, dataset_id, site) DO NOTHING""",
            (
                [lock.rule_id for lock in locks],
                [lock.dataset_id for lock in locks],
                [lock.site for lock in locks],
                [lock.state for lock in locks],
            ),
        )
    queued = await _insert_transfers(conn, transfers)
    if locks:
        # A copy a rule wants again is no longer the reaper's (its tombstone goes).
        await conn.execute(
            """UPDATE replica r SET tombstone = NULL FROM unnest(%s::uuid[], %s::text[]) AS p(dataset_id, site)
                WHERE r.dataset_id = p.dataset_id AND r.site = p.site AND r.tombstone IS NOT NULL""",
            ([lock.dataset_id for lock in locks], [lock.site for lock in locks]),
        )
    return queued


async def _insert_transfers(conn: Conn, transfers: Sequence[TransferRow]) -> list[QueuedTransfer]:
    if not transfers:
        return []
    unique = {(t.dataset_id, t.destination): t for t in transfers}
    cursor = await conn.execute(
        """INSERT INTO transfer (dataset_id, destination, priority, state)
           SELECT d, s, p, 'QUEUED' FROM unnest(%s::uuid[], %s::text[], %s::int[]) AS x(d, s, p)
           ON CONFLICT (dataset_id, destination) DO UPDATE
              SET state = 'QUEUED', generation = transfer.generation + 1, attempts = 0, next_attempt_at = now(),
                  first_failed_at = NULL, last_error = NULL, lease_until = NULL, worker = NULL, queued_at = now(),
                  started_at = NULL, copied_at = NULL, registered_at = NULL, done_at = NULL,
                  priority = GREATEST(transfer.priority, EXCLUDED.priority)
            WHERE transfer.state IN ('DONE', 'CANCELLED')
           RETURNING id, generation, destination""",
        (
            [t.dataset_id for t in unique.values()],
            [t.destination for t in unique.values()],
            [t.priority for t in unique.values()],
        ),
    )
    return [QueuedTransfer(row["id"], row["generation"], row["destination"]) for row in await cursor.fetchall()]


async def mark_published(conn: Conn, queued: Iterable[QueuedTransfer]) -> None:
    items = list(queued)
    if items:
        await conn.execute(
            """UPDATE transfer t SET published_gen = x.g FROM unnest(%s::bigint[], %s::int[]) AS x(id, g)
                WHERE t.id = x.id AND t.published_gen < x.g""",
            ([i.id for i in items], [i.generation for i in items]),
        )


async def unpublished(conn: Conn, older_than_s: float, limit: int) -> list[QueuedTransfer]:
    """Open transfers the queue was never told about (a crash between commit and publish), that some unsuspended
    rule still wants."""
    cursor = await conn.execute(
        """SELECT t.id, t.generation, t.destination FROM transfer t
            WHERE t.published_gen < t.generation AND t.state IN ('QUEUED', 'STUCK')
              AND t.queued_at <= now() - make_interval(secs => %s)
              AND EXISTS (SELECT 1 FROM lock l JOIN rule r ON r.id = l.rule_id
                           WHERE l.dataset_id = t.dataset_id AND l.site = t.destination AND NOT r.suspended)
            ORDER BY t.priority DESC, t.id LIMIT %s""",
        (older_than_s, limit),
    )
    return [QueuedTransfer(row["id"], row["generation"], row["destination"]) for row in await cursor.fetchall()]

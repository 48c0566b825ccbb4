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


async def _stage(conn: Conn, table: str, columns: str, rows: Iterable[tuple[object, ...]]) -> None:
    """Rows into a temporary table (dropped at commit) by COPY: one stream, instead of tens of thousands of
    array elements bound as parameters. ``table`` and ``columns`` are this module's constants, never input."""
    await conn.execute(f"CREATE TEMP TABLE {table} ({columns}) ON COMMIT DROP")
    async with conn.cursor().copy(f"COPY {table} FROM STDIN") as copy:
        for row in rows:
            await copy.write_row(row)


async def stage_datasets(conn: Conn, datasets: Sequence[DatasetFacts]) -> None:
    """A bulk page: the datasets (table ``staged_dataset``) and their replicas, recorded like
    :func:`remember_datasets`; :func:`holdings` then joins the staged table instead of binding every id."""
    await _stage(
        conn,
        "staged_dataset",
        "id uuid PRIMARY KEY, dataset_type text, run text, data_id jsonb, size bigint, adler32 text, sha256 text",
        ((d.id, d.dataset_type, d.run, json.dumps(d.data_id), d.size, d.adler32, d.sha256) for d in datasets),
    )
    await conn.execute("INSERT INTO dataset SELECT * FROM staged_dataset ON CONFLICT (id) DO NOTHING")
    await _stage(
        conn,
        "staged_replica",
        "dataset_id uuid, site text, uri text, state text",
        ((d.id, r.site, r.uri, r.state) for d in datasets for r in d.replicas),
    )
    await conn.execute(
        """INSERT INTO replica (dataset_id, site, uri, state, origin) SELECT *, 'archive' FROM staged_replica
           ON CONFLICT (dataset_id, site) DO NOTHING"""
    )


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


async def holdings(conn: Conn, dataset_ids: Sequence[uuid.UUID] | None) -> Holdings:
    """What the datasets have (``None``: those of the staged bulk page)."""
    found = Holdings()
    among, params = ("dataset_id = ANY(%s)", (list(dataset_ids),)) if dataset_ids is not None else _STAGED
    cursor = await conn.execute(f"SELECT dataset_id, site FROM replica WHERE {among} AND state = 'available'", params)
    for row in await cursor.fetchall():
        found.available[row["dataset_id"]].add(row["site"])
    cursor = await conn.execute(
        f"""SELECT dataset_id, destination, state FROM transfer
            WHERE {among} AND state IN ('QUEUED', 'ACTIVE', 'STUCK')""",
        params,
    )
    for row in await cursor.fetchall():
        found.open[row["dataset_id"]].add(row["destination"])
        if row["state"] == "STUCK":
            found.stuck[row["dataset_id"]].add(row["destination"])
    return found


_STAGED: tuple[str, tuple[object, ...]] = ("dataset_id IN (SELECT id FROM staged_dataset)", ())


async def used_bytes(conn: Conn) -> dict[str, int]:
    """Bytes held (or being copied) at each Site, as far as this service knows."""
    cursor = await conn.execute(
        """SELECT r.site, sum(d.size)::bigint AS used FROM replica r JOIN dataset d ON d.id = r.dataset_id
            WHERE r.state IN ('available', 'copying') GROUP BY r.site"""
    )
    return {str(row["site"]): int(row["used"]) for row in await cursor.fetchall()}


async def write(
    conn: Conn, locks: Sequence[LockRow], transfers: Sequence[TransferRow], *, staged: bool = False
) -> list[QueuedTransfer]:
    """Insert locks and transfers; returns the transfers (new, or re-queued after DONE/CANCELLED) to publish.
    ``staged``: a bulk page, whose rows go through temporary tables by COPY, each insert one statement."""
    if locks and staged:
        await _stage(
            conn,
            "staged_lock",
            "rule_id uuid, dataset_id uuid, site text, state text",
            ((lock.rule_id, lock.dataset_id, lock.site, lock.state) for lock in locks),
        )
        await conn.execute(
            """INSERT INTO lock (rule_id, dataset_id, site, state) SELECT * FROM staged_lock
               ON CONFLICT (rule_id, dataset_id, site) DO NOTHING"""
        )
    elif locks:
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
    queued = await _insert_transfers(conn, transfers, staged)
    if locks:
        # A copy a rule wants again is no longer the reaper's (its tombstone goes).
        wanted, params = (
            ("staged_lock", ())
            if staged
            else (
                "unnest(%s::uuid[], %s::text[]) AS u(dataset_id, site)",
                ([lock.dataset_id for lock in locks], [lock.site for lock in locks]),
            )
        )
        await conn.execute(
            f"""UPDATE replica r SET tombstone = NULL FROM (SELECT dataset_id, site FROM {wanted}) AS p
                WHERE r.dataset_id = p.dataset_id AND r.site = p.site AND r.tombstone IS NOT NULL""",
            params,
        )
    return queued


async def _insert_transfers(conn: Conn, transfers: Sequence[TransferRow], staged: bool) -> list[QueuedTransfer]:
    if not transfers:
        return []
    unique = {(t.dataset_id, t.destination): t for t in transfers}
    params: tuple[object, ...] = ()
    if staged:
        await _stage(
            conn,
            "staged_transfer",
            "d uuid, s text, p int",
            ((t.dataset_id, t.destination, t.priority) for t in unique.values()),
        )
        rows = "staged_transfer AS x"
    else:
        rows = "unnest(%s::uuid[], %s::text[], %s::int[]) AS x(d, s, p)"
        params = (
            [t.dataset_id for t in unique.values()],
            [t.destination for t in unique.values()],
            [t.priority for t in unique.values()],
        )
    cursor = await conn.execute(
        f"""INSERT INTO transfer (dataset_id, destination, priority, state)
           SELECT d, s, p, 'QUEUED' FROM {rows}
           ON CONFLICT (dataset_id, destination) DO UPDATE
              SET state = 'QUEUED', generation = transfer.generation + 1, attempts = 0, next_attempt_at = now(),
                  first_failed_at = NULL, last_error = NULL, lease_until = NULL, worker = NULL, queued_at = now(),
                  started_at = NULL, copied_at = NULL, registered_at = NULL, done_at = NULL,
                  priority = GREATEST(transfer.priority, EXCLUDED.priority)
            WHERE transfer.state IN ('DONE', 'CANCELLED')
           RETURNING id, generation, destination""",
        params,
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

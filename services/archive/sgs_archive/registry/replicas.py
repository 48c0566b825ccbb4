"""Replicas: register, change state (announced through the outbox), locate by dataset and site."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from psycopg import errors as pg_errors

from sgs.events import ReplicaStateChanged, replica_subject
from sgs.model.replica import Replica, ReplicaRecord, ReplicaState
from sgs_archive.auth import Principal
from sgs_archive.db import Conn
from sgs_archive.errors import ConflictError, NotFoundError
from sgs_archive.outbox import enqueue, outbox_row
from sgs_archive.schemas import ReplicaPage

_COLUMNS = "r.id, r.dataset_id, r.site, r.uri, r.size, r.adler32, r.sha256, r.state, r.updated_at"


async def _event(conn: Conn, replica: ReplicaRecord, previous: ReplicaState | None, source: str) -> None:
    cursor = await conn.execute(
        """SELECT dt.name, d.data_id, c.name AS run FROM dataset d
           JOIN dataset_type dt ON dt.id = d.dataset_type_id JOIN collection c ON c.id = d.run_id
           WHERE d.id = %s""",
        (replica.dataset_id,),
    )
    row = await cursor.fetchone()
    if row is None:
        event = ReplicaStateChanged.of(replica, "", source, previous)
    else:
        event = ReplicaStateChanged.of(replica, str(row["name"]), source, previous, row["data_id"], str(row["run"]))
    await enqueue(conn, [outbox_row(replica_subject(replica.state), event)])


async def register(conn: Conn, request: Replica, principal: Principal, source: str) -> tuple[ReplicaRecord, bool]:
    """Register a replica of an existing dataset; the same again is a no-op, another size or checksum a conflict."""
    principal.require_site(request.site, ("body", "site"))
    try:
        async with conn.transaction():
            cursor = await conn.execute(
                f"""INSERT INTO replica AS r (dataset_id, site, uri, size, adler32, sha256, state)
                    VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (dataset_id, site, uri) DO NOTHING
                    RETURNING {_COLUMNS}""".encode(),
                (
                    request.dataset_id,
                    request.site,
                    request.uri,
                    request.size,
                    str(request.adler32),
                    request.sha256,
                    request.state.value,
                ),
            )
            row = await cursor.fetchone()
    except pg_errors.ForeignKeyViolation:
        raise NotFoundError(("body", "dataset_id"), f"no dataset {request.dataset_id}") from None
    if row is not None:
        replica = ReplicaRecord.model_validate(row)
        await _event(conn, replica, None, source)
        return replica, True
    cursor = await conn.execute(
        f"SELECT {_COLUMNS} FROM replica r WHERE dataset_id = %s AND site = %s AND uri = %s".encode(),
        (request.dataset_id, request.site, request.uri),
    )
    existing = ReplicaRecord.model_validate(await cursor.fetchone())
    if (existing.size, existing.adler32, existing.sha256) != (request.size, request.adler32, request.sha256):
        raise ConflictError(("body", "sha256"), "a replica at this site and URI exists with another size or checksum")
    return existing, False


async def update_state(
    conn: Conn, replica_id: int, state: ReplicaState, principal: Principal, source: str
) -> ReplicaRecord:
    cursor = await conn.execute(f"SELECT {_COLUMNS} FROM replica r WHERE r.id = %s FOR UPDATE".encode(), (replica_id,))
    row = await cursor.fetchone()
    if row is None:
        raise NotFoundError(("path", "replica_id"), f"no replica {replica_id}")
    current = ReplicaRecord.model_validate(row)
    principal.require_site(current.site, ("path", "replica_id"))
    if current.state is state:
        return current
    cursor = await conn.execute(
        f"UPDATE replica r SET state = %s, updated_at = now() WHERE r.id = %s RETURNING {_COLUMNS}".encode(),
        (state.value, replica_id),
    )
    updated = ReplicaRecord.model_validate(await cursor.fetchone())
    await _event(conn, updated, current.state, source)
    return updated


async def get(conn: Conn, replica_id: int) -> ReplicaRecord:
    cursor = await conn.execute(f"SELECT {_COLUMNS} FROM replica r WHERE r.id = %s".encode(), (replica_id,))
    row = await cursor.fetchone()
    if row is None:
        raise NotFoundError(("path", "replica_id"), f"no replica {replica_id}")
    return ReplicaRecord.model_validate(row)


async def locate(
    conn: Conn, dataset_ids: Sequence[uuid.UUID], site: str | None, state: ReplicaState | None
) -> dict[str, list[ReplicaRecord]]:
    """Replicas of the given datasets, at every Site or only at ``site``, optionally in one state."""
    cursor = await conn.execute(
        f"""SELECT {_COLUMNS} FROM replica r WHERE r.dataset_id = ANY(%s)
            AND (%s::text IS NULL OR r.site = %s) AND (%s::text IS NULL OR r.state = %s)
            ORDER BY r.dataset_id, r.site, r.id""".encode(),
        (list(dataset_ids), site, site, state.value if state else None, state.value if state else None),
    )
    found: dict[str, list[ReplicaRecord]] = {}
    for row in await cursor.fetchall():
        replica = ReplicaRecord.model_validate(row)
        found.setdefault(str(replica.dataset_id), []).append(replica)
    return found


async def at_site(conn: Conn, site: str, state: ReplicaState | None, limit: int, cursor_id: int | None) -> ReplicaPage:
    """The per-site view (what a facility's local repository holds), paged by replica id."""
    cursor = await conn.execute(
        f"""SELECT {_COLUMNS} FROM replica r WHERE r.site = %s AND (%s::text IS NULL OR r.state = %s)
            AND r.id > %s ORDER BY r.id LIMIT %s""".encode(),
        (site, state.value if state else None, state.value if state else None, cursor_id or 0, limit + 1),
    )
    rows = await cursor.fetchall()
    items = [ReplicaRecord.model_validate(row) for row in rows[:limit]]
    return ReplicaPage(items=items, next_cursor=items[-1].id if len(rows) > limit else None)

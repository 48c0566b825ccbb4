"""Rules as rows: create, read with their state and its reason, suspend, resume, delete (releasing locks)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sgs.replication.rules import Grouping, RuleState, Selector
from sgs.service.errors import NotFoundError
from sgs_transfer.db import Conn
from sgs_transfer.schemas import LockCounts, LockPage, LockPublic, RulePage, RulePublic

_COLUMNS = """r.id, r.owner, r.dataset_type, r.collections, r.where_expr, r.dataset_ids, r.copies, r.site_expression,
    r.source_expression, r.grouping, r.priority, r.expires_at, r.suspended, r.suspended_by, r.chosen_sites,
    r.unsatisfied, r.evaluated_at, r.locks_ok, r.locks_replicating, r.locks_stuck, r.state, r.created_at,
    r.updated_at"""
STUCK_EXAMPLES = 3


@dataclass(frozen=True)
class NewRule:
    id: uuid.UUID
    owner: str
    selector: Selector
    copies: int
    site_expression: str
    source_expression: str | None
    grouping: Grouping
    priority: int
    expires_at: datetime | None


@dataclass(frozen=True)
class StoredRule:
    """A rule as the evaluator needs it."""

    id: uuid.UUID
    selector: Selector
    copies: int
    site_expression: str
    source_expression: str | None
    grouping: Grouping
    priority: int
    suspended: bool
    chosen_sites: tuple[str, ...] | None
    evaluated: bool
    created_at: datetime


async def insert(conn: Conn, rule: NewRule) -> None:
    await conn.execute(
        """INSERT INTO rule (id, owner, dataset_type, collections, where_expr, dataset_ids, copies, site_expression,
               source_expression, grouping, priority, expires_at)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
        (
            rule.id,
            rule.owner,
            rule.selector.dataset_type,
            list(rule.selector.collections),
            rule.selector.where,
            list(rule.selector.dataset_ids),
            rule.copies,
            rule.site_expression,
            rule.source_expression,
            rule.grouping.value,
            rule.priority,
            rule.expires_at,
        ),
    )


def _stored(row: dict[str, Any]) -> StoredRule:
    return StoredRule(
        id=row["id"],
        selector=Selector(
            row["dataset_type"], tuple(row["collections"]), row["where_expr"], tuple(row["dataset_ids"] or ())
        ),
        copies=int(row["copies"]),
        site_expression=str(row["site_expression"]),
        source_expression=row["source_expression"],
        grouping=Grouping(row["grouping"]),
        priority=int(row["priority"]),
        suspended=bool(row["suspended"]),
        chosen_sites=tuple(row["chosen_sites"]) if row["chosen_sites"] is not None else None,
        evaluated=row["evaluated_at"] is not None,
        created_at=row["created_at"],
    )


async def rule_version(conn: Conn) -> int:
    row = await (await conn.execute("SELECT version FROM rule_version")).fetchone()
    return int(row["version"]) if row else 0


async def active(conn: Conn) -> list[StoredRule]:
    """Rules that select datasets now: not suspended, not expired."""
    cursor = await conn.execute(
        f"SELECT {_COLUMNS} FROM rule r WHERE NOT r.suspended AND (r.expires_at IS NULL OR r.expires_at > now())"
    )
    return [_stored(row) for row in await cursor.fetchall()]


async def stored(conn: Conn, rule_id: uuid.UUID, *, for_update: bool = False) -> StoredRule | None:
    lock = " FOR UPDATE" if for_update else ""
    cursor = await conn.execute(f"SELECT {_COLUMNS} FROM rule r WHERE r.id = %s{lock}", (rule_id,))
    row = await cursor.fetchone()
    return _stored(row) if row else None


async def _stuck_reason(conn: Conn, rule_id: uuid.UUID, stuck: int) -> str:
    cursor = await conn.execute(
        """SELECT t.destination, count(*) AS n, max(t.attempts) AS attempts,
                  (array_agg(t.last_error ORDER BY t.next_attempt_at DESC))[1] AS error,
                  min(t.next_attempt_at) AS next_try
             FROM lock l JOIN transfer t ON t.dataset_id = l.dataset_id AND t.destination = l.site
            WHERE l.rule_id = %s AND l.state = 'STUCK'
            GROUP BY t.destination ORDER BY count(*) DESC LIMIT %s""",
        (rule_id, STUCK_EXAMPLES),
    )
    parts = [
        f"{row['n']} to {row['destination']}: {row['error'] or 'no error recorded'} "
        f"(after {row['attempts']} attempts; next try {row['next_try']:%H:%M:%S} UTC)"
        for row in await cursor.fetchall()
    ]
    return f"{stuck} {'copy' if stuck == 1 else 'copies'} stuck — " + "; ".join(parts)


async def _public(conn: Conn, row: dict[str, Any]) -> RulePublic:
    state = RuleState(row["state"])
    reason: str | None = None
    if state is RuleState.SUSPENDED:
        reason = f"suspended by {row['suspended_by'] or 'an admin'}"
    elif state is RuleState.STUCK:
        reasons = [row["unsatisfied"]] if row["unsatisfied"] else []
        if row["locks_stuck"]:
            reasons.append(await _stuck_reason(conn, row["id"], int(row["locks_stuck"])))
        reason = "; ".join(reasons)
    return RulePublic(
        id=row["id"],
        owner=row["owner"],
        dataset_type=row["dataset_type"],
        collections=list(row["collections"]),
        where=row["where_expr"],
        dataset_ids=list(row["dataset_ids"] or ()),
        copies=row["copies"],
        site_expression=row["site_expression"],
        source_expression=row["source_expression"],
        grouping=Grouping(row["grouping"]),
        priority=row["priority"],
        expires_at=row["expires_at"],
        state=state,
        reason=reason,
        locks=LockCounts(ok=row["locks_ok"], replicating=row["locks_replicating"], stuck=row["locks_stuck"]),
        chosen_sites=list(row["chosen_sites"]) if row["chosen_sites"] is not None else None,
        evaluated_at=row["evaluated_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


async def get(conn: Conn, rule_id: uuid.UUID) -> RulePublic:
    cursor = await conn.execute(f"SELECT {_COLUMNS} FROM rule r WHERE r.id = %s", (rule_id,))
    row = await cursor.fetchone()
    if row is None:
        raise NotFoundError(("path", "rule_id"), f"no rule {rule_id}")
    return await _public(conn, row)


async def page(
    conn: Conn, state: RuleState | None, owner: str | None, limit: int, cursor_id: uuid.UUID | None
) -> RulePage:
    cursor = await conn.execute(
        f"""SELECT {_COLUMNS} FROM rule r
             WHERE (%s::text IS NULL OR r.state = %s) AND (%s::text IS NULL OR r.owner = %s)
               AND (%s::uuid IS NULL OR r.id > %s)
             ORDER BY r.id LIMIT %s""",
        (
            state.value if state else None,
            state.value if state else None,
            owner,
            owner,
            cursor_id,
            cursor_id,
            limit + 1,
        ),
    )
    rows = await cursor.fetchall()
    items = [await _public(conn, row) for row in rows[:limit]]
    return RulePage(items=items, next_cursor=items[-1].id if len(rows) > limit else None)


async def owner_of(conn: Conn, rule_id: uuid.UUID) -> str:
    row = await (await conn.execute("SELECT owner FROM rule WHERE id = %s FOR UPDATE", (rule_id,))).fetchone()
    if row is None:
        raise NotFoundError(("path", "rule_id"), f"no rule {rule_id}")
    return str(row["owner"])


async def set_suspended(conn: Conn, rule_id: uuid.UUID, suspended: bool, by: str) -> None:
    """Suspend (nothing is copied for it; its locks still protect its copies) or resume (re-evaluated whole)."""
    if suspended:
        await conn.execute(
            "UPDATE rule SET suspended = true, suspended_by = %s, updated_at = now() WHERE id = %s AND NOT suspended",
            (by, rule_id),
        )
    else:
        await conn.execute(
            """UPDATE rule SET suspended = false, suspended_by = NULL, evaluated_at = NULL, updated_at = now()
               WHERE id = %s AND suspended""",
            (rule_id,),
        )


async def mark_evaluated(
    conn: Conn, rule_id: uuid.UUID, chosen_sites: tuple[str, ...] | None, unsatisfied: str | None
) -> None:
    await conn.execute(
        """UPDATE rule SET evaluated_at = now(), chosen_sites = COALESCE(%s, chosen_sites), unsatisfied = %s
           WHERE id = %s""",
        (list(chosen_sites) if chosen_sites is not None else None, unsatisfied, rule_id),
    )


async def set_chosen_sites(conn: Conn, rule_id: uuid.UUID, chosen: tuple[str, ...]) -> None:
    await conn.execute(
        "UPDATE rule SET chosen_sites = %s WHERE id = %s AND chosen_sites IS NULL", (list(chosen), rule_id)
    )


async def note_unsatisfied(conn: Conn, reasons: dict[uuid.UUID, str]) -> None:
    """Record why rules cannot be met as asked (the first reason found stays until a re-evaluation clears it)."""
    if reasons:
        await conn.cursor().executemany(
            "UPDATE rule SET unsatisfied = COALESCE(unsatisfied, %s) WHERE id = %s",
            [(reason, rule_id) for rule_id, reason in reasons.items()],
        )


async def locks(conn: Conn, rule_id: uuid.UUID, state: str | None, limit: int, cursor_key: str | None) -> LockPage:
    after_dataset, _, after_site = (cursor_key or "").partition("@")
    cursor = await conn.execute(
        """SELECT rule_id, dataset_id, site, state, created_at FROM lock
            WHERE rule_id = %s AND (%s::text IS NULL OR state = %s)
              AND (%s = '' OR (dataset_id, site) > (%s::uuid, %s))
            ORDER BY dataset_id, site LIMIT %s""",
        (rule_id, state, state, after_dataset, after_dataset or None, after_site, limit + 1),
    )
    rows = await cursor.fetchall()
    items = [LockPublic.model_validate(row) for row in rows[:limit]]
    last = items[-1] if len(rows) > limit else None
    return LockPage(items=items, next_cursor=f"{last.dataset_id}@{last.site}" if last else None)


async def expired(conn: Conn, limit: int) -> list[uuid.UUID]:
    cursor = await conn.execute("SELECT id FROM rule WHERE expires_at <= now() ORDER BY expires_at LIMIT %s", (limit,))
    return [row["id"] for row in await cursor.fetchall()]


async def delete(conn: Conn, rule_id: uuid.UUID) -> int:
    """Delete the rule and release its locks: copies no rule holds any more get a tombstone (only copies this
    service made: the reaper never touches data it did not create), transfers no rule needs are cancelled.
    Returns the number of locks released."""
    await conn.execute("SELECT 1 FROM rule WHERE id = %s FOR UPDATE", (rule_id,))  # the lock order: rule first
    cursor = await conn.execute("DELETE FROM lock WHERE rule_id = %s RETURNING dataset_id, site", (rule_id,))
    released = [(row["dataset_id"], row["site"]) for row in await cursor.fetchall()]
    await conn.execute("DELETE FROM rule WHERE id = %s", (rule_id,))
    if released:
        await release(conn, released)
    return len(released)


async def release(conn: Conn, pairs: list[tuple[uuid.UUID, str]]) -> None:
    """For (dataset, Site) pairs that just lost a lock: cancel and tombstone where no lock is left (transfer rows
    before replica rows: the service's lock order)."""
    datasets = [d for d, _ in pairs]
    sites = [s for _, s in pairs]
    unlocked = """SELECT p.dataset_id, p.site FROM unnest(%s::uuid[], %s::text[]) AS p(dataset_id, site)
                   WHERE NOT EXISTS (SELECT 1 FROM lock l WHERE l.dataset_id = p.dataset_id AND l.site = p.site)"""
    await conn.execute(
        f"""UPDATE transfer t SET state = 'CANCELLED', done_at = now() FROM ({unlocked}) u
             WHERE t.dataset_id = u.dataset_id AND t.destination = u.site AND t.state IN ('QUEUED', 'STUCK')""",
        (datasets, sites),
    )
    await conn.execute(
        f"""UPDATE replica r SET tombstone = now(), updated_at = now() FROM ({unlocked}) u
             WHERE r.dataset_id = u.dataset_id AND r.site = u.site AND r.origin = 'transfer'
               AND r.tombstone IS NULL""",
        (datasets, sites),
    )

"""The operator's per-task records, read straight from PostgreSQL through a read-only path.

Why SQL rather than a read API in the operator: the records are already one indexed table per purpose
(``sgs_run``, ``sgs_task`` keyed by (run_uid, task), ``sgs_task_attempt``), a Run's status names where they are
(``status.taskTable``), and the console's questions — a page of 100 rows after a key, counts per state and per
step of a 100,000-task Run — are single indexed queries here; through an HTTP API in the operator each would be
the same query plus a hop, an endpoint to authenticate, and a reader inside the process whose job is to act.
What keeps this narrow: these queries are the only ones the console makes (this module), every session is
``default_transaction_read_only`` (a write is refused by the server, not by our good manners), production gives
the console a role with SELECT on the three tables only (docs/console.md), and a test runs these queries on the
schema the operator itself creates, so a change there fails here first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

READ_ONLY = "-c default_transaction_read_only=on -c statement_timeout=10000"
STEP_OF_TASK = r"regexp_replace(task, '\[[0-9,]*\]$', '')"
TASK_COLUMNS = (
    "task, state, attempt, job, site, executable, requested, usage, exit_code, reason, message, started, ended"
)
TASK_STATES = ("Waiting", "Ready", "Running", "Retrying", "Succeeded", "Failed", "Skipped")


@dataclass(frozen=True)
class TaskPage:
    rows: list[dict[str, Any]]
    next_after: str | None  # the last task of this page when there is another
    total: int | None = None


@dataclass
class StepCounts:
    """Tasks of one step of the graph, by state."""

    step: str
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class TaskRecords:
    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self.pool = pool

    @classmethod
    async def open(cls, dsn: str, max_size: int = 4) -> TaskRecords:
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            dsn, min_size=1, max_size=max_size, open=False, kwargs={"options": READ_ONLY, "row_factory": dict_row}
        )
        await pool.open(wait=True, timeout=30)
        return cls(pool)

    async def close(self) -> None:
        await self.pool.close()

    async def _rows(self, query: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
        async with self.pool.connection() as conn:
            cursor = await conn.execute(query, params)
            return list(await cursor.fetchall())

    async def state_counts(self, run_uid: str) -> dict[str, int]:
        rows = await self._rows(
            "SELECT state, count(*) AS n FROM sgs_task WHERE run_uid = %s GROUP BY state", (run_uid,)
        )
        return {str(r["state"]): int(r["n"]) for r in rows}

    async def step_counts(self, run_uid: str) -> dict[str, StepCounts]:
        """Per step of the graph (a map's N tasks are one step), tasks by state: what the graph draws."""
        rows = await self._rows(
            f"SELECT {STEP_OF_TASK} AS step, state, count(*) AS n FROM sgs_task WHERE run_uid = %s GROUP BY 1, 2",
            (run_uid,),
        )
        steps: dict[str, StepCounts] = {}
        for row in rows:
            steps.setdefault(str(row["step"]), StepCounts(str(row["step"]))).counts[str(row["state"])] = int(row["n"])
        return steps

    async def page(
        self,
        run_uid: str,
        *,
        after: str | None = None,
        limit: int = 100,
        state: str | None = None,
        step: str | None = None,
        search: str | None = None,
    ) -> TaskPage:
        """One page of a Run's tasks in task order, after ``after`` (keyset: as fast on page 1,000 as on page 1)."""
        where, params = ["run_uid = %s"], [run_uid]
        if after is not None:
            where.append("task > %s")
            params.append(after)
        if state is not None:
            where.append("state = %s")
            params.append(state)
        if step is not None:
            # A step's tasks are `step` itself (outside maps) or `step[i]` (one per item of its map).
            where.append("(task = %s OR starts_with(task, %s))")
            params.extend([step, step + "["])
        if search:
            where.append("strpos(task, %s) > 0")
            params.append(search)
        rows = await self._rows(
            f"SELECT {TASK_COLUMNS} FROM sgs_task WHERE {' AND '.join(where)} ORDER BY task LIMIT %s",
            (*params, limit + 1),
        )
        more = len(rows) > limit
        rows = rows[:limit]
        return TaskPage(rows, str(rows[-1]["task"]) if more and rows else None)

    async def task(self, run_uid: str, task: str) -> dict[str, Any] | None:
        rows = await self._rows(
            f"SELECT {TASK_COLUMNS}, record FROM sgs_task WHERE run_uid = %s AND task = %s", (run_uid, task)
        )
        return rows[0] if rows else None

    async def attempts(self, run_uid: str, task: str) -> list[dict[str, Any]]:
        return await self._rows(
            "SELECT attempt, job, state, reason, exit_code, message, requested, usage, started, ended"
            " FROM sgs_task_attempt WHERE run_uid = %s AND task = %s ORDER BY attempt",
            (run_uid, task),
        )


def duration_s(row: dict[str, Any]) -> float | None:
    started, ended = row.get("started"), row.get("ended")
    if isinstance(started, datetime) and isinstance(ended, datetime):
        return (ended - started).total_seconds()
    return None

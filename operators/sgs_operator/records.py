"""Per-task records in PostgreSQL: what a Run's status points at, and what a restarted operator replays.

Tables keyed by the Run's UID (a re-created Run with the same name starts afresh): ``sgs_run`` pins the Pipeline
spec the Run started with (and its digest: an edited Pipeline applies to new Runs only), ``sgs_task`` holds
the latest record of every task the planner has touched (the planner's ``TaskRecord`` plus the Job, the
resources asked for and used, the outcome), ``sgs_task_attempt`` one row per attempt. The write that says a
task is Running happens *before* its Job is created, so a crash can never leave a Job nobody knows of.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool
from pydantic_core import to_json

from sgs.planner import TaskRecord

SCHEMA_LOCK = 0x5365_0008  # advisory lock: operators starting together create the schema once

SCHEMA = """
CREATE TABLE IF NOT EXISTS sgs_run (
    uid text PRIMARY KEY,
    namespace text NOT NULL,
    name text NOT NULL,
    pipeline text NOT NULL,
    pipeline_digest text NOT NULL,
    pipeline_spec jsonb,
    retry_failed_applied integer NOT NULL DEFAULT 0,
    created timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE sgs_run ADD COLUMN IF NOT EXISTS pipeline_spec jsonb;
CREATE TABLE IF NOT EXISTS sgs_task (
    run_uid text NOT NULL REFERENCES sgs_run (uid) ON DELETE CASCADE,
    task text NOT NULL,
    state text NOT NULL,
    attempt integer NOT NULL,
    record jsonb NOT NULL,
    job text,
    site text,
    executable text,
    requested jsonb,
    usage jsonb,
    exit_code integer,
    reason text,
    message text,
    started timestamptz,
    ended timestamptz,
    PRIMARY KEY (run_uid, task)
);
CREATE TABLE IF NOT EXISTS sgs_task_attempt (
    run_uid text NOT NULL REFERENCES sgs_run (uid) ON DELETE CASCADE,
    task text NOT NULL,
    attempt integer NOT NULL,
    job text NOT NULL,
    state text NOT NULL,
    reason text,
    exit_code integer,
    message text,
    requested jsonb,
    usage jsonb,
    started timestamptz,
    ended timestamptz,
    PRIMARY KEY (run_uid, task, attempt)
);
-- A Run's archive inputs as resolved at its start (query or datasetIds → datasets → their replica at the Site):
-- written once, in one transaction, so a restart resolves nothing again and a later registration cannot change
-- a running Run's inputs.
CREATE TABLE IF NOT EXISTS sgs_run_input (
    run_uid text NOT NULL,
    input text NOT NULL,
    position integer NOT NULL,
    dataset_id uuid NOT NULL,
    dataset_type text NOT NULL,
    data_id jsonb NOT NULL,
    site text NOT NULL,
    path text NOT NULL,
    size bigint NOT NULL,
    checksums jsonb,
    PRIMARY KEY (run_uid, input, position)
);
-- The replica's size/adler32/sha256 per the archive: what a task at an S3 Site checks its download against.
ALTER TABLE sgs_run_input ADD COLUMN IF NOT EXISTS checksums jsonb;
-- The outbox of task outputs to register at the Site's archive: a row per output, written in the transaction that
-- records the task's success, then registered and marked (registered / skipped / failed). A crash in between
-- leaves the row pending: the next operator registers it, and the archive's (type, data ID, run) identity makes a
-- second try a no-op.
CREATE TABLE IF NOT EXISTS sgs_registration (
    id bigserial PRIMARY KEY,
    run_uid text NOT NULL REFERENCES sgs_run (uid) ON DELETE CASCADE,
    task text NOT NULL,
    attempt integer NOT NULL,
    output text NOT NULL,
    path text NOT NULL,
    facts jsonb NOT NULL,
    state text NOT NULL DEFAULT 'pending',
    dataset_id uuid,
    data_id jsonb,
    input_ids jsonb,
    error text,
    tries integer NOT NULL DEFAULT 0,
    created timestamptz NOT NULL DEFAULT now(),
    done timestamptz,
    UNIQUE (run_uid, task, attempt, output)
);
CREATE INDEX IF NOT EXISTS sgs_registration_pending ON sgs_registration (run_uid, id) WHERE state = 'pending';
-- A Run's stage-in rule at the transfer service: the intent is written before the rule is created, its id after,
-- so a restart adopts the rule (found by its owner) instead of creating a second.
CREATE TABLE IF NOT EXISTS sgs_run_stage_in (
    run_uid text PRIMARY KEY,
    owner text NOT NULL,
    site text NOT NULL,
    dataset_ids uuid[] NOT NULL,
    bytes_total bigint NOT NULL,
    bytes_to_stage bigint NOT NULL,
    bytes_minimum bigint NOT NULL,
    best_site text NOT NULL,
    rule_id uuid,
    failed text,
    released boolean NOT NULL DEFAULT false,
    created timestamptz NOT NULL DEFAULT now()
);
"""


@dataclass(frozen=True)
class Started:
    record: TaskRecord
    job: str
    site: str
    executable: str
    requested: dict[str, Any]


@dataclass(frozen=True)
class Finished:
    record: TaskRecord  # the task after the planner took the outcome (Succeeded, Retrying or Failed)
    attempt: int  # the attempt that ended
    job: str
    outcome: str  # Completed, Error, OOMKilled, DeadlineExceeded, ...
    exit_code: int | None
    message: str | None
    usage: dict[str, Any] | None
    registrations: Sequence[Registration] = ()  # the outputs of a success, to register (written atomically)


@dataclass(frozen=True)
class Registration:
    """One task output waiting in the outbox: what the task's end knew (see sgs_operator.registration)."""

    task: str
    attempt: int
    output: str
    path: str
    facts: dict[str, Any]


@dataclass(frozen=True)
class RegistrationRow:
    id: int
    task: str
    attempt: int
    output: str
    path: str
    facts: dict[str, Any]
    state: str
    dataset_id: str | None
    data_id: dict[str, Any] | None
    input_ids: list[str] | None
    tries: int


@dataclass(frozen=True)
class InputRow:
    """One dataset a Run input resolved to, at the Site the Run runs at."""

    input: str
    position: int
    dataset_id: str
    dataset_type: str
    data_id: dict[str, Any]
    site: str
    path: str
    size: int
    checksums: dict[str, Any] | None = None  # the archive's size, adler32, sha256 of the replica at ``site``


class TaskStore:
    def __init__(self, pool: AsyncConnectionPool[Any], dsn: str) -> None:
        self.pool = pool
        self.dsn = dsn

    @classmethod
    async def open(cls, dsn: str, max_size: int = 8) -> TaskStore:
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(dsn, min_size=1, max_size=max_size, open=False)
        await pool.open(wait=True, timeout=30)
        store = cls(pool, dsn)
        await store._create_schema()
        return store

    async def close(self) -> None:
        await self.pool.close()

    async def _create_schema(self) -> None:
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            await conn.execute(SCHEMA)

    def table_pointer(self, run_uid: str) -> str:
        """Where a Run's records are, without credentials: postgresql://host:port/db#sgs_task?run_uid=..."""
        return f"{redacted_dsn(self.dsn)}#sgs_task?run_uid={run_uid}"

    async def ensure_run(
        self, uid: str, namespace: str, name: str, pipeline: str, digest: str, spec: dict[str, Any]
    ) -> tuple[str, int]:
        """Register the Run with the Pipeline spec it starts with (idempotent: the first spec stays).

        Returns the digest the Run is pinned to and how many retry-failed requests were already applied. A row
        from before specs were kept gets this one only if the digests agree.
        """
        # One round trip (a burst of Runs at cluster Sites pins one spec each): the row as written, else (the
        # conflict's update skipped) as it was.
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "WITH written AS ("
                " INSERT INTO sgs_run (uid, namespace, name, pipeline, pipeline_digest, pipeline_spec)"
                " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (uid) DO UPDATE"
                " SET pipeline_spec = excluded.pipeline_spec"
                " WHERE sgs_run.pipeline_spec IS NULL AND sgs_run.pipeline_digest = excluded.pipeline_digest"
                " RETURNING pipeline_digest, retry_failed_applied)"
                " SELECT pipeline_digest, retry_failed_applied FROM written"
                " UNION ALL SELECT pipeline_digest, retry_failed_applied FROM sgs_run"
                " WHERE uid = %s AND NOT EXISTS (SELECT 1 FROM written)",
                (uid, namespace, name, pipeline, digest, Jsonb(spec), uid),
            )
            row = await cur.fetchone()
            if row is None:  # a row another writer committed after this statement's snapshot
                cur = await conn.execute(
                    "SELECT pipeline_digest, retry_failed_applied FROM sgs_run WHERE uid = %s", (uid,)
                )
                row = await cur.fetchone()
        assert row is not None
        return str(row[0]), int(row[1])

    async def pinned_pipeline(self, uid: str) -> tuple[str, dict[str, Any]] | None:
        """(digest, spec) of the Pipeline the Run started with, if it was kept."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT pipeline_digest, pipeline_spec FROM sgs_run WHERE uid = %s AND pipeline_spec IS NOT NULL",
                (uid,),
            )
            row = await cur.fetchone()
        return (str(row[0]), dict(row[1])) if row is not None else None

    async def load(self, run_uid: str) -> list[TaskRecord]:
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT record FROM sgs_task WHERE run_uid = %s", (run_uid,))
            rows = await cur.fetchall()
        return [TaskRecord.model_validate(row[0]) for row in rows]

    async def save_started(self, run_uid: str, started: Sequence[Started]) -> None:
        if not started:
            return
        now = datetime.now(UTC)
        requested = [_json_text(s.requested) for s in started]
        async with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO sgs_task (run_uid, task, state, attempt, record, job, site, executable, requested,"
                " started, ended, usage, exit_code, reason, message)"
                " VALUES (%s, %s, %s, %s, %s::jsonb, %s, %s, %s, %s::jsonb, %s, NULL, NULL, NULL, NULL, NULL)"
                " ON CONFLICT (run_uid, task) DO UPDATE SET state = excluded.state, attempt = excluded.attempt,"
                " record = excluded.record, job = excluded.job, site = excluded.site,"
                " executable = excluded.executable, requested = excluded.requested, started = excluded.started,"
                " ended = NULL, usage = NULL, exit_code = NULL, reason = NULL, message = NULL",
                [
                    (
                        run_uid,
                        s.record.id,
                        s.record.state.value,
                        s.record.attempt,
                        s.record.model_dump_json(),
                        s.job,
                        s.site,
                        s.executable,
                        requested[i],
                        now,
                    )
                    for i, s in enumerate(started)
                ],
            )
            await cur.executemany(
                "INSERT INTO sgs_task_attempt (run_uid, task, attempt, job, state, requested, started)"
                " VALUES (%s, %s, %s, %s, 'Running', %s::jsonb, %s) ON CONFLICT (run_uid, task, attempt) DO NOTHING",
                [(run_uid, s.record.id, s.record.attempt, s.job, requested[i], now) for i, s in enumerate(started)],
            )

    async def save_finished(self, run_uid: str, done: Finished) -> None:
        now = datetime.now(UTC)
        rec = done.record
        usage = Jsonb(done.usage) if done.usage is not None else None
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute(
                "UPDATE sgs_task SET state = %s, attempt = %s, record = %s, usage = %s, exit_code = %s,"
                " reason = %s, message = %s, ended = %s WHERE run_uid = %s AND task = %s",
                (
                    rec.state.value,
                    rec.attempt,
                    _record(rec),
                    usage,
                    done.exit_code,
                    done.outcome,
                    done.message,
                    now,
                    run_uid,
                    rec.id,
                ),
            )
            await conn.execute(
                "UPDATE sgs_task_attempt SET state = %s, reason = %s, exit_code = %s, message = %s, usage = %s,"
                " ended = %s WHERE run_uid = %s AND task = %s AND attempt = %s",
                (done.outcome, done.outcome, done.exit_code, done.message, usage, now, run_uid, rec.id, done.attempt),
            )
            if done.registrations:
                async with conn.cursor() as cur:
                    await cur.executemany(
                        "INSERT INTO sgs_registration (run_uid, task, attempt, output, path, facts)"
                        " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (run_uid, task, attempt, output) DO NOTHING",
                        [(run_uid, r.task, r.attempt, r.output, r.path, Jsonb(r.facts)) for r in done.registrations],
                    )

    async def save_records(
        self,
        run_uid: str,
        records: Iterable[TaskRecord],
        *,
        message: str | None = None,
        retry_failed_applied: int | None = None,
    ) -> None:
        """Records changed without a Job (revived, failed before start); with the retry-failed mark, atomically."""
        rows = [(run_uid, r.id, r.state.value, r.attempt, _record(r), message) for r in records]
        async with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            if rows:
                await cur.executemany(
                    "INSERT INTO sgs_task (run_uid, task, state, attempt, record, message)"
                    " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (run_uid, task) DO UPDATE SET"
                    " state = excluded.state, attempt = excluded.attempt, record = excluded.record,"
                    " message = excluded.message",
                    rows,
                )
            if retry_failed_applied is not None:
                await cur.execute(
                    "UPDATE sgs_run SET retry_failed_applied = %s WHERE uid = %s", (retry_failed_applied, run_uid)
                )

    # ------------------------------------------------------------------------------------- archive inputs

    async def save_inputs(self, run_uid: str, rows: Sequence[InputRow]) -> list[InputRow]:
        """Keep a Run's resolved archive inputs (all at once; a first resolution stays) and return the kept ones."""
        async with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO sgs_run_input (run_uid, input, position, dataset_id, dataset_type, data_id, site,"
                " path, size, checksums) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                [
                    (
                        run_uid,
                        r.input,
                        r.position,
                        r.dataset_id,
                        r.dataset_type,
                        Jsonb(r.data_id),
                        r.site,
                        r.path,
                        r.size,
                        Jsonb(r.checksums) if r.checksums is not None else None,
                    )
                    for r in rows
                ],
            )
        return await self.load_inputs(run_uid)

    async def load_inputs(self, run_uid: str) -> list[InputRow]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT input, position, dataset_id::text, dataset_type, data_id, site, path, size, checksums"
                " FROM sgs_run_input WHERE run_uid = %s ORDER BY input, position",
                (run_uid,),
            )
            return [InputRow(*row) for row in await cur.fetchall()]

    # ------------------------------------------------------------------------------------- registration outbox

    async def registrations(self, run_uid: str, pending_only: bool, limit: int = 1000) -> list[RegistrationRow]:
        """A Run's outbox rows in the order their tasks ended (an output's inputs come before it)."""
        where = " AND state = 'pending'" if pending_only else ""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT id, task, attempt, output, path, facts, state, dataset_id::text, data_id, input_ids, tries"
                f" FROM sgs_registration WHERE run_uid = %s{where} ORDER BY id LIMIT %s",
                (run_uid, limit),
            )
            return [RegistrationRow(*row) for row in await cur.fetchall()]

    async def registration_done(
        self,
        row_id: int,
        state: str,
        dataset_id: str | None,
        data_id: dict[str, Any] | None,
        input_ids: Sequence[str],
        error: str | None = None,
    ) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                "UPDATE sgs_registration SET state = %s, dataset_id = %s, data_id = %s, input_ids = %s, error = %s,"
                " tries = tries + 1, done = now() WHERE id = %s AND state = 'pending'",
                (
                    state,
                    dataset_id,
                    Jsonb(data_id) if data_id is not None else None,
                    Jsonb(list(input_ids)),
                    error,
                    row_id,
                ),
            )

    async def registration_retry(self, row_id: int, error: str) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                "UPDATE sgs_registration SET error = %s, tries = tries + 1 WHERE id = %s AND state = 'pending'",
                (error, row_id),
            )

    async def registration_counts(self, run_uid: str) -> tuple[dict[str, int], str | None]:
        """Rows per state, and the latest error (of a failed row, else of a pending one)."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT state, count(*) FROM sgs_registration WHERE run_uid = %s GROUP BY state", (run_uid,)
            )
            counts = {str(state): int(n) for state, n in await cur.fetchall()}
            cur = await conn.execute(
                "SELECT error FROM sgs_registration WHERE run_uid = %s AND error IS NOT NULL AND state IN"
                " ('failed', 'pending') ORDER BY state = 'failed' DESC, id LIMIT 1",
                (run_uid,),
            )
            row = await cur.fetchone()
        return counts, (str(row[0]) if row else None)

    async def task_rows(self, run_uid: str) -> list[dict[str, Any]]:
        """Every recorded task of a Run, as dicts (for the CLI, the console and tests)."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT task, state, attempt, job, site, executable, requested, usage, exit_code, reason, message,"
                " started, ended FROM sgs_task WHERE run_uid = %s ORDER BY task",
                (run_uid,),
            )
            names = [d.name for d in cur.description or []]
            return [dict(zip(names, row, strict=True)) for row in await cur.fetchall()]


def _json_text(value: Any) -> str:
    """JSON text for a ``%s::jsonb`` parameter: pydantic's encoder is several times faster than json.dumps."""
    return to_json(value).decode()


def _record(record: TaskRecord) -> Jsonb:
    return Jsonb(record.model_dump(mode="json"))


def redacted_dsn(dsn: str) -> str:
    """postgresql://host:port/dbname, whatever form the DSN came in, without user or password."""
    if "://" in dsn:
        parts = urlsplit(dsn)
        host = parts.hostname or "localhost"
        port = f":{parts.port}" if parts.port else ""
        return f"postgresql://{host}{port}{parts.path}"
    info = conninfo_to_dict(dsn)
    host = str(info.get("host") or "localhost")
    port = f":{info['port']}" if info.get("port") else ""
    return f"postgresql://{host}{port}/{info.get('dbname', '')}"

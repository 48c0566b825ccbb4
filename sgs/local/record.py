"""The run record of a local run: one SQLite file in the work directory, written at every state change.

It is what makes ``sgs run --local`` crash-safe (a re-run with the same ``--run-id`` replays it) and what
``sgs status`` reads.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sgs.planner import TaskRecord

RECORD_FILE = "run.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS run (
    id TEXT PRIMARY KEY,
    pipeline TEXT NOT NULL,
    pipeline_digest TEXT NOT NULL,
    source TEXT,
    inputs TEXT NOT NULL,
    status TEXT NOT NULL,
    submitted REAL NOT NULL,
    ended REAL,
    message TEXT
);
CREATE TABLE IF NOT EXISTS task (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    record TEXT NOT NULL,
    pid INTEGER,
    started REAL,
    ended REAL,
    exit_code INTEGER,
    message TEXT,
    command TEXT,
    requested TEXT,
    usage TEXT,
    lineage TEXT,
    outdir TEXT,
    process TEXT
);
CREATE TABLE IF NOT EXISTS attempt (
    task TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    state TEXT NOT NULL,
    started REAL,
    ended REAL,
    exit_code INTEGER,
    message TEXT,
    usage TEXT,
    PRIMARY KEY (task, attempt)
);
"""


@dataclass(frozen=True)
class RunRow:
    id: str
    pipeline: str
    pipeline_digest: str
    source: str | None
    inputs: dict[str, Any]
    status: str
    submitted: float
    ended: float | None
    message: str | None


@dataclass(frozen=True)
class TaskRow:
    id: str
    state: str
    attempt: int
    record: TaskRecord
    pid: int | None
    started: float | None
    ended: float | None
    exit_code: int | None
    message: str | None
    command: str | None
    requested: dict[str, Any] | None
    usage: dict[str, Any] | None
    lineage: dict[str, Any] | None
    outdir: str | None
    process: dict[str, Any] | None  # the running attempt's ProcessIdentity


class RunRecord:
    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.path = workdir / RECORD_FILE
        self.db = sqlite3.connect(self.path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)
        self._add_missing_columns()

    def _add_missing_columns(self) -> None:
        """A record written by an older sgs lacks newer columns; resuming it adds them (empty)."""
        have = {row[1] for row in self.db.execute("PRAGMA table_info(task)")}
        if "process" not in have:
            self.db.execute("ALTER TABLE task ADD COLUMN process TEXT")

    @classmethod
    def open_existing(cls, workdir: Path) -> RunRecord:
        if not (workdir / RECORD_FILE).is_file():
            raise FileNotFoundError(f"{workdir} holds no run record ({RECORD_FILE})")
        return cls(workdir)

    def close(self) -> None:
        self.db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One commit for a batch of writes (one loop of the executor) instead of one per statement.

        Committed even when the batch is interrupted: each write is a whole row, as good as with autocommit.
        """
        self.db.execute("BEGIN")
        try:
            yield
        finally:
            self.db.execute("COMMIT")

    def run(self) -> RunRow | None:
        row = self.db.execute(
            "SELECT id, pipeline, pipeline_digest, source, inputs, status, submitted, ended, message FROM run"
        ).fetchone()
        if row is None:
            return None
        return RunRow(row[0], row[1], row[2], row[3], json.loads(row[4]), row[5], row[6], row[7], row[8])

    def create_run(
        self, run_id: str, pipeline: str, digest: str, source: str | None, inputs: dict[str, Any], now: float
    ) -> None:
        self.db.execute(
            "INSERT INTO run (id, pipeline, pipeline_digest, source, inputs, status, submitted)"
            " VALUES (?, ?, ?, ?, ?, 'Running', ?)",
            (run_id, pipeline, digest, source, json.dumps(inputs), now),
        )

    def set_run_status(self, status: str, ended: float | None, message: str | None = None) -> None:
        self.db.execute("UPDATE run SET status = ?, ended = ?, message = ?", (status, ended, message))

    def save_task(self, record: TaskRecord, **columns: Any) -> None:
        values = {"state": record.state.value, "attempt": record.attempt, "record": record.model_dump_json()}
        for key, value in columns.items():
            values[key] = json.dumps(value) if isinstance(value, dict) else value
        names = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        updates = ", ".join(f"{k} = excluded.{k}" for k in values)
        self.db.execute(
            f"INSERT INTO task (id, {names}) VALUES (?, {marks}) ON CONFLICT (id) DO UPDATE SET {updates}",
            (record.id, *values.values()),
        )

    def save_attempt(self, tid: str, attempt: int, state: str, **columns: Any) -> None:
        values = {
            "state": state,
            **{k: json.dumps(v) if isinstance(v, dict) else v for k, v in columns.items()},
        }
        names = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        updates = ", ".join(f"{k} = excluded.{k}" for k in values)
        self.db.execute(
            f"INSERT INTO attempt (task, attempt, {names}) VALUES (?, ?, {marks})"
            f" ON CONFLICT (task, attempt) DO UPDATE SET {updates}",
            (tid, attempt, *values.values()),
        )

    def tasks(self) -> Iterator[TaskRow]:
        rows = self.db.execute(
            "SELECT id, state, attempt, record, pid, started, ended, exit_code, message, command, requested,"
            " usage, lineage, outdir, process FROM task ORDER BY rowid"
        )
        for r in rows:
            yield TaskRow(
                r[0],
                r[1],
                r[2],
                TaskRecord.model_validate_json(r[3]),
                r[4],
                r[5],
                r[6],
                r[7],
                r[8],
                r[9],
                _json(r[10]),
                _json(r[11]),
                _json(r[12]),
                r[13],
                _json(r[14]),
            )

    def attempts(self, tid: str) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT attempt, state, started, ended, exit_code, message, usage FROM attempt"
            " WHERE task = ? ORDER BY attempt",
            (tid,),
        )
        keys = ("attempt", "state", "started", "ended", "exit_code", "message", "usage")
        return [dict(zip(keys, (*r[:6], _json(r[6])), strict=True)) for r in rows]


def _json(text: str | None) -> dict[str, Any] | None:
    return json.loads(text) if text else None

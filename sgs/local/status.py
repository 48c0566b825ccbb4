"""`sgs status`: a local run shown like the Euclid Pipeline Run Server (run details, task table, lineage)."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from sgs.local.record import RunRecord, TaskRow

_STATE_STYLE = {
    "Succeeded": "green",
    "Failed": "red",
    "Running": "cyan",
    "Retrying": "yellow",
    "Skipped": "dim",
    "Ready": "blue",
    "Waiting": "dim",
}


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def _duration(start: float | None, end: float | None) -> str:
    if not start or not end:
        return "-"
    return f"{end - start:.1f}s"


def _used_vs_requested(row: TaskRow) -> tuple[str, str, str, str]:
    usage, requested = row.usage or {}, row.requested or {}
    if not usage:
        return "-", "-", "-", "-"
    cores = requested.get("cores", 1)
    ram_mb = requested.get("ram", 0) * 1024
    cpu = f"{usage['cpu_percent']:.0f}% of {cores}"
    rss = f"{usage['max_rss_mb']:.0f}/{ram_mb:.0f}"
    vms = f"{usage['max_vms_mb']:.0f}"
    io = f"{usage['read_mb']:.1f}/{usage['write_mb']:.1f}"
    return cpu, rss, vms, io


def print_status(workdir: Path, console: Console, lineage: bool = False, limit: int | None = None) -> None:
    """The run and its task table; beyond ``limit`` rows, the tasks that did not succeed come first and the rest
    are counted (rendering a 100k-row table would take longer than many runs)."""
    record = RunRecord.open_existing(workdir)
    try:
        run = record.run()
        if run is None:
            raise FileNotFoundError(f"{workdir}: run record is empty")
        rows = list(record.tasks())
    finally:
        record.close()
    style = _STATE_STYLE.get(run.status, "")
    console.print(f"[bold]Run[/] {run.id}: [{style}]{run.status}[/]")
    console.print(
        f"  Submitted {_when(run.submitted)}   Ended {_when(run.ended)}   "
        f"Duration {_duration(run.submitted, run.ended)}"
    )
    console.print(f"  Workdir {workdir}   Pipeline {run.source or '-'}")
    if run.message:
        console.print(f"  Message {run.message}")
    table = Table(title="Tasks", header_style="bold")
    for column in (
        "task",
        "status",
        "attempt",
        "duration",
        "%cpu (of cores)",
        "MB rss/req",
        "MB vms",
        "MB io r/w",
        "message",
    ):
        table.add_column(column, overflow="fold")
    shown, hidden = _rows_to_show(rows, limit)
    for row in shown:
        cpu, rss, vms, io = _used_vs_requested(row)
        state_style = _STATE_STYLE.get(row.state, "")
        table.add_row(
            row.id,
            f"[{state_style}]{row.state}[/]",
            str(row.attempt),
            _duration(row.started, row.ended),
            cpu,
            rss,
            vms,
            io,
            (row.message or "")[:80],
        )
    console.print(table)
    if hidden:
        states = Counter(row.state for row in hidden)
        counted = ", ".join(f"{n} {state}" for state, n in states.most_common())
        console.print(f"  … and {len(hidden)} more tasks ({counted}); `sgs status {workdir} --all` lists every one")
    _print_inputs(run.inputs, console)
    if lineage:
        _print_lineage(rows, console)
    else:
        console.print(
            "[dim]sgs status --lineage lists every product with the inputs it used; "
            "--task ID shows one task in detail[/]"
        )


def _rows_to_show(rows: list[TaskRow], limit: int | None) -> tuple[list[TaskRow], list[TaskRow]]:
    if limit is None or len(rows) <= limit:
        return rows, []
    unsuccessful = [row for row in rows if row.state != "Succeeded"]
    chosen = {id(row) for row in unsuccessful[:limit]}
    for row in rows:
        if len(chosen) >= limit:
            break
        chosen.add(id(row))
    return [row for row in rows if id(row) in chosen], [row for row in rows if id(row) not in chosen]


def _print_inputs(inputs: dict[str, Any], console: Console) -> None:
    table = Table(title="Inputs", header_style="bold")
    table.add_column("port")
    table.add_column("path", overflow="fold")
    for name, value in inputs.items():
        table.add_row(name, json.dumps(value) if isinstance(value, list) else str(value))
    console.print(table)


def _print_lineage(rows: list[TaskRow], console: Console) -> None:
    lineage = Table(title="Lineage", header_style="bold")
    lineage.add_column("task")
    lineage.add_column("output")
    lineage.add_column("product", overflow="fold")
    lineage.add_column("used inputs", overflow="fold")
    for row in rows:
        for port, out in (row.lineage or {}).get("outputs", {}).items():
            used = out["inputs"]
            shown = ", ".join(Path(u).name for u in used[:4]) + (f" … (+{len(used) - 4})" if len(used) > 4 else "")
            lineage.add_row(row.id, port, out["path"], shown)
    console.print(lineage)


def print_task(workdir: Path, tid: str, console: Console) -> None:
    record = RunRecord.open_existing(workdir)
    try:
        rows = {r.id: r for r in record.tasks()}
        if tid not in rows:
            raise KeyError(f"no task {tid!r} in {workdir}")
        row = rows[tid]
        attempts = record.attempts(tid)
    finally:
        record.close()
    console.print(f"[bold]Task[/] {row.id}: {row.state} (attempt {row.attempt})")
    console.print(f"  Created {_when(row.started)}  Ended {_when(row.ended)}  exit code {row.exit_code}")
    console.print(f"  Output dir {row.outdir}")
    cpu, rss, vms, io = _used_vs_requested(row)
    console.print(f"  %CPU {cpu}   MB RSS used/requested {rss}   MB VMS {vms}   MB IO read/write {io}")
    if row.message:
        console.print(f"  Message {row.message}")
    if row.command:
        console.print(f"  Command: {row.command}", soft_wrap=True)
    for attempt in attempts:
        console.print(
            f"  attempt {attempt['attempt']}: {attempt['state']} exit={attempt['exit_code']} {attempt['message'] or ''}"
        )
    if row.lineage:
        console.print_json(json.dumps(row.lineage))

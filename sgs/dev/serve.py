"""One unit of the dev stack run in the foreground, for a supervisor that restarts it on change (Tilt's serve_cmd).

``sgs dev serve operator`` starts the operator exactly as ``sgs dev up --parts sgs`` would (same settings, same work
directory, recorded in the same state file, so ``sgs dev env/status/down`` see it), then follows its log on stdout
until it is told to stop (SIGTERM from Tilt when a watched file changed, or Ctrl-C), when it stops the unit and
forgets it. A copy already running — left by ``up``, or by a serve that was SIGKILLed — is stopped first, so a
restart never leaves two operators holding the webhook or two bridges claiming one node.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import TextIO
from urllib.parse import urlsplit

from sgs.dev.observability import register_targets
from sgs.dev.services import ArchiveServicePart, TransferServicePart
from sgs.dev.stack import (
    DEV_SITES,
    SERVICE_WAVES,
    SGS_PART,
    PartState,
    Report,
    dev_dir,
    load_state,
    save_state,
    sgs_units,
    start_unit,
    state_lock,
    stop_unit,
    units_of,
)
from sgs.testing.base import Part

POLL_S = 0.25


class StopRequested(BaseException):
    """SIGTERM or SIGINT arrived: stop the unit and return."""


SERVABLE = (*SERVICE_WAVES, "operator", *(f"bridge-{site}" for site in DEV_SITES), "console", "trigger")


def unit_for(unit_name: str, state: dict[str, PartState]) -> tuple[str, Part]:
    """The part name and the unit `sgs dev up` would start under ``unit_name``."""
    if unit_name not in SERVABLE:
        raise ValueError(f"unknown unit {unit_name!r}; choose from {', '.join(SERVABLE)}")
    if unit_name in SERVICE_WAVES:
        service = units_of(unit_name)[0][1]
        previous = state.get(unit_name)
        if previous is not None and isinstance(service, ArchiveServicePart | TransferServicePart):
            # Its clients (the transfer service, the operator, the trigger, the console, the env file) were given
            # this address: a restarted service keeps it, so none of them needs restarting too.
            service.port = urlsplit(str(previous.info["url"])).port or service.port
        return unit_name, service
    for name, unit in sgs_units(state):
        if name == unit_name:
            return SGS_PART, unit
    raise ValueError(f"{unit_name} is not among the units of this stack")


def stop_running_copy(unit_name: str, state: dict[str, PartState], report: Report) -> None:
    running = state.pop(unit_name, None)
    if running is None:
        return
    stop_unit(unit_name, running, state)
    report(unit_name, "stopped the copy that was running")


def start_one(unit_name: str, report: Report) -> PartState:
    """Start ``unit_name`` (stopping a running copy first) and record it in the state file once ready."""
    with state_lock():
        state = load_state()
        part, unit = unit_for(unit_name, state)
        stop_running_copy(unit_name, state, report)
        save_state(state)
    started = start_unit(part, unit_name, unit)
    with state_lock():
        state = load_state()
        state[unit_name] = started
        register_targets(state)
        save_state(state)
    report(unit_name, f"ready in {started.ready_s:.1f} s")
    return started


def stop_one(unit_name: str, started: PartState, report: Report) -> None:
    """Stop the unit this serve started and forget it — not a copy another serve has started since."""
    with state_lock():
        state = load_state()
        recorded = state.get(unit_name)
        ours = recorded is not None and _same_processes(recorded, started)
        if ours:
            del state[unit_name]
            save_state(state)
    if ours:
        stop_unit(unit_name, started, state)
    else:  # a newer serve replaced it (and stopped these processes): the webhook is the new operator's now
        for record in reversed(started.processes):
            record.stop()
    report(unit_name, "stopped")


def _same_processes(a: PartState, b: PartState) -> bool:
    return [(r.pid, r.create_time) for r in a.processes] == [(r.pid, r.create_time) for r in b.processes]


def log_sizes(workdir: Path) -> dict[Path, int]:
    """Where each log of a unit ends now, so its output is followed from this start on."""
    log_dir = workdir / "log"
    return {path: path.stat().st_size for path in log_dir.glob("*.log")} if log_dir.is_dir() else {}


class LogFollower:
    """Copies what a unit's processes append to their logs onto ``out``, one prefix per log when several."""

    def __init__(self, started: PartState, offsets: dict[Path, int], out: TextIO) -> None:
        self.paths = [Path(record.log) for record in started.processes]
        self.offsets = {path: offsets.get(path, 0) for path in self.paths}
        self.prefix = len(self.paths) > 1
        self.out = out

    def pump(self) -> None:
        for path in self.paths:
            if not path.is_file():
                continue
            with path.open("rb") as handle:
                handle.seek(self.offsets[path])
                chunk = handle.read()
            if not chunk:
                continue
            self.offsets[path] += len(chunk)
            text = chunk.decode(errors="replace")
            if self.prefix:
                text = "".join(f"[{path.stem}] {line}" for line in text.splitlines(keepends=True))
            self.out.write(text)
        self.out.flush()


def serve(unit_name: str, report: Report, out: TextIO = sys.stdout) -> int:
    """Run ``unit_name`` until SIGTERM/SIGINT (then 0) or until one of its processes dies (then 1)."""
    starting = True
    stop_asked: list[str] = []

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        # A stop asked for while the unit starts waits until it is recorded (Tilt allows 30 s before its
        # SIGKILL): stopped half way, its processes would run on with nothing left that knows them.
        stop_asked.append(signal.Signals(signum).name)
        if not starting:
            raise StopRequested(stop_asked[-1])

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, request_stop)
    offsets = log_sizes(dev_dir() / unit_name)  # every unit's work directory is named after it
    try:
        started = start_one(unit_name, report)
    except Exception as err:
        report(unit_name, f"FAILED: {err}")
        return 1
    follower = LogFollower(started, offsets, out)
    try:
        starting = False
        if stop_asked:
            raise StopRequested(stop_asked[-1])
        while all(started.alive()):
            follower.pump()
            time.sleep(POLL_S)
    except StopRequested:
        follower.pump()
        stop_one(unit_name, started, report)
        return 0
    follower.pump()
    dead = [record.name for record in started.processes if not record.is_alive()]
    report(unit_name, f"FAILED: {', '.join(dead)} exited (log: {started.processes[0].log})")
    stop_one(unit_name, started, report)
    return 1

"""Launch task processes and learn of their exit the moment it happens.

Each task runs in a session of its own (so a limit kills its whole process group) with a pidfd that becomes
readable when it exits; :meth:`Launcher.wait` sleeps in ``epoll`` on those pidfds and on the next deadline (a
walltime, or a memory sample), so a freed slot is known at once instead of at the next poll. It reaps every
exited task before it returns, so the caller can launch into the freed slots before doing any bookkeeping, and
it takes memory samples only when no exit is waiting to be handled.

Shared by the local executor, the bridge's process agent and the pilot agent (Linux: pidfds need 5.3+).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

from sgs.launcher.identity import MARKER_ENV, ProcessIdentity, identify, new_marker
from sgs.launcher.usage import Outcome, Usage, exited_io, outcome_of, sample_tree

K = TypeVar("K")
SAMPLE_EVERY_S = 0.5
# The first memory sample: a task shorter than this reports no VMS (its CPU, peak RSS and I/O stay exact), and
# a fan-out of short tasks pays no sampling at all.
FIRST_SAMPLE_S = 0.1


@dataclass(frozen=True)
class LaunchSpec:
    """One command to run: where, with which environment, logging where, within which limits."""

    argv: Sequence[str]
    cwd: Path
    env: Mapping[str, str]
    log: Path
    error_log: Path | None = None  # stderr; None = into ``log`` with stdout
    ram_limit_bytes: int | None = None
    walltime_s: float | None = None


@dataclass(eq=False)
class Child(Generic[K]):
    """A launched task, until it has been reaped."""

    key: K
    spec: LaunchSpec
    pid: int
    pidfd: int
    identity: ProcessIdentity
    started: float  # monotonic
    started_at: float  # wall clock
    deadline: float | None
    next_sample: float
    usage: Usage = field(default_factory=Usage)
    killed_for: str | None = None


@dataclass(frozen=True)
class Finished(Generic[K]):
    key: K
    child: Child[K]
    outcome: Outcome


def _open_log(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)


class Launcher(Generic[K]):
    """Runs tasks keyed by ``K``; not thread-safe (one owner loop)."""

    def __init__(self, sample_every_s: float = SAMPLE_EVERY_S) -> None:
        self.sample_every_s = sample_every_s
        self.running: dict[K, Child[K]] = {}
        self._selector = selectors.DefaultSelector()

    def start(self, key: K, spec: LaunchSpec) -> Child[K]:
        """Launch now; raises OSError when the command cannot be started (not found, not executable)."""
        if key in self.running:
            raise ValueError(f"{key!r} is already running")
        marker = new_marker()
        env = {**spec.env, MARKER_ENV: marker}
        out = _open_log(spec.log)
        err = out
        try:
            if spec.error_log is not None:
                err = _open_log(spec.error_log)
            process = subprocess.Popen(
                spec.argv,
                cwd=spec.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,  # its own process group: a limit kills the whole tree
            )
        finally:
            os.close(out)
            if err != out:
                os.close(err)
        process.returncode = 0  # reaped by wait4 here (for its resource usage); Popen must never wait on it
        now = time.monotonic()
        child = Child(
            key=key,
            spec=spec,
            pid=process.pid,
            pidfd=os.pidfd_open(process.pid),
            identity=identify(process.pid, marker),
            started=now,
            started_at=time.time(),
            deadline=now + spec.walltime_s if spec.walltime_s else None,
            next_sample=now + min(FIRST_SAMPLE_S, self.sample_every_s),
        )
        self._selector.register(child.pidfd, selectors.EVENT_READ, child)
        self.running[key] = child
        return child

    def wait(self, timeout_s: float | None = None, idle: Callable[[], bool] | None = None) -> list[Finished[K]]:
        """Block until a task ends or ``timeout_s`` passes, enforcing limits meanwhile; every ended task is reaped.

        Returns as soon as at least one task has ended (every task that has, at that moment), or ``[]`` on
        timeout. ``timeout_s=0`` polls. ``idle`` is the owner's deferrable work, done a step at a time while no
        exit waits to be handled; it returns False when it has nothing left to do.
        """
        give_up = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            now = time.monotonic()
            finished = self._reap(self._selector.select(0))
            if finished:
                return finished
            if self._enforce_and_sample(now):
                continue  # something was done: look for exits again before anything else
            if give_up is not None and now >= give_up:
                return []
            if idle is not None and idle():
                continue
            if give_up is None and not self._selector.get_map():
                return []  # nothing could ever wake us
            finished = self._reap(self._selector.select(self._pause(now, give_up)))
            if finished or (give_up is not None and time.monotonic() >= give_up):
                return finished

    def add_reader(self, fd: int, on_readable: Callable[[], None]) -> None:
        """Watch another file descriptor (an agent's socket) in the same wait: ``on_readable`` runs inside
        :meth:`wait` when it is readable, and may start tasks."""
        self._selector.register(fd, selectors.EVENT_READ, on_readable)

    def remove_reader(self, fd: int) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(fd)

    def kill(self, key: K, why: str) -> None:
        """SIGKILL the task's process group; its exit comes through :meth:`wait` as usual, with ``why``."""
        child = self.running.get(key)
        if child is None:
            return
        if child.killed_for is None:
            child.killed_for = why
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signal.SIGKILL)  # the unreaped leader holds the group's number: it is ours

    def kill_all(self, why: str) -> None:
        for key in list(self.running):
            self.kill(key, why)

    def close(self) -> None:
        """Kill and reap whatever still runs (the owner is stopping), then release the selector."""
        self.kill_all("the launcher closed")
        while self.running:
            self.wait(1.0)
        self._selector.close()

    def _pause(self, now: float, give_up: float | None) -> float | None:
        moments = [give_up] if give_up is not None else []
        for child in self.running.values():
            if child.killed_for is None:  # a killed task only has its exit left to come
                moments.append(child.next_sample)
                if child.deadline is not None:
                    moments.append(child.deadline)
        return max(0.0, min(moments) - now) if moments else None

    def _reap(self, events: list[tuple[selectors.SelectorKey, int]]) -> list[Finished[K]]:
        finished = []
        for key, _ in events:
            if not isinstance(key.data, Child):
                key.data()  # a reader added by the owner
                continue
            child: Child[K] = key.data
            io = exited_io(child.pid)  # before reaping: the exited leader's totals, descendants included
            pid, status, rusage = os.wait4(child.pid, os.WNOHANG)
            if pid == 0:
                continue  # readable but not yet waitable: next round
            self._selector.unregister(child.pidfd)
            os.close(child.pidfd)
            del self.running[child.key]
            child.usage.wall_s = time.monotonic() - child.started
            child.usage.add_exit(rusage, io)
            spec = child.spec
            outcome = outcome_of(
                status, child.usage, child.killed_for, spec.ram_limit_bytes, spec.walltime_s, spec.error_log or spec.log
            )
            finished.append(Finished(child.key, child, outcome))
        return finished

    def _enforce_and_sample(self, now: float) -> bool:
        """Kill tasks past their walltime; sample (and hold to its memory limit) one task whose sample is due."""
        acted = False
        for child in list(self.running.values()):
            if child.killed_for is None and child.deadline is not None and now >= child.deadline:
                child.usage.wall_s = now - child.started
                self.kill(child.key, "DeadlineExceeded")
                acted = True
        due = [c for c in self.running.values() if c.next_sample <= now and c.killed_for is None]
        if not due:
            return acted
        child = min(due, key=lambda c: c.next_sample)
        child.next_sample = now + self.sample_every_s
        sample = sample_tree(child.pid)
        child.usage.add_sample(sample)
        child.usage.wall_s = now - child.started
        limit = child.spec.ram_limit_bytes
        if limit is not None and sample.rss_bytes > limit:
            self.kill(child.key, "OOMKilled")
        return True

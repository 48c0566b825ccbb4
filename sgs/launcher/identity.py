"""Which processes are a task's, proven by something a recycled PID cannot fake.

A PID alone names a task's process only while that process lives: once it ends, the kernel may hand the
number to anything (``kernel.pid_max`` is 32,768 on many hosts). So a launched task is remembered as a
:class:`ProcessIdentity`: its PID, the kernel's start time of that process (clock ticks since boot, from
``/proc/PID/stat``), the boot it ran in, and a random marker put in the task's environment, which every
process the task starts inherits. A leftover is killed only when

* the group leader still runs with the recorded start time (then its whole process group is the task's), or
* a process carries the marker (the leader has exited and its children run on, or one left the group).

Each kill goes through a pidfd opened *before* the check, so the PID cannot be recycled between checking and
signalling: a pidfd keeps its PID number from being reused while it is open.

Linux only (``/proc``, pidfds), like the rest of the launcher.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import signal
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

MARKER_ENV = "SGS_TASK_MARKER"
_PROC = Path("/proc")


@dataclass(frozen=True)
class ProcessIdentity:
    """A launched task's process, as recorded at launch (JSON-able with :meth:`as_dict`)."""

    pid: int
    start_ticks: int
    boot_id: str
    marker: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: object) -> ProcessIdentity | None:
        """The identity a record holds, or None for a record without one (written before identities)."""
        if not isinstance(data, dict):
            return None
        try:
            return cls(int(data["pid"]), int(data["start_ticks"]), str(data["boot_id"]), str(data["marker"]))
        except (KeyError, TypeError, ValueError):
            return None


def new_marker() -> str:
    return secrets.token_hex(12)


@functools.cache
def boot_id() -> str:
    try:
        return (_PROC / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _start_ticks(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat: when the process started, in clock ticks since boot."""
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        text = os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)
    # "pid (comm) state ppid ..."; comm may hold spaces and parentheses, so count fields after the last ')'.
    return int(text[text.rindex(b")") + 2 :].split()[19])


def identify(pid: int, marker: str) -> ProcessIdentity:
    """The identity of a process just launched (its start time is set at fork, so exec changes nothing)."""
    ticks = _start_ticks(pid)
    return ProcessIdentity(pid, -1 if ticks is None else ticks, boot_id(), marker)


def kill_leftover(identity: ProcessIdentity | None) -> int:
    """SIGKILL whatever still runs of a task an executor lost track of; returns how many processes it hit.

    Never touches a process that merely reuses the task's PID or process-group number.
    """
    if identity is None or identity.boot_id != boot_id():
        return 0  # no identity to prove anything by, or the machine rebooted since: nothing of it can run
    # Counted before anything is killed: a process SIGKILLed a moment ago may still show in /proc, and counting
    # after the group kill made the figure depend on how fast the kernel reaped it.
    marked = {pid for pid in _other_pids() if _has_marker(pid, identity.marker)}
    hit = marked | ({identity.pid} if _kill_group_of_leader(identity) else set())
    for pid in marked:
        _kill_if_marked(pid, identity.marker)
    return len(hit)


def _kill_group_of_leader(identity: ProcessIdentity) -> bool:
    with _pidfd(identity.pid) as fd:
        if fd is None:
            return False
        if _start_ticks(identity.pid) != identity.start_ticks:
            return False  # another process has the number now
        # The pidfd holds the number: no other process can take it, nor lead a group of that number.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(identity.pid, signal.SIGKILL)
        return True


def _other_pids() -> Iterator[int]:
    own = os.getpid()
    for entry in _PROC.iterdir():
        if entry.name.isdigit() and int(entry.name) != own:
            yield int(entry.name)


def _kill_if_marked(pid: int, marker: str) -> bool:
    with _pidfd(pid) as fd:
        if fd is None or not _has_marker(pid, marker):
            return False
        with contextlib.suppress(ProcessLookupError, PermissionError):
            signal.pidfd_send_signal(fd, signal.SIGKILL)
        return True


def _has_marker(pid: int, marker: str) -> bool:
    try:
        environ = (_PROC / str(pid) / "environ").read_bytes()
    except OSError:
        return False
    return f"{MARKER_ENV}={marker}".encode() in environ.split(b"\0")


@contextlib.contextmanager
def _pidfd(pid: int) -> Iterator[int | None]:
    try:
        fd = os.pidfd_open(pid)
    except (ProcessLookupError, PermissionError, OSError):
        yield None
        return
    try:
        yield fd
    finally:
        os.close(fd)

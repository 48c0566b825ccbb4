"""What a task used (next to what it asked for) and how it ended: the profile the Euclid Pipeline Run Server shows.

CPU time, peak RSS and bytes read and written come from the kernel when the task ends: ``wait4``'s resource
usage, and ``/proc/PID/io`` of the exited (not yet reaped) leader, which includes every descendant it reaped.
Both are exact even for a task shorter than any sampling interval. The memory of the live process tree (for
the limit, and the peak VMS) comes from sampling ``/proc``, a fraction of a millisecond per tree.
"""

from __future__ import annotations

import os
import resource
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_PAGE = os.sysconf("SC_PAGE_SIZE")
_PROC = Path("/proc")


@dataclass
class Usage:
    """Resources a task actually used."""

    wall_s: float = 0.0
    cpu_s: float = 0.0
    max_rss_mb: float = 0.0
    max_vms_mb: float = 0.0
    read_mb: float = 0.0
    write_mb: float = 0.0

    @property
    def cpu_percent(self) -> float:
        return 100.0 * self.cpu_s / self.wall_s if self.wall_s > 0 else 0.0

    def as_dict(self) -> dict[str, float]:
        return {
            "wall_s": round(self.wall_s, 3),
            "cpu_s": round(self.cpu_s, 3),
            "cpu_percent": round(self.cpu_percent, 1),
            "max_rss_mb": round(self.max_rss_mb, 1),
            "max_vms_mb": round(self.max_vms_mb, 1),
            "read_mb": round(self.read_mb, 3),
            "write_mb": round(self.write_mb, 3),
        }

    def add_sample(self, sample: TreeSample) -> None:
        self.max_rss_mb = max(self.max_rss_mb, sample.rss_bytes / 2**20)
        self.max_vms_mb = max(self.max_vms_mb, sample.vms_bytes / 2**20)

    def add_exit(self, rusage: resource.struct_rusage | None, io: tuple[int, int] | None) -> None:
        if rusage is not None:
            self.cpu_s = rusage.ru_utime + rusage.ru_stime
            self.max_rss_mb = max(self.max_rss_mb, rusage.ru_maxrss / 1024.0)
        if io is not None:
            self.read_mb = max(self.read_mb, io[0] / 2**20)
            self.write_mb = max(self.write_mb, io[1] / 2**20)


@dataclass
class Outcome:
    exit_code: int
    usage: Usage
    reason: str  # Completed, Error, OOMKilled, DeadlineExceeded, Killed
    message: str

    @property
    def succeeded(self) -> bool:
        return self.reason == "Completed"


def outcome_of(
    status: int, usage: Usage, killed_for: str | None, ram_limit_bytes: int | None, walltime_s: float | None, log: Path
) -> Outcome:
    """How a task ended, from its wait status and why (if at all) the launcher killed it."""
    code = os.waitstatus_to_exitcode(status)
    if killed_for == "OOMKilled":
        limit_mb = (ram_limit_bytes or 0) / 2**20
        message = f"memory {usage.max_rss_mb:.0f} MiB exceeded the limit of {limit_mb:.0f} MiB"
        return Outcome(code, usage, "OOMKilled", message)
    if killed_for == "DeadlineExceeded":
        message = f"walltime {usage.wall_s:.1f} s exceeded the limit of {walltime_s or 0:.1f} s"
        return Outcome(code, usage, "DeadlineExceeded", message)
    if killed_for is not None:
        return Outcome(code, usage, "Killed", killed_for)
    if code == 0:
        return Outcome(0, usage, "Completed", "")
    if code < 0:
        return Outcome(code, usage, "Error", f"killed by signal {signal.Signals(-code).name}")
    return Outcome(code, usage, "Error", f"exit code {code}: {last_line(log)}")


@dataclass(frozen=True)
class TreeSample:
    rss_bytes: int
    vms_bytes: int


def sample_tree(pid: int) -> TreeSample:
    """RSS and VMS summed over a live process and its descendants (found through /proc/.../children)."""
    rss = vms = 0
    for member in _tree(pid):
        try:
            size, resident = (_PROC / str(member) / "statm").read_text().split()[:2]
        except (OSError, ValueError):
            continue  # it ended between listing and reading
        vms += int(size) * _PAGE
        rss += int(resident) * _PAGE
    return TreeSample(rss, vms)


def _tree(pid: int) -> Iterator[int]:
    stack = [pid]
    while stack:
        member = stack.pop()
        yield member
        stack.extend(_children(member))


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        threads = list((_PROC / str(pid) / "task").iterdir())
    except OSError:
        return found
    for thread in threads:
        try:
            found.extend(int(child) for child in (thread / "children").read_text().split())
        except OSError:
            continue
    return found


def exited_io(pid: int) -> tuple[int, int] | None:
    """Characters read and written by an exited, unreaped process and every descendant it reaped."""
    try:
        fd = os.open(f"/proc/{pid}/io", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        lines = os.read(fd, 4096).split(b"\n")  # rchar: N, then wchar: N
        return int(lines[0].split()[1]), int(lines[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None
    finally:
        os.close(fd)


def last_line(path: Path) -> str:
    """The last non-empty line of a log (what a failed task said last), read from its end."""
    try:
        with path.open("rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - 8192))
            text = handle.read().decode(errors="replace")
    except OSError:
        return ""
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""

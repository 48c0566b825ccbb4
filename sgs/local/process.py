"""One task as a local subprocess: launched in its own session, watched for walltime and memory, profiled.

CPU time and peak RSS come from ``wait4``'s resource usage (exact, even for processes shorter than a sampling
interval); memory enforcement, VMS and I/O come from sampling the process tree with psutil.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil


@dataclass
class Usage:
    """Resources a task actually used, next to what it asked for (Euclid Pipeline Run Server profiling)."""

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


@dataclass
class Outcome:
    exit_code: int
    usage: Usage
    reason: str  # Completed, Error, OOMKilled, DeadlineExceeded, Killed
    message: str

    @property
    def succeeded(self) -> bool:
        return self.reason == "Completed"


@dataclass
class TaskProcess:
    """A running task. ``poll()`` returns its Outcome once it has ended (and enforced limits on the way)."""

    argv: list[str]
    cwd: Path
    env: dict[str, str]
    stdout: Path
    stderr: Path
    ram_limit_bytes: int
    walltime_s: float
    started: float = 0.0
    pid: int = 0
    usage: Usage = field(default_factory=Usage)
    _killed_for: str | None = None
    _last_sample: float = 0.0

    def start(self) -> None:
        with self.stdout.open("ab") as out, self.stderr.open("ab") as err:
            proc = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=self.env,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group, so limits kill the whole tree
            )
        # We reap with wait4 ourselves (for rusage); Popen must not try to wait on it later.
        proc.returncode = 0
        self.pid = proc.pid
        self.started = time.monotonic()

    def poll(self, sample_every: float = 0.5) -> Outcome | None:
        pid, status, rusage = os.wait4(self.pid, os.WNOHANG)
        now = time.monotonic()
        self.usage.wall_s = now - self.started
        if pid == 0:
            if now - self._last_sample >= sample_every:
                self._last_sample = now
                self._sample_and_enforce()
            return None
        self.usage.cpu_s = rusage.ru_utime + rusage.ru_stime
        self.usage.max_rss_mb = max(self.usage.max_rss_mb, rusage.ru_maxrss / 1024.0)
        return self._outcome(status)

    def _sample_and_enforce(self) -> None:
        rss, vms, read, write = _tree_usage(self.pid)
        self.usage.max_rss_mb = max(self.usage.max_rss_mb, rss / 2**20)
        self.usage.max_vms_mb = max(self.usage.max_vms_mb, vms / 2**20)
        self.usage.read_mb = max(self.usage.read_mb, read / 2**20)
        self.usage.write_mb = max(self.usage.write_mb, write / 2**20)
        if self._killed_for is not None:
            return
        if rss > self.ram_limit_bytes:
            self.kill("OOMKilled")
        elif self.usage.wall_s > self.walltime_s:
            self.kill("DeadlineExceeded")

    def kill(self, why: str) -> None:
        self._killed_for = why
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)

    def _outcome(self, status: int) -> Outcome:
        code = os.waitstatus_to_exitcode(status)
        if self._killed_for == "OOMKilled":
            limit_mb = self.ram_limit_bytes / 2**20
            message = f"memory {self.usage.max_rss_mb:.0f} MiB exceeded the limit of {limit_mb:.0f} MiB"
            return Outcome(code, self.usage, "OOMKilled", message)
        if self._killed_for == "DeadlineExceeded":
            message = f"walltime {self.usage.wall_s:.1f} s exceeded the limit of {self.walltime_s:.1f} s"
            return Outcome(code, self.usage, "DeadlineExceeded", message)
        if self._killed_for is not None:
            return Outcome(code, self.usage, "Killed", self._killed_for)
        if code == 0:
            return Outcome(0, self.usage, "Completed", "")
        if code < 0:
            return Outcome(code, self.usage, "Error", f"killed by signal {signal.Signals(-code).name}")
        return Outcome(code, self.usage, "Error", f"exit code {code}: {_last_line(self.stderr)}")


def _tree_usage(pid: int) -> tuple[int, int, int, int]:
    """RSS, VMS, bytes read and written, summed over the task's process tree."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0, 0, 0, 0
    rss = vms = read = write = 0
    for proc in procs:
        try:
            with proc.oneshot():
                mem = proc.memory_info()
                io = proc.io_counters()
        except (psutil.Error, AttributeError):
            continue
        rss += mem.rss
        vms += mem.vms
        read += getattr(io, "read_chars", io.read_bytes)
        write += getattr(io, "write_chars", io.write_bytes)
    return rss, vms, read, write


def _last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


def command_argv(command: str, args: list[str]) -> list[str]:
    return [*_split_command(command), *args]


@functools.lru_cache(maxsize=256)
def _split_command(command: str) -> tuple[str, ...]:
    """A pipeline has a handful of commands and a fan-out runs each thousands of times: split each once."""
    return tuple(shlex.split(command))

"""Child processes of the dev/test parts: started detached, logged to files, stopped by PID.

Every daemon runs in its own session so that `sgs dev up` can exit and leave the stack running, and so
that stopping one part signals its whole process group and nothing else.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil


class PartError(RuntimeError):
    """A part could not start or stop; the message names the part and quotes its log."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def identity_of(user: str | None) -> dict[str, Any]:
    """subprocess kwargs to run as `user`: uid, gid *and* groups (`user=` alone keeps root's groups)."""
    if user is None:
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def make_traversable(path: Path) -> None:
    """Let other users *search* (not list) `path` and its parents: unprivileged daemons (postgres) and
    munged's socket check need it, and temp dirs are created 0700."""
    for directory in [path, *path.parents]:
        mode = directory.stat().st_mode
        if mode & 0o011 != 0o011:
            directory.chmod(mode | 0o011)


def log_tail(path: Path, lines: int = 40) -> str:
    """The last lines of a log file, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


@dataclass(frozen=True)
class ProcessRecord:
    """Enough to find a detached process again and be sure it is still the same one (PIDs get reused)."""

    name: str
    pid: int
    create_time: float
    log: str

    def is_alive(self) -> bool:
        try:
            proc = psutil.Process(self.pid)
            return abs(proc.create_time() - self.create_time) < 0.01 and proc.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL whatever is left after `grace_s`."""
        if not self.is_alive():
            return
        _signal_group(self.pid, signal.SIGTERM)
        if _wait_gone(self.pid, grace_s):
            return
        _signal_group(self.pid, signal.SIGKILL)
        _wait_gone(self.pid, 5.0)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _wait_gone(pid: int, timeout_s: float) -> bool:
    """True once `pid` has exited. A zombie counts as exited: detached daemons are re-parented to an
    init that may reap them late (or never, in some containers)."""
    deadline = time.monotonic() + timeout_s
    interval = 0.01
    while True:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
        interval = min(interval * 2, 0.2)


class ManagedProcess:
    """One daemon of a part: argv, its log file, and the running child once started."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        user: str | None = None,
    ) -> None:
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log = log
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.user = user
        self._popen: subprocess.Popen[bytes] | None = None
        self.record: ProcessRecord | None = None

    def start(self) -> ProcessRecord:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log_file:
            try:
                self._popen = subprocess.Popen(
                    self.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    env=self.env,
                    cwd=self.cwd,
                    start_new_session=True,
                    **identity_of(self.user),
                )
            except OSError as err:
                raise PartError(f"{self.name}: cannot run {self.argv[0]}: {err}") from err
        create_time = psutil.Process(self._popen.pid).create_time()
        self.record = ProcessRecord(self.name, self._popen.pid, create_time, str(self.log))
        return self.record

    def exited(self) -> int | None:
        """The exit status if the process has ended, else None."""
        return self._popen.poll() if self._popen is not None else None

    def stop(self, grace_s: float = 10.0) -> None:
        if self.record is not None:
            self.record.stop(grace_s)
        if self._popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._popen.wait(timeout=1.0)  # reap it so no zombie is left behind


def wait_until(
    condition: Callable[[], bool],
    *,
    what: str,
    timeout_s: float,
    process: ManagedProcess | None = None,
    interval_s: float = 0.05,
) -> None:
    """Poll `condition` until true; fail early (with its log) if `process` dies, or after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():
            return
        if process is not None and (code := process.exited()) is not None:
            raise PartError(
                f"{process.name} exited with status {code} while waiting for {what}; "
                f"last lines of {process.log}:\n{log_tail(process.log)}"
            )
        if time.monotonic() > deadline:
            detail = f"; last lines of {process.log}:\n{log_tail(process.log)}" if process else ""
            raise PartError(f"timed out after {timeout_s:.0f} s waiting for {what}{detail}")
        time.sleep(interval_s)
        interval_s = min(interval_s * 1.5, 0.5)

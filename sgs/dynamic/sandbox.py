"""Evaluate a dynamic-resources function on files, in a subprocess that holds none of the executor's powers.

The subprocess (``python -I -m sgs.dynamic.child``) starts with an empty environment (no KUBECONFIG, DSN or
tokens reach it), in a fresh temporary directory, under resource limits (address space, CPU time, open files,
file size, no core dumps), with no new privileges; before it imports the function it leaves the network
(a new network namespace: as root with CAP_SYS_ADMIN, else through an unprivileged user namespace where the
kernel allows one) and, when started as root, becomes ``nobody``. What it managed is reported back
(``Evaluation.isolation``) so the executor can log it. The files are opened here and handed over as open
descriptors (the function reads ``/dev/fd/N``), so the sandbox needs no permission on the directories.

One subprocess evaluates a batch of files one after the other and reports each as it goes: a file whose
function hangs gets a timeout, and files after it are left for a later batch.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from sgs.dynamic.registry import DynamicFunction

NOBODY = 65534
# The whole environment, and no secret in it: a fixed locale, one thread per numerical library (threads would
# each reserve address space under the limit).
SANDBOX_ENV = {"LC_ALL": "C.UTF-8", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@dataclass(frozen=True)
class SandboxLimits:
    timeout_s: float = 10.0  # per file
    startup_s: float = 30.0  # the interpreter and the function's imports (astropy: ~0.5 s idle, more when loaded)
    memory_bytes: int = 1 << 30  # address space
    max_output_bytes: int = 64 * 1024  # per file's answer
    batch: int = 64  # files per subprocess


@dataclass(frozen=True)
class Evaluated:
    path: str
    resources: dict[str, Any] | None = None
    error: str | None = None


@dataclass
class Evaluation:
    results: list[Evaluated] = field(default_factory=list)  # files not listed were not reached: try again later
    isolation: dict[str, str] = field(default_factory=dict)


def evaluate(function: DynamicFunction, paths: Sequence[str], limits: SandboxLimits | None = None) -> Evaluation:
    limits = limits or SandboxLimits()
    evaluation = Evaluation()
    opened: list[tuple[str, int]] = []
    try:
        for path in paths[: limits.batch]:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO must not block us
            except OSError as err:
                evaluation.results.append(Evaluated(path, error=f"cannot open {path}: {err.strerror or err}"))
                continue
            if stat.S_ISREG(os.fstat(fd).st_mode):
                opened.append((path, fd))
            else:
                os.close(fd)
                evaluation.results.append(Evaluated(path, error=f"{path} is not a regular file"))
        if opened:
            _run(function, opened, limits, evaluation)
    finally:
        for _, fd in opened:
            os.close(fd)
    return evaluation


def _run(function: DynamicFunction, opened: list[tuple[str, int]], limits: SandboxLimits, out: Evaluation) -> None:
    fds = [fd for _, fd in opened]
    request: dict[str, Any] = {
        "target": function.target,
        "location": function.location,
        "fds": fds,
        "cpu_s": int(limits.startup_s + limits.timeout_s * len(opened)) + 1,
        "memory_bytes": limits.memory_bytes,
    }
    with tempfile.TemporaryDirectory(prefix="sgs-dynamic-") as cwd, tempfile.TemporaryFile() as stderr:
        if os.geteuid() == 0:
            os.chown(cwd, NOBODY, NOBODY)  # the sandbox drops to nobody and may write its scratch here
        env = {**SANDBOX_ENV, "HOME": cwd, "TMPDIR": cwd}
        proc = subprocess.Popen(
            [sys.executable, "-I", "-m", "sgs.dynamic.child"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            cwd=cwd,
            env=env,
            pass_fds=fds,
            start_new_session=True,  # its own process group: a timeout kills whatever it started too
        )
        try:
            _converse(proc, request, function, opened, limits, out, stderr)
        finally:
            _kill(proc)


def _converse(
    proc: subprocess.Popen[bytes],
    request: dict[str, Any],
    function: DynamicFunction,
    opened: list[tuple[str, int]],
    limits: SandboxLimits,
    out: Evaluation,
    stderr: IO[bytes],
) -> None:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(json.dumps(request).encode())
    proc.stdin.close()
    lines = _Lines(proc.stdout, limits.max_output_bytes)
    header = lines.next(time.monotonic() + limits.startup_s)
    if header is None or "sandbox" not in header:
        why = _stopped(proc, stderr, lines, limits.startup_s)
        out.results.extend(Evaluated(path, error=f"{function.name}: {why}") for path, _ in opened)
        return
    out.isolation = {str(k): str(v) for k, v in header["sandbox"].items()}
    if "fatal" in header:
        out.results.extend(Evaluated(path, error=f"{function.name}: {header['fatal']}") for path, _ in opened)
        return
    for path, _ in opened:
        answer = lines.next(time.monotonic() + limits.timeout_s)
        if answer is None:
            why = _stopped(proc, stderr, lines, limits.timeout_s)
            out.results.append(Evaluated(path, error=f"{function.name} on {path}: {why}"))
            return
        if isinstance(answer.get("resources"), dict):
            out.results.append(Evaluated(path, resources=answer["resources"]))
        else:
            out.results.append(Evaluated(path, error=f"{function.name} on {path}: {answer.get('error')}"))


def _stopped(proc: subprocess.Popen[bytes], stderr: IO[bytes], lines: _Lines, waited_s: float) -> str:
    if lines.too_long:
        return f"answered more than {lines.limit} bytes"
    if lines.closed:  # its output ended: it exits, or has just exited
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
    if proc.poll() is None:
        return f"no answer within {waited_s:g} s (stopped)"
    code = proc.returncode
    how = f"killed by signal {-code}" if code < 0 else f"exited with status {code}"
    stderr.seek(0, os.SEEK_END)
    stderr.seek(max(0, stderr.tell() - 600))
    tail = stderr.read().decode(errors="replace").strip().splitlines()[-3:]
    return how + (f": {' / '.join(tail)}" if tail else "")


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


class _Lines:
    """JSON lines from a pipe, each awaited until a deadline (a hung function must not hang its caller)."""

    def __init__(self, pipe: IO[bytes], limit: int) -> None:
        self.fd = pipe.fileno()
        self.limit = limit
        self.buffer = b""
        self.too_long = False
        self.closed = False
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.fd, selectors.EVENT_READ)

    def next(self, deadline: float) -> dict[str, Any] | None:
        while b"\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            if self.closed or remaining <= 0 or not self.selector.select(remaining):
                return None
            chunk = os.read(self.fd, 65536)
            if not chunk:
                self.closed = True
                return None
            self.buffer += chunk
            if len(self.buffer) > self.limit and b"\n" not in self.buffer:
                self.too_long = True
                return None
        line, self.buffer = self.buffer.split(b"\n", 1)
        try:
            value = json.loads(line)
        except ValueError:
            return {"error": "answered something that is not JSON"}
        return value if isinstance(value, dict) else {"error": "answered something that is not a JSON object"}

"""`python -m sgs_bridge.agent PODS_ROOT`: one process per node that runs every pod's task with the shared launcher.

The process provider used to start a Python runner per pod (a fifth of a second of CPU each here); the agent
starts once and launches each task itself, woken by the task's exit. It keeps the runner's contract, so the
files in a pod's directory stay the whole state: it takes the pod's ``lock`` before launching and holds it
until the outcome is written, writes ``state.json`` once started (with the task's ProcessIdentity) and
``outcome.json`` once ended. A bridge restarted while tasks run finds them through those files; an agent that
dies releases every lock, which the provider reads as "ended without an outcome" (and kills what is left).

Requests come over a Unix socket in PODS_ROOT (mode 0600, and the peer's uid is checked): one JSON line per
connection, ``{"op": "run" | "cancel", "uid": ...}``, answered with one JSON line. The agent exits once it has
run nothing and heard nothing for ``--idle-exit`` seconds; the provider starts it again on the next request.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from sgs.launcher.launcher import Finished, Launcher
from sgs_bridge.container import remove_container
from sgs_bridge.files import read_json
from sgs_bridge.runner import (
    LOCK_FILE,
    STATE_FILE,
    TASK_FILE,
    launch_spec,
    record_outcome,
    record_start,
    record_start_failure,
)

SOCKET_FILE = "agent.sock"
AGENT_LOCK_FILE = "agent.lock"
AGENT_LOG_FILE = "agent.log"
IDLE_EXIT_S = 60.0
REQUEST_TIMEOUT_S = 2.0
_UID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_UCRED = struct.Struct("3i")  # pid, uid, gid

log = logging.getLogger("sgs_bridge.agent")


class AgentError(RuntimeError):
    """A request the agent refused (bad pod uid, no task file)."""


class Agent:
    def __init__(self, pods_root: Path, idle_exit_s: float = IDLE_EXIT_S) -> None:
        self.pods_root = pods_root
        self.idle_exit_s = idle_exit_s
        self.launcher: Launcher[str] = Launcher()
        self.locks: dict[str, int] = {}  # pod uid -> its lock, held while the task runs
        self.last_activity = time.monotonic()
        self.server = _listen(pods_root / SOCKET_FILE)
        self.launcher.add_reader(self.server.fileno(), self._accept)

    def serve(self) -> None:
        log.info("agent %d serving %s", os.getpid(), self.pods_root)
        try:
            while True:
                for finished in self.launcher.wait(timeout_s=self.idle_exit_s):
                    self._record(finished)
                idle_for = time.monotonic() - self.last_activity
                if not self.launcher.running and idle_for >= self.idle_exit_s:
                    log.info("agent %d idle for %.0f s: exiting", os.getpid(), idle_for)
                    return
        finally:
            self.launcher.remove_reader(self.server.fileno())
            with contextlib.suppress(FileNotFoundError):
                (self.pods_root / SOCKET_FILE).unlink()
            self.server.close()

    # --- requests ------------------------------------------------------------------------------

    def _accept(self) -> None:
        try:
            connection, _ = self.server.accept()
        except BlockingIOError:
            return
        with connection:
            self.last_activity = time.monotonic()
            connection.settimeout(REQUEST_TIMEOUT_S)
            try:
                _check_peer(connection)
                reply = self.handle(json.loads(_read_line(connection)))
            except (AgentError, ValueError, OSError) as error:
                reply = {"ok": False, "error": str(error)}
            with contextlib.suppress(OSError):
                connection.sendall(json.dumps(reply).encode() + b"\n")

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        uid = str(request.get("uid", ""))
        if not _UID.fullmatch(uid):
            raise AgentError(f"not a pod uid: {uid!r}")
        op = request.get("op")
        if op == "run":
            return {"ok": True, "state": self._run(uid)}
        if op == "cancel":
            self.launcher.kill(uid, str(request.get("why") or "cancelled"))
            return {"ok": True, "state": "cancelling" if uid in self.launcher.running else "not running"}
        raise AgentError(f"unknown op {op!r}")

    def _run(self, uid: str) -> str:
        pod_dir = self.pods_root / uid
        if uid in self.launcher.running:
            return "running"
        try:
            lock = os.open(pod_dir / LOCK_FILE, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
        except FileNotFoundError as error:
            raise AgentError(f"no pod directory {pod_dir}") from error
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock)
            return "running"  # another agent (or a runner of an older bridge) has it
        if (pod_dir / STATE_FILE).exists():
            os.close(lock)
            return "done"  # it ran already: a pod runs at most once
        task = read_json(pod_dir / TASK_FILE)
        if task is None:
            os.close(lock)
            raise AgentError(f"no readable {pod_dir / TASK_FILE}")
        try:
            child = self.launcher.start(uid, launch_spec(task))
        except OSError as error:
            record_start_failure(pod_dir, task, error)
            os.close(lock)
            return "failed"
        record_start(pod_dir, child.pid, child.started_at, os.getpid(), child.identity.as_dict())
        self.locks[uid] = lock
        return "started"

    def _record(self, finished: Finished[str]) -> None:
        self.last_activity = time.monotonic()
        container = (read_json(self.pods_root / finished.key / TASK_FILE) or {}).get("container")
        if isinstance(container, dict):
            remove_container(container)  # crun killed (walltime, cancel) leaves its container's processes running
        record_outcome(self.pods_root / finished.key, finished.outcome)
        lock = self.locks.pop(finished.key, None)
        if lock is not None:
            os.close(lock)  # after the outcome: "lock free, no outcome" only ever means a lost task


def _listen(path: Path) -> socket.socket:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # a dead agent's socket; we hold the agent lock, so no live agent owns it
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_mask = os.umask(0o177)  # the socket is born 0600: only this user may connect
    try:
        server.bind(str(path))
    finally:
        os.umask(old_mask)
    server.listen(128)
    server.setblocking(False)
    return server


def _check_peer(connection: socket.socket) -> None:
    _, uid, _ = _UCRED.unpack(connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    if uid != os.getuid():
        raise AgentError(f"refused: uid {uid} is not this agent's user")


def _read_line(connection: socket.socket, limit: int = 64 * 1024) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = connection.recv(4096)
        if not chunk:
            break
        data += chunk
        if len(data) > limit:
            raise AgentError("request too long")
    return data


def hold_agent_lock(pods_root: Path) -> int | None:
    """The node's agent lock, or None when another agent holds it (then that one serves)."""
    fd = os.open(pods_root / AGENT_LOCK_FILE, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("pods_root", type=Path)
    parser.add_argument("--idle-exit", type=float, default=IDLE_EXIT_S, help="seconds idle before exiting")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    if hold_agent_lock(args.pods_root) is None:
        log.info("another agent serves %s", args.pods_root)
        return
    Agent(args.pods_root, idle_exit_s=args.idle_exit).serve()


if __name__ == "__main__":
    main()


class AgentUnavailableError(RuntimeError):
    """The node's agent could not be reached (nor started)."""


class AgentClient:
    """The provider's side: one request per connection, starting the agent when none answers."""

    def __init__(self, pods_root: Path, python: str = sys.executable, idle_exit_s: float = IDLE_EXIT_S) -> None:
        self.pods_root = pods_root
        self.python = python
        self.idle_exit_s = idle_exit_s
        self._spawning = threading.Lock()
        self._spawned_at = 0.0
        self._agents: list[subprocess.Popen[bytes]] = []

    def request(
        self, op: str, uid: str, *, start: bool = True, timeout_s: float = 15.0, **extra: str
    ) -> dict[str, Any]:
        """Send one request; with ``start``, an agent is started when none listens (``start=False``: None answers
        raise AgentUnavailableError at once)."""
        message = json.dumps({"op": op, "uid": uid, **extra}).encode() + b"\n"
        deadline = time.monotonic() + timeout_s
        pause = 0.02
        while True:
            try:
                return self._send(message)
            except (FileNotFoundError, ConnectionRefusedError, ConnectionResetError) as error:
                # No agent, or one exiting while we connected (requests are idempotent: run and cancel alike).
                if not start or time.monotonic() > deadline:
                    raise AgentUnavailableError(
                        f"no agent answers on {self.pods_root / SOCKET_FILE}: {error}"
                    ) from error
                self._start_agent()
                time.sleep(pause)
                pause = min(0.5, pause * 2)

    def _send(self, message: bytes) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(REQUEST_TIMEOUT_S * 5)
            connection.connect(str(self.pods_root / SOCKET_FILE))
            connection.sendall(message)
            reply: dict[str, Any] = json.loads(_read_line(connection))
        if not reply.get("ok"):
            raise AgentError(str(reply.get("error")))
        return reply

    def _start_agent(self) -> None:
        with self._spawning:
            self.reap()
            if any(agent.poll() is None for agent in self._agents) and time.monotonic() - self._spawned_at < 5:
                return  # one is starting
            with (self.pods_root / AGENT_LOG_FILE).open("ab") as agent_log:
                argv = [self.python, "-m", "sgs_bridge.agent", str(self.pods_root), f"--idle-exit={self.idle_exit_s}"]
                self._agents.append(
                    subprocess.Popen(
                        argv,
                        stdin=subprocess.DEVNULL,
                        stdout=agent_log,
                        stderr=agent_log,
                        start_new_session=True,  # outlives the bridge; a Ctrl-C to the bridge does not reach it
                    )
                )
            self._spawned_at = time.monotonic()

    def reap(self) -> None:
        """Collect agents that exited (idle), so none lingers as a zombie of the bridge."""
        self._agents = [agent for agent in self._agents if agent.poll() is None]

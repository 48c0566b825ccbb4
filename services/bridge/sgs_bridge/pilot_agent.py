"""`python -m sgs_bridge.pilot_agent ...`: the agent inside a pilot job; runs the payloads the bridge sends it.

The pilot's sbatch script starts it. It connects to the bridge (TCP), proves which pilot it is with the
per-pilot token the bridge wrote beside the script (mode 0600), and then reads one JSON line per request:
``{"op": "run", "uid": ...}`` (the payload's ``task.json`` is in its pod directory, on the filesystem the bridge
and the pilot share, as for the per-pod sbatch path), ``{"op": "cancel", "uid": ..., "why": ...}`` and
``{"op": "drain"}`` (start nothing more, exit once the running payloads have ended). It answers
``{"op": "started" | "finished", ...}``. Payloads run with the shared launcher (one process group each, the
pod's memory and walltime enforced, usage profiled) and leave the same ``state.json`` / ``outcome.json`` as the
process provider's agent, so a restarted bridge reads them from disk.

SIGTERM (Slurm's scancel, walltime, or node shutdown) kills the payloads, and their outcome reads
``PilotLost``: the pilot, not the payload, failed. A lost connection to the bridge drains the pilot.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from sgs.launcher.launcher import Finished, Launcher
from sgs_bridge.files import read_json, write_json_atomically
from sgs_bridge.runner import (
    OUTCOME_FILE,
    STATE_FILE,
    TASK_FILE,
    launch_spec,
    outcome_record,
    record_start_failure,
)

PILOT_LOST = "PilotLost"
CLAIM_FILE = "pilot_claim"
CONNECT_TIMEOUT_S = 30.0
MAX_LINE = 1024 * 1024
_UID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

log = logging.getLogger("sgs_bridge.pilot_agent")


class AgentRefusedError(RuntimeError):
    """The bridge refused this agent (wrong token, unknown pilot)."""


class PilotAgent:
    def __init__(self, connection: socket.socket, pilot: str, pods_root: Path, received: bytes = b"") -> None:
        self.connection = connection
        self.pilot = pilot
        self.job_id = os.environ.get("SLURM_JOB_ID", "")
        self.pods_root = pods_root.resolve()
        self.launcher: Launcher[str] = Launcher()
        self.buffer = received
        self.draining = False
        self.stopping = False  # SIGTERM: every payload still running ends as PilotLost
        self.connected = True
        self.launcher.add_reader(connection.fileno(), self._readable)

    def serve(self) -> None:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        log.info("pilot %s (Slurm job %s) agent %d serving", self.pilot, self.job_id, os.getpid())
        self._take_lines()  # requests that came with the bridge's answer to our hello
        while not ((self.draining or self.stopping) and not self.launcher.running):
            for finished in self.launcher.wait(timeout_s=5.0):
                self._finished(finished)
        log.info("pilot %s: %s; exiting", self.pilot, "stopped" if self.stopping else "drained")
        with contextlib.suppress(OSError):
            self.connection.close()

    def _stop(self, signum: int, _frame: object) -> None:
        self.stopping = True
        self.launcher.kill_all(f"{PILOT_LOST}: the pilot got signal {signal.Signals(signum).name}")

    # --- requests from the bridge ----------------------------------------------------------------

    def _readable(self) -> None:
        try:
            chunk = self.connection.recv(65536)
        except (BlockingIOError, InterruptedError, TimeoutError):
            return
        except OSError as error:
            chunk = b""
            log.warning("pilot %s: connection error: %s", self.pilot, error)
        if not chunk:
            self._lost_bridge()
            return
        self.buffer += chunk
        if len(self.buffer) > MAX_LINE and b"\n" not in self.buffer:
            self._lost_bridge()
            return
        self._take_lines()

    def _take_lines(self) -> None:
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            if line.strip():
                self._handle(json.loads(line))

    def _lost_bridge(self) -> None:
        log.warning("pilot %s: the bridge closed the connection; draining", self.pilot)
        self.launcher.remove_reader(self.connection.fileno())
        self.connected = False
        self.draining = True

    def _handle(self, request: dict[str, Any]) -> None:
        op = request.get("op")
        if op == "drain":
            self.draining = True
            return
        uid = str(request.get("uid", ""))
        if not _UID.fullmatch(uid):
            log.warning("pilot %s: ignored a request for %r (not a pod uid)", self.pilot, uid)
            return
        if op == "run":
            self._run(uid)
        elif op == "cancel":
            self.launcher.kill(uid, str(request.get("why") or "cancelled"))

    def _run(self, uid: str) -> None:
        pod_dir = self.pods_root / uid
        if self.draining or self.stopping:
            self._send({"op": "refused", "uid": uid, "why": "the pilot is draining"})
            return
        try:
            # A payload runs at most once, whoever asks: the claim is created exclusively, on a shared filesystem.
            os.close(os.open(pod_dir / CLAIM_FILE, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except OSError as error:
            self._send({"op": "refused", "uid": uid, "why": f"cannot claim {pod_dir}: {error.strerror or error}"})
            return
        task = read_json(pod_dir / TASK_FILE)
        if task is None:
            self._send({"op": "refused", "uid": uid, "why": f"no readable {pod_dir / TASK_FILE}"})
            return
        try:
            child = self.launcher.start(uid, launch_spec(task))
        except OSError as error:
            record_start_failure(pod_dir, task, error)
            self._send({"op": "finished", "uid": uid, "outcome": read_json(pod_dir / OUTCOME_FILE) or {}})
            return
        state = {
            "pid": child.pid,
            "runner_pid": os.getpid(),
            "started_at": child.started_at,
            "process": child.identity.as_dict(),
            "pilot": self.pilot,
            "pilot_job": self.job_id,
        }
        write_json_atomically(pod_dir / STATE_FILE, state)
        self._send({"op": "started", "uid": uid, "pid": child.pid, "started_at": child.started_at})

    def _finished(self, finished: Finished[str]) -> None:
        outcome = outcome_record(finished.outcome)
        # Nothing in a pilot sends a payload SIGTERM (limits and cancels are SIGKILL): one that ended by it got
        # Slurm's signal to the whole job, maybe a moment before this agent's own handler ran.
        if self.stopping or finished.outcome.exit_code == -signal.SIGTERM:
            outcome["reason"] = PILOT_LOST
            outcome["message"] = (
                f"{PILOT_LOST}: the pilot was stopped (Slurm: scancel, walltime, memory or node shutdown)"
            )
        write_json_atomically(self.pods_root / finished.key / OUTCOME_FILE, outcome)
        self._send({"op": "finished", "uid": finished.key, "outcome": outcome})

    def _send(self, message: dict[str, Any]) -> None:
        if not self.connected:
            return  # the outcome is on disk; a restarted bridge reads it there
        try:
            self.connection.sendall(json.dumps(message).encode() + b"\n")
        except OSError as error:
            log.warning("pilot %s: cannot reach the bridge (%s)", self.pilot, error)
            self._lost_bridge()


def connect(address: str, pilot: str, token: str, timeout_s: float = CONNECT_TIMEOUT_S) -> tuple[socket.socket, bytes]:
    """Connect and introduce ourselves: the connection and the bytes already read past the bridge's answer;
    raises AgentRefusedError when the bridge says no."""
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            connection = socket.create_connection((host, int(port)), timeout=10.0)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    hello = {
        "op": "hello",
        "pilot": pilot,
        "token": token,
        "job_id": os.environ.get("SLURM_JOB_ID", ""),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "remaining_s": remaining_walltime_s(),
    }
    connection.sendall(json.dumps(hello).encode() + b"\n")
    line, rest = _read_line(connection)
    reply = json.loads(line or b"{}")
    if not reply.get("ok"):
        connection.close()
        raise AgentRefusedError(str(reply.get("error") or "the bridge closed the connection"))
    connection.settimeout(10.0)  # reads happen only once readable; a write may wait for a slow bridge
    return connection, rest


def remaining_walltime_s() -> float | None:
    """Seconds until Slurm ends this job, when Slurm says (SLURM_JOB_END_TIME, Slurm 21.08+)."""
    end = os.environ.get("SLURM_JOB_END_TIME", "")
    return max(0.0, float(end) - time.time()) if end.isdigit() else None


def _read_line(connection: socket.socket) -> tuple[bytes, bytes]:
    """The first line, and what came after it in the same reads (the bridge may send work right away)."""
    data = b""
    while b"\n" not in data and len(data) < MAX_LINE:
        chunk = connection.recv(65536)
        if not chunk:
            break
        data += chunk
    line, _, rest = data.partition(b"\n")
    return line, rest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--bridge", required=True, help="HOST:PORT of the bridge's pilot endpoint")
    parser.add_argument("--pilot", required=True, help="this pilot's name")
    parser.add_argument("--token-file", required=True, type=Path)
    parser.add_argument("--pods-root", required=True, type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    token = args.token_file.read_text().strip()
    try:
        connection, received = connect(args.bridge, args.pilot, token)
    except (AgentRefusedError, OSError, ValueError) as error:
        log.error("pilot %s: %s", args.pilot, error)
        raise SystemExit(3) from error
    PilotAgent(connection, args.pilot, args.pods_root, received).serve()


if __name__ == "__main__":
    main()

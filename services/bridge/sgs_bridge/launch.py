"""Start a bridge for tests, the operator's tests and the dev stack: in this process or as a subprocess.

async with running_bridge(BridgeConfig(node_name="sgs-site-a", site="site-a", kubeconfig=k)) as bridge:
    ...                                 # the node is registered and Ready

with BridgeProcess(node_name="sgs-site-a", site="site-a", kubeconfig=k, workdir=d) as bridge:
    ...                                 # `sgs bridge` in its own process; bridge.kill() to crash it
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType

from sgs_bridge.bridge import Bridge, BridgeConfig


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def running_bridge(config: BridgeConfig, *, timeout_s: float = 60.0) -> AsyncIterator[Bridge]:
    """Run a Bridge as a task of the current event loop until the block ends."""
    bridge = Bridge(config)
    task = asyncio.create_task(bridge.run(), name=f"bridge-{config.node_name}")
    ready = asyncio.create_task(bridge.ready.wait())
    done, _ = await asyncio.wait({task, ready}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    if ready not in done:
        ready.cancel()
        task.cancel()
        if task in done:
            task.result()  # raise the reason it stopped
        raise TimeoutError(f"bridge {config.node_name} not ready after {timeout_s:.0f} s")
    try:
        yield bridge
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class BridgeProcess:
    """`python -m sgs_bridge ...` as a child process; ready once its kubelet endpoint answers."""

    def __init__(
        self,
        *,
        node_name: str,
        site: str,
        kubeconfig: Path,
        workdir: Path,
        provider: str = "process",
        port: int | None = None,
        metrics_port: int | None = None,
        poll_interval_s: float = 0.5,
        extra_args: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.node_name = node_name
        self.port = port or free_port()
        # Plain HTTP /metrics (`--metrics-port`) when given; 0 or None: only the kubelet port serves it.
        self.metrics_port = metrics_port or 0
        self.workdir = workdir
        self.log_path = workdir / f"bridge-{node_name}.log"
        self.argv = [
            sys.executable,
            "-m",
            "sgs_bridge",
            f"--provider={provider}",
            f"--node-name={node_name}",
            f"--site={site}",
            f"--kubeconfig={kubeconfig}",
            f"--port={self.port}",
            f"--metrics-port={self.metrics_port}",
            f"--workdir={workdir}",
            f"--poll-interval={poll_interval_s}",
            *(extra_args or []),
        ]
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 60.0) -> BridgeProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env
            )
        deadline = time.monotonic() + timeout_s
        while not self._ready_logged():
            if self.process.poll() is not None:
                raise RuntimeError(f"bridge exited with {self.process.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"bridge {self.node_name} not ready after {timeout_s:.0f} s:\n{self.log_tail()}")
            time.sleep(0.1)
        return self

    def _ready_logged(self) -> bool:
        return f"node {self.node_name} " in self.log_tail() and "registered" in self.log_tail()

    def log_tail(self, max_chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-max_chars:]
        except FileNotFoundError:
            return ""

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM: the bridge stops; tasks it started keep running (a restart re-adopts them)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def __enter__(self) -> BridgeProcess:
        return self.start() if self.process is None else self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

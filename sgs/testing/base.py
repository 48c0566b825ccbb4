"""What every part of the dev/test stack shares: a work directory, daemons, start/stop, env, state."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from sgs.testing._process import ManagedProcess, PartError, ProcessRecord


class Part:
    """A real component (PostgreSQL, NATS, MinIO, Kubernetes, Slurm) run on free ports in a work directory.

    Subclasses implement `_start()` (launch daemons with `_spawn`, wait until ready) and `info()`.
    The work directory (data, config, logs) is a fresh temp dir unless given; `stop()` deletes a temp dir
    unless the part failed, `keep` was set, or SGS_KEEP_LOGS=1, so logs survive for a post-mortem.
    """

    name = "part"

    def __init__(self, workdir: Path | None = None, *, keep: bool = False) -> None:
        self._owns_workdir = workdir is None
        self.workdir = workdir if workdir is not None else Path(tempfile.mkdtemp(prefix=f"sgs-{self.name}-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.keep = keep or os.environ.get("SGS_KEEP_LOGS") == "1"
        self.failed = False
        self.started = False
        self.processes: list[ManagedProcess] = []

    @property
    def log_dir(self) -> Path:
        return self.workdir / "log"

    def start(self) -> Self:
        try:
            self._start()
        except BaseException:
            self.failed = True
            self._stop_processes()
            raise
        self.started = True
        return self

    def stop(self) -> None:
        self._before_stop()
        self._stop_processes()
        self.started = False
        if self._owns_workdir and not self.keep and not self.failed:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def info(self) -> dict[str, Any]:
        """Public facts about the running part (endpoints, credentials, paths), JSON-serialisable."""
        return {}

    def exports(self) -> dict[str, str]:
        """Environment variables a client needs to use this part."""
        return {}

    def records(self) -> list[ProcessRecord]:
        return [p.record for p in self.processes if p.record is not None]

    def _start(self) -> None:
        raise NotImplementedError

    def _before_stop(self) -> None:
        """Hook: graceful work before the daemons get SIGTERM (e.g. cancel Slurm jobs)."""

    def _spawn(self, process: ManagedProcess) -> ManagedProcess:
        process.start()
        self.processes.append(process)
        return process

    def _stop_processes(self) -> None:
        # Reverse order: clients of a daemon (apiserver → etcd) go first.
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()

    def __enter__(self) -> Self:
        return self.start() if not self.started else self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None:
            self.failed = True
        self.stop()


def require_binary(path: Path | None, name: str, hint: str) -> Path:
    """The binary's path, or a PartError that says how to get it."""
    if path is None or not path.is_file():
        raise PartError(f"{name}: binary not found ({path or 'not on PATH'}); {hint}")
    return path

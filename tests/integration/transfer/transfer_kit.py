"""Helpers shared by the transfer service's integration tests (imported by name: test folders are not packages).

The archive and the transfer service run as real HTTP servers in threads of the test process (ServiceThread),
on a real PostgreSQL database and the session's NATS; Sites are POSIX directories or the session's MinIOs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
import psycopg
from psycopg import sql
from sgs_archive.app import create_app as create_archive
from sgs_archive.settings import ArchiveSettings
from sgs_transfer.app import create_app as create_transfer
from sgs_transfer.settings import TransferSettings
from sgs_transfer.sites import KnownSite, SiteBook

from sgs.model.site import Site
from sgs.telemetry import Tracing
from sgs.testing.postgres import PostgresPart
from sgs.testing.services import ServiceThread

ADMIN_TOKEN = "test-admin-token-0123456789abcdef"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

FAST: dict[str, Any] = {
    "ack_wait_s": 3.0,
    "retry_base_s": 0.2,
    "retry_max_s": 2.0,
    "fast_attempts": 4,
    "stuck_after_s": 8.0,
    "pause_after_failures": 2,
    "probe_interval_s": 0.5,
    "repair_interval_s": 1.0,
    "republish_after_s": 1.0,
    "reaper_interval_s": 0.5,
}
"""Production timings scaled down so a fault test takes seconds (every one of them is a setting)."""


@contextlib.contextmanager
def fresh_database(postgres: PostgresPart) -> Iterator[str]:
    name = f"transfer_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield postgres.dsn_for(name)
    finally:
        with psycopg.connect(postgres.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def checksums(content: bytes) -> dict[str, Any]:
    return {
        "size": len(content),
        "adler32": f"{zlib.adler32(content) & 0xFFFFFFFF:08x}",
        "sha256": hashlib.sha256(content).hexdigest(),
    }


class Served(Protocol):
    """A service on a loopback port: a ServiceThread here, or a process of its own (the benches)."""

    port: int

    @property
    def url(self) -> str: ...

    def stop(self) -> None: ...


@dataclass
class ArchiveUnderTest:
    """The archive service, its admin client and one token per Site."""

    dsn: str
    server: Served
    client: httpx.Client
    settings: ArchiveSettings
    site_tokens: dict[str, str] = field(default_factory=dict)

    def stop(self) -> None:
        """Down: no API, no relay (a real outage of the archive)."""
        self.server.stop()

    def start(self) -> None:
        """Back on the same port, the same database."""
        self.server = ServiceThread(create_archive(self.settings), "archive", port=self.server.port).start()

    @property
    def url(self) -> str:
        return self.server.url

    def ok(self, method: str, path: str, expected: tuple[int, ...] = (200,), **kw: Any) -> Any:
        response = self.client.request(method, path, headers=ADMIN, **kw)
        assert response.status_code in expected, f"{method} {path}: {response.status_code} {response.text}"
        return response.json() if response.content else None

    def issue_site_tokens(self, sites: list[str]) -> None:
        for site in sites:
            if site not in self.site_tokens:
                created = self.ok("POST", "/tokens", (201,), json={"name": f"site-{site}", "site": site})
                self.site_tokens[site] = created["token"]

    def dataset_type(self, name: str, dimensions: list[str]) -> None:
        self.ok(
            "POST", "/dataset-types", (200, 201), json={"name": name, "dimensions": dimensions, "storage_class": "Fits"}
        )

    def collection(self, name: str, kind: str = "RUN") -> None:
        self.ok("POST", "/collections", (201, 409), json={"name": name, "type": kind})

    def replicas(self, dataset_id: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.ok("GET", f"/datasets/{dataset_id}/replicas")
        return found


@contextlib.contextmanager
def archive_service(
    postgres: PostgresPart, nats_url: str, tracing: Tracing | None = None
) -> Iterator[ArchiveUnderTest]:
    with fresh_database(postgres) as dsn:
        settings = ArchiveSettings(
            dsn=dsn, nats_url=nats_url, admin_token=ADMIN_TOKEN, relay_poll_interval_s=0.2, source="test-archive"
        )
        server = ServiceThread(create_archive(settings, tracing), "archive").start()
        deadline = time.monotonic() + 30
        with httpx.Client(base_url=server.url, timeout=30, trust_env=False) as client:
            while client.get("/readyz").json().get("relay") != "connected":
                assert time.monotonic() < deadline, "the archive's relay did not connect to NATS"
                time.sleep(0.05)
            archive = ArchiveUnderTest(dsn, server, client, settings)
            try:
                yield archive
            finally:
                archive.server.stop()


def posix_site(name: str, root: Path, archive_url: str, labels: dict[str, str] | None = None, **spec: Any) -> Site:
    (root / name).mkdir(parents=True, exist_ok=True)
    return Site.model_validate(
        {
            "metadata": {"name": name, "labels": labels or {}},
            "spec": {
                "storage": {"kind": "posix", "path": str(root / name)},
                "archiveUrl": archive_url,
                "capacity": {"cores": 8, "storageTb": 1},
                **spec,
            },
        }
    )


def known_sites(sites: list[Site], tokens: dict[str, str], store: Callable[[Site], Any] | None = None) -> SiteBook:
    return SiteBook(KnownSite(site, tokens.get(site.metadata.name), store(site) if store else None) for site in sites)


@dataclass
class TransferUnderTest:
    settings: TransferSettings
    server: Served
    client: httpx.Client

    @property
    def url(self) -> str:
        return self.server.url

    def call(
        self, method: str, path: str, expected: tuple[int, ...] = (200,), token: str = ADMIN_TOKEN, **kw: Any
    ) -> Any:
        response = self.client.request(method, path, headers={"Authorization": f"Bearer {token}"}, **kw)
        assert response.status_code in expected, f"{method} {path}: {response.status_code} {response.text}"
        return response.json() if response.content else None

    def rule(self, rule_id: str) -> dict[str, Any]:
        found: dict[str, Any] = self.call("GET", f"/rules/{rule_id}")
        return found

    def wait_rule(self, rule_id: str, states: tuple[str, ...], timeout_s: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            rule = self.rule(rule_id)
            if rule["state"] in states and rule["evaluated_at"]:
                return rule
            assert time.monotonic() < deadline, f"rule {rule_id} is {rule['state']} after {timeout_s} s: {rule}"
            time.sleep(0.05)

    def transfers(self, **params: Any) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        params = {"limit": 10_000, **params}
        while True:
            page = self.call("GET", "/transfers", params=params)
            found += page["items"]
            if page["next_cursor"] is None:
                return found
            params["cursor"] = page["next_cursor"]


@contextlib.contextmanager
def transfer_service(
    dsn: str, nats_url: str, archive_url: str, sites: SiteBook, tracing: Tracing | None = None, **overrides: Any
) -> Iterator[TransferUnderTest]:
    settings = TransferSettings(
        dsn=dsn,
        db_schema=f"t_{uuid.uuid4().hex[:10]}",
        namespace=f"t{uuid.uuid4().hex[:10]}",
        nats_url=nats_url,
        admin_token=ADMIN_TOKEN,
        archive_url=archive_url,
        archive_token=ADMIN_TOKEN,
        **{**FAST, **overrides},
    )
    server = ServiceThread(create_transfer(settings, sites, tracing), "transfer").start()
    with httpx.Client(base_url=server.url, timeout=30, trust_env=False) as client:
        deadline = time.monotonic() + 30
        while client.get("/readyz").json().get("events") != "connected":
            assert time.monotonic() < deadline, "the transfer service's evaluator did not connect"
            time.sleep(0.05)
        try:
            yield TransferUnderTest(settings, server, client)
        finally:
            server.stop()


def eventually(condition: Callable[[], Any], *, what: str, timeout_s: float, interval_s: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)


def posix_store(site: Site) -> Any:
    from sgs.storage import PosixStore

    assert site.spec.storage.path is not None
    return PosixStore(site.metadata.name, Path(site.spec.storage.path), durable=False)


def put_source(store: Any, dataset_type: str, dataset_id: uuid.UUID, content: bytes, suffix: str = ".fits") -> str:
    """Write a dataset's file at its Site (deterministic key) and return its URI."""
    from sgs.storage import replica_key

    key = replica_key(dataset_type, dataset_id, suffix)
    store.put_bytes(key, content)
    return str(store.uri(key))


# ------------------------------------------------------------------------------------------ MinIO Sites


def s3_site(part: Any, archive_url: str, labels: dict[str, str] | None = None) -> Site:
    name = part.site
    return Site.model_validate(
        {
            "metadata": {"name": name, "labels": labels or {}},
            "spec": {
                "storage": {
                    "kind": "s3",
                    "endpoint": part.endpoint,
                    "bucket": part.bucket,
                    "secure": False,
                    "credentials": {"name": f"{name}-s3"},
                },
                "archiveUrl": archive_url,
                "archiveCredentials": {"name": f"{name}-archive"},
                "capacity": {"cores": 8, "storageTb": 1},
            },
        }
    )


def s3_store(part: Any) -> Any:
    from sgs.storage import S3Store

    return S3Store.connect(part.site, part.endpoint, part.bucket, part.access_key, part.secret_key, secure=False)


def write_sites_file(path: Path, sites: list[Site], parts: dict[str, Any], tokens: dict[str, str]) -> Path:
    """A Sites file (Site + Secret manifests) for a worker process, with S3 keys and archive tokens."""
    import yaml

    documents: list[dict[str, Any]] = []
    for site in sites:
        name = site.metadata.name
        documents.append(site.model_dump(mode="json", by_alias=True, exclude_none=True))
        part = parts.get(name)
        if part is not None:
            documents.append(_secret(f"{name}-s3", {"accessKey": part.access_key, "secretKey": part.secret_key}))
        documents.append(_secret(f"{name}-archive", {"token": tokens[name]}))
    path.write_text(yaml.safe_dump_all(documents))
    return path


def _secret(name: str, values: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": values}


class WorkerProcess:
    """``sgs transfer worker`` as a real process (so a test can kill -9 it mid-copy)."""

    def __init__(self, settings: TransferSettings, sites_file: Path, log_path: Path, name: str) -> None:
        import os

        self.log_path = log_path
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        for field_name, value in settings.model_dump().items():
            if value is None or field_name in ("sites_file", "embedded_worker"):
                continue
            text = value.get_secret_value() if hasattr(value, "get_secret_value") else value
            if isinstance(text, list):
                text = json.dumps(text)  # pydantic-settings reads lists as JSON
            env[f"SGS_TRANSFER_{field_name.upper()}"] = str(text).lower() if isinstance(text, bool) else str(text)
        env["SGS_TRANSFER_SITES_FILE"] = str(sites_file)
        env["SGS_TRANSFER_WORKER_NAME"] = name
        self.env = env
        self.process: Any = None

    def start(self) -> WorkerProcess:
        import subprocess
        import sys

        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "sgs.cli.main", "transfer", "worker"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def ready(self) -> bool:
        return self.log_path.is_file() and "copying into" in self.log_path.read_text()

    def kill(self) -> None:
        import signal

        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        import subprocess

        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

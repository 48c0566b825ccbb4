"""Helpers shared by the archive integration tests (imported by name: the test folders are not packages)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import nats
import nats.errors
import psycopg
from sgs_archive.settings import ArchiveSettings

from sgs.events import STREAM
from sgs.kube.pki import Authority, write_pem
from sgs.testing._process import free_port

ADMIN_TOKEN = "test-admin-token-0123456789abcdef"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@dataclass
class Archive:
    client: httpx.AsyncClient
    settings: ArchiveSettings

    async def ok(self, method: str, url: str, expected: int = 200, **kwargs: Any) -> Any:
        kwargs.setdefault("headers", ADMIN)
        response = await self.client.request(method, url, **kwargs)
        assert response.status_code == expected, f"{method} {url}: {response.status_code} {response.text}"
        return response.json() if response.content else None


def settings_for(dsn: str, nats_url: str | None, **overrides: Any) -> ArchiveSettings:
    return ArchiveSettings(dsn=dsn, nats_url=nats_url, admin_token=ADMIN_TOKEN, relay_poll_interval_s=0.2, **overrides)


def checksums(content: bytes) -> dict[str, Any]:
    return {
        "size": len(content),
        "adler32": f"{zlib.adler32(content) & 0xFFFFFFFF:08x}",
        "sha256": hashlib.sha256(content).hexdigest(),
    }


def replica(site: str, name: str, content: bytes | None = None) -> dict[str, Any]:
    return {"site": site, "uri": f"s3://{site}/{name}", **checksums(content or name.encode())}


async def register_types(archive: Archive) -> None:
    for body in (
        {"name": "raw", "dimensions": ["exposure", "detector"], "storage_class": "Fits"},
        {"name": "calexp", "dimensions": ["exposure", "detector"], "storage_class": "Fits"},
        {"name": "coadd", "dimensions": ["tile", "band", "skypix"], "storage_class": "Fits"},
    ):
        await archive.ok("POST", "/dataset-types", 201, json=body)


@dataclass(frozen=True)
class ServingTls:
    """A certificate and key the archive serves, and the CA bundle its clients verify them with."""

    ca_bundle: Path
    cert_file: Path
    key_file: Path

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_bundle))


def issue_serving_tls(directory: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> ServingTls:
    """A fresh CA, and a serving certificate it signs for ``hosts``."""
    authority = Authority.create("sgs-archive-test-ca")
    directory.mkdir(parents=True, exist_ok=True)
    write_pem(directory / "ca.pem", authority.cert_pem)
    cert, key = authority.issue_server("sgs-archive", hosts).write(directory / "tls.crt", directory / "tls.key")
    return ServingTls(directory / "ca.pem", cert, key)


class ArchiveProcess:
    """The archive as a real process: uvicorn (so a test can kill -9 it between commit and publish), or
    ``sgs archive serve`` with ``tls`` (the entry point that serves HTTPS from the settings)."""

    def __init__(self, dsn: str, nats_url: str, log_path: Path, tls: ServingTls | None = None, **env: str) -> None:
        self.port = free_port()
        self.tls = tls
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.env = {
            **os.environ,
            "SGS_ARCHIVE_DSN": dsn,
            "SGS_ARCHIVE_NATS_URL": nats_url,
            "SGS_ARCHIVE_ADMIN_TOKEN": ADMIN_TOKEN,
            "SGS_ARCHIVE_RELAY_POLL_INTERVAL_S": "0.2",
            **(
                {"SGS_ARCHIVE_TLS_CERT_FILE": str(tls.cert_file), "SGS_ARCHIVE_TLS_KEY_FILE": str(tls.key_file)}
                if tls
                else {}
            ),
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ArchiveProcess:
        if self.tls is None:
            argv = [sys.executable, "-m", "uvicorn", "--factory", "sgs_archive.app:create_app", "--log-level", "info"]
        else:
            argv = [sys.executable, "-m", "sgs.cli.main", "archive", "serve"]
        argv += ["--host", "127.0.0.1", "--port", str(self.port)]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(argv, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        wait_until(self._ready, what="the archive to be ready", timeout_s=60)
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"archive exited with {self.process.returncode}:\n{self.log_path.read_text()}")
        try:
            response = httpx.get(f"{self.url}/readyz", timeout=1.0, verify=self.tls.context() if self.tls else True)
        except httpx.HTTPError:
            return False
        return response.status_code == 200 and response.json().get("relay") == "connected"

    def kill(self) -> None:
        """SIGKILL: no shutdown hook, no flush, exactly like a node dying."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def wait_exit(self, timeout_s: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout_s)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


def wait_until(condition: Callable[[], bool], *, what: str, timeout_s: float, interval_s: float = 0.05) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(interval_s)


async def eventually(condition: Callable[[], bool], *, what: str, timeout_s: float) -> None:
    """wait_until for code running beside the app in the same event loop (it must keep running)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.05)


def outbox_counts(dsn: str) -> tuple[int, int]:
    """(pending, published) rows of the outbox."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE published_at IS NULL), count(published_at) FROM outbox"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


async def events_about(nats_url: str, subject: str, needle: str, settle_s: float = 1.0) -> list[dict[str, Any]]:
    """Every message in the sgs stream on ``subject`` whose payload mentions ``needle`` (read from the start)."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        subscription = await js.pull_subscribe(subject, durable=None, stream=STREAM)
        found: list[dict[str, Any]] = []
        while True:
            try:
                messages = await subscription.fetch(batch=500, timeout=settle_s)
            except (nats.errors.TimeoutError, TimeoutError):
                break
            for message in messages:
                await message.ack()
                if needle in message.data.decode():
                    found.append(json.loads(message.data))
        await subscription.unsubscribe()
        return found
    finally:
        await nc.close()

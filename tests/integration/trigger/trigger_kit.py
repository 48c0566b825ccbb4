"""The trigger service under test: a real `sgs trigger` process against the real API server, the archive (a
real HTTP server on PostgreSQL, in a thread), and the session's NATS JetStream.

Each test gets a namespace with two Sites; datasets are registered through the archive's API, whose outbox
relay publishes the events the service consumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import signal
import subprocess
import sys
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import nats
import psycopg
from psycopg import sql
from sgs_archive.app import create_app as create_archive
from sgs_archive.settings import ArchiveSettings

from sgs.events import STREAM
from sgs.testing import free_port
from sgs.testing.kube import KubePart
from sgs.testing.postgres import PostgresPart
from sgs.testing.services import ServiceThread

ADMIN_TOKEN = "test-admin-token-0123456789abcdef"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
READY_MESSAGE = "sgs trigger ready"
API = "/apis/sgs.io/v1alpha1"


def eventually(check: Callable[[], Any], what: str, timeout_s: float = 30.0, interval_s: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what} (last: {last!r})")


def checksums(content: bytes) -> dict[str, Any]:
    return {
        "size": len(content),
        "adler32": f"{zlib.adler32(content) & 0xFFFFFFFF:08x}",
        "sha256": hashlib.sha256(content).hexdigest(),
    }


@dataclass
class Archive:
    """The archive service and its admin client."""

    server: ServiceThread
    client: httpx.Client

    @property
    def url(self) -> str:
        return self.server.url

    def ok(self, method: str, path: str, expected: tuple[int, ...] = (200,), **kw: Any) -> Any:
        response = self.client.request(method, path, headers=ADMIN, **kw)
        assert response.status_code in expected, f"{method} {path}: {response.status_code} {response.text}"
        return response.json() if response.content else None

    def dataset_type(self, name: str, dimensions: list[str]) -> None:
        body = {"name": name, "dimensions": dimensions, "storage_class": "Fits"}
        self.ok("POST", "/dataset-types", (200, 201), json=body)

    def collection(self, name: str) -> None:
        self.ok("POST", "/collections", (201, 409), json={"name": name, "type": "RUN"})

    def ingest(self, dataset_type: str, run: str, data_ids: list[dict[str, Any]], sites: list[str]) -> list[str]:
        """Register datasets (one replica per Site, available); their ids in order."""
        self.collection(run)
        datasets = [
            {
                "dataset_type": dataset_type,
                "data_id": data_id,
                "run": run,
                "replicas": [
                    {"site": site, "uri": f"file:///data/{site}/{run}/{i}.fits", **checksums(f"{run}{i}".encode())}
                    for site in sites
                ],
            }
            for i, data_id in enumerate(data_ids)
        ]
        ids: list[str] = self.ok("POST", "/datasets/ingest", json={"datasets": datasets})["ids"]
        return ids

    def add_replica(self, dataset_id: str, site: str) -> None:
        body = {"dataset_id": dataset_id, "site": site, "uri": f"file:///data/{site}/{dataset_id}.fits"}
        self.ok("POST", "/replicas", (200, 201), json={**body, **checksums(dataset_id.encode())})


@contextlib.contextmanager
def archive_service(postgres: PostgresPart, nats_url: str) -> Iterator[Archive]:
    name = f"trigger_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    settings = ArchiveSettings(
        dsn=postgres.dsn_for(name),
        nats_url=nats_url,
        admin_token=ADMIN_TOKEN,
        relay_poll_interval_s=0.2,
        source="test-archive",
    )
    server = ServiceThread(create_archive(settings), "archive").start()
    try:
        with httpx.Client(base_url=server.url, timeout=30, trust_env=False) as client:
            eventually(lambda: client.get("/readyz").json().get("relay") == "connected", "the archive's relay")
            yield Archive(server, client)
    finally:
        server.stop()
        with psycopg.connect(postgres.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


class TriggerProcess:
    """`sgs trigger` as a subprocess: started, killed (-9) and restarted by the tests."""

    def __init__(
        self, kube: KubePart, nats_url: str, archive_url: str, workdir: Path, env: dict[str, str] | None = None
    ) -> None:
        self.durable = f"trigger-{uuid.uuid4().hex[:8]}"
        self.metrics_port = free_port()
        self.nats_url = nats_url
        self.workdir = workdir
        self.starts = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.env = {
            **os.environ,
            "KUBECONFIG": str(kube.kubeconfig),
            "SGS_TRIGGER_NATS_URL": nats_url,
            "SGS_TRIGGER_ARCHIVE_URL": archive_url,
            "SGS_TRIGGER_ARCHIVE_TOKEN": ADMIN_TOKEN,
            "SGS_TRIGGER_DURABLE": self.durable,
            "SGS_TRIGGER_METRICS_PORT": str(self.metrics_port),
            "SGS_TRIGGER_ACK_WAIT_S": "5",
            "SGS_TRIGGER_RETRY_S": "0.5",
            **(env or {}),
        }

    @property
    def log(self) -> Path:
        return self.workdir / f"trigger-{self.starts}.log"

    def start(self, timeout_s: float = 60) -> TriggerProcess:
        self.starts += 1
        argv = [sys.executable, "-m", "sgs.cli.main", "trigger", "-v"]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(argv, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        eventually(lambda: self._logged(READY_MESSAGE), f"the trigger service to be ready ({self.log})", timeout_s)
        return self

    def _logged(self, message: str) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"sgs trigger exited with {self.proc.returncode}:\n{self.log.read_text()[-4000:]}")
        return message in self.log.read_text(errors="replace")

    def logged(self, message: str) -> bool:
        return message in self.log.read_text(errors="replace")

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.kill9()

    def metric(self, name: str, labels: str = "") -> float:
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).text
        pattern = re.escape(name + (f"{{{labels}}}" if labels else "")) + r" ([0-9.e+-]+)"
        found = re.search(pattern, text)
        return float(found.group(1)) if found else 0.0

    def drained(self) -> bool:
        """Every event in the stream that its consumer selects has been handled and acknowledged."""
        return asyncio.run(_drained(self.nats_url, self.durable))

    def wait_drained(self, timeout_s: float = 30) -> None:
        time.sleep(0.5)  # the archive's relay polls its outbox every 0.2 s: let the latest events reach the stream
        eventually(self.drained, "the trigger service to acknowledge every event", timeout_s)


async def _drained(url: str, durable: str) -> bool:
    nc = await nats.connect(url)
    try:
        info = await nc.jetstream().consumer_info(STREAM, durable)
        return int(info.num_pending or 0) == 0 and int(info.num_ack_pending or 0) == 0
    finally:
        await nc.close()


async def _publish(url: str, subject: str, data: bytes) -> None:
    nc = await nats.connect(url)
    try:
        await nc.jetstream().publish(subject, data, headers={"Nats-Msg-Id": uuid.uuid4().hex})
    finally:
        await nc.close()


def publish(url: str, subject: str, data: bytes) -> None:
    """Publish an event again under a new message id: what a redelivery looks like to the consumer."""
    asyncio.run(_publish(url, subject, data))


@dataclass
class Namespace:
    """One test namespace on the API server, with its Sites."""

    kube: KubePart
    name: str
    api: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.api = self.kube.api()

        response = self.call("POST", "/api/v1/namespaces", json={"metadata": {"name": self.name}})
        assert response.status_code == 201, response.text

    def call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """One request, again after a 429: a custom resource's storage answers so while it (re)initializes
        its watch cache (a fresh control plane, a CRD just installed)."""
        deadline = time.monotonic() + 30
        while True:
            response = self.api.request(method, path, **kw)
            if response.status_code != 429 or time.monotonic() > deadline:
                return response
            time.sleep(0.2)

    def create(self, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.call("POST", f"{API}/namespaces/{self.name}/{plural}", json=body)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    def site(self, name: str, labels: dict[str, str] | None = None) -> None:
        self.create(
            "sites",
            {
                "apiVersion": "sgs.io/v1alpha1",
                "kind": "Site",
                "metadata": {"name": name, "labels": labels or {}},
                "spec": {
                    "storage": {"kind": "posix", "path": f"/data/{name}"},
                    "capacity": {"cores": 8, "storageTb": 1},
                },
            },
        )

    def runs(self) -> list[dict[str, Any]]:
        response = self.call("GET", f"{API}/namespaces/{self.name}/runs")
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    def close(self) -> None:
        self.api.delete(f"/api/v1/namespaces/{self.name}")
        self.api.close()


def pipeline(name: str, triggers: list[dict[str, Any]], inputs: tuple[str, ...] = ("exposures",)) -> dict[str, Any]:
    """A one-step Pipeline fed by its ``inputs``, with ``triggers``."""
    return {
        "apiVersion": "sgs.io/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": name},
        "spec": {
            "inputs": [{"name": n} for n in inputs],
            "executables": [
                {
                    "name": "work",
                    "command": "work",
                    "inputs": [{"name": n} for n in inputs],
                    "outputs": [{"name": "out"}],
                }
            ],
            "steps": [{"name": "work", "executable": "work", "inputs": {n: {"input": n} for n in inputs}}],
            "triggers": triggers,
        },
    }

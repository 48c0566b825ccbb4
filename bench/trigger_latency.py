"""Trigger latency: from a replica becoming available (its ``sgs.replica.available`` event stored in JetStream)
to the Run it completes existing on the API server, p50 / p99 over 500 triggers.

Everything real and started here: PostgreSQL, NATS JetStream, a Kubernetes control plane (or $KUBECONFIG's),
the archive (`uvicorn sgs_archive.app`, a subprocess) and `sgs trigger` (a subprocess, as deployed). One Pipeline
with a trigger per (instrument, exposure) and ``count: 1``, so each replica registered completes one group. The
datasets are registered first without replicas; then each replica is registered at the Site, one at a time
every ``--interval`` ms (latency, not a backlog). The clock starts at the event's JetStream timestamp (read by
an own consumer of the same subject) and stops when a watch of the namespace's Runs delivers the Run; the
end-to-end time from the POST /replicas is printed beside it (it adds the archive's write and outbox relay).
Baseline in the same run: a bare POST of the same Run manifests to the API server (the floor of the last step).
Target (issue #15): p99 < 200 ms.

    .venv/bin/python bench/trigger_latency.py [--triggers 500] [--interval 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import nats
import psycopg
from psycopg import sql

from sgs.events import STREAM
from sgs.kube import JSON, KubeClient, Watch
from sgs.testing import free_port
from sgs.testing.kube import KubePart
from sgs.testing.nats import NatsPart
from sgs.testing.postgres import PostgresPart

TARGET_P99_S = 0.200
ADMIN_TOKEN = "bench-admin-token-0123456789abcdef"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
API = "/apis/sgs.io/v1alpha1"
SITE = "site-a"


def checksums(content: bytes) -> dict[str, Any]:
    return {
        "size": len(content),
        "adler32": f"{zlib.adler32(content) & 0xFFFFFFFF:08x}",
        "sha256": hashlib.sha256(content).hexdigest(),
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class RunsSeen:
    """A watch cache noting when each Run was first seen, by the dataset id it was created for."""

    def __init__(self) -> None:
        self.seen: dict[str, float] = {}
        self.changed = asyncio.Event()

    def replace(self, items: list[JSON]) -> None:
        for obj in items:
            self.apply("ADDED", obj)

    def apply(self, kind: str, obj: JSON) -> None:
        ids = (((obj.get("spec") or {}).get("inputs") or {}).get("exposures") or {}).get("datasetIds") or []
        for dataset_id in ids:
            self.seen.setdefault(str(dataset_id), time.time())
        self.changed.set()


def pipeline(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "sgs.io/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": name},
        "spec": {
            "inputs": [{"name": "exposures"}],
            "executables": [{"name": "work", "command": "work", "inputs": [{"name": "exposures"}]}],
            "steps": [{"name": "work", "executable": "work", "inputs": {"exposures": {"input": "exposures"}}}],
            "triggers": [
                {
                    "name": "per-exposure",
                    "input": "exposures",
                    "datasetType": "raw",
                    "where": "instrument = 'NISP'",
                    "groupBy": ["instrument", "exposure"],
                    "complete": {"count": 1},
                }
            ],
        },
    }


@contextlib.contextmanager
def process(argv: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def wait(check: Any, what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {what}")


async def event_times(url: str, stamps: dict[str, float], stop: asyncio.Event) -> None:
    """The JetStream timestamp of every replica-available event, by dataset id (an own ephemeral consumer)."""
    import json

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()

        async def noted(msg: Any) -> None:
            stamp: datetime = msg.metadata.timestamp
            stamps.setdefault(str(json.loads(msg.data)["dataset_id"]), stamp.timestamp())
            await msg.ack()

        sub = await js.subscribe("sgs.replica.available", stream=STREAM, cb=noted, deliver_policy=None)
        await stop.wait()
        await sub.unsubscribe()
    finally:
        await nc.close()


async def bare_creates(kube: KubeClient, namespace: str, count: int) -> list[float]:
    """The API server's own time for a Run POST like the trigger's (the floor of the last step)."""
    times = []
    for _ in range(count):
        body = {
            "apiVersion": "sgs.io/v1alpha1",
            "kind": "Run",
            "metadata": {"name": f"bare-{uuid.uuid4().hex[:10]}", "labels": {"sgs.io/trigger": "bare"}},
            "spec": {"pipeline": "none", "site": SITE, "inputs": {"exposures": {"datasetIds": [str(uuid.uuid4())]}}},
        }
        start = time.perf_counter()
        await kube.create(f"{API}/namespaces/{namespace}/runs", body)
        times.append(time.perf_counter() - start)
    return times


async def measure(
    kube_part: KubePart, archive_url: str, nats_url: str, namespace: str, count: int, interval_s: float
) -> tuple[list[float], list[float], list[float]]:
    kube = await KubeClient.connect(kube_part.kubeconfig)
    seen = RunsSeen()
    stopped = asyncio.Event()
    watch = Watch(kube, f"{API}/namespaces/{namespace}/runs", seen)
    watching = asyncio.create_task(watch.run(stopped))
    stamps: dict[str, float] = {}
    listening = asyncio.create_task(event_times(nats_url, stamps, stopped))
    await watch.synced.wait()
    posted: dict[str, float] = {}
    async with httpx.AsyncClient(base_url=archive_url, headers=ADMIN, timeout=30) as archive:
        data_ids = [{"instrument": "NISP", "exposure": i, "observation": i // 4} for i in range(count)]
        datasets = [{"dataset_type": "raw", "data_id": d, "run": "raw/bench"} for d in data_ids]
        response = await archive.post("/datasets/ingest", json={"datasets": datasets})
        response.raise_for_status()
        ids: list[str] = response.json()["ids"]
        await asyncio.sleep(1.0)  # the registration events (no replica: no arrival) are out of the way
        for dataset_id in ids:
            body = {"dataset_id": dataset_id, "site": SITE, "uri": f"file:///data/{dataset_id}.fits"}
            posted[dataset_id] = time.time()
            answer = await archive.post("/replicas", json={**body, **checksums(dataset_id.encode())})
            answer.raise_for_status()
            await asyncio.sleep(interval_s)
    deadline = time.monotonic() + 60
    while (len(seen.seen) < count or len(stamps) < count) and time.monotonic() < deadline:
        seen.changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(seen.changed.wait(), 1.0)
    bare = await bare_creates(kube, namespace, 100)
    stopped.set()
    for task in (watching, listening):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    await kube.close()
    missing = [i for i in ids if i not in seen.seen]
    if missing:
        raise SystemExit(f"{len(missing)} of {count} replicas made no Run within 60 s")
    from_event = [seen.seen[i] - stamps[i] for i in ids if i in stamps]
    end_to_end = [seen.seen[i] - posted[i] for i in ids]
    return from_event, end_to_end, bare


def fresh_database(postgres: PostgresPart) -> str:
    name = f"bench_trigger_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return postgres.dsn_for(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--triggers", type=int, default=500)
    parser.add_argument("--interval", type=float, default=20.0, help="ms between two replicas registered")
    args = parser.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="sgs-bench-trigger-"))
    preset = os.environ.get("KUBECONFIG")
    kube_part = KubePart.existing(Path(preset)) if preset and Path(preset).is_file() else KubePart()
    with PostgresPart() as postgres, NatsPart() as nats_part, kube_part as kube:
        dsn = fresh_database(postgres)
        port = free_port()
        archive_env = {
            "SGS_ARCHIVE_DSN": dsn,
            "SGS_ARCHIVE_ADMIN_TOKEN": ADMIN_TOKEN,
            "SGS_ARCHIVE_NATS_URL": nats_part.url,
            "SGS_ARCHIVE_RELAY_POLL_INTERVAL_S": "0.2",
        }
        archive_argv = [sys.executable, "-m", "uvicorn", "--factory", "sgs_archive.app:create_app"]
        archive_argv += ["--port", str(port), "--log-level", "warning"]
        archive_url = f"http://127.0.0.1:{port}"
        with process(archive_argv, archive_env, logs / "archive.log"):
            with httpx.Client(base_url=archive_url, headers=ADMIN, timeout=30) as client:
                wait(lambda: client.get("/readyz").json().get("relay") == "connected", "the archive")
                body = {"name": "raw", "dimensions": ["instrument", "exposure"], "storage_class": "Fits"}
                client.post("/dataset-types", json=body).raise_for_status()
                client.post("/collections", json={"name": "raw/bench", "type": "RUN"}).raise_for_status()
            namespace = f"bench-trigger-{uuid.uuid4().hex[:6]}"
            kube.kubectl("create", "namespace", namespace)
            site = {
                "apiVersion": "sgs.io/v1alpha1",
                "kind": "Site",
                "metadata": {"name": SITE, "namespace": namespace},
                "spec": {
                    "storage": {"kind": "posix", "path": "/data/site-a"},
                    "capacity": {"cores": 8, "storageTb": 1},
                },
            }
            import json

            kube.kubectl("apply", "-f", "-", input=json.dumps(site))
            manifest = {**pipeline("nir"), "metadata": {"name": "nir", "namespace": namespace}}
            kube.kubectl("apply", "-f", "-", input=json.dumps(manifest))
            trigger_env = {
                "KUBECONFIG": str(kube.kubeconfig),
                "SGS_TRIGGER_NATS_URL": nats_part.url,
                "SGS_TRIGGER_ARCHIVE_URL": archive_url,
                "SGS_TRIGGER_ARCHIVE_TOKEN": ADMIN_TOKEN,
                "SGS_TRIGGER_NAMESPACE": namespace,
            }
            trigger_log = logs / "trigger.log"
            with process([sys.executable, "-m", "sgs.cli.main", "trigger"], trigger_env, trigger_log):
                wait(lambda: "sgs trigger ready" in trigger_log.read_text(), "the trigger service", 90)
                from_event, end_to_end, bare = asyncio.run(
                    measure(kube, archive_url, nats_part.url, namespace, args.triggers, args.interval / 1000)
                )
    p50, p99 = percentile(from_event, 0.50), percentile(from_event, 0.99)
    print(f"triggers: {args.triggers}, one replica every {args.interval:.0f} ms; load {os.getloadavg()[0]:.1f}")
    print(
        f"event (replica available, in JetStream) -> Run seen by a watch: p50 {p50 * 1000:.1f} ms, "
        f"p99 {p99 * 1000:.1f} ms"
    )
    print(
        f"  POST /replicas -> Run seen: p50 {percentile(end_to_end, 0.5) * 1000:.1f} ms, "
        f"p99 {percentile(end_to_end, 0.99) * 1000:.1f} ms"
    )
    print(
        f"  bare Run POST to this API server: p50 {statistics.median(bare) * 1000:.1f} ms, "
        f"p99 {percentile(bare, 0.99) * 1000:.1f} ms"
    )
    print(f"target p99 < {TARGET_P99_S * 1000:.0f} ms: ratio {p99 / TARGET_P99_S:.2f} (below 1 meets it)")
    print(f"logs: {logs}")


if __name__ == "__main__":
    main()

"""Transfer service latencies on the real parts, beside Rucio's default polling intervals.

Parts: PostgreSQL, NATS JetStream, one MinIO per Site (site-a, site-b), and as processes of their own, as deployed:
``sgs archive serve``, ``sgs transfer serve`` and one ``sgs transfer worker`` (with the helpers of
tests/integration/transfer/transfer_kit.py). The transfer service runs with its production settings.

Figures:

- **arrival** — copy finished (the transfer row's ``copied_at``: bytes copied and re-read at the destination)
  → replica registered at the destination archive → ``sgs.replica.available`` seen by a NATS subscriber in
  this process: p50 / p99 over ``--transfers`` (1,000) copies. Target p99 < 100 ms.
- **dataset start** — a dataset registered in the archive (request sent) → its transfer started by the worker
  (``started_at``), for the same copies, registered one by one at ``--rate`` per second. Target p99 < 1 s.
- **rule start** — a rule created (request sent) over datasets already archived → its first transfer started,
  ``--rules`` rules of 4 datasets each, one after the other. Target p99 < 1 s.
- **bulk** — a rule with ``--bulk`` (10,000) matching datasets: rule created → every transfer request written
  and published to the work queue. Target < 5 s. (The worker is stopped for this phase: it measures the
  evaluator, not copies.)

Peer: Rucio's default sleep times, read in its source (rucio/rucio): ``lib/rucio/daemons/judge/evaluator.py``
(``run(..., sleep_time=30)``: judge-evaluator, which applies rules to new attachments), ``bin/rucio-conveyor-submitter``
(``--sleep-time`` default 600), ``bin/rucio-conveyor-poller`` (``--older-than`` 60, ``--sleep-time`` 300),
``bin/rucio-conveyor-finisher`` (``--sleep-time`` 30) and ``bin/rucio-hermes`` (``--delay`` 10). In Rucio a
finished copy becomes a replica seen by a message consumer after poller + finisher + hermes, a new dataset or rule
is submitted after judge-evaluator + submitter, each "up to" its interval when little work is queued.

    .venv/bin/python bench/transfer_latency.py [--transfers 1000] [--rate 20] [--rules 50] [--bulk 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import nats
import psutil
import psycopg
from psycopg.rows import dict_row

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration" / "transfer"))

from sgs_archive.settings import ArchiveSettings
from sgs_transfer.settings import TransferSettings
from transfer_kit import (
    ADMIN,
    ADMIN_TOKEN,
    ArchiveUnderTest,
    TransferUnderTest,
    WorkerProcess,
    checksums,
    fresh_database,
    s3_site,
    s3_store,
    write_sites_file,
)

from sgs.events import STREAM
from sgs.storage import replica_key
from sgs.testing._process import free_port
from sgs.testing.minio import MinioPart
from sgs.testing.nats import NatsPart
from sgs.testing.postgres import PostgresPart

SITES = ("site-a", "site-b")
TARGET_ARRIVAL_P99_S = 0.100
TARGET_START_P99_S = 1.0
TARGET_BULK_S = 5.0
# Rucio's defaults (files named in the docstring), in seconds.
RUCIO: dict[str, int] = {"judge-evaluator": 30, "submitter": 600, "poller-older-than": 60, "poller": 300}
RUCIO |= {"finisher": 30, "hermes": 10}
# After FTS says "done": finisher + hermes, plus the poller's wait when no receiver listens to FTS's messages.
RUCIO_ARRIVAL = (RUCIO["finisher"] + RUCIO["hermes"], RUCIO["poller"] + RUCIO["finisher"] + RUCIO["hermes"])
RUCIO_START = (RUCIO["judge-evaluator"], RUCIO["judge-evaluator"] + RUCIO["submitter"])


@dataclass
class Stack:
    archive: ArchiveUnderTest
    transfer: TransferUnderTest
    parts: dict[str, MinioPart]
    nats_url: str
    worker: WorkerProcess
    pids: dict[str, int]
    """The processes that work on a rule's evaluation (their CPU time is counted): service, archive, PG, NATS."""

    def cpu_s(self) -> dict[str, float]:
        """CPU seconds (user + system) used so far by each of ``pids`` and its children (PostgreSQL backends)."""
        used: dict[str, float] = {}
        for name, pid in self.pids.items():
            root = psutil.Process(pid)
            times = [p.cpu_times() for p in [root, *root.children(recursive=True)]]
            used[name] = sum(t.user + t.system for t in times)
        return used


class ServiceProcess:
    """``sgs archive serve`` / ``sgs transfer serve`` as a process of its own, as deployed (not a thread of this
    process: the bench's own work would share its interpreter lock and slow it down)."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path, ready: tuple[str, str]) -> None:
        self.port = free_port()
        self.log = log
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "sgs.cli.main", *argv, "--port", str(self.port)],
                env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        key, value = ready
        deadline = time.monotonic() + 60
        while not self._ready(key, value):
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"{argv[0]} did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _ready(self, key: str, value: str) -> bool:
        try:
            return bool(httpx.get(f"{self.url}/readyz", timeout=2, trust_env=False).json().get(key) == value)
        except (httpx.HTTPError, ValueError):
            return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def archive_env(settings: ArchiveSettings) -> dict[str, str]:
    env = {"SGS_ARCHIVE_ENVIRONMENT": settings.environment, "SGS_ARCHIVE_SOURCE": settings.source}
    env |= {"SGS_ARCHIVE_DSN": settings.dsn, "SGS_ARCHIVE_NATS_URL": str(settings.nats_url)}
    assert settings.admin_token is not None
    return env | {"SGS_ARCHIVE_ADMIN_TOKEN": settings.admin_token.get_secret_value()}


@contextlib.contextmanager
def stack(workdir: Path) -> Iterator[Stack]:
    with contextlib.ExitStack() as stop:
        postgres = stop.enter_context(PostgresPart())
        nats_part = stop.enter_context(NatsPart())
        parts = {name: stop.enter_context(MinioPart(name)) for name in SITES}
        dsn = stop.enter_context(fresh_database(postgres))
        archive_settings = ArchiveSettings(
            dsn=dsn, nats_url=nats_part.url, admin_token=ADMIN_TOKEN, environment="development", source="bench"
        )
        served = ServiceProcess(
            ["archive", "serve"], archive_env(archive_settings), workdir / "archive.log", ("relay", "connected")
        )
        stop.callback(served.stop)
        client = stop.enter_context(httpx.Client(base_url=served.url, timeout=120, trust_env=False))
        archive = ArchiveUnderTest(dsn, served, client, archive_settings)
        archive.issue_site_tokens(list(SITES))
        archive.dataset_type("raw", ["exposure", "detector"])
        sites = [s3_site(parts[name], archive.url, {"tier": "primary"}) for name in SITES]
        sites_file = write_sites_file(workdir / "sites.yaml", sites, parts, archive.site_tokens)
        settings = TransferSettings(
            dsn=dsn,
            db_schema="bench_transfer",
            namespace="bench",
            nats_url=nats_part.url,
            admin_token=ADMIN_TOKEN,
            archive_url=archive.url,
            archive_token=ADMIN_TOKEN,
            sites_file=sites_file,
        )
        worker = WorkerProcess(settings, sites_file, workdir / "worker.log", "bench-worker")
        service = ServiceProcess(["transfer", "serve"], worker.env, workdir / "transfer.log", ("events", "connected"))
        stop.callback(service.stop)
        transfer_client = stop.enter_context(httpx.Client(base_url=service.url, timeout=120, trust_env=False))
        transfer = TransferUnderTest(settings, service, transfer_client)
        worker.start()
        stop.callback(worker.stop)
        deadline = time.monotonic() + 60
        while not worker.ready():
            if time.monotonic() > deadline or worker.process.poll() is not None:
                raise RuntimeError(f"the worker did not start: {(workdir / 'worker.log').read_text()[-2000:]}")
            time.sleep(0.1)
        pids = {"transfer service": service.process.pid, "archive": served.process.pid}
        pids |= {"PostgreSQL": postgres.records()[0].pid, "NATS": nats_part.records()[0].pid}
        yield Stack(archive, transfer, parts, nats_part.url, worker, pids)


def dataset_body(stack: Stack, run: str, index: int, content: bytes | None, *, upload: bool) -> dict[str, Any]:
    """One raw dataset at site-a (its file written to site-a's MinIO when ``upload``)."""
    dataset_id = uuid.uuid4()
    data = content if content is not None else f"{run}:{index}".encode()
    store = s3_store(stack.parts["site-a"])
    key = replica_key("raw", dataset_id, ".fits")
    if upload:
        store.put_bytes(key, data)
    return {
        "id": str(dataset_id),
        "dataset_type": "raw",
        "data_id": {"instrument": "VIS", "exposure": index, "detector": 1},
        "run": run,
        "replicas": [{"site": "site-a", "uri": str(store.uri(key)), **checksums(data)}],
    }


def transfer_times(stack: Stack, dataset_ids: list[str]) -> dict[str, dict[str, float]]:
    """started / copied / registered times (epoch seconds) of each dataset's transfer to site-b."""
    schema = stack.transfer.settings.db_schema
    with psycopg.connect(stack.archive.dsn, row_factory=dict_row) as conn:
        rows = conn.execute(
            f"""SELECT dataset_id::text AS d, extract(epoch FROM queued_at)::float8 AS queued,
                       extract(epoch FROM started_at)::float8 AS started,
                       extract(epoch FROM copied_at)::float8 AS copied,
                       extract(epoch FROM registered_at)::float8 AS registered
                  FROM {schema}.transfer WHERE dataset_id = ANY(%s::uuid[]) AND destination = 'site-b'""",
            (dataset_ids,),
        ).fetchall()
    return {row["d"]: row for row in rows}


def quantiles(values: list[float]) -> tuple[float, float, float]:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return statistics.median(ordered), p99, ordered[-1]


def create_rule(stack: Stack, body: dict[str, Any]) -> tuple[str, float]:
    sent = time.time()
    rule = stack.transfer.call("POST", "/rules", (201,), json=body)
    return str(rule["id"]), sent


def wait_rule_evaluated(stack: Stack, rule_id: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while stack.transfer.rule(rule_id)["evaluated_at"] is None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"rule {rule_id} was not evaluated within {timeout_s} s")
        time.sleep(0.02)


# ------------------------------------------------------------------------------------------ arrival + dataset start


async def arrival(stack: Stack, transfers: int, rate: float) -> dict[str, list[float]]:
    run = f"lat/{uuid.uuid4().hex[:8]}"
    stack.archive.collection(run)
    rule_id, _ = create_rule(stack, {"collections": [run], "copies": 1, "site_expression": "site-b"})
    wait_rule_evaluated(stack, rule_id)
    bodies = [dataset_body(stack, run, i, None, upload=True) for i in range(transfers)]
    seen: dict[str, float] = {}
    wanted = {b["id"] for b in bodies}
    nc = await nats.connect(stack.nats_url)

    async def on_available(message: Any) -> None:
        received = time.time()
        payload = json.loads(message.data)
        if payload["site"] == "site-b" and payload["dataset_id"] in wanted:
            seen.setdefault(payload["dataset_id"], received)

    # A plain subscription: JetStream stores what the archive's relay publishes, and core subscribers get it as
    # it is published (what a Rubin-style ingest consumer would listen to).
    await nc.subscribe("sgs.replica.available", cb=on_available)
    sent: dict[str, float] = {}
    async with httpx.AsyncClient(base_url=stack.archive.url, headers=ADMIN, timeout=30, trust_env=False) as http:
        began = time.monotonic()
        for i, body in enumerate(bodies):
            await asyncio.sleep(max(0.0, began + i / rate - time.monotonic()))
            sent[body["id"]] = time.time()
            response = await http.post("/datasets/ingest", json={"datasets": [body]})
            response.raise_for_status()
        deadline = time.monotonic() + 120 + transfers / 5
        while len(seen) < transfers:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(seen)} of {transfers} sgs.replica.available events arrived")
            await asyncio.sleep(0.2)
    await nc.close()
    times = transfer_times(stack, list(wanted))
    return {
        "arrival": [seen[d] - times[d]["copied"] for d in wanted],
        "copied_to_registered": [times[d]["registered"] - times[d]["copied"] for d in wanted],
        "registered_to_event": [seen[d] - times[d]["registered"] for d in wanted],
        "dataset_start": [times[d]["started"] - sent[d] for d in wanted],
        "dataset_queued": [times[d]["queued"] - sent[d] for d in wanted],
    }


# ------------------------------------------------------------------------------------------ rule start


def rule_start(stack: Stack, rules: int, per_rule: int = 4) -> dict[str, list[float]]:
    runs = [f"rules/{uuid.uuid4().hex[:8]}" for _ in range(rules)]
    by_run: dict[str, list[str]] = {}
    for run in runs:
        stack.archive.collection(run)
        bodies = [dataset_body(stack, run, i, None, upload=True) for i in range(per_rule)]
        stack.archive.ok("POST", "/datasets/ingest", json={"datasets": bodies})
        by_run[run] = [b["id"] for b in bodies]
    time.sleep(2.0)  # the evaluator has taken in the registration events (no rule matched them yet)
    created: dict[str, float] = {}
    for run in runs:
        _, sent = create_rule(stack, {"collections": [run], "copies": 1, "site_expression": "site-b"})
        created[run] = sent
        time.sleep(0.5)
    every = [d for ids in by_run.values() for d in ids]
    deadline = time.monotonic() + 120
    while True:
        times = transfer_times(stack, every)
        if len(times) == len(every) and all(t["started"] is not None for t in times.values()):
            break
        if time.monotonic() > deadline:
            raise RuntimeError("the rules' transfers did not all start within 120 s")
        time.sleep(0.5)
    first = [min(times[d]["started"] for d in by_run[run]) - created[run] for run in runs]
    last = [max(times[d]["started"] for d in by_run[run]) - created[run] for run in runs]
    return {"rule_first_start": first, "rule_all_started": last}


# ------------------------------------------------------------------------------------------ bulk


async def evaluator_idle(nats_url: str, timeout_s: float = 300) -> None:
    """Every consumer of the archive's stream has taken in what was published (no event left to evaluate)."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        deadline = time.monotonic() + timeout_s
        while True:
            consumers = await js.consumers_info(STREAM)
            if all(int(c.num_pending or 0) + int(c.num_ack_pending or 0) == 0 for c in consumers):
                return
            if time.monotonic() > deadline:
                raise RuntimeError("the evaluator did not catch up with the archive's events")
            await asyncio.sleep(0.2)
    finally:
        await nc.close()


def bulk(stack: Stack, count: int) -> dict[str, float]:
    run = f"bulk/{uuid.uuid4().hex[:8]}"
    stack.archive.collection(run)
    for start in range(0, count, 1000):
        bodies = [dataset_body(stack, run, i, None, upload=False) for i in range(start, min(count, start + 1000))]
        stack.archive.ok("POST", "/datasets/ingest", json={"datasets": bodies}, timeout=120)
    asyncio.run(evaluator_idle(stack.nats_url))
    schema = stack.transfer.settings.db_schema
    cpu_before = stack.cpu_s()
    rule_id, sent = create_rule(stack, {"collections": [run], "copies": 1, "site_expression": "site-b"})
    deadline = time.monotonic() + 120
    written: float | None = None
    with psycopg.connect(stack.archive.dsn, autocommit=True) as conn:
        while True:
            row = conn.execute(
                f"""SELECT count(*), count(*) FILTER (WHERE t.published_gen >= t.generation AND t.published_gen > 0)
                      FROM {schema}.lock l JOIN {schema}.transfer t
                        ON t.dataset_id = l.dataset_id AND t.destination = l.site
                     WHERE l.rule_id = %s""",
                (rule_id,),
            ).fetchone()
            rows, published = (int(row[0]), int(row[1])) if row is not None else (0, 0)
            if written is None and rows >= count:
                written = time.time() - sent
            if published >= count:
                queued = time.time() - sent
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {published} of {count} transfers queued after 120 s")
            time.sleep(0.01)
    cpu_after = stack.cpu_s()
    wait_rule_evaluated(stack, rule_id)
    cpu = {f"cpu {name}": cpu_after[name] - cpu_before[name] for name in cpu_before}
    return {"bulk_queued": queued, "bulk_written": written if written is not None else queued, **cpu}


# ------------------------------------------------------------------------------------------ report


def ratio(value: float, target: float) -> str:
    return f"{value / target:.2f} of target ({'meets' if value < target else 'MISSES'})"


def report(results: dict[str, list[float]], bulk_s: dict[str, float] | None, bulk_count: int) -> None:
    def ms(name: str) -> tuple[float, float, float]:
        p50, p99, worst = quantiles(results[name])
        return p50 * 1000, p99 * 1000, worst * 1000

    print()
    if "arrival" in results:
        n = len(results["arrival"])
        p50, p99, worst = ms("arrival")
        print(f"copy finished -> registered -> sgs.replica.available seen, {n} transfers:")
        print(
            f"  p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {worst:.1f} ms: p99 {ratio(p99 / 1000, TARGET_ARRIVAL_P99_S)}"
        )
        for part in ("copied_to_registered", "registered_to_event"):
            a, b, _ = ms(part)
            print(f"    {part.replace('_', ' ')}: p50 {a:.1f} ms, p99 {b:.1f} ms")
        low, high = RUCIO_ARRIVAL
        print(
            f"  Rucio peer (finisher {RUCIO['finisher']} s + hermes {RUCIO['hermes']} s, after the poller's "
            f"{RUCIO['poller-older-than']}-{RUCIO['poller']} s): up to {low}-{high} s; "
            f"ours p99 = 1/{low / (p99 / 1000):,.0f} of its low end"
        )
        p50, p99, worst = ms("dataset_start")
        q50, q99, _ = ms("dataset_queued")
        print(f"dataset registered -> transfer started, {n} datasets:")
        print(f"  p50 {p50:.0f} ms, p99 {p99:.0f} ms, max {worst:.0f} ms: p99 {ratio(p99 / 1000, TARGET_START_P99_S)}")
        print(f"    registered -> transfer queued: p50 {q50:.0f} ms, p99 {q99:.0f} ms")
    if "rule_first_start" in results:
        n = len(results["rule_first_start"])
        p50, p99, worst = ms("rule_first_start")
        a50, a99, _ = ms("rule_all_started")
        print(f"rule created -> its first transfer started, {n} rules over archived datasets:")
        print(f"  p50 {p50:.0f} ms, p99 {p99:.0f} ms, max {worst:.0f} ms: p99 {ratio(p99 / 1000, TARGET_START_P99_S)}")
        print(f"    all 4 of the rule's transfers started: p50 {a50:.0f} ms, p99 {a99:.0f} ms")
    if "rule_first_start" in results or "dataset_start" in results:
        low, high = RUCIO_START
        print(
            f"  Rucio peer (judge-evaluator {RUCIO['judge-evaluator']} s, submitter up to {RUCIO['submitter']} s): "
            f"up to {low}-{high} s"
        )
    if bulk_s is not None:
        queued, written = bulk_s["bulk_queued"], bulk_s["bulk_written"]
        print(f"rule over {bulk_count:,} archived datasets -> every transfer request queued (published):")
        print(f"  {queued:.2f} s: {ratio(queued, TARGET_BULK_S)}")
        print(f"    every request row written (QUEUED, what Rucio calls queued): {written:.2f} s")
        cpu = {name.removeprefix("cpu "): value for name, value in bulk_s.items() if name.startswith("cpu ")}
        print(
            f"    CPU meanwhile: {sum(cpu.values()):.2f} s in all ("
            + ", ".join(f"{name} {value:.2f} s" for name, value in cpu.items())
            + f"); load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
        )
        print(
            f"  Rucio peer: rules on existing data are applied at creation; the submitter takes queued requests "
            f"up to {RUCIO['submitter']} s later"
        )


def main(args: argparse.Namespace) -> None:
    results: dict[str, list[float]] = {}
    bulk_s: dict[str, float] | None = None
    with tempfile.TemporaryDirectory(prefix="sgs-bench-transfer-") as tmp, stack(Path(tmp)) as running:
        if args.transfers:
            started = time.monotonic()
            results |= asyncio.run(arrival(running, args.transfers, args.rate))
            print(f"arrival phase: {args.transfers} copies in {time.monotonic() - started:.1f} s")
        if args.rules:
            results |= rule_start(running, args.rules)
            print(f"rule phase: {args.rules} rules done")
        if args.bulk:
            running.worker.stop()  # the evaluator alone: no copies competing for the two cores
            bulk_s = bulk(running, args.bulk)
    report(results, bulk_s, args.bulk)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transfers", type=int, default=1000, help="Copies for the arrival figure (0: skip).")
    parser.add_argument(
        "--rate",
        type=float,
        default=5.0,
        help="Datasets registered per second in that phase (below what one worker copies on a loaded machine).",
    )
    parser.add_argument("--rules", type=int, default=50, help="Rules for the rule-start figure (0: skip).")
    parser.add_argument("--bulk", type=int, default=10_000, help="Datasets of the bulk rule (0: skip).")
    main(parser.parse_args())

"""Copy bandwidth between two MinIO servers on loopback: sgs.storage's streaming copy against a raw SDK copy.

Every method copies the same objects from MinIO A to MinIO B in the same run, methods interleaved round by round
(medians reported), each with the same number of worker threads:

- ``raw``          minio SDK get_object → put_object (16 MiB parts, 3 in flight), no checksums: the baseline
- ``sgs-nohash``   sgs.storage.copy with hashing switched off: what the copy machinery costs by itself
- ``sgs-copy``     sgs.storage.copy: adler32 + sha256 in one pass, checked against the source's checksums before
                   the object is published
- ``sgs-verified`` the same plus ``verify``: the destination re-read and re-hashed (what a transfer does before
                   anything says the replica exists)

Workloads: ``big`` (4 × 1 GiB: throughput and peak RSS per stream), ``small`` (10,000 × 100 KiB) and ``tiny``
(2,000 × 10 kB: objects/s per worker). Targets: big ≥ 0.9 of raw with RSS ≤ 4 × part size per stream; small ≥ 0.6
of raw; tiny ≥ 200 objects/s per worker; hashing costs ≤ 10 % (sgs-copy against sgs-nohash).

    .venv/bin/python bench/storage_copy.py [--workloads big,small,tiny] [--rounds 3] [--methods ...]

To add a line (e.g. through the transfer service), write ``def method(ctx: Context, objects: list[SourceObject],
prefix: str) -> None`` that copies every object to ``prefix + key`` at ``ctx.destination`` with ``ctx.workers``
threads, and register it in ``METHODS``; the harness times it, measures RSS and cleans up.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, cast

import psutil
from minio.deleteobjects import DeleteObject

from sgs.model.checksum import Checksums
from sgs.storage import S3Store, copy
from sgs.storage.hashing import StreamHasher
from sgs.storage.s3 import PART_SIZE, PARTS_IN_FLIGHT
from sgs.testing.minio import MinioPart

GiB, MiB, KiB = 1 << 30, 1 << 20, 1 << 10
WORKLOADS = {
    # name: (objects, size, default workers)
    "big": (4, GiB, 2),
    "small": (10_000, 100 * KiB, 4),
    "tiny": (2_000, 10_000, 1),
}
TARGETS = {"big": 0.9, "small": 0.6}
TARGET_TINY_PER_WORKER = 200.0
TARGET_HASH_COST = 0.10
RSS_PARTS_PER_STREAM = 4


@dataclass(frozen=True)
class SourceObject:
    key: str
    size: int
    checksums: Checksums


@dataclass
class Context:
    source: S3Store
    destination: S3Store
    workers: int
    servers: list[psutil.Process] = field(default_factory=list)


@dataclass
class Measured:
    seconds: float
    bytes: int
    objects: int
    peak_rss_delta: int
    client_cpu_s: float
    server_cpu_s: float

    @property
    def mib_s(self) -> float:
        return self.bytes / MiB / self.seconds

    @property
    def objects_s(self) -> float:
        return self.objects / self.seconds

    @property
    def cpu_s_per_gib(self) -> float:
        """CPU of this process and both MinIO servers per GiB copied: what the load of others cannot inflate."""
        return (self.client_cpu_s + self.server_cpu_s) / (self.bytes / GiB)

    @property
    def client_cpu_s_per_gib(self) -> float:
        return self.client_cpu_s / (self.bytes / GiB)

    @property
    def server_cpu_s_per_gib(self) -> float:
        return self.server_cpu_s / (self.bytes / GiB)


@dataclass
class Results:
    runs: dict[str, list[Measured]] = field(default_factory=dict)

    def median(self, method: str, attribute: str) -> float:
        return float(statistics.median(getattr(m, attribute) for m in self.runs[method]))


# ------------------------------------------------------------------------------------------------- methods


def _each(ctx: Context, objects: list[SourceObject], one: Callable[[SourceObject], None]) -> None:
    with ThreadPoolExecutor(ctx.workers, thread_name_prefix="bench-copy") as pool:
        for future in [pool.submit(one, o) for o in objects]:
            future.result()


def raw_copy(ctx: Context, objects: list[SourceObject], prefix: str) -> None:
    """The minio SDK alone: a GET streamed into put_object (its own multipart, 3 parts in flight)."""
    source, destination = ctx.source, ctx.destination

    def one(obj: SourceObject) -> None:
        response = source.client.get_object(source.bucket, obj.key)
        try:
            destination.client.put_object(
                destination.bucket,
                prefix + obj.key,
                cast(BinaryIO, response),  # urllib3's response has the read() put_object needs
                obj.size,
                part_size=PART_SIZE,
                num_parallel_uploads=3,
            )
        finally:
            response.close()
            response.release_conn()

    _each(ctx, objects, one)


def sgs_copy(ctx: Context, objects: list[SourceObject], prefix: str) -> None:
    def one(obj: SourceObject) -> None:
        copy(ctx.source, obj.key, ctx.destination, prefix + obj.key, expected=obj.checksums, verify_destination=False)

    _each(ctx, objects, one)


def sgs_verified(ctx: Context, objects: list[SourceObject], prefix: str) -> None:
    def one(obj: SourceObject) -> None:
        copy(ctx.source, obj.key, ctx.destination, prefix + obj.key, expected=obj.checksums)

    _each(ctx, objects, one)


def _count_only(self: StreamHasher, chunk: bytes | bytearray | memoryview) -> None:
    self.size += len(chunk)


@contextlib.contextmanager
def hashing_off() -> Iterator[None]:
    """StreamHasher counts bytes but hashes nothing (bench only): the same copy without its checksums."""
    original = StreamHasher.update
    StreamHasher.update = _count_only  # type: ignore[method-assign]
    try:
        yield
    finally:
        StreamHasher.update = original  # type: ignore[method-assign]


def sgs_nohash(ctx: Context, objects: list[SourceObject], prefix: str) -> None:
    def one(obj: SourceObject) -> None:
        copy(ctx.source, obj.key, ctx.destination, prefix + obj.key, verify_destination=False)

    with hashing_off():
        _each(ctx, objects, one)


Method = Callable[[Context, list[SourceObject], str], None]
METHODS: dict[str, Method] = {
    "raw": raw_copy,
    "sgs-nohash": sgs_nohash,
    "sgs-copy": sgs_copy,
    "sgs-verified": sgs_verified,
}


# ------------------------------------------------------------------------------------------------- harness


def _rss() -> tuple[int, int]:
    """(current RSS, peak RSS since the last reset) of this process, in bytes."""
    values = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(value.split()[0]) * 1024
    return values["VmRSS"], values["VmHWM"]


def _reset_peak_rss() -> None:
    """Return freed memory to the system first, so the baseline holds nothing a method could reuse unseen."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")


class Filler:
    """A stream of ``size`` pseudo-random bytes (a random block, each chunk stamped with its object and offset)."""

    BLOCK = os.urandom(PART_SIZE)

    def __init__(self, name: str, size: int) -> None:
        self.name, self.size, self.offset = name.encode(), size, 0

    def read(self, n: int = -1) -> bytes:
        n = min(self.size - self.offset if n < 0 else n, self.size - self.offset, len(self.BLOCK))
        stamp = b"%s@%d;" % (self.name, self.offset)
        chunk = (stamp + self.BLOCK[len(stamp) : n]) if n > len(stamp) else self.BLOCK[:n]
        self.offset += n
        return chunk


def make_sources(store: S3Store, workload: str, count: int, size: int, workers: int) -> list[SourceObject]:
    def one(index: int) -> SourceObject:
        key = f"{workload}/{index:05d}"
        return SourceObject(key, size, store.put(key, Filler(key, size)))

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, range(count)))


def empty(store: S3Store, prefix: str) -> None:
    names = [DeleteObject(o.key) for o in store.list(prefix)]
    for error in store.client.remove_objects(store.bucket, names):
        raise RuntimeError(f"cleanup failed: {error}")


def _cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def run_method(ctx: Context, method: str, objects: list[SourceObject], prefix: str) -> Measured:
    _reset_peak_rss()
    baseline, _ = _rss()
    client, servers = _cpu_s(psutil.Process()), sum(map(_cpu_s, ctx.servers))
    started = time.perf_counter()
    METHODS[method](ctx, objects, prefix)
    seconds = time.perf_counter() - started
    client, servers = _cpu_s(psutil.Process()) - client, sum(map(_cpu_s, ctx.servers)) - servers
    _, peak = _rss()
    empty(ctx.destination, prefix)
    return Measured(seconds, sum(o.size for o in objects), len(objects), max(0, peak - baseline), client, servers)


def bench_workload(
    source: S3Store,
    destination: S3Store,
    servers: list[psutil.Process],
    workload: str,
    methods: list[str],
    rounds: int,
    workers: int,
    scale: float,
) -> Results:
    count, size, _ = WORKLOADS[workload]
    count = max(1, round(count * scale))
    print(f"\n{workload}: {count} × {size:,} bytes, {workers} workers, {rounds} rounds; preparing sources ...")
    objects = make_sources(source, workload, count, size, max(workers, 4))
    ctx = Context(source, destination, workers, servers)
    results = Results({m: [] for m in methods})
    for round_index in range(rounds):
        order = methods[round_index % len(methods) :] + methods[: round_index % len(methods)]
        for method in order:
            measured = run_method(ctx, method, objects, f"{method}-{round_index}/")
            results.runs[method].append(measured)
            print(
                f"  round {round_index + 1} {method:<13} {measured.seconds:7.2f} s  {measured.mib_s:8.1f} MiB/s  "
                f"{measured.objects_s:8.1f} obj/s  peak RSS +{measured.peak_rss_delta / MiB:6.0f} MiB  "
                f"CPU {measured.client_cpu_s_per_gib:5.1f} + {measured.server_cpu_s_per_gib:5.1f} s/GiB  "
                f"load {os.getloadavg()[0]:.1f}"
            )
    empty(source, f"{workload}/")
    return results


def report(workload: str, results: Results, workers: int) -> list[str]:
    lines = []
    raw = results.median("raw", "mib_s") if "raw" in results.runs else None
    for method in results.runs:
        mib_s = results.median(method, "mib_s")
        objects_s = results.median(method, "objects_s")
        cpu = results.median(method, "cpu_s_per_gib")
        text = f"{workload:<6} {method:<13} {mib_s:8.1f} MiB/s  {objects_s / workers:8.1f} obj/s per worker"
        text += f"  CPU {cpu:5.1f} s/GiB (client + servers)"
        if raw:
            text += f"  {mib_s / raw:5.2f} of raw ({results.median('raw', 'cpu_s_per_gib') / cpu:4.2f} by CPU)"
            if workload in TARGETS and method.startswith("sgs") and method != "sgs-nohash":
                text += f" (target ≥ {TARGETS[workload]})"
        if workload == "big":
            per_stream = results.median(method, "peak_rss_delta") / workers
            text += f"  peak RSS {per_stream / MiB:.0f} MiB per stream"
            text += f" = {per_stream / PART_SIZE:.1f} parts (target ≤ {RSS_PARTS_PER_STREAM})"
        if workload == "tiny" and method.startswith("sgs"):
            text += f" (target ≥ {TARGET_TINY_PER_WORKER:.0f})"
        lines.append(text)
    if "sgs-copy" in results.runs and "sgs-nohash" in results.runs:
        cost = 1 - results.median("sgs-copy", "mib_s") / results.median("sgs-nohash", "mib_s")
        by_cpu = results.median("sgs-copy", "cpu_s_per_gib") / results.median("sgs-nohash", "cpu_s_per_gib") - 1
        lines.append(
            f"{workload:<6} adler32 + sha256 in one pass cost {cost:6.1%} of throughput, {by_cpu:6.1%} more CPU "
            f"(target ≤ {TARGET_HASH_COST:.0%})"
        )
    return lines


def _exact_rss_for_big_buffers() -> None:
    """Buffers from 1 MiB on get their own mappings, returned when freed, so peak RSS counts the live parts
    (glibc otherwise raises its mmap threshold after the first free and reuses heap memory already counted)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD


def main() -> None:
    _exact_rss_for_big_buffers()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", default="big,small,tiny")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=None, help="threads per method (default per workload)")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of each workload's objects (smoke runs)")
    args = parser.parse_args()
    methods = args.methods.split(",")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        sys.exit(f"unknown methods {unknown}; known: {', '.join(METHODS)}")
    print(f"parts of {PART_SIZE // MiB} MiB, {PARTS_IN_FLIGHT} in flight; {os.cpu_count()} cores")
    summary: list[str] = []
    with contextlib.ExitStack() as stack:
        parts = [stack.enter_context(_running(MinioPart(site))) for site in ("bench-a", "bench-b")]
        stores = [
            S3Store.connect(p.site, p.endpoint, p.bucket, p.access_key, p.secret_key, secure=False, connections=64)
            for p in parts
        ]
        for workload in args.workloads.split(","):
            workers = args.workers or WORKLOADS[workload][2]
            servers = [psutil.Process(record.pid) for part in parts for record in part.records()]
            results = bench_workload(stores[0], stores[1], servers, workload, methods, args.rounds, workers, args.scale)
            summary += report(workload, results, workers)
    print("\nmedians:")
    for line in summary:
        print("  " + line)
    print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores")


@contextlib.contextmanager
def _running(part: MinioPart) -> Iterator[MinioPart]:
    part.start()
    try:
        yield part
    finally:
        part.stop()


if __name__ == "__main__":
    main()

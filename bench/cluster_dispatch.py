"""Runs dispatched per second to cluster Sites, and the mirror's status lag (issue 21's figures).

Real control planes on this machine: the central one with `sgs operator` (a subprocess, as deployed; admission
webhook, task table in PostgreSQL) and ``--clusters`` remote ones, each a cluster Site of the central namespace
(kubeconfig in a Secret, its server allowed). The remote clusters run no operator: what is measured is the
central operator's path, not the remote execution.

1. bare client: the same copies created straight at the remote API servers with one raw-JSON client each and the
   same requests in flight — the limit of these API servers on this box;
2. dispatch: ``--runs`` central Runs (spread over the Sites) created at once; from the first POST to the last copy
   seen by a watch on each remote cluster. Afterwards every central uid must have exactly one copy, and each of
   the ``--sites`` cluster Sites its share (more Sites than control planes: Site i is served by control plane
   i mod ``--clusters``, in one remote namespace, each Site with its own storage path and watch);
3. mirror lag: a remote status change (what a remote operator writes) → the central Run shows it, for
   ``--lag-samples`` copies changed one at a time (p50, p99);
4. locality (``--locality N``): N Runs without spec.site, each reading one file under one Site's storage path
   (every remote cluster serves a Ready Site of each name, as its operator would report it); how many copies
   landed at the Site holding their input (issue 21: ≥ 99 %).

Targets (issue 21): ≥ 200 Runs/s to the remote clusters; beside it MultiKueue's ~100 workloads/s at 1,000 QPS
(kueue#13936) and 1.3/s at client defaults. Mirror lag has no target in the issue; the operator's reconcile
interval (1 s by default: the mirror reads each copy once per reconcile) bounds it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rich.console import Console
from sgs_operator.mirror import ORIGIN_SITE_LABEL, ORIGIN_UID_LABEL, Target, remote_run, run_path, runs_path

from sgs.kube import CONFLICT, JSON, KubeClient, KubeError, Watch
from sgs.testing.kube import KubePart
from sgs.testing.postgres import PostgresPart

TARGET_RATE = 200.0
MULTIKUEUE_RATE = 100.0
NAMESPACE = "bench"
console = Console(width=120)


def pipeline() -> dict[str, Any]:
    executable = {
        "name": "work",
        "command": "work",
        "outputs": [{"name": "out", "suffix": ".txt"}],
        "resources": {"cores": 1, "ram": 0.5, "walltime": 1.0},
    }
    return {
        "apiVersion": "sgs.io/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": "one"},
        "spec": {"executables": [executable], "steps": [{"name": "w", "executable": "work"}]},
    }


def input_pipeline() -> dict[str, Any]:
    """One step reading the Run's input ``data``: where that file lies decides the Site (spec.site unset)."""
    executable = {
        "name": "read",
        "command": "read",
        "inputs": [{"name": "input"}],
        "outputs": [{"name": "out", "suffix": ".txt"}],
        "resources": {"cores": 1, "ram": 0.5, "walltime": 1.0},
    }
    step = {"name": "r", "executable": "read", "inputs": {"input": {"input": "data"}}}
    return {
        "apiVersion": "sgs.io/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": "reads"},
        "spec": {"inputs": [{"name": "data"}], "executables": [executable], "steps": [step]},
    }


def remote_site(name: str, store: str) -> dict[str, Any]:
    """The Site a cluster Site's copies run at, in the remote cluster (what its own operator would serve)."""
    return {
        "apiVersion": "sgs.io/v1alpha1",
        "kind": "Site",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "compute": {"kind": "kubernetes"},
            "storage": {"kind": "posix", "path": store},
            "capacity": {"cores": 100, "storageTb": 1},
        },
    }


def cluster_site(name: str, store: str) -> dict[str, Any]:
    return {
        "apiVersion": "sgs.io/v1alpha1",
        "kind": "Site",
        "metadata": {"name": name},
        "spec": {
            "compute": {"kind": "cluster", "kubeconfig": {"name": f"{name}-kubeconfig"}},
            "storage": {"kind": "posix", "path": store},
            "capacity": {"cores": 100, "storageTb": 1},
        },
    }


def secret(name: str, kubeconfig: str) -> dict[str, Any]:
    data = {"kubeconfig": base64.b64encode(kubeconfig.encode()).decode()}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "data": data}


def central_run(name: str, site: str) -> dict[str, Any]:
    return {
        "apiVersion": "sgs.io/v1alpha1",
        "kind": "Run",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"pipeline": "one", "site": site},
    }


class Seen:
    """A watch cache recording when each object was first seen, and the latest version of each."""

    def __init__(self) -> None:
        self.first: dict[str, float] = {}
        self.objects: dict[str, JSON] = {}
        self.changed = asyncio.Event()

    def replace(self, items: list[JSON]) -> None:
        for item in items:
            self.apply("ADDED", item)

    def apply(self, kind: str, obj: JSON) -> None:
        name = str(obj["metadata"]["name"])
        if kind == "DELETED":
            self.objects.pop(name, None)
            return
        self.first.setdefault(name, time.perf_counter())
        self.objects[name] = obj
        self.changed.set()


async def gather_limited(limit: int, jobs: Iterable[Any]) -> None:
    slots = asyncio.Semaphore(limit)

    async def one(job: Any) -> None:
        async with slots:
            await job

    await asyncio.gather(*(one(job) for job in jobs))


async def create(client: KubeClient, path: str, body: JSON) -> None:
    try:
        await client.create(path, body)
    except KubeError as err:
        if err.status != CONFLICT:
            raise


async def bare(remotes: list[KubeClient], runs: int, concurrency: int) -> float:
    """Copies created straight at the remote API servers: their limit here."""
    namespace = "bench-bare"
    bodies = []
    for i in range(runs):
        body = central_run(f"bare-{i}", "x") | {"metadata": {"uid": str(uuid.uuid4()), "name": f"bare-{i}"}}
        target = Target("x", namespace, f"bare-{i}", "x")
        bodies.append((remotes[i % len(remotes)], remote_run(body, target, "one-0", "bench", NAMESPACE)))
    began = time.perf_counter()
    await gather_limited(concurrency, (create(c, runs_path(namespace), b) for c, b in bodies))
    return runs / (time.perf_counter() - began)


async def dispatch(
    central: KubeClient, remotes: list[KubeClient], seen: list[Seen], runs: int, concurrency: int, sites: list[str]
) -> tuple[float, int, dict[str, int]]:
    began = time.perf_counter()
    await gather_limited(
        concurrency,
        (create(central, runs_path(NAMESPACE), central_run(f"r-{i}", sites[i % len(sites)])) for i in range(runs)),
    )
    posted = time.perf_counter()
    console.print(f"  {runs} central Runs created in {posted - began:.1f} s; waiting for the copies")
    deadline = time.monotonic() + 600
    while sum(len(s.first) for s in seen) < runs:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {sum(len(s.first) for s in seen)} of {runs} copies after 600 s")
        await asyncio.sleep(0.05)
    last = max(t for s in seen for t in s.first.values())
    copies, per_site = await copies_made(remotes)
    duplicates = sum(n - 1 for n in copies.values())
    return runs / (last - began), duplicates, per_site


async def copies_made(remotes: list[KubeClient]) -> tuple[dict[str, int], dict[str, int]]:
    """Copies per central uid, and per central Site (its origin-site label), over every remote cluster."""
    copies: dict[str, int] = {}
    per_site: dict[str, int] = {}
    for client in remotes:
        listing = await client.get(runs_path(NAMESPACE))
        for item in listing.get("items") or []:
            labels = item["metadata"]["labels"]
            copies[labels[ORIGIN_UID_LABEL]] = copies.get(labels[ORIGIN_UID_LABEL], 0) + 1
            per_site[labels[ORIGIN_SITE_LABEL]] = per_site.get(labels[ORIGIN_SITE_LABEL], 0) + 1
    return copies, per_site


async def locality(
    central: KubeClient, remotes: list[KubeClient], seen: list[Seen], runs: int, sites: list[str], store: Path
) -> tuple[int, int, int]:
    """``runs`` Runs without spec.site, each reading one file that lies at one Site (round robin over the
    Sites); returns (copies at the Site holding the input, copies elsewhere, duplicates)."""
    before = {name for s in seen for name in s.first}
    holder: dict[str, str] = {}
    bodies = []
    for i in range(runs):
        site = sites[(i * 7) % len(sites)]
        path = store / site / f"input-{i}.dat"
        path.write_bytes(b"x" * 1000)
        name = f"loc-{i}"
        holder[name] = site
        body = central_run(name, site)
        body["spec"] = {"pipeline": "reads", "inputs": {"data": {"uri": str(path)}}}
        bodies.append(body)
    await gather_limited(32, (create(central, runs_path(NAMESPACE), b) for b in bodies))
    deadline = time.monotonic() + 300
    while len({name for s in seen for name in s.first} - before) < runs:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len({n for s in seen for n in s.first} - before)} of {runs} copies in 300 s")
        await asyncio.sleep(0.1)
    at_holder = elsewhere = 0
    copies: dict[str, int] = {}
    for client in remotes:
        listing = await client.get(runs_path(NAMESPACE))
        for item in listing.get("items") or []:
            name = item["metadata"]["name"]
            if name not in holder:
                continue
            copies[name] = copies.get(name, 0) + 1
            if item["metadata"]["labels"][ORIGIN_SITE_LABEL] == holder[name]:
                at_holder += 1
            else:
                elsewhere += 1
    return at_holder, elsewhere, sum(n - 1 for n in copies.values())


async def mirror_lag(
    central: KubeClient, remotes: list[KubeClient], samples: int, runs: int, sites: int
) -> list[float]:
    """Change a copy's status as its own operator would; time until the central Run shows it."""
    central_seen = Seen()
    stop = asyncio.Event()
    watch = Watch(central, runs_path(NAMESPACE), central_seen)
    task = asyncio.create_task(watch.run(stop))
    await watch.synced.wait()
    lags = []
    for k in range(samples):
        i = (k * 7919) % runs
        client, name = remotes[(i % sites) % len(remotes)], f"r-{i}"  # Run i at Site i mod sites
        marker = f"0/{k + 1000}"
        began = time.perf_counter()
        await client.merge_patch(
            f"{run_path(NAMESPACE, name)}/status", {"status": {"phase": "Running", "progress": marker}}
        )
        while (central_seen.objects.get(name, {}).get("status") or {}).get("progress") != marker:
            central_seen.changed.clear()
            try:
                await asyncio.wait_for(central_seen.changed.wait(), 10)
            except TimeoutError:
                raise RuntimeError(f"{name}: the central Run did not show {marker} within 10 s") from None
        lags.append(time.perf_counter() - began)
    stop.set()
    task.cancel()
    return lags


def start_operator(kube: KubePart, dsn: str, allowed: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "KUBECONFIG": str(kube.kubeconfig),
        "SGS_OPERATOR_DSN": dsn,
        "SGS_OPERATOR_WEBHOOK_NAME": "sgs-operator-bench.sgs.io",
        "SGS_OPERATOR_ALLOWED_CLUSTER_SERVERS": json.dumps(allowed),
    }
    argv = [sys.executable, "-m", "sgs.cli.main", "operator"]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while "sgs operator ready" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"operator did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    return proc


def start_profile(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """py-spy (``pip install py-spy`` into the venv) sampling the operator: collapsed stacks, one per line."""
    spy = Path(sys.executable).with_name("py-spy")
    argv = [str(spy), "record", "--pid", str(pid), "--format", "raw", "--rate", "50", "-o", str(out)]
    console.print(f"profiling the operator into {out}")
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(
    central_kube: KubePart, remote_kubes: list[KubePart], args: argparse.Namespace, operator_pid: int
) -> None:
    central = await KubeClient.connect(central_kube.kubeconfig, pool_size=args.concurrency + 4)
    remotes = [await KubeClient.connect(k.kubeconfig, pool_size=args.concurrency + 4) for k in remote_kubes]
    seen = [Seen() for _ in remotes]
    stop = asyncio.Event()
    watches = [Watch(c, runs_path(NAMESPACE), s) for c, s in zip(remotes, seen, strict=True)]
    tasks = [asyncio.create_task(w.run(stop)) for w in watches]
    try:
        await asyncio.gather(*(w.synced.wait() for w in watches))
        rate_bare = await bare(remotes, args.runs, args.concurrency)
        console.print(f"bare client: {rate_bare:8.1f} copies/s straight to {len(remotes)} API server(s)")
        cpu_before = cpu_seconds(operator_pid)
        sites = [f"site-{i}" for i in range(args.sites)]
        rate, duplicates, per_site = await dispatch(central, remotes, seen, args.runs, args.concurrency, sites)
        cpu_per_run = (cpu_seconds(operator_pid) - cpu_before) / args.runs
        lags = sorted(await mirror_lag(central, remotes, args.lag_samples, args.runs, len(sites)))
        local = await locality(central, remotes, seen, args.locality, sites, args.store) if args.locality else None
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await central.close()
        for client in remotes:
            await client.close()
    p50, p99 = statistics.median(lags), lags[min(len(lags) - 1, int(len(lags) * 0.99))]
    console.print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    console.print(
        f"dispatch: {rate:8.1f} Runs/s to {len(sites)} cluster Site(s) on {len(remotes)} control plane(s) "
        f"({args.runs} Runs), target ≥ "
        f"{TARGET_RATE:.0f}: ratio {rate / TARGET_RATE:.2f}; MultiKueue ~{MULTIKUEUE_RATE:.0f}/s: ratio "
        f"{rate / MULTIKUEUE_RATE:.2f}; bare client {rate_bare:.1f}/s: ratio {rate / rate_bare:.2f}"
    )
    console.print(f"copies per central Run: duplicates {duplicates} (target 0)")
    counts = [per_site.get(site, 0) for site in sites]
    console.print(
        f"cluster Sites: {len(sites)} in one namespace over {len(remotes)} control plane(s); "
        f"{sum(c > 0 for c in counts)} got copies, {min(counts)}–{max(counts)} each "
        f"(expected {args.runs // len(sites)}–{-(-args.runs // len(sites))})"
    )
    console.print(f"operator CPU per dispatched Run: {cpu_per_run * 1000:.1f} ms (webhook, start, copy, status)")
    console.print(f"mirror lag (remote status → central): p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms")
    if local is not None:
        at_holder, elsewhere, local_duplicates = local
        console.print(
            f"locality: {at_holder} of {args.locality} Runs ({100 * at_holder / args.locality:.1f} %) sent to the "
            f"Site holding their input (spec.site unset, {len(sites)} Ready Sites); {elsewhere} elsewhere; "
            f"duplicates {local_duplicates} (target ≥ 99 %)"
        )


def prepare(central: KubePart, remotes: list[KubePart], store: Path, sites: int) -> list[str]:
    """``sites`` cluster Sites, Site i at remote control plane i mod len(remotes) (several Sites share a control
    plane and its namespace when there are more Sites than control planes), each with its own storage path and a
    Ready Site of its name there (as that cluster's operator would report it)."""
    for kube in [central, *remotes]:
        kube.kubectl("create", "namespace", NAMESPACE)
    for kube in remotes:
        kube.kubectl("create", "namespace", "bench-bare")
    for i in range(sites):
        kube, name = remotes[i % len(remotes)], f"site-{i}"
        (store / name).mkdir(exist_ok=True)
        kube.kubectl("-n", NAMESPACE, "apply", "-f", "-", input=json.dumps(remote_site(name, str(store / name))))
        status = json.dumps({"status": {"phase": "Ready"}})
        kube.kubectl("-n", NAMESPACE, "patch", "site", name, "--subresource=status", "--type=merge", "-p", status)
    for i in range(sites):
        kube, name = remotes[i % len(remotes)], f"site-{i}"
        apply_cluster_site(central, name, kube.kubeconfig.read_text(), str(store / name))
    return [f"127.0.0.1:{kube.port}" for kube in remotes]


def apply_cluster_site(central: KubePart, name: str, kubeconfig: str, store: str) -> None:
    """The cluster Site ``name`` of the central namespace, with its kubeconfig Secret."""
    manifests = [secret(f"{name}-kubeconfig", kubeconfig), cluster_site(name, store)]
    list_body = json.dumps({"kind": "List", "apiVersion": "v1", "items": manifests})
    central.kubectl("-n", NAMESPACE, "apply", "-f", "-", input=list_body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=600)
    parser.add_argument("--clusters", type=int, default=3, help="remote control planes (cluster Sites)")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight (bare client, Run creation)")
    parser.add_argument("--lag-samples", type=int, default=200)
    parser.add_argument("--sites", type=int, default=0, help="cluster Sites (default: one per plane)")
    parser.add_argument("--locality", type=int, default=0, help="Runs without spec.site whose input lies at one Site")
    parser.add_argument("--profile", action="store_true", help="sample the operator with py-spy (collapsed stacks)")
    args = parser.parse_args()
    args.sites = args.sites or args.clusters
    workdir = Path(tempfile.mkdtemp(prefix="sgs-bench-dispatch-"))
    (workdir / "store").mkdir()
    central = KubePart(workdir / "central", scheduler=False)
    remotes = [KubePart(workdir / f"remote-{i}", scheduler=False) for i in range(args.clusters)]
    with PostgresPart(workdir / "pg") as postgres, central:
        started = []
        try:
            for kube in remotes:
                started.append(kube.start())
            args.store = workdir / "store"
            allowed = prepare(central, remotes, args.store, args.sites)
            for spec in (pipeline(), input_pipeline()):
                central.kubectl("-n", NAMESPACE, "apply", "-f", "-", input=json.dumps(spec))
            proc = start_operator(central, postgres.dsn, allowed, workdir / "operator.log")
            spy = start_profile(proc.pid, workdir / "operator.prof.txt") if args.profile else None
            try:
                asyncio.run(measure(central, remotes, args, proc.pid))
            finally:
                if spy is not None:
                    spy.send_signal(signal.SIGINT)  # py-spy writes its stacks on interrupt
                    spy.wait(60)
                proc.terminate()
                proc.wait(60)
        finally:
            for kube in started:
                kube.stop()
    console.print(f"work directory: {workdir}")


if __name__ == "__main__":
    main()

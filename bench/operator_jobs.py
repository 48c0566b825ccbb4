"""Jobs created per second for a 2,000-wide map through the whole operator path, against a bare client.

Against one real API server (started here, or $KUBECONFIG's), in the same run:
1. bare client: the operator's Kube client creating the same 2,000 Jobs with the operator's concurrency — the box's
   limit — from the first request to the 2,000th Job seen by a watch;
2. operator: `sgs operator` (a subprocess, as deployed) given a Run whose map fans out over 2,000 inputs: from
   the Run's creation to the 2,000th Job seen by a watch — planner, PostgreSQL records, Job creation, status.
Pods stay Pending (the Site's nodes do not exist), so only the control-plane path is measured.
Targets (DESIGN.md): ≥ 50 Jobs/s, and ≥ 80 % of the bare client's rate.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Coroutine
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client, config
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sgs_operator.jobs import RunRef, SitePlacement, TaskAttempt, build_job
from sgs_operator.kube import Kube

from sgs.model.pipeline import Resources
from sgs.testing.kube import KubePart
from sgs.testing.postgres import PostgresPart

TARGET_RATE = 50.0
TARGET_RATIO = 0.80
UNSERVED = {"sgs.io/bench": "no-such-node"}
console = Console()


def wide_pipeline(name: str) -> dict[str, Any]:
    """One map over the Run's `items`: every item is one task of one executable."""
    return {
        "apiVersion": "sgs.io/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": name},
        "spec": {
            "inputs": [{"name": "items"}],
            "executables": [
                {
                    "name": "work",
                    "command": "work",
                    "inputs": [{"name": "item"}],
                    "outputs": [{"name": "out", "suffix": ".json"}],
                    "resources": {"cores": 1, "ram": 0.5, "walltime": 1.0},
                }
            ],
            "steps": [
                {
                    "name": "m",
                    "map": {
                        "over": "item",
                        "params": ["item"],
                        "outputs": [{"name": "out", "from": {"step": "m.work", "output": "out"}}],
                    },
                    "inputs": {"item": {"input": "items"}},
                },
                {"name": "m.work", "executable": "work", "scope": "m", "inputs": {"item": {"input": "item"}}},
            ],
        },
    }


async def bare_client(kubeconfig: Path, namespace: str, width: int, concurrency: int, store: str) -> float:
    """The same Jobs the operator would create, straight from a client: Jobs per second."""
    kube = await Kube.connect(str(kubeconfig), pool_size=concurrency)
    run = RunRef(name="bare", namespace=namespace, uid="00000000-0000-0000-0000-000000000000", priority=0)
    site = SitePlacement(name="site-a", node_selector=dict(UNSERVED), host_paths=(store,))
    jobs = [
        build_job(
            run,
            site,
            TaskAttempt(
                tid=f"m.work[{i}]",
                attempt=0,
                argv=["work", f"--item={store}/in/{i}.json", f"--out={store}/out/{i}.json"],
                resources=Resources(cores=1, ram=0.5, walltime=1.0),
                image="ghcr.io/sgs/task-runner:latest",
                env={"SGS_TASK_ID": f"m.work[{i}]"},
            ),
            "/sgs/tmp",
        )
        for i in range(width)
    ]
    for job in jobs:
        del job["metadata"]["ownerReferences"]  # no Run owns them
    slots = asyncio.Semaphore(concurrency)

    async def create(job: dict[str, Any]) -> None:
        async with slots:
            await kube.create_job(job)

    async def create_all() -> None:
        await asyncio.gather(*(create(j) for j in jobs))

    rate = await seen_rate(kubeconfig, namespace, "bare", width, "bare client", create_all)
    await kube.close()
    return rate


async def seen_rate(
    kubeconfig: Path, namespace: str, run: str, width: int, label: str, begin: Callable[[], Coroutine[Any, Any, None]]
) -> float:
    """Jobs/s from ``begin()`` to the ``width``-th Job of ``run`` seen by a watch: one instrument for both paths
    (the watch's own CPU is then paid in both phases, not only in the operator's)."""
    # A raw watch (JSON lines, no model classes): the measuring must not eat the CPU it measures.
    api = await config.new_client_from_config(config_file=str(kubeconfig))
    batch = client.BatchV1Api(api)
    selector = f"sgs.io/run={run}"
    listing: Any = await batch.list_namespaced_job(namespace, label_selector=selector, _preload_content=False)
    version = json.loads(await listing.read())["metadata"]["resourceVersion"]
    seen: set[str] = set()
    start = last = time.perf_counter()
    starting = asyncio.create_task(begin())
    with _progress() as progress:
        bar = progress.add_task(label, total=width)
        async with contextlib.aclosing(added_jobs(batch, namespace, selector, version)) as names:
            async for name in names:
                if name not in seen:
                    seen.add(name)
                    last = time.perf_counter()
                    progress.advance(bar)
                if len(seen) >= width:
                    break
    await starting
    await api.close()
    return width / (last - start)


async def operator_path(kube: KubePart, namespace: str, width: int, store: str) -> float:
    """Apply the Run, watch its Jobs appear: Jobs per second from creation to the last one."""
    kubectl_apply(kube, namespace, wide_pipeline("wide"))
    site = {
        "apiVersion": "sgs.io/v1alpha1",
        "kind": "Site",
        "metadata": {"name": "site-a"},
        "spec": {
            "compute": {"maxParallel": width, "nodeSelector": UNSERVED},
            "storage": {"kind": "posix", "path": store},
            "capacity": {"cores": 4000, "storageTb": 100},
        },
    }
    kubectl_apply(kube, namespace, site)
    await asyncio.sleep(2)  # the Pipeline's status and the Site index settle before the Run arrives
    run = {
        "apiVersion": "sgs.io/v1alpha1",
        "kind": "Run",
        "metadata": {"name": "wide"},
        "spec": {
            "pipeline": "wide",
            "site": "site-a",
            "maxParallel": width,
            "inputs": {"items": {"uris": [f"{store}/in/{i}.json" for i in range(width)]}},
        },
    }

    async def apply_run() -> None:
        kubectl_apply(kube, namespace, run)

    return await seen_rate(kube.kubeconfig, namespace, "wide", width, "operator", apply_run)


async def added_jobs(
    batch: client.BatchV1Api, namespace: str, selector: str, version: str
) -> AsyncGenerator[str, None]:
    """Names of Jobs added after ``version``; a watch the server ends (a slow reader on a loaded box is cut
    off) is reopened from the last event seen, so nothing is missed and nothing is counted late by much."""
    while True:
        response: Any = await batch.list_namespaced_job(
            namespace,
            label_selector=selector,
            watch=True,
            resource_version=version,
            timeout_seconds=600,
            allow_watch_bookmarks=True,
            _preload_content=False,
        )
        try:
            while line := await response.content.readline():
                event = json.loads(line)
                if event["type"] == "ERROR":
                    raise RuntimeError(f"watch error: {event['object']}")
                version = event["object"]["metadata"]["resourceVersion"]
                if event["type"] == "ADDED":
                    yield event["object"]["metadata"]["name"]
        finally:
            response.release()
        console.print(f"[yellow]the server ended the watch; resuming from resourceVersion {version}[/]")


async def settle(kube: KubePart, namespace: str, width: int, timeout_s: float = 240) -> None:
    """Wait for the job controller to make the pods of the last phase: each phase starts on a quiet server."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if len(kube.kubectl("-n", namespace, "get", "pods", "-o", "name").stdout.split()) >= width:
            return
        await asyncio.sleep(2)
    console.print(f"[yellow]warning:[/] the job controller had not made all {width} pods in {timeout_s:.0f} s")


def kubectl_apply(kube: KubePart, namespace: str, manifest: dict[str, Any]) -> None:
    kube.kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(manifest))


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    )


def start_operator(kube: KubePart, dsn: str, concurrency: int, log: Path) -> subprocess.Popen[bytes]:
    """Cluster-wide: kopf can miss a namespace created while it starts watching a pattern."""
    env = {
        **os.environ,
        "KUBECONFIG": str(kube.kubeconfig),
        "SGS_OPERATOR_DSN": dsn,
        "SGS_OPERATOR_CREATE_CONCURRENCY": str(concurrency),
        "SGS_OPERATOR_WEBHOOK_NAME": "sgs-operator-bench.sgs.io",
    }
    profile = ["-m", "cProfile", "-o", str(log.with_suffix(".prof"))] if os.environ.get("SGS_BENCH_PROFILE") else []
    argv = [sys.executable, *profile, "-m", "sgs.cli.main", "operator"]
    pyspy = os.environ.get("SGS_BENCH_PYSPY")  # a raw py-spy profile of the operator alone, written at its exit
    if pyspy:
        py_spy = str(Path(sys.executable).with_name("py-spy"))
        argv = [py_spy, "record", "-r", "50", "-f", "raw", "-o", pyspy, "--", *argv]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while "sgs operator ready" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"operator did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    return proc


async def measure(
    kube: KubePart, dsn: str, width: int, concurrency: int, rounds: int, workdir: Path
) -> list[tuple[float, float]]:
    """Alternate bare client and operator, one namespace each per round (a shared box is noisy)."""
    store = str(workdir / "store")
    suffix = uuid.uuid4().hex[:6]
    proc = start_operator(kube, dsn, concurrency, workdir / "operator.log")
    results = []
    try:
        for i in range(rounds):
            bare_ns, operator_ns = f"bench-bare-{suffix}-{i}", f"bench-op-{suffix}-{i}"
            for namespace in (bare_ns, operator_ns):
                kube.kubectl("create", "namespace", namespace)
            console.print(f"[bold]round {i + 1}/{rounds}[/]: {width} Jobs, {concurrency} requests in flight")
            bare = await bare_client(kube.kubeconfig, bare_ns, width, concurrency, store)
            await settle(kube, bare_ns, width)
            through_operator = await operator_path(kube, operator_ns, width, store)
            if i + 1 < rounds:  # the next round's bare client starts on a quiet server too
                await settle(kube, operator_ns, width)
            console.print(f"  bare {bare:.1f} Jobs/s, operator {through_operator:.1f} Jobs/s")
            results.append((bare, through_operator))
    finally:
        under_pyspy = _children(proc.pid)
        for pid in under_pyspy:  # stop the operator; py-spy then writes its profile and exits
            os.kill(pid, signal.SIGTERM)
        if not under_pyspy:
            proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    return results


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32, help="Job creations in flight (both paths)")
    parser.add_argument("--rounds", type=int, default=2, help="bare/operator pairs; medians are reported")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="sgs-bench-operator-"))
    (workdir / "store").mkdir()
    preset = os.environ.get("KUBECONFIG")
    kube = KubePart.existing(Path(preset)) if preset else KubePart(workdir / "kube")
    with PostgresPart(workdir / "pg") as postgres, kube:
        results = asyncio.run(measure(kube, postgres.dsn, args.width, args.concurrency, args.rounds, workdir))
    bare = statistics.median(r[0] for r in results)
    operator = statistics.median(r[1] for r in results)
    ratio = statistics.median(r[1] / r[0] for r in results)
    console.print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    console.print(f"bare client: {bare:8.1f} Jobs/s  median of {len(results)} (the limit of this API server)")
    console.print(
        f"operator:    {operator:8.1f} Jobs/s  target ≥ {TARGET_RATE:.0f}: ratio {operator / TARGET_RATE:.2f}"
    )
    console.print(
        f"operator / bare client (median of pairs): {ratio:.1%}  target ≥ {TARGET_RATIO:.0%}: ratio "
        f"{ratio / TARGET_RATIO:.2f}"
    )


if __name__ == "__main__":
    main()

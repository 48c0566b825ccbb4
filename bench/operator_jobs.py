"""Jobs created per second for a 2,000-wide map through the whole operator path, against a bare client.

Against one real API server (started here, or $KUBECONFIG's), in the same run:
1. bare client: the operator's Kube client creating the operator's own Jobs for a Run (built by the operator's
   functions, owned by that Run, which is suspended so the operator adds none) with the operator's concurrency
   — the box's limit — from the first request to the 2,000th Job seen by a watch;
2. operator: `sgs operator` (a subprocess, as deployed) given a Run whose map fans out over 2,000 inputs: from
   the Run's creation to the 2,000th Job seen by a watch — admission, planner, PostgreSQL records, Job
   creation, status.
The job controller makes a pod per Job; pods stay Pending (no nodes, no scheduler), so only the control-plane
path is measured. Before each phase the previous phase's pods are all made and the control plane is idle.
Each phase prints where the box's CPU went, per Job.
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
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import psutil
from kubernetes_asyncio import client, config
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sgs_operator.jobs import RunRef
from sgs_operator.kube import Kube
from sgs_operator.launch import planner_config, site_placement, task_job
from sgs_operator.settings import OperatorSettings
from sgs_operator.storage import RunStorage, resolve_inputs, run_mounts

from sgs.model.pipeline import PipelineSpec
from sgs.model.run import RunSpec
from sgs.model.site import SiteSpec
from sgs.planner import Planner
from sgs.testing.kube import KubePart
from sgs.testing.postgres import PostgresPart

TARGET_RATE = 50.0
TARGET_RATIO = 0.80
UNSERVED = {"sgs.io/bench": "no-such-node"}
console = Console(width=120)


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


def wide_site(store: str, width: int) -> dict[str, Any]:
    return {
        "apiVersion": "sgs.io/v1alpha1",
        "kind": "Site",
        "metadata": {"name": "site-a"},
        "spec": {
            "compute": {"maxParallel": width, "nodeSelector": UNSERVED},
            "storage": {"kind": "posix", "path": store},
            "capacity": {"cores": 4000, "storageTb": 100},
        },
    }


def wide_run(name: str, store: str, width: int, *, suspend: bool) -> dict[str, Any]:
    return {
        "apiVersion": "sgs.io/v1alpha1",
        "kind": "Run",
        "metadata": {"name": name},
        "spec": {
            "pipeline": "wide",
            "site": "site-a",
            "maxParallel": width,
            "suspend": suspend,
            "inputs": {"items": {"uris": [f"{store}/in/{i}.json" for i in range(width)]}},
        },
    }


async def prepare_namespace(kube: KubePart, namespace: str, store: str, width: int) -> None:
    """The Pipeline and the Site of both phases; their status settles before anything is timed."""
    kubectl_apply(kube, namespace, wide_pipeline("wide"))
    kubectl_apply(kube, namespace, wide_site(store, width))
    await asyncio.sleep(2)


async def create_run(kube: KubePart, namespace: str, run: dict[str, Any]) -> dict[str, Any]:
    """Straight to the API server (the operator's admission webhook included): a kubectl process's start-up
    is not the operator's time."""
    api = await config.new_client_from_config(config_file=str(kube.kubeconfig))
    try:
        created: dict[str, Any] = await client.CustomObjectsApi(api).create_namespaced_custom_object(
            "sgs.io", "v1alpha1", namespace, "runs", run
        )
    finally:
        await api.close()
    return created


def operator_jobs(namespace: str, run: dict[str, Any], uid: str, store: str, width: int) -> list[dict[str, Any]]:
    """The Jobs the operator creates for ``run``, built by the operator's own functions (same bodies, same
    size, same owner), for the bare client to create."""
    spec = RunSpec.model_validate(run["spec"])
    site = SiteSpec.model_validate(wide_site(store, width)["spec"])
    pipeline = PipelineSpec.model_validate(wide_pipeline("wide")["spec"])
    name = run["metadata"]["name"]
    storage = RunStorage.for_run("site-a", site, spec.output_prefix, namespace, name)
    inputs = resolve_inputs(spec.inputs, storage.roots)
    planner = Planner(pipeline, name, inputs, planner_config(spec, site))
    placement = site_placement("site-a", site, run_mounts(storage.roots, storage.run_dir, inputs, planner))
    ref = RunRef(name, namespace, uid, spec.priority)
    defaults = OperatorSettings.model_fields
    image, tmpdir = defaults["default_image"].default, defaults["tmpdir_mount"].default
    return [task_job(ref, placement, storage, planner, t, image, tmpdir) for t in planner.take(time.time(), None)]


async def bare_client(
    kube: KubePart, namespace: str, width: int, concurrency: int, store: str, operator_pid: int
) -> float:
    """The operator's Jobs for a Run, created straight from a client: Jobs per second.

    The Run exists (suspended, so the operator creates nothing for it): the Jobs' owner is real, as in the
    operator's phase, and the garbage collector keeps them.
    """
    await prepare_namespace(kube, namespace, store, width)
    run = wide_run("bare", store, width, suspend=True)
    uid = (await create_run(kube, namespace, run))["metadata"]["uid"]
    jobs = operator_jobs(namespace, run, uid, store, width)
    assert len(jobs) == width
    await wait_for_phase(kube, namespace, "bare", "Suspended")
    connection = await Kube.connect(str(kube.kubeconfig), pool_size=concurrency)
    # The operator makes the PriorityClass its Jobs name once; without it the job controller cannot make pods.
    await connection.ensure_priority_class(0)
    slots = asyncio.Semaphore(concurrency)

    async def create(job: dict[str, Any]) -> None:
        async with slots:
            await connection.create_job(job)

    async def create_all() -> None:
        await asyncio.gather(*(create(j) for j in jobs))

    rate = await seen_rate(kube.kubeconfig, namespace, "bare", width, "bare client", create_all, operator_pid)
    await connection.close()
    return rate


async def wait_for_phase(kube: KubePart, namespace: str, run: str, phase: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = kube.kubectl("-n", namespace, "get", "run", run, "-o", "jsonpath={.status.phase}").stdout
        if got == phase:
            return
        await asyncio.sleep(0.5)
    raise RuntimeError(f"Run {namespace}/{run} did not reach {phase} in {timeout_s:.0f} s")


async def seen_rate(
    kubeconfig: Path,
    namespace: str,
    run: str,
    width: int,
    label: str,
    begin: Callable[[], Coroutine[Any, Any, None]],
    operator_pid: int,
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
    requests_before = await api_requests(api)
    start = last = time.perf_counter()
    first: float | None = None
    cpu_before = cpu_by_process(operator_pid)
    starting = asyncio.create_task(begin())
    with _progress() as progress:
        bar = progress.add_task(label, total=width)
        async with contextlib.aclosing(added_jobs(batch, namespace, selector, version)) as names:
            async for name in names:
                if name not in seen:
                    seen.add(name)
                    last = time.perf_counter()
                    first = first or last
                    progress.advance(bar)
                if len(seen) >= width:
                    break
    cpu_after = cpu_by_process(operator_pid)
    requests_after = await api_requests(api)
    await starting
    await api.close()
    console.print(f"  {label}: first Job after {(first or last) - start:.2f} s, last after {last - start:.2f} s")
    console.print(f"  {label}: {cpu_spent(cpu_before, cpu_after, width)}")
    console.print(f"  {label}: {requests_made(requests_before, requests_after)}")
    return width / (last - start)


async def operator_path(kube: KubePart, namespace: str, width: int, store: str, operator_pid: int) -> float:
    """Create the Run, watch its Jobs appear: Jobs per second from creation to the last one."""
    await prepare_namespace(kube, namespace, store, width)
    run = wide_run("wide", store, width, suspend=False)

    async def submit() -> None:
        await create_run(kube, namespace, run)

    return await seen_rate(kube.kubeconfig, namespace, "wide", width, "operator", submit, operator_pid)


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


async def settle(kube: KubePart, namespace: str, width: int, timeout_s: float = 900) -> None:
    """Wait until the job controller has made the last phase's pods and the control plane is idle again: each
    phase starts on a quiet server (at the controller manager's default 20 QPS that takes minutes)."""
    deadline = time.monotonic() + timeout_s
    with _progress() as progress:
        bar = progress.add_task("settling: pods made by the job controller", total=width)
        while time.monotonic() < deadline:
            pods = pod_count(kube, namespace)
            progress.update(bar, completed=pods)
            if pods >= width and control_plane_idle():
                return
            await asyncio.sleep(3)
    console.print(f"[yellow]warning:[/] the control plane had not settled in {timeout_s:.0f} s")


def pod_count(kube: KubePart, namespace: str) -> int:
    """Pods in the namespace, from a one-item LIST (remainingItemCount): cheap on a server holding thousands."""
    raw = kube.kubectl("get", "--raw", f"/api/v1/namespaces/{namespace}/pods?limit=1").stdout
    listing = json.loads(raw)
    return len(listing["items"]) + int(listing["metadata"].get("remainingItemCount") or 0)


def control_plane_idle(window_s: float = 3.0, busy_cores: float = 0.15) -> bool:
    """The API server, etcd and the controllers together used less than ``busy_cores`` over ``window_s``."""
    names = {"kube-apiserver", "etcd", "kube-controller-manager", "kube-scheduler"}
    before = {n: t for n, t in cpu_by_process(None).items() if n in names}
    time.sleep(window_s)
    after = {n: t for n, t in cpu_by_process(None).items() if n in names}
    return sum(after[n] - before.get(n, 0.0) for n in after) / window_s < busy_cores


def cpu_by_process(operator_pid: int | None) -> dict[str, float]:
    """CPU seconds (user + system) so far of every process on the box, grouped by program (the operator apart)."""
    totals: dict[str, float] = {}
    for proc in psutil.process_iter(["name", "cpu_times"]):
        times = proc.info["cpu_times"]
        if times is None:
            continue
        name = "operator" if proc.pid == operator_pid else ("bench" if proc.pid == os.getpid() else proc.info["name"])
        name = "kernel workers" if name.startswith("kworker") else name
        totals[name] = totals.get(name, 0.0) + times.user + times.system
    return totals


def cpu_spent(before: dict[str, float], after: dict[str, float], jobs: int) -> str:
    """The programs that used the most CPU between two snapshots, in ms per Job."""
    top = largest_increases(before, after, floor=0.05, count=9)
    listed = sum(t for t, _ in top)
    parts = ", ".join(f"{n} {1000 * t / jobs:.2f}" for t, n in top)
    return f"CPU ms per Job: listed {1000 * listed / jobs:.2f} = {parts}"


def largest_increases(
    before: dict[str, float], after: dict[str, float], floor: float, count: int
) -> list[tuple[float, str]]:
    """(increase, name) of the ``count`` counters that grew most between two snapshots, at least ``floor``."""
    grown = ((after[name] - before.get(name, 0.0), name) for name in after)
    return sorted((g for g in grown if g[0] >= floor), reverse=True)[:count]


async def api_requests(api: client.ApiClient) -> dict[str, float]:
    """The API server's request counters (its /metrics) by verb and resource."""
    response: Any = await api.call_api(
        "/metrics", "GET", auth_settings=["BearerToken"], _preload_content=False, _return_http_data_only=True
    )
    text = (await response.read()).decode()
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(part.split("=", 1) for part in line[line.index("{") + 1 : line.rindex("}")].split(","))
        what = labels["verb"].strip('"') + " " + labels["resource"].strip('"')
        if labels.get("subresource", '""') != '""':
            what += "/" + labels["subresource"].strip('"')
        counts[what] = counts.get(what, 0.0) + float(line.rsplit(" ", 1)[1])
    return counts


def requests_made(before: dict[str, float], after: dict[str, float]) -> str:
    """What the API server was asked during a phase (watches count when they start)."""
    top = largest_increases(before, after, floor=1, count=8)
    return "API requests: " + ", ".join(f"{w} {n:.0f}" for n, w in top)


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
    argv = [sys.executable, "-m", "sgs.cli.main", "operator"]
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
    operator_pid = proc.pid
    results = []
    try:
        for i in range(rounds):
            bare_ns, operator_ns = f"bench-bare-{suffix}-{i}", f"bench-op-{suffix}-{i}"
            for namespace in (bare_ns, operator_ns):
                kube.kubectl("create", "namespace", namespace)
            console.print(f"[bold]round {i + 1}/{rounds}[/]: {width} Jobs, {concurrency} requests in flight")
            bare = await bare_client(kube, bare_ns, width, concurrency, store, operator_pid)
            await settle(kube, bare_ns, width)
            with profiled(operator_pid, i + 1):
                through_operator = await operator_path(kube, operator_ns, width, store, operator_pid)
            if i + 1 < rounds:  # the next round's bare client starts on a quiet server too
                await settle(kube, operator_ns, width)
            console.print(f"  bare {bare:.1f} Jobs/s, operator {through_operator:.1f} Jobs/s")
            results.append((bare, through_operator))
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    return results


@contextlib.contextmanager
def profiled(pid: int, round_no: int) -> Iterator[None]:
    """With SGS_BENCH_PYSPY=<prefix>: a raw py-spy profile of the operator during its timed phase only,
    written to <prefix>.<round>."""
    prefix = os.environ.get("SGS_BENCH_PYSPY")
    if not prefix:
        yield
        return
    py_spy = str(Path(sys.executable).with_name("py-spy"))
    argv = [py_spy, "record", "--pid", str(pid), "-r", "200", "-f", "raw", "-o", f"{prefix}.{round_no}"]
    recorder = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # attached before the phase starts
    try:
        yield
    finally:
        recorder.send_signal(signal.SIGINT)  # py-spy writes its profile on SIGINT
        recorder.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32, help="Job creations in flight (both paths)")
    parser.add_argument("--rounds", type=int, default=2, help="bare/operator pairs; medians are reported")
    parser.add_argument(
        "--scheduler", action="store_true", help="run kube-scheduler too (it retries every unschedulable pod)"
    )
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="sgs-bench-operator-"))
    (workdir / "store").mkdir()
    preset = os.environ.get("KUBECONFIG")
    # No scheduler: there are no nodes, and it would only retry thousands of unschedulable pods, a load that
    # grows round by round and belongs to neither path.
    kube = KubePart.existing(Path(preset)) if preset else KubePart(workdir / "kube", scheduler=args.scheduler)
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

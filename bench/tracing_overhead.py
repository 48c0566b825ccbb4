"""What tracing costs, whether it is whole, and what the observability parts weigh.

In one run, on one machine, tracing off and on (100 % sampling, every span exported to a real Jaeger) alternate:
1. operator: Jobs/s from a Run's creation to its last Job seen by a watch (bench/operator_jobs.py's instrument,
   a ``--width``-wide map, no nodes: the control-plane path only);
2. archive: datasets/s through the HTTP ingest (bench/archive_ingest.py's instrument, fresh database each);
3. span completeness: ``--runs`` small Runs through the operator and a bridge (process provider) with tracing
   on; a Run's trace is complete when Jaeger holds its root span, a reconcile, the Job creation and the task
   attempt's span, each under the right parent;
4. memory: resident set of Jaeger (every span of the above, in memory) and Prometheus (scraping the operator and
   the bridge every 5 s with the shipped alert rules loaded), as in ``sgs dev up``.
Targets (issue #17): tracing on ≥ 0.95 of off for both rates; 100 % of the Runs' traces complete.

    .venv/bin/python bench/tracing_overhead.py [--width 500] [--datasets 50000] [--runs 100] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import archive_ingest
import operator_jobs
import psutil
from sgs_bridge.launch import BridgeProcess

from sgs.telemetry import ids
from sgs.telemetry.dashboards import ALERTS
from sgs.testing._process import free_port
from sgs.testing.base import Part
from sgs.testing.jaeger import JaegerPart, parent_of
from sgs.testing.kube import KubePart
from sgs.testing.postgres import PostgresPart
from sgs.testing.prometheus import PrometheusPart, ScrapeJob

TARGET_RATIO = 0.95
TARGET_COMPLETE = 1.0
REPO = Path(__file__).resolve().parents[1]
TASK_BIN = REPO / "tests" / "integration" / "operator" / "bin"  # optest_task: a task that writes its output
console = operator_jobs.console


@contextlib.contextmanager
def tracing(endpoint: str | None, **extra: str) -> Iterator[None]:
    """Processes started inside trace to ``endpoint`` at 100 % (none: tracing off, the default); ``extra``
    variables are set for them too."""
    saved = {key: os.environ.get(key) for key in ("SGS_TRACING_ENDPOINT", "SGS_TRACING_SAMPLING", *extra)}
    for key in saved:
        os.environ.pop(key, None)
    if endpoint:
        os.environ.update({"SGS_TRACING_ENDPOINT": endpoint, "SGS_TRACING_SAMPLING": "1.0"})
    os.environ.update(extra)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def stop(proc: Any) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except Exception:
        proc.kill()


async def operator_rates(
    kube: KubePart, dsn: str, width: int, rounds: int, workdir: Path, endpoint: str
) -> list[tuple[float, float]]:
    """(off, on) Jobs/s per round, the order swapped every round (a shared box drifts)."""
    store = str(workdir / "store")
    pairs = []
    for i in range(rounds):
        rates: dict[bool, float] = {}
        for traced in (False, True) if i % 2 == 0 else (True, False):
            namespace = f"bench-{'on' if traced else 'off'}-{uuid.uuid4().hex[:6]}"
            kube.kubectl("create", "namespace", namespace)
            with tracing(endpoint if traced else None):
                proc = operator_jobs.start_operator(kube, dsn, 32, workdir / f"operator-{namespace}.log")
            try:
                admitting(kube, namespace)
                rates[traced] = await operator_jobs.operator_path(kube, namespace, width, store, proc.pid)
            finally:
                stop(proc)
            await operator_jobs.settle(kube, namespace, width)
            kube.kubectl("delete", "namespace", namespace, "--wait=false")
        console.print(f"  round {i + 1}: tracing off {rates[False]:.1f} Jobs/s, on {rates[True]:.1f} Jobs/s")
        pairs.append((rates[False], rates[True]))
    return pairs


def admitting(kube: KubePart, namespace: str, timeout_s: float = 60) -> None:
    """Until the API server reaches the new operator's admission webhook (the previous operator's registration
    points at a port that is gone until this one has replaced it)."""
    probe = json.dumps(operator_jobs.wide_pipeline("probe"))
    deadline = time.monotonic() + timeout_s
    while True:
        done = kube.kubectl("-n", namespace, "apply", "--dry-run=server", "-f", "-", input=probe, check=False)
        if done.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the operator's webhook does not admit: {done.stderr}")
        time.sleep(0.5)


def archive_rates(
    postgres: PostgresPart, datasets: int, rounds: int, workdir: Path, endpoint: str
) -> list[tuple[float, float]]:
    raws, calexps = archive_ingest.make_datasets(datasets)
    pairs = []
    for i in range(rounds):
        rates: dict[bool, float] = {}
        for traced in (False, True) if i % 2 == 0 else (True, False):
            with tracing(endpoint if traced else None):
                name = f"bench_trace_{'on' if traced else 'off'}_{i}"
                rates[traced] = archive_ingest.bench_http(postgres, raws, calexps, 10_000, workdir, name)
        console.print(f"  round {i + 1}: tracing off {rates[False]:,.0f} datasets/s, on {rates[True]:,.0f}/s")
        pairs.append((rates[False], rates[True]))
    return pairs


def one_task_pipeline() -> dict[str, Any]:
    return {
        "apiVersion": "sgs.io/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": "one"},
        "spec": {
            "executables": [
                {
                    "name": "step",
                    "command": "optest_task",
                    "inputs": [{"name": "mode"}],
                    "outputs": [{"name": "out", "suffix": ".txt"}],
                    "resources": {"cores": 1, "ram": 0.25, "walltime": 0.05},
                }
            ],
            "steps": [{"name": "step", "executable": "step", "inputs": {"mode": {"value": "ok"}}}],
        },
    }


def served_site(store: str) -> dict[str, Any]:
    return {
        "apiVersion": "sgs.io/v1alpha1",
        "kind": "Site",
        "metadata": {"name": "site-t"},
        "spec": {
            "compute": {"kind": "kubernetes", "maxParallel": 20},
            "storage": {"kind": "posix", "path": store},
            "capacity": {"cores": 16, "storageTb": 1},
        },
    }


def missing_parts(spans: list[dict[str, Any]], uid: str) -> list[str]:
    """What a Run's trace lacks of: its root, a reconcile under it, the Job's creation under a reconcile, the
    task attempt's span under the root (empty: the trace is whole)."""
    root = f"{ids.run_span_id(uid):016x}"
    by_name: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        by_name.setdefault(span["operationName"].split(" ")[0], []).append(span)
    reconciles = {s["spanID"] for s in by_name.get("reconcile", []) if parent_of(s) == root}
    task = f"{ids.task_span_id(uid, 'step', 0):016x}"  # the first attempt is 0
    checks = {
        "root": any(s["spanID"] == root for s in by_name.get("run", [])),
        "reconcile": bool(reconciles),
        "create job": any(parent_of(s) in reconciles for s in by_name.get("create", [])),
        "task": any(s["spanID"] == task and parent_of(s) == root for s in by_name.get("task", [])),
    }
    return [part for part, found in checks.items() if not found]


def completeness(
    kube: KubePart, dsn: str, jaeger: JaegerPart, prometheus: PrometheusPart, runs: int, workdir: Path
) -> float:
    """Share of ``runs`` Runs whose trace Jaeger holds whole."""
    store = workdir / "store-t"
    store.mkdir(exist_ok=True)
    namespace = f"bench-spans-{uuid.uuid4().hex[:6]}"
    kube.kubectl("create", "namespace", namespace)
    path = os.pathsep.join([str(TASK_BIN), os.environ.get("PATH", "")])
    bridge = BridgeProcess(
        node_name="sgs-bench-spans",
        site="site-t",
        kubeconfig=kube.kubeconfig,
        workdir=workdir / "bridge",
        poll_interval_s=0.2,
        env={"PATH": path, "SGS_TRACING_ENDPOINT": jaeger.otlp_endpoint},
    )
    metrics_port = free_port()
    with tracing(jaeger.otlp_endpoint, SGS_OPERATOR_METRICS_PORT=str(metrics_port)):
        proc = operator_jobs.start_operator(kube, dsn, 32, workdir / "operator-spans.log")
    try:
        admitting(kube, namespace)
        with bridge:
            prometheus.scrape(
                ScrapeJob("sgs-operator", targets={f"127.0.0.1:{metrics_port}": {}}),
                ScrapeJob(
                    "sgs-bridge",
                    targets={f"127.0.0.1:{bridge.port}": {"site": "site-t"}},
                    scheme="https",
                    client_cert=(kube.pki / "kubelet-client.crt", kube.pki / "kubelet-client.key"),
                    insecure_skip_verify=True,
                ),
            )
            operator_jobs.kubectl_apply(kube, namespace, served_site(str(store)))
            operator_jobs.kubectl_apply(kube, namespace, one_task_pipeline())
            time.sleep(3)
            uids = []
            for i in range(runs):
                run = {
                    "apiVersion": "sgs.io/v1alpha1",
                    "kind": "Run",
                    "metadata": {"name": f"r{i}"},
                    "spec": {"pipeline": "one", "site": "site-t", "inputs": {}},
                }
                uids.append(asyncio.run(operator_jobs.create_run(kube, namespace, run))["metadata"]["uid"])
            ended = wait_runs(kube, namespace, runs)
            console.print(f"  {ended}/{runs} Runs ended")
            time.sleep(3)  # the last spans leave the exporters' batches (0.5 s) and land in Jaeger
            missing = {uid: missing_parts(jaeger.trace(ids.run_trace_id(uid)), uid) for uid in uids}
            for uid, parts in missing.items():
                if parts:
                    console.print(f"  trace {ids.run_trace_id(uid):032x} (Run uid {uid}) lacks {', '.join(parts)}")
            complete = sum(not parts for parts in missing.values())
    finally:
        stop(proc)
    return complete / runs


def wait_runs(kube: KubePart, namespace: str, runs: int, timeout_s: float = 900) -> int:
    deadline = time.monotonic() + timeout_s
    ended = 0
    while time.monotonic() < deadline:
        phases = kube.kubectl("-n", namespace, "get", "runs", "-o", "jsonpath={.items[*].status.phase}").stdout.split()
        ended = sum(phase in ("Succeeded", "Failed") for phase in phases)
        if ended >= runs:
            break
        time.sleep(2)
    return ended


def rss_mib(part: Part) -> float:
    total = 0
    for process in part.processes:
        if process.record is None:
            continue
        with contextlib.suppress(psutil.NoSuchProcess):
            root = psutil.Process(process.record.pid)
            total += sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
    return total / 2**20


def ratio_line(label: str, unit: str, pairs: list[tuple[float, float]]) -> str:
    if not pairs:
        return f"{label}: not measured (--rounds 0)"
    off = statistics.median(p[0] for p in pairs)
    on = statistics.median(p[1] for p in pairs)
    ratio = statistics.median(p[1] / p[0] for p in pairs)
    return (
        f"{label}: off {off:,.1f} {unit}, on {on:,.1f} {unit} (medians of {len(pairs)}); on/off {ratio:.3f}, "
        f"target ≥ {TARGET_RATIO}: ratio {ratio / TARGET_RATIO:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=500, help="Jobs of the operator's Run")
    parser.add_argument("--datasets", type=int, default=50_000, help="datasets of each archive ingest")
    parser.add_argument("--runs", type=int, default=100, help="Runs whose traces are checked")
    parser.add_argument(
        "--rounds", type=int, default=2, help="off/on pairs per rate; medians are reported (0: spans and memory only)"
    )
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="sgs-bench-tracing-"))
    (workdir / "store").mkdir()
    with JaegerPart(workdir / "jaeger") as jaeger, PostgresPart(workdir / "pg") as postgres:
        idle = {"jaeger": rss_mib(jaeger)}
        console.print(f"[bold]archive ingest[/], {args.datasets} datasets, tracing off/on")
        archive = archive_rates(postgres, args.datasets, args.rounds, workdir, jaeger.otlp_endpoint)
        console.print(f"[bold]operator[/], {args.width} Jobs, tracing off/on")
        with KubePart(workdir / "kube", scheduler=False) as kube:
            operator = asyncio.run(
                operator_rates(kube, postgres.dsn, args.width, args.rounds, workdir, jaeger.otlp_endpoint)
            )
        console.print(f"[bold]span completeness[/], {args.runs} Runs through the operator and a bridge")
        with (
            KubePart(workdir / "kube-served") as kube,
            PrometheusPart(
                workdir / "prometheus", rule_files=sorted(ALERTS.glob("*.yaml")), scrape_interval_s=5.0
            ) as prometheus,
        ):
            idle["prometheus"] = rss_mib(prometheus)
            share = completeness(kube, postgres.dsn, jaeger, prometheus, args.runs, workdir)
            loaded = {"jaeger": rss_mib(jaeger), "prometheus": rss_mib(prometheus)}
    console.print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    console.print(ratio_line("operator Jobs/s", "Jobs/s", operator))
    console.print(ratio_line("archive ingest", "datasets/s", archive))
    console.print(
        f"span completeness: {share:.1%} of {args.runs} Runs' traces whole; target {TARGET_COMPLETE:.0%}: "
        f"ratio {share / TARGET_COMPLETE:.2f}"
    )
    for part in ("jaeger", "prometheus"):
        console.print(f"{part}: {idle[part]:.0f} MiB idle, {loaded[part]:.0f} MiB after the bench's spans / scrapes")
    console.print(f"observability parts together: {sum(loaded.values()):.0f} MiB")
    sys.exit(0)


if __name__ == "__main__":
    main()

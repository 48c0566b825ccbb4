"""Pilot throughput: ~1 s payload pods through pilots vs one sbatch per pod, same single-host Slurm, same run.

Starts a real control plane (KubePart) and Slurm (SlurmPart), then runs `sgs bridge --provider slurm` twice as
its own process: once per-pod (each pod its own sbatch, on the oversubscribed `gpu` partition as
`bridge_throughput.py` does) and once in pilot mode (one template of the whole node). For each it creates N pods
bound to its node at once (nodeName set, so the figure is the bridge's and not the scheduler's) and reports:

- payloads/s: pods from the first create until the last one Succeeded (the issue's throughput, 1 s each);
- started/s: until every payload's process had started (its state.json start time);
- wait from pod creation (the create call's return) to process start, median and p95 (pilot: with a pilot up);
- CPU seconds used by the bridge (and the pilots' agents) per payload.

Targets (issue #20): pilots ≥ 5x the per-pod path, ≥ 50 payloads/s; median wait ≤ 0.5 s with a pilot running.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import httpx
import psutil
from sgs_bridge.launch import BridgeProcess

from sgs.testing.kube import KubePart
from sgs.testing.slurm import SlurmPart

TARGET_RATIO = 5.0
TARGET_PAYLOADS_PER_S = 50.0
TARGET_MEDIAN_WAIT_S = 0.5
NAMESPACE = "default"
CREATORS = 8


def pod(name: str, node: str, seconds: float) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"bench": "pilots"}},
        "spec": {
            "nodeName": node,
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "tolerations": [{"key": "virtual-kubelet.io/provider", "operator": "Exists"}],
            "containers": [
                {
                    "name": "main",
                    "image": "none",
                    "command": ["sleep", str(seconds)],
                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
                }
            ],
        },
    }


def pilot_settings(path: Path, slurm: SlurmPart) -> Path:
    memory_mb = min(slurm.memory_mb, 8192)
    path.write_text(
        f"pipelinerunner.pilots.node.CPUcores={slurm.cpus}\n"
        f"pipelinerunner.pilots.node.rssInMB={memory_mb}\n"
        "pipelinerunner.pilots.node.walltimeInMin=60\n"
        "pipelinerunner.pilots.node.maxInstances=1\n"
        "pipelinerunner.pilots.node.maxQueued=1\n"
    )
    return path


def process_starts(bridge: BridgeProcess, uids: dict[str, str]) -> dict[str, float]:
    """{pod name: the epoch second its process started}, from each pod directory's state.json."""
    starts = {}
    for name, uid in uids.items():
        try:
            state = json.loads((bridge.workdir / "pods" / uid / "state.json").read_text())
        except (OSError, ValueError):
            continue
        starts[name] = float(state["started_at"])
    return starts


def agents_cpu_s(workdir: Path) -> float:
    total = 0.0
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if "sgs_bridge.pilot_agent" in cmdline and any(str(workdir) in part for part in cmdline):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def bridge_cpu_s(bridge: BridgeProcess) -> float:
    assert bridge.process is not None
    times = psutil.Process(bridge.process.pid).cpu_times()
    return float(times.user + times.system)


def measure(
    api: httpx.Client, bridge: BridgeProcess, count: int, seconds: float, prefix: str, spacing_s: float = 0.0
) -> dict[str, float]:
    """Create ``count`` pods (at once, or one every ``spacing_s``) and time them until all have ended."""
    node = bridge.node_name
    created: dict[str, float] = {}
    uids: dict[str, str] = {}
    cpu_before = bridge_cpu_s(bridge)

    def create(index: int) -> None:
        name = f"{prefix}-{index}"
        response = api.post(f"/api/v1/namespaces/{NAMESPACE}/pods", json=pod(name, node, seconds))
        response.raise_for_status()
        created[name] = time.time()
        uids[name] = response.json()["metadata"]["uid"]

    begin = time.time()
    if spacing_s:
        for index in range(count):
            create(index)
            time.sleep(spacing_s)
    else:  # as an operator would: several creates in flight, so the figure is the bridge's, not this loop's
        with ThreadPoolExecutor(CREATORS) as pool:
            list(pool.map(create, range(count)))
    creating_s = time.time() - begin
    deadline = begin + 900
    while True:
        listing = api.get(
            f"/api/v1/namespaces/{NAMESPACE}/pods", params={"fieldSelector": f"spec.nodeName={node}"}
        ).json()
        phases = [item["status"].get("phase") for item in listing["items"] if item["metadata"]["name"] in created]
        if sum(1 for phase in phases if phase in ("Succeeded", "Failed")) >= count:
            break
        if time.time() > deadline:
            raise TimeoutError(f"{node}: {phases.count('Succeeded')}/{count} pods succeeded in 900 s")
        time.sleep(0.1)
    done = time.time()
    failed = phases.count("Failed")
    starts = process_starts(bridge, uids)
    waits = sorted(starts[name] - created[name] for name in starts)
    cpu = bridge_cpu_s(bridge) - cpu_before
    figures = {
        "payloads_per_s": count / (done - begin),
        "started_per_s": count / (max(starts.values()) - begin) if starts else 0.0,
        "wait_median_s": statistics.median(waits) if waits else float("nan"),
        "wait_p95_s": waits[min(len(waits) - 1, int(0.95 * len(waits)))] if waits else float("nan"),
        "bridge_cpu_ms_per_payload": 1000 * cpu / count,
        # The API server's own pace in the same moment: the ceiling no bridge can pass.
        "api_creates_per_s": count / creating_s if creating_s > 0 else float("inf"),
        "failed": float(failed),
    }
    print(
        f"  {node}: {count} pods created in {creating_s:.1f} s, all ended after {done - begin:.1f} s "
        f"({failed} failed); "
        f"{figures['payloads_per_s']:.1f} payloads/s, started {figures['started_per_s']:.1f}/s; wait creation->start "
        f"median {figures['wait_median_s']:.2f} s, p95 {figures['wait_p95_s']:.2f} s; "
        f"bridge CPU {figures['bridge_cpu_ms_per_payload']:.1f} ms/payload"
    )
    return figures


def run_bridge(
    kube: KubePart,
    slurm: SlurmPart,
    workdir: Path,
    *,
    pilots: bool,
    count: int,
    seconds: float,
    trickle_count: int,
    api_concurrency: int,
) -> dict[str, float]:
    mode = "pilots" if pilots else "per-pod"
    if pilots:
        extra = [f"--pilots={pilot_settings(workdir / 'pilots.properties', slurm)}"]
    else:
        extra = ["--partition=gpu", "--sbatch-arg=--oversubscribe"]
    extra.append(f"--api-concurrency={api_concurrency}")
    bridge = BridgeProcess(
        node_name=f"bench-{mode}",
        site=f"bench-{mode}",
        kubeconfig=kube.kubeconfig,
        workdir=workdir / mode,
        provider="slurm",
        poll_interval_s=0.2,
        extra_args=extra,
        env=slurm.env,
    )
    with bridge, kube.api() as api:
        if pilots:  # bring a pilot up with a first payload: the burst and the trickle then find it running
            measure(api, bridge, 1, 0.1, f"{mode}-warm")
        agents_before = agents_cpu_s(workdir / mode)
        figures = measure(api, bridge, count, seconds, f"{mode}-burst")
        if pilots:
            agents = agents_cpu_s(workdir / mode) - agents_before
            figures["agent_cpu_ms_per_payload"] = 1000 * agents / count
            print(f"  pilot agents' CPU {figures['agent_cpu_ms_per_payload']:.1f} ms/payload")
        # The wait when a slot is free: a burst's wait is mostly queueing behind the burst itself.
        trickle = measure(api, bridge, trickle_count, seconds, f"{mode}-trickle", spacing_s=0.2)
        figures["trickle_wait_median_s"] = trickle["wait_median_s"]
        figures["trickle_wait_p95_s"] = trickle["wait_p95_s"]
        api.request("DELETE", f"/api/v1/namespaces/{NAMESPACE}/pods", params={"labelSelector": "bench=pilots"})
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--payloads", type=int, default=1000, help="payload pods through pilots")
    parser.add_argument("--per-pod", type=int, default=40, help="pods through the per-pod sbatch path")
    parser.add_argument("--seconds", type=float, default=1.0, help="how long each payload runs")
    parser.add_argument("--api-concurrency", type=int, default=32, help="the bridges' --api-concurrency")
    parser.add_argument("--trickle", type=int, default=20, help="pods created one every 0.2 s, for the wait")
    args = parser.parse_args()
    with TemporaryDirectory(prefix="sgs-bench-pilots-") as tmp:
        workdir = Path(tmp)
        print("starting the control plane and Slurm ...")
        with KubePart(workdir / "kube") as kube, SlurmPart(workdir / "slurm") as slurm:
            print(f"per-pod sbatch: {args.per_pod} pods of {args.seconds:g} s")
            per_pod = run_bridge(
                kube,
                slurm,
                workdir,
                pilots=False,
                count=args.per_pod,
                seconds=args.seconds,
                trickle_count=args.trickle,
                api_concurrency=args.api_concurrency,
            )
            print(f"pilots: {args.payloads} pods of {args.seconds:g} s")
            pilots = run_bridge(
                kube,
                slurm,
                workdir,
                pilots=True,
                count=args.payloads,
                seconds=args.seconds,
                trickle_count=args.trickle,
                api_concurrency=args.api_concurrency,
            )
    ratio = pilots["payloads_per_s"] / per_pod["payloads_per_s"]
    print(
        f"pilot_throughput: {pilots['payloads_per_s']:.1f} payloads/s through pilots vs "
        f"{per_pod['payloads_per_s']:.2f}/s one sbatch per pod = {ratio:.1f}x (target {TARGET_RATIO:.0f}x, "
        f"ratio to target {ratio / TARGET_RATIO:.2f}); {pilots['payloads_per_s'] / TARGET_PAYLOADS_PER_S:.2f} of "
        f"{TARGET_PAYLOADS_PER_S:.0f}/s"
    )
    creates = pilots["api_creates_per_s"]
    print(
        f"pilot_throughput vs the API server: it created the {args.payloads} pods at {creates:.1f}/s from "
        f"{CREATORS} threads; the bridge ran them at {pilots['payloads_per_s'] / creates:.2f} of that"
    )
    median, p95 = pilots["trickle_wait_median_s"], pilots["trickle_wait_p95_s"]
    print(
        f"pilot_wait: median {median:.3f} s, p95 {p95:.3f} s creation->process start with a pilot running "
        f"(per-pod sbatch: median {per_pod['trickle_wait_median_s']:.2f} s, p95 {per_pod['trickle_wait_p95_s']:.2f} s;"
        f" in the burst of {args.payloads}: median {pilots['wait_median_s']:.2f} s, p95 {pilots['wait_p95_s']:.2f} s);"
        f" target median {TARGET_MEDIAN_WAIT_S} s, ratio {median / TARGET_MEDIAN_WAIT_S:.2f}"
    )
    print(json.dumps({"per_pod": per_pod, "pilots": pilots, "ratio": round(ratio, 2)}))


if __name__ == "__main__":
    main()

"""Bridge throughput: pods per second taken from Pending to Running, with the process and the Slurm provider.

Starts a real control plane (KubePart) and a single-host Slurm (SlurmPart), runs `sgs bridge` for each
provider as its own process, creates N pods bound to its node at once (nodeName set, so the figure is the
bridge's and not the scheduler's), and times from the first create until every pod was reported started
(Running, or already Succeeded with a start time). Target: keep up with the operator's 50 Jobs/s.

On a single host Slurm runs at most (cores x 4) of these jobs at once (the test partition `gpu`
oversubscribes cores 4 times), so the Slurm figure includes waiting for slots as jobs end.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import httpx
from sgs_bridge.launch import BridgeProcess

from sgs.testing.kube import KubePart
from sgs.testing.slurm import SlurmPart

TARGET_PODS_PER_S = 50.0
NAMESPACE = "default"


def pod(name: str, node: str, seconds: float) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"bench": "bridge"}},
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
                    "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "64Mi"}},
                }
            ],
        },
    }


def started(item: dict[str, Any]) -> bool:
    status = item.get("status", {})
    if status.get("phase") == "Running":
        return True
    containers = status.get("containerStatuses") or [{}]
    return status.get("phase") == "Succeeded" and bool(containers[0].get("state", {}).get("terminated"))


def measure(api: httpx.Client, node: str, count: int, seconds: float, prefix: str) -> float:
    """Seconds from the first create until all `count` pods were reported started."""
    begin = time.monotonic()
    for index in range(count):
        response = api.post(f"/api/v1/namespaces/{NAMESPACE}/pods", json=pod(f"{prefix}-{index}", node, seconds))
        response.raise_for_status()
    created = time.monotonic() - begin
    deadline = begin + 600
    while True:
        listing = api.get(
            f"/api/v1/namespaces/{NAMESPACE}/pods", params={"fieldSelector": f"spec.nodeName={node}"}
        ).json()
        done = sum(1 for item in listing["items"] if item["metadata"]["name"].startswith(prefix) and started(item))
        if done >= count:
            elapsed = time.monotonic() - begin
            print(f"  {node}: created {count} pods in {created:.2f} s, all started after {elapsed:.2f} s")
            return elapsed
        if time.monotonic() > deadline:
            raise TimeoutError(f"{node}: only {done}/{count} pods started in 600 s")
        time.sleep(0.05)


def run_provider(
    kube: KubePart, workdir: Path, provider: str, count: int, seconds: float, env: dict[str, str]
) -> float:
    node = f"bench-{provider}"
    extra = ["--partition=gpu", "--sbatch-arg=--oversubscribe"] if provider == "slurm" else []
    bridge = BridgeProcess(
        node_name=node,
        site=f"bench-{provider}",
        kubeconfig=kube.kubeconfig,
        workdir=workdir / provider,
        provider=provider,
        poll_interval_s=0.2,
        extra_args=extra,
        env=env,
    )
    with bridge, kube.api() as api:
        elapsed = measure(api, node, count, seconds, f"{provider}-pod")
        api.request("DELETE", f"/api/v1/namespaces/{NAMESPACE}/pods", params={"labelSelector": "bench=bridge"})
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=100, help="pods per provider")
    parser.add_argument("--slurm-pods", type=int, default=8, help="pods for Slurm (8 = all its slots here)")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long each pod's task runs")
    parser.add_argument("--skip-slurm", action="store_true")
    args = parser.parse_args()
    with TemporaryDirectory(prefix="sgs-bench-bridge-") as tmp:
        workdir = Path(tmp)
        results: dict[str, float] = {}
        print("starting the control plane ...")
        with KubePart(workdir / "kube") as kube:
            print(f"process provider: {args.pods} pods")
            results["process"] = run_provider(kube, workdir, "process", args.pods, args.seconds, {})
            if not args.skip_slurm:
                print("starting Slurm ...")
                with SlurmPart(workdir / "slurm") as slurm:
                    print(f"slurm provider: {args.slurm_pods} pods")
                    results["slurm"] = run_provider(kube, workdir, "slurm", args.slurm_pods, args.seconds, slurm.env)
    for provider, rate in results.items():
        print(
            f"bridge_throughput[{provider}]: {rate:.1f} pods/s Pending->Running "
            f"(target {TARGET_PODS_PER_S:.0f}/s, ratio {rate / TARGET_PODS_PER_S:.2f})"
        )
    print(json.dumps({f"{provider}_pods_per_s": round(rate, 2) for provider, rate in results.items()}))


if __name__ == "__main__":
    main()

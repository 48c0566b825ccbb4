"""Container start: seconds from a pod's creation to its process running, the bridge's crun mode vs process mode.

Starts a real control plane (KubePart) and `sgs bridge` (process provider) twice: as today (`--container-runtime
none`, the pod's command is a local process) and with `--container-runtime crun` and the image cache as its image
store (the pod runs in `debian:bookworm`, sgs.testing.images). Each pod, bound to the node (nodeName set, so no
scheduler in the figure), prints the host clock as its first act (`date +%s.%N`); the figure is that moment minus
the moment the client created the pod, one pod at a time. The first crun pod also unpacks the image's rootfs
(once per manifest digest): reported apart as the cold start. Target: crun adds under 0.5 s per pod.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import httpx
from sgs_bridge.launch import BridgeProcess

from sgs.images import default_cache_dir
from sgs.testing.images import debian_image
from sgs.testing.kube import KubePart

TARGET_EXTRA_S = 0.5
NAMESPACE = "default"


def pod(name: str, node: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"bench": "container-start"}},
        "spec": {
            "nodeName": node,
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "tolerations": [{"key": "virtual-kubelet.io/provider", "operator": "Exists"}],
            "containers": [
                {
                    "name": "main",
                    "image": "debian:bookworm",
                    "command": ["date", "+%s.%N"],
                    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "64Mi"}},
                }
            ],
        },
    }


def start_seconds(api: httpx.Client, node: str, name: str) -> float:
    created = time.time()
    api.post(f"/api/v1/namespaces/{NAMESPACE}/pods", json=pod(name, node)).raise_for_status()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = api.get(f"/api/v1/namespaces/{NAMESPACE}/pods/{name}").json().get("status", {})
        if status.get("phase") == "Succeeded":
            log = api.get(f"/api/v1/namespaces/{NAMESPACE}/pods/{name}/log").text.split()
            return float(log[0]) - created
        if status.get("phase") == "Failed":
            raise RuntimeError(f"{name} failed: {json.dumps(status)[:600]}")
        time.sleep(0.02)
    raise TimeoutError(f"{name} did not finish in 120 s")


def run_mode(kube: KubePart, workdir: Path, mode: str, count: int) -> list[float]:
    node = f"bench-{mode}"
    extra = [f"--container-runtime={mode}"]
    if mode == "crun":
        extra.append(f"--image-store={default_cache_dir()}")
    bridge = BridgeProcess(
        node_name=node,
        site=node,
        kubeconfig=kube.kubeconfig,
        workdir=workdir / mode,
        poll_interval_s=0.05,
        extra_args=extra,
    )
    with bridge, kube.api() as api:
        seconds = [start_seconds(api, node, f"{mode}-{index}") for index in range(count)]
        api.request("DELETE", f"/api/v1/namespaces/{NAMESPACE}/pods", params={"labelSelector": "bench=container-start"})
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=10, help="pods per mode, one after another")
    args = parser.parse_args()
    _, digest = debian_image()
    with TemporaryDirectory(prefix="sgs-bench-container-") as tmp:
        workdir = Path(tmp)
        print("starting the control plane ...")
        with KubePart(workdir / "kube") as kube:
            process = run_mode(kube, workdir, "none", args.pods)
            crun = run_mode(kube, workdir, "crun", args.pods + 1)
    cold, warm = crun[0], crun[1:]
    process_median, crun_median = statistics.median(process), statistics.median(warm)
    extra = crun_median - process_median
    print(f"process mode: creation -> process start median {process_median:.3f} s (max {max(process):.3f})")
    print(f"crun mode ({digest[:19]}…): median {crun_median:.3f} s (max {max(warm):.3f}); cold (unpack) {cold:.3f} s")
    print(
        f"container_start: crun/process ratio {crun_median / process_median:.2f}, crun adds {extra:.3f} s "
        f"(target < {TARGET_EXTRA_S} s, ratio to target {extra / TARGET_EXTRA_S:.2f})"
    )
    figures = {
        "process_median_s": round(process_median, 3),
        "crun_median_s": round(crun_median, 3),
        "crun_cold_s": round(cold, 3),
        "ratio": round(crun_median / process_median, 2),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

"""Bridges against the real API server: one process-provider node and one Slurm-provider node per session,
each a `sgs bridge` subprocess (so a test can kill -9 it), plus kubectl helpers."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sgs_bridge.launch import BridgeProcess, free_port

from sgs.testing import wait_until
from sgs.testing.kube import KubePart
from sgs.testing.slurm import SlurmPart

PROCESS_SITE = "bridge-proc"
SLURM_SITE = "bridge-slurm"
JSON = dict[str, Any]


class Cluster:
    """kubectl against the test API server, with JSON in and out."""

    def __init__(self, kube: KubePart, namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace

    def kubectl(self, *args: str, check: bool = True, input: str | None = None) -> str:
        return self.kube.kubectl("-n", self.namespace, *args, check=check, input=input).stdout

    def apply(self, manifest: JSON) -> None:
        self.kubectl("apply", "-f", "-", input=json.dumps(manifest))

    def pod(self, name: str) -> JSON:
        result: JSON = json.loads(self.kubectl("get", "pod", name, "-o", "json"))
        return result

    def pods_of_job(self, job: str) -> list[JSON]:
        listing = json.loads(self.kubectl("get", "pods", "-l", f"job-name={job}", "-o", "json"))
        items: list[JSON] = listing["items"]
        return items

    def pod_exists(self, name: str) -> bool:
        return bool(self.kubectl("get", "pod", name, "--ignore-not-found", "-o", "name").strip())

    def phase(self, name: str) -> str:
        return str(self.pod(name).get("status", {}).get("phase", ""))

    def wait_phase(self, name: str, phases: set[str], timeout_s: float = 90) -> JSON:
        wait_until(lambda: self.phase(name) in phases, what=f"pod {name} in {phases}", timeout_s=timeout_s)
        return self.pod(name)

    def job_pod(self, job: str, timeout_s: float = 60) -> str:
        wait_until(lambda: bool(self.pods_of_job(job)), what=f"a pod of job {job}", timeout_s=timeout_s)
        return str(self.pods_of_job(job)[0]["metadata"]["name"])


@pytest.fixture
def cluster(kube: KubePart) -> Iterator[Cluster]:
    namespace = f"bridge-{uuid.uuid4().hex[:8]}"
    kube.kubectl("create", "namespace", namespace)
    wait_until(
        lambda: bool(kube.kubectl("-n", namespace, "get", "sa", "default", "--ignore-not-found", "-o", "name").stdout),
        what="the namespace's default ServiceAccount",
        timeout_s=30,
    )
    yield Cluster(kube, namespace)
    kube.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


@pytest.fixture(scope="session")
def process_bridge(kube: KubePart, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BridgeProcess]:
    bridge = BridgeProcess(
        node_name="sgs-bridge-proc",
        site=PROCESS_SITE,
        kubeconfig=kube.kubeconfig,
        workdir=tmp_path_factory.mktemp("bridge-proc"),
        metrics_port=free_port(),  # as the chart runs it: /metrics on plain HTTP too
        poll_interval_s=0.3,
    )
    with bridge:
        yield bridge


@pytest.fixture(scope="session")
def slurm_bridge(kube: KubePart, slurm: SlurmPart, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BridgeProcess]:
    bridge = BridgeProcess(
        node_name="sgs-bridge-slurm",
        site=SLURM_SITE,
        kubeconfig=kube.kubeconfig,
        workdir=tmp_path_factory.mktemp("bridge-slurm"),
        provider="slurm",
        poll_interval_s=0.3,
        extra_args=["--gpu-partition=gpu"],
        env=slurm.env,
    )
    with bridge:
        yield bridge


def pod_template(
    site: str,
    script: str,
    *,
    resources: JSON | None = None,
    deadline_s: int | None = None,
    env: list[JSON] | None = None,
    tmpdir_limit: str | None = None,
) -> JSON:
    """A pod spec the operator would build: site selector, the bridge toleration, `sh -c script`."""
    container: JSON = {
        "name": "main",
        "image": "debian:bookworm",
        "command": ["sh", "-c"],
        "args": [script],
        "env": [{"name": "TMPDIR", "value": "/sgs/tmp"}, *(env or [])],
        "volumeMounts": [{"name": "scratch", "mountPath": "/sgs/tmp"}],
        "resources": resources or {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "128Mi"}},
    }
    spec: JSON = {
        "restartPolicy": "Never",
        "nodeSelector": {"sgs.io/site": site},
        "tolerations": [{"key": "virtual-kubelet.io/provider", "operator": "Exists", "effect": "NoSchedule"}],
        "containers": [container],
        "volumes": [{"name": "scratch", "emptyDir": {"sizeLimit": tmpdir_limit} if tmpdir_limit else {}}],
    }
    if deadline_s is not None:
        spec["activeDeadlineSeconds"] = deadline_s
    return spec


def pod_manifest(name: str, spec: JSON) -> JSON:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def job_manifest(name: str, spec: JSON) -> JSON:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {"backoffLimit": 0, "template": {"spec": spec}},
    }


def terminated(pod: JSON) -> JSON:
    state: JSON = pod["status"]["containerStatuses"][0]["state"]
    assert "terminated" in state, state
    result: JSON = state["terminated"]
    return result


def annotation(pod: JSON, key: str) -> str:
    return str((pod["metadata"].get("annotations") or {}).get(key, ""))


def bridge_workdir(bridge: BridgeProcess) -> Path:
    return bridge.workdir

"""The virtual node: its object, its status (capacity from the backend, Ready from reachability), its Lease.

`node_object`, `node_status` and `lease_object` are pure; `NodeKeeper` registers the node and keeps the
heartbeats going: the Lease every `lease_renew_s` (what the node lifecycle controller watches) and the
status every `status_every_s` or at once when the backend's reachability changes.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from dataclasses import dataclass

from sgs.kube import JSON, KubeClient, is_status
from sgs_bridge import metrics
from sgs_bridge.providers.base import BackendUnavailableError, Capacity, Provider
from sgs_bridge.state import now

log = logging.getLogger("sgs_bridge.node")
LEASE_NAMESPACE = "kube-node-lease"
TAINT_KEY = "virtual-kubelet.io/provider"
NOT_READY_TAINT = "node.kubernetes.io/not-ready"
READINESS_TAINTS = (NOT_READY_TAINT, "node.kubernetes.io/unreachable")
MICROTIME = "%Y-%m-%dT%H:%M:%S.%fZ"


@dataclass(frozen=True)
class NodeIdentity:
    name: str
    site: str
    provider: str
    port: int
    address: str = "127.0.0.1"
    version: str = "v1.34.0-sgs-bridge"


def node_object(identity: NodeIdentity) -> JSON:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": identity.name,
            "labels": {
                "sgs.io/site": identity.site,
                "sgs.io/provider": identity.provider,
                "type": "virtual-kubelet",
                "kubernetes.io/role": "agent",
                "kubernetes.io/hostname": identity.name,
                "kubernetes.io/os": "linux",
                "node.kubernetes.io/exclude-from-external-load-balancers": "true",
            },
        },
        "spec": {"taints": [{"key": TAINT_KEY, "value": identity.provider, "effect": "NoSchedule"}]},
    }


def node_status(identity: NodeIdentity, capacity: Capacity | None, problem: str | None) -> JSON:
    """Status with Ready True, or False naming the backend problem; capacity omitted when unknown."""
    moment = now().strftime("%Y-%m-%dT%H:%M:%SZ")
    ready = problem is None
    status: JSON = {
        "conditions": [
            _condition("Ready", ready, moment, "KubeletReady" if ready else "BackendUnreachable", problem),
            _condition("MemoryPressure", False, moment, "KubeletHasSufficientMemory", None),
            _condition("DiskPressure", False, moment, "KubeletHasNoDiskPressure", None),
            _condition("PIDPressure", False, moment, "KubeletHasSufficientPID", None),
            _condition("NetworkUnavailable", False, moment, "RouteCreated", None),
        ],
        # Only an InternalIP: the API server reaches our kubelet endpoint (kubectl logs) at this address.
        "addresses": [{"type": "InternalIP", "address": identity.address}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": identity.port}},
        "nodeInfo": {
            "machineID": "",
            "systemUUID": "",
            "bootID": "",
            "kernelVersion": "",
            "osImage": f"sgs bridge ({identity.provider})",
            "containerRuntimeVersion": f"sgs-{identity.provider}://1",
            "kubeletVersion": identity.version,
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": "amd64",
        },
    }
    if capacity is not None:
        resources = {
            "cpu": str(capacity.cpus),
            "memory": f"{capacity.memory_bytes // 1024}Ki",
            "nvidia.com/gpu": str(capacity.gpus),
            "pods": str(capacity.pods),
            "ephemeral-storage": f"{capacity.ephemeral_storage_bytes // 1024}Ki",
        }
        status["capacity"] = resources
        status["allocatable"] = resources
    return status


def lease_object(identity: NodeIdentity, node_uid: str, duration_s: int) -> JSON:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": identity.name,
            "namespace": LEASE_NAMESPACE,
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": identity.name, "uid": node_uid}],
        },
        "spec": {
            "holderIdentity": identity.name,
            "leaseDurationSeconds": duration_s,
            "renewTime": now().strftime(MICROTIME),
        },
    }


def _condition(kind: str, ok: bool, moment: str, reason: str, message: str | None) -> JSON:
    return {
        "type": kind,
        "status": "True" if ok else "False",
        "reason": reason,
        "message": message or reason,
        "lastHeartbeatTime": moment,
        "lastTransitionTime": moment,
    }


class NodeKeeper:
    """Registers the node and keeps its Lease and status fresh."""

    def __init__(
        self,
        kube: KubeClient,
        provider: Provider,
        identity: NodeIdentity,
        *,
        lease_duration_s: int = 40,
        lease_renew_s: float = 10.0,
        status_every_s: float = 30.0,
    ) -> None:
        self.kube = kube
        self.provider = provider
        self.identity = identity
        self.lease_duration_s = lease_duration_s
        self.lease_renew_s = lease_renew_s
        self.status_every_s = status_every_s
        self.ready = False
        self.node_uid = ""
        self._problem: str | None = "not checked yet"
        self._taints_checked = False

    @property
    def path(self) -> str:
        return f"/api/v1/nodes/{self.identity.name}"

    async def register(self) -> None:
        """Create the node, or take over one left by an earlier run (labels and taints reset to ours)."""
        wanted = node_object(self.identity)
        try:
            node = await self.kube.create("/api/v1/nodes", wanted)
        except Exception as error:
            if not is_status(error, 409):
                raise
            node = await self.kube.merge_patch(self.path, {"metadata": wanted["metadata"], "spec": wanted["spec"]})
        self.node_uid = node["metadata"]["uid"]
        await self.update_status()
        await self.renew_lease()

    async def run(self) -> None:
        status_due = 0.0
        loop = asyncio.get_running_loop()
        while True:
            await self.renew_lease()
            was_ready = self.ready
            if loop.time() >= status_due or was_ready != await self._backend_ok():
                await self.update_status()
                status_due = loop.time() + self.status_every_s
            await asyncio.sleep(self.lease_renew_s)

    async def _backend_ok(self) -> bool:
        try:
            await self.provider.capacity()
        except BackendUnavailableError:
            return False
        return True

    async def update_status(self) -> None:
        capacity: Capacity | None
        try:
            capacity = await self.provider.capacity()
            problem = None
        except BackendUnavailableError as error:
            capacity, problem = None, f"{self.identity.provider} backend unreachable: {error}"
        if problem != self._problem:
            log.info("node %s Ready=%s %s", self.identity.name, problem is None, problem or "")
        changed = problem != self._problem or not self._taints_checked
        self._problem = problem
        self.ready = problem is None
        metrics.NODE_READY.labels(self.identity.site, self.identity.provider).set(1 if self.ready else 0)
        await self.kube.merge_patch(f"{self.path}/status", {"status": node_status(self.identity, capacity, problem)})
        if changed:
            await self._sync_readiness_taints()

    async def _sync_readiness_taints(self) -> None:
        """Keep the not-ready taint in step with Ready, as the node lifecycle controller would (a control
        plane without that controller otherwise leaves the admission-time taint on for good)."""
        node = await self.kube.get(self.path)
        taints = node.get("spec", {}).get("taints") or []
        wanted = [t for t in taints if t.get("key") not in READINESS_TAINTS]
        if not self.ready:
            wanted.append({"key": NOT_READY_TAINT, "effect": "NoSchedule"})
        if wanted != taints:
            await self.kube.merge_patch(self.path, {"spec": {"taints": wanted}})
        self._taints_checked = True

    async def renew_lease(self) -> None:
        lease = lease_object(self.identity, self.node_uid, self.lease_duration_s)
        path = f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases/{self.identity.name}"
        try:
            await self.kube.merge_patch(path, {"spec": lease["spec"]})
        except Exception as error:
            if not is_status(error, 404):
                raise
            await self.kube.create(f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases", lease)


def lease_age(lease: JSON) -> datetime.timedelta:
    renewed = datetime.datetime.strptime(lease["spec"]["renewTime"], MICROTIME).replace(tzinfo=datetime.UTC)
    return now() - renewed

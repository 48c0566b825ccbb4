"""The few Kubernetes calls the operator makes, on the core's shared raw-JSON client (sgs.kube)."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from sgs.kube import CONFLICT, NOT_FOUND, ClusterConfig, KubeClient, KubeError, load
from sgs.model.base import GROUP, VERSION
from sgs_operator.naming import MANAGED_BY, priority_class_name

USER_AGENT = "sgs-operator"


class Kube:
    """``job_manager`` names the replica in each Job's managedFields: who created it, for good."""

    def __init__(self, client: KubeClient, job_manager: str | None = None) -> None:
        self.client = client
        # Composed once: a params dict is merged and encoded again by yarl on every one of thousands of POSTs.
        self._job_query = f"?fieldManager={quote(job_manager, safe='')}" if job_manager else ""
        self._priority_classes: set[int] = set()

    @classmethod
    async def connect(
        cls,
        kubeconfig: str | Path | None = None,
        pool_size: int = 64,
        *,
        config: ClusterConfig | None = None,
        job_manager: str | None = None,
    ) -> Kube:
        config = config or await load(kubeconfig)
        client = await KubeClient.from_config(config, pool_size=pool_size, user_agent=USER_AGENT)
        return cls(client, job_manager)

    async def close(self) -> None:
        await self.client.close()

    async def create_job(self, job: dict[str, Any]) -> bool:
        """Create a Job; False when one of that name exists already (a restart re-creating it: no harm)."""
        path = f"/apis/batch/v1/namespaces/{quote(job['metadata']['namespace'], safe='')}/jobs{self._job_query}"
        try:
            await self.client.request("POST", path, body=job, parse=False)
        except KubeError as err:
            if err.status == CONFLICT:
                return False
            raise
        return True

    async def delete_job(self, namespace: str, name: str) -> None:
        path = f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}"
        try:
            await self.client.request("DELETE", path, params={"propagationPolicy": "Background"}, parse=False)
        except KubeError as err:
            if err.status != NOT_FOUND:
                raise

    async def expire_job(self, namespace: str, name: str, ttl_s: int) -> None:
        """Leave a finished Job to the TTL controller: deleted (with its pod) ``ttl_s`` after it finished."""
        path = f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}"
        try:
            await self.client.merge_patch(path, {"spec": {"ttlSecondsAfterFinished": ttl_s}})
        except KubeError as err:
            if err.status != NOT_FOUND:
                raise

    async def ensure_priority_class(self, priority: int) -> str:
        """The PriorityClass a Run's Jobs name (one per priority value, created once)."""
        name = priority_class_name(priority)
        if priority in self._priority_classes:
            return name
        body: dict[str, Any] = {
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "metadata": {"name": name, "labels": dict(MANAGED_BY)},
            "value": priority,
            "preemptionPolicy": "Never",  # a Run's priority orders the queue; it does not evict running tasks
            "description": f"sgs Runs of priority {priority}",
        }
        try:
            await self.client.request("POST", "/apis/scheduling.k8s.io/v1/priorityclasses", body=body, parse=False)
        except KubeError as err:
            if err.status != CONFLICT:
                raise
        self._priority_classes.add(priority)
        return name

    async def get_object(self, namespace: str, plural: str, name: str) -> dict[str, Any] | None:
        return await self.client.get_or_none(_custom_path(namespace, plural, name))

    async def patch_status(self, namespace: str, plural: str, name: str, patch: dict[str, Any]) -> None:
        await self.client.request(
            "PATCH",
            _custom_path(namespace, plural, name) + "/status",
            body=patch,
            content_type="application/merge-patch+json",
            parse=False,
        )

    async def patch_spec(self, namespace: str, plural: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        return await self.client.merge_patch(_custom_path(namespace, plural, name), {"spec": spec})

    async def annotate_pod(self, namespace: str, name: str, annotations: dict[str, str]) -> None:
        await self.client.merge_patch(
            f"/api/v1/namespaces/{namespace}/pods/{name}", {"metadata": {"annotations": annotations}}
        )

    async def nodes(self, selector: dict[str, str]) -> list[dict[str, Any]]:
        label_selector = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
        listing = await self.client.get("/api/v1/nodes", {"labelSelector": label_selector})
        items: list[dict[str, Any]] = listing.get("items") or []
        return items


def home_namespace(configured: str | None, cluster: ClusterConfig) -> str:
    """Where the operator keeps its own objects (Lease, webhook CA): as configured, else its pod's namespace."""
    return configured or (cluster.namespace if cluster.in_cluster else None) or "default"


def _custom_path(namespace: str, plural: str, name: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{plural}/{name}"

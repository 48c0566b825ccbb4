"""The few Kubernetes calls the operator makes, on one shared kubernetes_asyncio client.

Responses are read as plain JSON (``_preload_content=False``): the generated model classes cost more CPU than
the API server's own work at thousands of Jobs a second.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import aiohttp
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException
from pydantic_core import to_json

from sgs.model.base import GROUP, VERSION
from sgs_operator.naming import MANAGED_BY, priority_class_name

CONFLICT = 409
NOT_FOUND = 404
MERGE_PATCH = "application/merge-patch+json"
REQUEST_TIMEOUT_S = 60


class Kube:
    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.batch = client.BatchV1Api(api)
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.scheduling = client.SchedulingV1Api(api)
        self._priority_classes: set[int] = set()
        # The generated client's session trusts the environment: it reads ~/.netrc and the proxy variables on
        # every request. Ours shares its connection pool (and so its TLS setup) without that.
        rest: Any = api.rest_client
        self._session = aiohttp.ClientSession(connector=rest.pool_manager.connector, connector_owner=False)

    @classmethod
    async def connect(cls, kubeconfig: str | None = None, pool_size: int = 64) -> Kube:
        configuration = client.Configuration()
        await config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
        configuration.connection_pool_maxsize = pool_size
        return cls(client.ApiClient(configuration))

    async def close(self) -> None:
        await self._session.close()
        await self.api.close()

    async def create_job(self, job: dict[str, Any]) -> bool:
        """Create a Job; False when one of that name exists already (a restart re-creating it: no harm)."""
        path = f"/apis/batch/v1/namespaces/{quote(job['metadata']['namespace'], safe='')}/jobs"
        try:
            await checked_response(await self._send("POST", path, to_json(job)))
        except ApiException as err:
            if err.status == CONFLICT:
                return False
            raise
        return True

    async def _send(self, method: str, path: str, body: bytes) -> Any:
        """One request with its body encoded once, in Rust, on the client's session, auth and TLS.

        The generated methods walk every dict of the body in Python (sanitize_for_serialization) and encode it
        with json.dumps: at thousands of Jobs that is most of the client's CPU per Job.
        """
        headers = {**self.api.default_headers, "Content-Type": "application/json", "Accept": "application/json"}
        await self.api.update_params_for_auth(headers, [], ["BearerToken"])
        rest: Any = self.api.rest_client
        options: dict[str, Any] = {"timeout": aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)}
        if rest.proxy:
            options.update(proxy=rest.proxy, proxy_headers=rest.proxy_headers)
        if rest.server_hostname:
            options["server_hostname"] = rest.server_hostname
        url = f"{self.api.configuration.host}{path}"
        return await self._session.request(method, url, data=body, headers=headers, **options)

    async def delete_job(self, namespace: str, name: str) -> None:
        try:
            await checked_response(
                await self.batch.delete_namespaced_job(
                    name, namespace, propagation_policy="Background", _preload_content=False
                )
            )
        except ApiException as err:
            if err.status != NOT_FOUND:
                raise

    async def ensure_priority_class(self, priority: int) -> str:
        """The PriorityClass a Run's Jobs name (one per priority value, created once)."""
        name = priority_class_name(priority)
        if priority in self._priority_classes:
            return name
        body: Any = {
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "metadata": {"name": name, "labels": dict(MANAGED_BY)},
            "value": priority,
            "preemptionPolicy": "Never",  # a Run's priority orders the queue; it does not evict running tasks
            "description": f"sgs Runs of priority {priority}",
        }
        try:
            await checked_response(await self.scheduling.create_priority_class(body, _preload_content=False))
        except ApiException as err:
            if err.status != CONFLICT:
                raise
        self._priority_classes.add(priority)
        return name

    async def get_object(self, namespace: str, plural: str, name: str) -> dict[str, Any] | None:
        try:
            response = await checked_response(
                await self.custom.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, plural, name, _preload_content=False
                ),
                keep=True,
            )
        except ApiException as err:
            if err.status == NOT_FOUND:
                return None
            raise
        return await _json(response)

    async def patch_status(self, namespace: str, plural: str, name: str, patch: dict[str, Any]) -> None:
        custom: Any = self.custom  # the stubs omit _content_type, which the client accepts
        await checked_response(
            await custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, plural, name, patch, _content_type=MERGE_PATCH, _preload_content=False
            )
        )

    async def patch_spec(self, namespace: str, plural: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        custom: Any = self.custom
        response = await checked_response(
            await custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                plural,
                name,
                {"spec": spec},
                _content_type=MERGE_PATCH,
                _preload_content=False,
            ),
            keep=True,
        )
        return await _json(response)

    async def nodes(self, selector: dict[str, str]) -> list[dict[str, Any]]:
        label_selector = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
        response = await checked_response(
            await self.core.list_node(label_selector=label_selector, _preload_content=False), keep=True
        )
        items: list[dict[str, Any]] = (await _json(response)).get("items", [])
        return items


async def checked_response(response: Any, keep: bool = False) -> Any:
    """Raise ApiException for an error status: unread responses (_preload_content=False) are not checked."""
    if response.status >= 400:
        body = await response.read()
        response.release()
        error = ApiException(status=response.status, reason=response.reason)
        error.body = body
        raise error
    if not keep:
        # Read to the end before releasing: aiohttp closes a connection released with its body unread, and
        # every Job creation then paid a new TCP + TLS handshake (on both ends) instead of reusing the pool.
        await response.read()
        response.release()
    return response


async def _json(response: Any) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(await response.read())
    finally:
        response.release()
    return data

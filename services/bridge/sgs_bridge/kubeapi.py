"""A small async client for the Kubernetes REST API: JSON in, JSON out, plus a resumable watch.

Credentials come from a kubeconfig (or the in-cluster service account) through kubernetes_asyncio's loaders,
so every auth method they support works; the requests themselves are plain httpx, which keeps the bridge's
objects as the API's own JSON (no generated model classes to convert back and forth).
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import httpx
from kubernetes_asyncio import config as kube_config
from kubernetes_asyncio.client import Configuration

JSON = dict[str, Any]
MERGE_PATCH = "application/merge-patch+json"


class KubeError(RuntimeError):
    """The API server answered with an error status; `.status` is the HTTP code, `.reason` its Status reason."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason


class WatchExpiredError(RuntimeError):
    """The watch's resourceVersion is too old (410 Gone): list again."""


class KubeClient:
    """One HTTP/2-less connection pool to one API server; `await KubeClient.connect(kubeconfig)`."""

    def __init__(self, configuration: Configuration) -> None:
        self._configuration = configuration
        self._http = httpx.AsyncClient(
            base_url=str(configuration.host),
            verify=_ssl_context(configuration),
            timeout=httpx.Timeout(30.0, read=None),
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
        )

    @classmethod
    async def connect(cls, kubeconfig: Path | None = None) -> KubeClient:
        """From `kubeconfig`, else $KUBECONFIG / ~/.kube/config, else the in-cluster service account."""
        configuration = Configuration()
        if kubeconfig is None and _in_cluster():
            kube_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            await kube_config.load_kube_config(
                config_file=str(kubeconfig) if kubeconfig else None,
                client_configuration=configuration,
                persist_config=False,
            )
        return cls(configuration)

    async def close(self) -> None:
        await self._http.aclose()

    async def get(self, path: str, params: Mapping[str, str] | None = None) -> JSON:
        return await self._json("GET", path, params=params)

    async def create(self, path: str, body: JSON) -> JSON:
        return await self._json("POST", path, body=body)

    async def replace(self, path: str, body: JSON) -> JSON:
        return await self._json("PUT", path, body=body)

    async def merge_patch(self, path: str, patch: JSON) -> JSON:
        return await self._json("PATCH", path, body=patch, content_type=MERGE_PATCH)

    async def delete(self, path: str, body: JSON | None = None) -> JSON:
        return await self._json("DELETE", path, body=body)

    async def watch(self, path: str, resource_version: str, params: Mapping[str, str]) -> AsyncIterator[JSON]:
        """Yield watch events ({"type", "object"}) from `resource_version` until the server ends the stream."""
        query = {**params, "watch": "true", "resourceVersion": resource_version, "allowWatchBookmarks": "true"}
        async with self._http.stream("GET", path, params=query, headers=await self._headers()) as response:
            if response.status_code >= 400:
                await response.aread()
                raise _error(response)
            async for line in response.aiter_lines():
                if not line.strip():
                    continue
                event: JSON = json.loads(line)
                if event.get("type") == "ERROR":
                    status = event.get("object", {})
                    if status.get("code") == 410:
                        raise WatchExpiredError(status.get("message", "resource version too old"))
                    raise KubeError(int(status.get("code", 500)), status.get("reason", ""), status.get("message", ""))
                yield event

    async def _json(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: JSON | None = None,
        content_type: str = "application/json",
    ) -> JSON:
        headers = await self._headers()
        content = None
        if body is not None:
            headers["Content-Type"] = content_type
            content = json.dumps(body)
        response = await self._http.request(method, path, params=params, content=content, headers=headers)
        if response.status_code >= 400:
            raise _error(response)
        result: JSON = response.json() if response.content else {}
        return result

    async def _headers(self) -> dict[str, str]:
        # Asked per request: exec/OIDC credentials refresh themselves through this hook.
        headers = {"Accept": "application/json"}
        settings = await self._configuration.auth_settings()
        for setting in settings.values():
            if setting.get("in") == "header" and setting.get("value"):
                headers[str(setting["key"]).title()] = str(setting["value"])
        return headers


def _in_cluster() -> bool:
    return Path("/var/run/secrets/kubernetes.io/serviceaccount/token").is_file()


def _ssl_context(configuration: Configuration) -> ssl.SSLContext | bool:
    if not str(configuration.host).startswith("https"):
        return False
    if not configuration.verify_ssl:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, configuration.key_file)
    return context


def _error(response: httpx.Response) -> KubeError:
    try:
        status = response.json()
    except ValueError:
        status = {"reason": response.reason_phrase, "message": response.text[:500]}
    return KubeError(response.status_code, str(status.get("reason", "")), str(status.get("message", "")))


def is_status(error: BaseException, *codes: int) -> bool:
    return isinstance(error, KubeError) and error.status in codes

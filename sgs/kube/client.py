"""One async client for the Kubernetes REST API: raw JSON in and out, on one shared aiohttp connection pool.

No generated model classes: at thousands of Jobs a second their conversion (and json.dumps of every dict in
Python) cost more CPU than the API server's own work. Bodies are encoded and parsed by pydantic-core (Rust);
every response is read to its end before its connection goes back to the pool, so connections are reused
instead of paying a new TCP + TLS handshake per request on both ends.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
from pydantic_core import from_json, to_json

from sgs.kube.config import ClusterConfig, load

JSON = dict[str, Any]
MERGE_PATCH = "application/merge-patch+json"
JSON_TYPE = "application/json"
REQUEST_TIMEOUT_S = 60.0
NOT_FOUND = 404
CONFLICT = 409
GONE = 410
READS = frozenset({"GET", "HEAD"})


class KubeError(RuntimeError):
    """The API server answered with an error status: ``status`` (HTTP code), ``reason`` and ``message`` from its
    Status object, ``body`` as sent."""

    def __init__(self, status: int, reason: str, message: str, body: bytes = b"") -> None:
        super().__init__(f"{status} {reason}: {message}" if message else f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.message = message
        self.body = body


def is_status(error: BaseException, *codes: int) -> bool:
    return isinstance(error, KubeError) and error.status in codes


class KubeClient:
    """``await KubeClient.connect(kubeconfig)``; paths are the API's own (``/api/v1/namespaces/x/pods``).

    ``field_manager`` names this client in each object's managedFields (who created or changed what);
    ``write_guard``, when set, is called before every write and may raise to refuse it (a replica that is no
    longer the leader must not act).
    """

    def __init__(
        self,
        config: ClusterConfig,
        *,
        pool_size: int = 32,
        user_agent: str = "sgs",
        field_manager: str | None = None,
        static_auth: Mapping[str, str] | None = None,
        session: aiohttp.ClientSession | None = None,
        request_timeout_s: float = REQUEST_TIMEOUT_S,
    ) -> None:
        self.config = config
        self.server = config.server.rstrip("/")
        self.field_manager = field_manager
        self.write_guard: Callable[[], None] | None = None
        self._base_headers = {"Accept": JSON_TYPE, "User-Agent": user_agent}
        self._static_auth = dict(static_auth) if static_auth is not None else None
        # A shared session (one pool for many callers' tokens, as the console's per-person clients) is not closed
        # by close(): its owner closes it.
        self._owns_session = session is None
        self._session = session if session is not None else new_session(config, pool_size)
        self._timeout = aiohttp.ClientTimeout(total=request_timeout_s)
        self._options: dict[str, Any] = {}
        if config.tls_server_name:
            self._options["server_hostname"] = config.tls_server_name
        if config.proxy:
            self._options["proxy"] = config.proxy

    @classmethod
    async def connect(cls, kubeconfig: str | Path | None = None, **options: Any) -> KubeClient:
        return await cls.from_config(await load(kubeconfig), **options)

    @classmethod
    async def from_config(cls, config: ClusterConfig, **options: Any) -> KubeClient:
        """A client on ``config``; static credentials are asked once, refreshing ones per request."""
        static = None if config.refreshes else await config.auth_headers()
        return cls(config, static_auth=static, **options)

    async def close(self) -> None:
        if self._owns_session:
            await self._session.close()

    # --- JSON requests -------------------------------------------------------------------------------

    async def get(self, path: str, params: Mapping[str, str] | None = None) -> JSON:
        return await self.request("GET", path, params=params)

    async def get_or_none(self, path: str, params: Mapping[str, str] | None = None) -> JSON | None:
        try:
            return await self.get(path, params)
        except KubeError as error:
            if error.status == NOT_FOUND:
                return None
            raise

    async def read_text(self, path: str, params: Mapping[str, str] | None = None) -> str:
        """A GET whose answer is text, not JSON (a pod's log)."""
        async with self._respond("GET", path, params=params, content_type="text/plain") as response:
            return (await response.read()).decode(errors="replace")

    async def create(self, path: str, body: JSON | bytes) -> JSON:
        return await self.request("POST", path, body=body)

    async def replace(self, path: str, body: JSON | bytes) -> JSON:
        return await self.request("PUT", path, body=body)

    async def merge_patch(self, path: str, patch: JSON | bytes) -> JSON:
        return await self.request("PATCH", path, body=patch, content_type=MERGE_PATCH)

    async def delete(self, path: str, body: JSON | None = None, params: Mapping[str, str] | None = None) -> JSON:
        return await self.request("DELETE", path, body=body, params=params)

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: JSON | bytes | None = None,
        content_type: str = JSON_TYPE,
        parse: bool = True,
    ) -> JSON:
        """One request; the response's JSON (``{}`` when empty or ``parse`` is off: read, not decoded)."""
        async with self._respond(method, path, params=params, body=body, content_type=content_type) as response:
            data = await response.read()
        if not parse or not data:
            return {}
        result: JSON = from_json(data)
        return result

    @contextlib.asynccontextmanager
    async def stream(
        self, path: str, params: Mapping[str, str], *, read_timeout_s: float
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """A GET whose body is read as it comes (a watch); released when the block ends."""
        timeouts = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=read_timeout_s)
        async with self._respond("GET", path, params=params, timeouts=timeouts) as response:
            yield response

    @contextlib.asynccontextmanager
    async def _respond(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: JSON | bytes | None = None,
        content_type: str = JSON_TYPE,
        timeouts: aiohttp.ClientTimeout | None = None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        if method not in READS:
            if self.write_guard is not None:
                self.write_guard()
            if self.field_manager and method != "DELETE":
                params = {**(params or {}), "fieldManager": self.field_manager}
        headers = {**self._base_headers, **await self._auth()}
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = body if isinstance(body, bytes) else to_json(body)
        response = await self._session.request(
            method,
            self.server + path,
            params=params,
            data=data,
            headers=headers,
            timeout=timeouts or self._timeout,
            **self._options,
        )
        try:
            if response.status >= 400:
                raise error_of(response.status, response.reason or "", await response.read())
            yield response
        finally:
            response.release()

    async def _auth(self) -> Mapping[str, str]:
        if self._static_auth is not None:
            return self._static_auth
        return await self.config.auth_headers()


def new_session(config: ClusterConfig, pool_size: int = 32) -> aiohttp.ClientSession:
    """A connection pool to ``config``'s API server with its TLS settings (CA, client certificate)."""
    connector = aiohttp.TCPConnector(limit=pool_size, ssl=ssl_context(config))
    # trust_env off: a session that trusts the environment reads ~/.netrc and the proxy variables per request.
    return aiohttp.ClientSession(connector=connector, trust_env=False)


def ssl_context(config: ClusterConfig) -> ssl.SSLContext | bool:
    """TLS as the config says: its CA (or the system's), its client certificate; no verification only when a
    kubeconfig asks for insecure-skip-tls-verify."""
    if not config.server.startswith("https"):
        return False
    context = ssl.create_default_context(cafile=str(config.ca_file) if config.ca_file else None)
    if config.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if config.cert_file:
        context.load_cert_chain(str(config.cert_file), str(config.key_file) if config.key_file else None)
    return context


def error_of(status: int, reason: str, body: bytes) -> KubeError:
    """A KubeError from an error response, with the Status object's reason and message when it has one."""
    try:
        parsed = from_json(body) if body else {}
    except ValueError:
        parsed = {}
    if not isinstance(parsed, dict):
        parsed = {}
    message = str(parsed.get("message") or body[:500].decode(errors="replace"))
    return KubeError(status, str(parsed.get("reason") or reason), message, body)

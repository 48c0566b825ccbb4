"""The subset of the kubelet's HTTPS API the API server proxies to: container logs (with follow), health,
and Prometheus metrics. `kubectl logs [-f]` goes kubectl → API server → here, using the node's
InternalIP and `daemonEndpoints.kubeletEndpoint.Port`.

Like a kubelet with `--client-ca-file` and `--authorization-mode=Webhook`: a caller must present a client
certificate signed by the cluster's CA (the API server's `--kubelet-client-certificate`), and the user and
groups it names must be allowed the request by the API server (a SubjectAccessReview on this node's
`nodes/<subresource>`). Anything else is refused before a byte of a log is read.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from cryptography import x509

from sgs.kube import KubeClient, KubeError, pki
from sgs_bridge.metrics import metrics_response

CHUNK = 64 * 1024
FOLLOW_POLL_S = 0.2
# The kubelet's webhook authorizer caches an allowed answer for 5 minutes and a denied one for 30 seconds.
ALLOWED_TTL_S = 300.0
DENIED_TTL_S = 30.0
VERBS = {"GET": "get", "HEAD": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
# The kubelet's path → subresource table (kubelet-authn-authz); every other path is `proxy`.
SUBRESOURCES = {"stats": "stats", "metrics": "metrics", "logs": "log", "spec": "spec", "checkpoint": "checkpoint"}


@dataclass(frozen=True)
class LogSource:
    path: Path
    finished: Callable[[], bool]  # True once the container has ended and its log will not grow


LogResolver = Callable[[str, str, str], Awaitable[LogSource | None]]


def serving_certificate(directory: Path, node_name: str, address: str) -> tuple[Path, Path]:
    """A self-signed serving certificate for the node's address (kept across restarts)."""
    cert_path, key_path = directory / "kubelet.crt", directory / "kubelet.key"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    issued = pki.self_signed_server(f"system:node:{node_name}", [node_name, "localhost", address])
    return issued.write(cert_path, key_path)


def subresource_of(path: str) -> str:
    first = path.strip("/").split("/", 1)[0]
    return SUBRESOURCES.get(first, "proxy")


class Authorizer:
    """Asks the API server whether a user may make a request of this node, and remembers the answer."""

    def __init__(self, kube: KubeClient, node_name: str) -> None:
        self.kube = kube
        self.node_name = node_name
        self._answers: dict[tuple[str, tuple[str, ...], str, str], tuple[float, bool, str]] = {}

    async def allowed(self, user: str, groups: list[str], verb: str, subresource: str) -> tuple[bool, str]:
        key = (user, tuple(groups), verb, subresource)
        cached = self._answers.get(key)
        if cached is not None and time.monotonic() < cached[0]:
            return cached[1], cached[2]
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": user,
                "groups": groups,
                "resourceAttributes": {
                    "verb": verb,
                    "resource": "nodes",
                    "subresource": subresource,
                    "name": self.node_name,
                },
            },
        }
        answer = await self.kube.create("/apis/authorization.k8s.io/v1/subjectaccessreviews", review)
        status = answer.get("status") or {}
        allowed = bool(status.get("allowed"))
        reason = str(status.get("reason") or status.get("evaluationError") or "")
        ttl = ALLOWED_TTL_S if allowed else DENIED_TTL_S
        self._answers[key] = (time.monotonic() + ttl, allowed, reason)
        return allowed, reason


def client_tls(cert: Path, key: Path, client_ca: Path) -> ssl.SSLContext:
    """Serve with our certificate; require a client certificate signed by ``client_ca``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(client_ca))
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(cert, key)
    return context


class KubeletServer:
    def __init__(
        self,
        resolve: LogResolver,
        authorizer: Authorizer,
        *,
        host: str,
        port: int,
        cert: Path,
        key: Path,
        client_ca: Path,
    ) -> None:
        self.resolve = resolve
        self.authorizer = authorizer
        self.host = host
        self.port = port
        self._tls = client_tls(cert, key, client_ca)
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application(middlewares=[self._authorize])
        app.router.add_get("/containerLogs/{namespace}/{pod}/{container}", self._logs)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", metrics_response)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self._tls, reuse_address=True)
        await site.start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @web.middleware
    async def _authorize(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        certificate = _peer_certificate(request)
        if certificate is None:  # the TLS handshake requires one; kept as a second lock
            raise web.HTTPUnauthorized(text="Unauthorized: a client certificate is required")
        user, groups = pki.identity(certificate)
        verb = VERBS.get(request.method, request.method.lower())
        subresource = subresource_of(request.path)
        try:
            allowed, reason = await self.authorizer.allowed(user, groups, verb, subresource)
        except KubeError as error:  # e.g. the bridge may not create SubjectAccessReviews: refuse, saying why
            raise web.HTTPServiceUnavailable(text=f"cannot authorize {user} (SubjectAccessReview: {error})") from error
        if not allowed:
            detail = f" ({reason})" if reason else ""
            raise web.HTTPForbidden(
                text=f"Forbidden (user={user}, verb={verb}, resource=nodes, subresource={subresource}){detail}"
            )
        return await handler(request)

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _logs(self, request: web.Request) -> web.StreamResponse:
        info = request.match_info
        source = await self.resolve(info["namespace"], info["pod"], info["container"])
        if source is None:
            raise web.HTTPNotFound(
                text=f"pod {info['namespace']}/{info['pod']} container {info['container']} is not on this node"
            )
        query = request.query
        tail = _int_param(query.get("tailLines"), "tailLines")
        limit = _int_param(query.get("limitBytes"), "limitBytes")
        follow = query.get("follow", "false").lower() in ("true", "1")
        response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
        await response.prepare(request)
        await _stream(response, source, tail=tail, limit=limit, follow=follow)
        await response.write_eof()
        return response


def _peer_certificate(request: web.Request) -> x509.Certificate | None:
    transport = request.transport
    tls = transport.get_extra_info("ssl_object") if transport is not None else None
    der = tls.getpeercert(binary_form=True) if isinstance(tls, ssl.SSLObject) else None
    return x509.load_der_x509_certificate(der) if der else None


def _int_param(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    try:
        number = int(value)
    except ValueError as error:
        raise web.HTTPBadRequest(text=f"{name}: must be an integer, got {value!r}") from error
    if number < 0:
        raise web.HTTPBadRequest(text=f"{name}: must not be negative")
    return number


async def _stream(
    response: web.StreamResponse, source: LogSource, *, tail: int | None, limit: int | None, follow: bool
) -> None:
    budget = limit if limit is not None else -1
    with source.path.open("rb") as handle:
        if tail is not None:
            handle.seek(_tail_offset(source.path, tail))
        while True:
            finished = source.finished()  # checked before reading, so the last lines are never missed
            chunk = handle.read(CHUNK if budget < 0 else min(CHUNK, budget))
            if chunk:
                await response.write(chunk)
                if budget >= 0:
                    budget -= len(chunk)
                    if budget == 0:
                        return
                continue
            if not follow or finished:
                return
            await asyncio.sleep(FOLLOW_POLL_S)


def _tail_offset(path: Path, lines: int) -> int:
    """Byte offset where the last `lines` lines start."""
    if lines == 0:
        return path.stat().st_size
    with path.open("rb") as handle:
        handle.seek(0, 2)
        end = handle.tell()
        position = end
        found = 0
        data = b""
        while position > 0:
            step = min(CHUNK, position)
            position -= step
            handle.seek(position)
            data = handle.read(step) + data
            # A trailing newline ends the last line; it does not start another.
            found = data.count(b"\n", 0, len(data) - 1 if data.endswith(b"\n") else len(data))
            if found >= lines:
                break
        if found < lines:
            return 0
        cut = len(data) - 1 if data.endswith(b"\n") else len(data)
        for _ in range(lines):
            cut = data.rindex(b"\n", 0, cut)
        return position + cut + 1

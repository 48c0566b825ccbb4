"""The subset of the kubelet's HTTPS API the API server proxies to: container logs (with follow), health,
and Prometheus metrics. `kubectl logs [-f]` goes kubectl → API server → here, using the node's
InternalIP and `daemonEndpoints.kubeletEndpoint.Port`.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import prometheus_client
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CHUNK = 64 * 1024
FOLLOW_POLL_S = 0.2


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
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"system:node:{node_name}")])
    moment = datetime.datetime.now(datetime.UTC)
    names: list[x509.GeneralName] = [x509.DNSName(node_name), x509.DNSName("localhost")]
    names.append(x509.IPAddress(ipaddress.ip_address(address)))
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(moment - datetime.timedelta(hours=1))
        .not_valid_after(moment + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


class KubeletServer:
    def __init__(self, resolve: LogResolver, *, host: str, port: int, cert: Path, key: Path) -> None:
        self.resolve = resolve
        self.host = host
        self.port = port
        self._tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._tls.load_cert_chain(cert, key)
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/containerLogs/{namespace}/{pod}/{container}", self._logs)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self._tls, reuse_address=True)
        await site.start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _metrics(self, _: web.Request) -> web.Response:
        body = prometheus_client.generate_latest()
        return web.Response(body=body, headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST})

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

"""The clusters behind cluster Sites: their kubeconfig (from a Secret, checked), and one client per Site.

A kubeconfig a Site names is user input with the operator's powers behind it: the operator would dial its server
and run what it says. So only what the administrator allowed is accepted (``allowed_cluster_servers``: https
servers by ``host`` or ``host:port``), and only inline credentials: a bearer token, a client certificate and a CA
as ``*-data``. Exec plugins and auth providers (programs run in the operator), files (``tokenFile``,
``client-certificate``: the operator's own files, e.g. its service-account token, sent elsewhere) and proxies are
refused, each naming the field.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import yaml

from sgs.kube import ConfigError, KubeClient
from sgs.kube.config import from_kubeconfig
from sgs.model.site import SiteSpec
from sgs_operator.remote_runs import RemoteRuns

REMOTE_TIMEOUT_S = 10.0  # a remote API server that does not answer in this long is unreachable for this step
SECRET_REREAD_S = 10.0  # a Site's kubeconfig Secret is read again at most this often (rotation, repair)
USER_AGENT = "sgs-operator-mirror"
INLINE_ONLY = {
    "exec": "exec plugins run a program in the operator",
    "auth-provider": "auth providers run code in the operator",
    "tokenFile": "a file of the operator's would be sent to another server",
    "client-certificate": "a file of the operator's: give client-certificate-data",
    "client-key": "a file of the operator's: give client-key-data",
    "username": "basic authentication is not supported: give a token or a client certificate",
    "password": "basic authentication is not supported: give a token or a client certificate",
}
CLUSTER_INLINE_ONLY = {
    "certificate-authority": "a file of the operator's: give certificate-authority-data",
    "proxy-url": "a proxy is another host to dial: not supported",
    "insecure-skip-tls-verify": "the server's certificate must be verified",
}


class KubeconfigError(Exception):
    """A cluster Site's kubeconfig cannot be used: ``reason`` (a condition reason) and the message say why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def server_allowed(server: str, allowed: Sequence[str]) -> bool:
    """Whether an https API server URL is one the administrator allows (``host`` or ``host:port`` entries)."""
    parts = urlsplit(server)
    if parts.scheme != "https" or not parts.hostname:
        return False
    host = parts.hostname.lower()
    port = parts.port or 443
    for entry in allowed:
        wanted = urlsplit(f"//{entry.strip().lower()}")
        if wanted.hostname == host and (wanted.port is None or wanted.port == port):
            return True
    return False


def checked_kubeconfig(text: str, allowed: Sequence[str], where: str) -> dict[str, Any]:
    """The kubeconfig's current context alone (cluster, user), refused unless inline and allowed."""
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise KubeconfigError("KubeconfigInvalid", f"{where}: not YAML: {err}") from None
    if not isinstance(config, dict):
        raise KubeconfigError("KubeconfigInvalid", f"{where}: not a kubeconfig (a YAML mapping)")
    contexts = _named(config, "contexts", where)
    current = config.get("current-context")
    if current not in contexts:
        raise KubeconfigError("KubeconfigInvalid", f"{where}: current-context {current!r} is not among its contexts")
    context = contexts[current]
    cluster = _named(config, "clusters", where).get(str(context.get("cluster")))
    user = _named(config, "users", where).get(str(context.get("user"))) if context.get("user") else {}
    if cluster is None or user is None:
        raise KubeconfigError("KubeconfigInvalid", f"{where}: context {current!r} names a missing cluster or user")
    _refuse(user, INLINE_ONLY, f"{where}: users[{context.get('user')}].user")
    _refuse(cluster, CLUSTER_INLINE_ONLY, f"{where}: clusters[{context.get('cluster')}].cluster")
    server = str(cluster.get("server") or "")
    if not server_allowed(server, allowed):
        shown = ", ".join(allowed) if allowed else "none (SGS_OPERATOR_ALLOWED_CLUSTER_SERVERS is empty)"
        raise KubeconfigError(
            "ServerNotAllowed", f"{where}: server {server!r} is not an allowed cluster API server (allowed: {shown})"
        )
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "site", "cluster": cluster}],
        "users": [{"name": "site", "user": user}],
        "contexts": [{"name": "site", "context": {"cluster": "site", "user": "site"}}],
        "current-context": "site",
    }


def _named(config: Mapping[str, Any], section: str, where: str) -> dict[str, dict[str, Any]]:
    entries = config.get(section) or []
    if not isinstance(entries, list):
        raise KubeconfigError("KubeconfigInvalid", f"{where}: {section} is not a list")
    inner = section[:-1]  # clusters → cluster, users → user, contexts → context
    found: dict[str, dict[str, Any]] = {}
    for entry in entries:
        if isinstance(entry, dict) and isinstance(entry.get(inner), dict):
            found[str(entry.get("name"))] = entry[inner]
    return found


def _refuse(section: Mapping[str, Any], refused: Mapping[str, str], where: str) -> None:
    for key, why in refused.items():
        if section.get(key) not in (None, "", False):
            raise KubeconfigError("KubeconfigRefused", f"{where}.{key}: refused: {why}")


def secret_text(secret: Mapping[str, Any] | None, namespace: str, name: str, key: str) -> str:
    """The kubeconfig a Secret holds, or a KubeconfigError naming what is missing."""
    if secret is None:
        raise KubeconfigError("SecretNotFound", f"spec.compute.kubeconfig: Secret {namespace}/{name} not found")
    raw = (secret.get("data") or {}).get(key)
    if not raw:
        raise KubeconfigError(
            "SecretKeyMissing", f"spec.compute.kubeconfig: Secret {namespace}/{name} has no key {key!r}"
        )
    try:
        return base64.b64decode(raw, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise KubeconfigError(
            "KubeconfigInvalid", f"spec.compute.kubeconfig: Secret {namespace}/{name} key {key!r} is not text"
        ) from None


async def client_of(config: Mapping[str, Any], where: str) -> KubeClient:
    """A client on a checked kubeconfig (written to a private file for the loader, deleted at once)."""
    path = await asyncio.to_thread(_private_file, yaml.safe_dump(dict(config)))
    try:
        try:
            cluster = await from_kubeconfig(path)
        except ConfigError as err:
            raise KubeconfigError("KubeconfigInvalid", f"{where}: {err}".replace(str(path), "the Secret")) from None
    finally:
        await asyncio.to_thread(_remove, path)
    try:
        return await KubeClient.from_config(
            cluster, pool_size=16, user_agent=USER_AGENT, request_timeout_s=REMOTE_TIMEOUT_S
        )
    except (OSError, ValueError) as err:  # a CA or client certificate that does not load
        raise KubeconfigError("KubeconfigInvalid", f"{where}: {err}") from None


def _private_file(text: str) -> Path:
    fd, path = tempfile.mkstemp(prefix="sgs-site-kubeconfig-", suffix=".yaml")  # mode 0600
    with os.fdopen(fd, "w") as out:
        out.write(text)
    return Path(path)


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


@dataclass
class _Entry:
    version: str  # the Secret's resourceVersion and the reference the client was built from
    client: KubeClient | None
    error: KubeconfigError | None
    read_at: float
    ref: tuple[str, str] = ("", "")


def _stale(entry: _Entry | None, spec: SiteSpec) -> bool:
    """Read the Secret again: never read, read long ago, or the Site names another Secret now."""
    if entry is None or time.monotonic() - entry.read_at >= SECRET_REREAD_S:
        return True
    ref = spec.compute.kubeconfig
    return ref is None or entry.ref != (ref.name, ref.key)


class RemoteClusters:
    """One client per cluster Site, rebuilt when its Secret changes; a bad Secret is remembered as its error."""

    def __init__(self, central: KubeClient, allowed: Sequence[str]) -> None:
        self.central = central
        self.allowed = list(allowed)
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self.watches: dict[tuple[str, str], RemoteRuns] = {}  # the copies at each Site (sgs_operator.mirror)

    async def client(self, namespace: str, site: str, spec: SiteSpec) -> KubeClient:
        """The Site's client, or the KubeconfigError its Secret gives (re-read at most every SECRET_REREAD_S)."""
        key = (namespace, site)
        entry = self._entries.get(key)
        if _stale(entry, spec):
            async with self._locks.setdefault(key, asyncio.Lock()):
                entry = self._entries.get(key)
                if _stale(entry, spec):
                    entry = await self._refresh(key, spec, entry)
        assert entry is not None
        if entry.error is not None:
            raise entry.error
        assert entry.client is not None
        return entry.client

    async def _refresh(self, key: tuple[str, str], spec: SiteSpec, old: _Entry | None) -> _Entry:
        namespace, site = key
        ref = spec.compute.kubeconfig
        if ref is None:
            raise KubeconfigError("KubeconfigInvalid", f"Site {site!r}: spec.compute.kubeconfig is not set")
        secret = await self.central.get_or_none(
            f"/api/v1/namespaces/{quote(namespace, safe='')}/secrets/{quote(ref.name, safe='')}"
        )
        version = f"{(secret or {}).get('metadata', {}).get('resourceVersion', '')}|{ref.name}|{ref.key}"
        if old is not None and old.version == version:
            old.read_at, old.ref = time.monotonic(), (ref.name, ref.key)
            return old
        entry = _Entry(version, None, None, time.monotonic(), (ref.name, ref.key))
        try:
            text = secret_text(secret, namespace, ref.name, ref.key)
            where = f"spec.compute.kubeconfig (Secret {namespace}/{ref.name}, key {ref.key!r})"
            entry.client = await client_of(checked_kubeconfig(text, self.allowed, where), where)
        except KubeconfigError as err:
            entry.error = err
        if old is not None and old.client is not None:
            await old.client.close()
        self._entries[key] = entry
        return entry

    async def close(self) -> None:
        for copies in self.watches.values():
            await copies.close()
        self.watches.clear()
        for entry in self._entries.values():
            if entry.client is not None:
                await entry.client.close()
        self._entries.clear()

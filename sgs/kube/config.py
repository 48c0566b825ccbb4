"""Where the API server is and how to prove who we are: a kubeconfig, or a pod's service account.

Order (controller-runtime's): an explicit kubeconfig, else ``$KUBECONFIG``, else the in-cluster service account
(``KUBERNETES_SERVICE_HOST``/``_PORT`` and the token + CA files a pod gets), else ``~/.kube/config``.
Kubeconfigs are read by kubernetes_asyncio's loader, so every auth method it knows (tokens, client certificates,
exec plugins, OIDC) works; exec and OIDC credentials refresh themselves through its hook.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
DEFAULT_KUBECONFIG = Path.home() / ".kube" / "config"
# Bound service-account tokens are rotated by the kubelet; client-go re-reads the file once a minute.
TOKEN_REREAD_S = 60.0

AuthHeaders = Callable[[], Awaitable[dict[str, str]]]


class ConfigError(RuntimeError):
    """No usable credentials: the message says what was looked at."""


@dataclass(frozen=True)
class ClusterConfig:
    """One API server and one identity; ``auth_headers()`` is asked per request (tokens may rotate)."""

    server: str
    source: str  # what it was loaded from, for logs and errors
    ca_file: Path | None = None  # None: the system's trust store
    insecure: bool = False  # insecure-skip-tls-verify (a kubeconfig's choice, never a default)
    cert_file: Path | None = None  # client certificate (and key) for x509 authentication
    key_file: Path | None = None
    tls_server_name: str | None = None
    proxy: str | None = None  # a kubeconfig's proxy-url
    namespace: str | None = None  # the pod's namespace in-cluster, the context's namespace otherwise
    auth_headers: AuthHeaders = field(default=lambda: _no_headers(), repr=False)
    refreshes: bool = False  # whether auth_headers can change (token files, exec/OIDC hooks)

    @property
    def in_cluster(self) -> bool:
        return self.source == "in-cluster"


async def _no_headers() -> dict[str, str]:
    return {}


async def load(
    kubeconfig: str | Path | None = None,
    *,
    service_account_dir: Path = SERVICE_ACCOUNT_DIR,
    environ: Mapping[str, str] | None = None,
) -> ClusterConfig:
    """The credentials to use, in controller-runtime's order (see the module's docstring)."""
    env = os.environ if environ is None else environ
    found = locate(kubeconfig, service_account_dir, env)
    if found is None:
        return in_cluster(service_account_dir, env)
    return await from_kubeconfig(found)


def locate(kubeconfig: str | Path | None, service_account_dir: Path, env: Mapping[str, str]) -> Path | None:
    """The kubeconfig file to read, or None for the in-cluster service account."""
    if kubeconfig:
        return Path(kubeconfig)
    listed = env.get("KUBECONFIG", "")
    if listed:
        # A colon-separated list: the first file that exists (merging several is not supported).
        for candidate in listed.split(os.pathsep):
            if candidate and Path(candidate).is_file():
                return Path(candidate)
        raise ConfigError(f"KUBECONFIG={listed}: no such file")
    if env.get("KUBERNETES_SERVICE_HOST") and (service_account_dir / "token").is_file():
        return None
    default = Path(env["HOME"]) / ".kube" / "config" if env.get("HOME") else DEFAULT_KUBECONFIG
    if default.is_file():
        return default
    raise ConfigError(
        "no Kubernetes credentials: pass a kubeconfig, set KUBECONFIG, or run in a pod with a service account "
        f"(KUBERNETES_SERVICE_HOST and {service_account_dir}/token)"
    )


def in_cluster(
    service_account_dir: Path = SERVICE_ACCOUNT_DIR, environ: Mapping[str, str] | None = None
) -> ClusterConfig:
    """A pod's own identity: the API server from the service environment variables, the service account's
    token (re-read as the kubelet rotates it), its CA and namespace."""
    env = os.environ if environ is None else environ
    host, port = env.get("KUBERNETES_SERVICE_HOST", ""), env.get("KUBERNETES_SERVICE_PORT", "443")
    if not host:
        raise ConfigError("in-cluster: KUBERNETES_SERVICE_HOST is not set")
    token = TokenFile(service_account_dir / "token")
    token.read()  # fail now, naming the file, rather than on the first request
    ca_file = service_account_dir / "ca.crt"
    if not ca_file.is_file():
        raise ConfigError(f"in-cluster: no CA at {ca_file}")
    namespace_file = service_account_dir / "namespace"
    namespace = namespace_file.read_text().strip() if namespace_file.is_file() else None
    server_host = f"[{host}]" if ":" in host else host
    return ClusterConfig(
        server=f"https://{server_host}:{port}",
        source="in-cluster",
        ca_file=ca_file,
        namespace=namespace,
        auth_headers=token.headers,
        refreshes=True,
    )


class TokenFile:
    """A bearer token kept in a file, re-read at most every ``reread_s`` (the kubelet rotates bound tokens)."""

    def __init__(self, path: Path, reread_s: float = TOKEN_REREAD_S) -> None:
        self.path = path
        self.reread_s = reread_s
        self._token = ""
        self._read_at = -reread_s

    def read(self) -> str:
        try:
            token = self.path.read_text().strip()
        except OSError as error:
            raise ConfigError(f"service-account token {self.path}: {error.strerror or error}") from error
        if not token:
            raise ConfigError(f"service-account token {self.path} is empty")
        self._token, self._read_at = token, time.monotonic()
        return token

    def current(self) -> str:
        if time.monotonic() - self._read_at >= self.reread_s:
            self.read()
        return self._token

    async def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.current()}"}


async def from_kubeconfig(path: Path) -> ClusterConfig:
    """The current context of one kubeconfig file."""
    from kubernetes_asyncio import config as kube_config
    from kubernetes_asyncio.client import Configuration

    configuration: Any = Configuration()
    try:
        loader = await kube_config.load_kube_config(
            config_file=str(path), client_configuration=configuration, persist_config=False
        )
    except (kube_config.ConfigException, OSError) as error:
        raise ConfigError(f"kubeconfig {path}: {error}") from error
    context = (loader.current_context or {}).get("context") or {}
    return ClusterConfig(
        server=str(configuration.host),
        source=f"kubeconfig {path}",
        ca_file=Path(configuration.ssl_ca_cert) if configuration.ssl_ca_cert else None,
        insecure=not configuration.verify_ssl,
        cert_file=Path(configuration.cert_file) if configuration.cert_file else None,
        key_file=Path(configuration.key_file) if configuration.key_file else None,
        tls_server_name=getattr(configuration, "tls_server_name", None) or None,
        proxy=configuration.proxy or None,
        namespace=context.get("namespace"),
        auth_headers=_configuration_headers(configuration),
        refreshes=configuration.refresh_api_key_hook is not None,
    )


def _configuration_headers(configuration: Any) -> AuthHeaders:
    async def headers() -> dict[str, str]:
        # Asked per request: exec/OIDC credentials refresh themselves through this hook.
        value = await configuration.get_api_key_with_prefix("BearerToken")
        if value:
            return {"Authorization": str(value)}
        if configuration.username or configuration.password:
            return {"Authorization": configuration.get_basic_auth_token()}
        return {}

    return headers

"""The admission webhook's CA and serving certificate (the API server must trust it), from the core's pki."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

from sgs.kube import CONFLICT, KubeClient, KubeError
from sgs.kube.pki import Authority, write_pem
from sgs_operator.naming import MANAGED_BY

CA_CERT, CA_KEY = "ca.crt", "ca.key"


@dataclass(frozen=True)
class WebhookTls:
    ca_file: Path
    cert_file: Path
    key_file: Path


def serve_with(ca: Authority, directory: Path, hosts: list[str]) -> WebhookTls:
    """A serving certificate from ``ca`` for ``hosts`` (the first is its CommonName), written beside the CA."""
    tls = WebhookTls(directory / "ca.crt", directory / "tls.crt", directory / "tls.key")
    write_pem(tls.ca_file, ca.cert_pem)
    ca.issue_server(hosts[0], hosts).write(tls.cert_file, tls.key_file)
    return tls


async def stable_authority(client: KubeClient, namespace: str, secret: str) -> Authority:
    """The webhook's CA from its Secret, made and stored on first use: the caBundle the API server trusts stays
    the same across restarts and replicas (a new CA per start left a window where the old bundle was served)."""
    path = f"/api/v1/namespaces/{namespace}/secrets/{secret}"
    found = await client.get_or_none(path)
    if found is None:
        ca = Authority.create("sgs-operator-webhook-ca")
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": secret, "namespace": namespace, "labels": dict(MANAGED_BY)},
            "type": "Opaque",
            "data": {CA_CERT: _b64(ca.cert_pem), CA_KEY: _b64(ca.key_pem)},
        }
        try:
            await client.create(f"/api/v1/namespaces/{namespace}/secrets", body)
            return ca
        except KubeError as error:
            if error.status != CONFLICT:
                raise
        found = await client.get(path)  # another replica stored one first: use it
    data = found.get("data") or {}
    try:
        return Authority.from_pem(base64.b64decode(data[CA_CERT]), base64.b64decode(data[CA_KEY]))
    except (KeyError, ValueError) as error:
        raise ValueError(f"Secret {namespace}/{secret}: no usable {CA_CERT} + {CA_KEY} ({error})") from error


def webhook_hosts(host: str, listen: str) -> list[str]:
    """Names the serving certificate must carry: what the API server dials first, then the listen address."""
    hosts = [host, "localhost"]
    if listen not in ("", "0.0.0.0", "::"):
        hosts.append(listen)
    return hosts


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()

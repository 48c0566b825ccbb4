"""The admission webhook's CA and serving certificate (the API server must trust it), from the core's pki."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sgs.kube.pki import Authority, write_pem


@dataclass(frozen=True)
class WebhookTls:
    ca_file: Path
    cert_file: Path
    key_file: Path


def issue(directory: Path, host: str) -> WebhookTls:
    ca = Authority.create("sgs-operator-webhook-ca")
    return serve_with(ca, directory, [host, "localhost"])


def serve_with(ca: Authority, directory: Path, hosts: list[str]) -> WebhookTls:
    """A serving certificate from ``ca`` for ``hosts`` (the first is its CommonName), written beside the CA."""
    tls = WebhookTls(directory / "ca.crt", directory / "tls.crt", directory / "tls.key")
    write_pem(tls.ca_file, ca.cert_pem)
    ca.issue_server(hosts[0], hosts).write(tls.cert_file, tls.key_file)
    return tls

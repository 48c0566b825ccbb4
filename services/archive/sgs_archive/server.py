"""Running the app under uvicorn with the settings' TLS: what ``sgs archive serve`` and the demo start."""

from __future__ import annotations

import logging
from typing import Any

import uvicorn

from sgs_archive.app import create_app
from sgs_archive.settings import ArchiveSettings

log = logging.getLogger(__name__)


def uvicorn_config(settings: ArchiveSettings, host: str, port: int, **options: Any) -> uvicorn.Config:
    """HTTPS when the settings name a certificate and key (uvicorn refuses a key that does not match)."""
    if settings.tls_cert_file is not None and settings.tls_key_file is not None:
        options |= {"ssl_certfile": str(settings.tls_cert_file), "ssl_keyfile": str(settings.tls_key_file)}
    return uvicorn.Config(create_app(settings), host=host, port=port, **options)


def serve(settings: ArchiveSettings, host: str, port: int) -> None:
    config = uvicorn_config(settings, host, port, log_level="info")
    if not settings.tls and settings.environment == "production":
        log.warning(
            "serving plain HTTP: bearer tokens cross the network in clear text unless a TLS proxy fronts this "
            "archive (set SGS_ARCHIVE_TLS_CERT_FILE and SGS_ARCHIVE_TLS_KEY_FILE to serve HTTPS)"
        )
    uvicorn.Server(config).run()

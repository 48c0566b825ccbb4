"""The archive and the transfer service (with one worker) as dev-stack units, on the parts already up.

They start after PostgreSQL, NATS and the MinIOs (``sgs.dev.stack.up`` starts units in waves and saves the state
between them), and read the endpoints of those parts from the state file. The transfer service gets a Sites file
(one Site per MinIO, each with a token of its own at the archive, as a real Site would have) that
``sgs storage`` and ``sgs archive ingest --upload`` use too (``SGS_SITES_FILE``).
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from pathlib import Path
from typing import Any

import httpx
import yaml

from sgs.testing._process import ManagedProcess, PartError, free_port, wait_until
from sgs.testing.base import Part

TOKEN_BYTES = 32


def _running(needed: tuple[str, ...]) -> dict[str, Any]:
    from sgs.dev.stack import load_state

    state = load_state()
    missing = [name for name in needed if name not in state]
    if missing:
        raise PartError(f"needs {', '.join(missing)} running first (sgs dev up --parts ...)")
    return state


def _kept_token(path: Path) -> str:
    """A secret kept across restarts of the stack (0600, created once)."""
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(TOKEN_BYTES))
    return path.read_text().strip()


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "sgs.cli.main", *args]


def _ready(url: str, key: str, value: str) -> bool:
    try:
        return bool(httpx.get(f"{url}/readyz", timeout=2, trust_env=False).json().get(key) == value)
    except (httpx.HTTPError, ValueError):
        return False


class ArchiveServicePart(Part):
    """``sgs archive serve`` on the stack's PostgreSQL and NATS, in development mode with the stack's admin token."""

    name = "archive"

    def __init__(self, workdir: Path | None = None) -> None:
        super().__init__(workdir, keep=True)
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def info(self) -> dict[str, Any]:
        return {"url": self.url}

    def exports(self) -> dict[str, str]:
        return {"SGS_ARCHIVE_URL": self.url}

    def _start(self) -> None:
        from sgs.dev.stack import archive_exports

        state = _running(("pg", "nats"))
        env = {
            **os.environ,
            **archive_exports(),
            "SGS_ARCHIVE_DSN": state["pg"].exports["SGS_ARCHIVE_DSN"],
            "SGS_ARCHIVE_NATS_URL": state["nats"].exports["NATS_URL"],
        }
        argv = _cli("archive", "serve", "--port", str(self.port))
        process = self._spawn(ManagedProcess("sgs-archive", argv, self.log_dir / "archive.log", env=env))
        wait_until(
            lambda: _ready(self.url, "relay", "connected"),
            what="the archive (and its event relay)",
            timeout_s=60,
            process=process,
        )


class TransferServicePart(Part):
    """``sgs transfer serve`` and one ``sgs transfer worker`` over the stack's MinIO Sites."""

    name = "transfer"

    def __init__(self, workdir: Path | None = None) -> None:
        super().__init__(workdir, keep=True)
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def sites_file(self) -> Path:
        return self.workdir / "sites.yaml"

    @property
    def admin_token(self) -> str:
        return _kept_token(self.workdir / "admin-token")

    def info(self) -> dict[str, Any]:
        return {"url": self.url, "sites_file": str(self.sites_file)}

    def exports(self) -> dict[str, str]:
        return {
            "SGS_TRANSFER_URL": self.url,
            "SGS_TRANSFER_TOKEN": self.admin_token,
            "SGS_SITES_FILE": str(self.sites_file),
        }

    def _start(self) -> None:
        from sgs.dev.stack import archive_exports

        state = _running(("pg", "nats", "archive"))
        minios = [unit for unit in state.values() if unit.part == "minio"]
        if not minios:
            raise PartError("needs the MinIO Sites running first (sgs dev up --parts minio)")
        archive_url = state["archive"].exports["SGS_ARCHIVE_URL"]
        admin = archive_exports()["SGS_ARCHIVE_ADMIN_TOKEN"]
        tokens = self._site_tokens(archive_url, admin, [str(unit.info["site"]) for unit in minios])
        write_sites_file(self.sites_file, [unit.info for unit in minios], archive_url, tokens)
        env = {
            **os.environ,
            "SGS_TRANSFER_DSN": state["pg"].exports["SGS_ARCHIVE_DSN"],
            "SGS_TRANSFER_NATS_URL": state["nats"].exports["NATS_URL"],
            "SGS_TRANSFER_ENVIRONMENT": "development",
            "SGS_TRANSFER_ADMIN_TOKEN": self.admin_token,
            "SGS_TRANSFER_SITES_FILE": str(self.sites_file),
            "SGS_TRANSFER_ARCHIVE_URL": archive_url,
            "SGS_TRANSFER_ARCHIVE_TOKEN": admin,
        }
        serve = _cli("transfer", "serve", "--port", str(self.port))
        service = self._spawn(ManagedProcess("sgs-transfer", serve, self.log_dir / "transfer.log", env=env))
        wait_until(
            lambda: _ready(self.url, "events", "connected"),
            what="the transfer service (and its evaluator)",
            timeout_s=60,
            process=service,
        )
        worker_env = {**env, "SGS_TRANSFER_WORKER_NAME": "dev-worker"}
        worker_log = self.log_dir / "worker.log"
        worker = self._spawn(
            ManagedProcess("sgs-transfer-worker", _cli("transfer", "worker"), worker_log, env=worker_env)
        )
        wait_until(
            lambda: worker_log.is_file() and "copying into" in worker_log.read_text(),
            what="the transfer worker",
            timeout_s=60,
            process=worker,
        )

    def _site_tokens(self, archive_url: str, admin: str, sites: list[str]) -> dict[str, str]:
        """One archive token per Site (what registers that Site's copies), kept while the archive accepts it."""
        path = self.workdir / "site-tokens.json"
        kept: dict[str, str] = json.loads(path.read_text()) if path.is_file() else {}
        with httpx.Client(base_url=archive_url, timeout=30, trust_env=False) as client:
            tokens: dict[str, str] = {}
            for site in sites:
                token = kept.get(site)
                if token is None or not _accepted(client, token):
                    name = f"dev-{site}-{secrets.token_hex(4)}"  # a purged archive forgot the old one
                    created = client.post(
                        "/tokens",
                        headers={"Authorization": f"Bearer {admin}"},
                        json={"name": name, "role": "site", "site": site},
                    )
                    if created.status_code != 201:
                        raise PartError(f"archive token for {site}: {created.status_code} {created.text}")
                    token = str(created.json()["token"])
                tokens[site] = token
        path.touch(mode=0o600)
        path.write_text(json.dumps(tokens))
        return tokens


def _accepted(client: httpx.Client, token: str) -> bool:
    return client.get("/dataset-types", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def write_sites_file(path: Path, minios: list[dict[str, Any]], archive_url: str, tokens: dict[str, str]) -> Path:
    """Site + Secret manifests for the stack's MinIOs (the format ``sgs.storage.sites`` loads)."""
    documents: list[dict[str, Any]] = []
    for info in sorted(minios, key=lambda i: str(i["site"])):
        site = str(info["site"])
        documents.append(
            {
                "apiVersion": "sgs.io/v1alpha1",
                "kind": "Site",
                "metadata": {"name": site, "labels": {"dev": "true"}},
                "spec": {
                    "storage": {
                        "kind": "s3",
                        "endpoint": info["endpoint"],
                        "bucket": info["bucket"],
                        "secure": False,
                        "credentials": {"name": f"{site}-s3"},
                    },
                    "archiveUrl": archive_url,
                    "archiveCredentials": {"name": f"{site}-archive"},
                    "capacity": {"cores": 8, "storageTb": 1},
                },
            }
        )
        documents.append(_secret(f"{site}-s3", {"accessKey": info["access_key"], "secretKey": info["secret_key"]}))
        documents.append(_secret(f"{site}-archive", {"token": tokens[site]}))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    return path


def _secret(name: str, values: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": values}

"""MinIO (built from Go modules by tools/build-binaries.sh), one instance per test Site, with a bucket."""

from __future__ import annotations

import secrets
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from minio import Minio

from sgs.testing._process import ManagedProcess, free_port, wait_until
from sgs.testing.base import Part, require_binary
from sgs.testing.binaries import BUILD_HINT, binary_path


class MinioPart(Part):
    """One MinIO server for Site `site`; `.endpoint` is host:port (plain HTTP), bucket `.bucket` exists."""

    name = "minio"

    def __init__(
        self,
        site: str = "site-a",
        workdir: Path | None = None,
        *,
        bucket: str | None = None,
        port: int | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        keep: bool = False,
    ) -> None:
        super().__init__(workdir, keep=keep)
        self.site = site
        self.bucket = bucket or f"sgs-{site}"
        self.port = port or free_port()
        self.console_port = free_port()
        self.access_key = access_key or f"sgs-{site}"
        self.secret_key = secret_key or self._kept_or_new_secret()

    def _kept_or_new_secret(self) -> str:
        """A restart over kept data keeps its secret, so clients' saved settings stay valid."""
        path = self.workdir / "secret-key"
        if path.is_file():
            return path.read_text().strip()
        secret = secrets.token_hex(16)
        path.write_text(secret)
        path.chmod(0o600)
        return secret

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self) -> Minio:
        return Minio(self.endpoint, access_key=self.access_key, secret_key=self.secret_key, secure=False)

    def info(self) -> dict[str, Any]:
        return {
            "site": self.site,
            "endpoint": self.endpoint,
            "bucket": self.bucket,
            "access_key": self.access_key,
            "secret_key": self.secret_key,
            "console": f"http://127.0.0.1:{self.console_port}",
        }

    def exports(self) -> dict[str, str]:
        prefix = f"SGS_S3_{self.site.upper().replace('-', '_')}"
        return {
            f"{prefix}_ENDPOINT": self.endpoint,
            f"{prefix}_ACCESS_KEY": self.access_key,
            f"{prefix}_SECRET_KEY": self.secret_key,
            f"{prefix}_BUCKET": self.bucket,
        }

    def _start(self) -> None:
        binary = require_binary(binary_path("minio"), "minio", BUILD_HINT)
        argv = [str(binary), "server", "--quiet", "--address", self.endpoint]
        argv += ["--console-address", f"127.0.0.1:{self.console_port}", str(self.workdir / "data")]
        env = {
            "MINIO_ROOT_USER": self.access_key,
            "MINIO_ROOT_PASSWORD": self.secret_key,
            "MINIO_UPDATE": "off",
            "HOME": str(self.workdir),  # MinIO writes ~/.minio; keep it inside the work dir
            "PATH": "/usr/bin:/bin",
        }
        process = self._spawn(ManagedProcess(f"minio-{self.site}", argv, self.log_dir / "minio.log", env=env))
        wait_until(self._ready, what=f"MinIO of {self.site} to be ready", timeout_s=60, process=process)
        client = self.client()
        if not client.bucket_exists(self.bucket):
            client.make_bucket(self.bucket)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.endpoint}/minio/health/ready", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

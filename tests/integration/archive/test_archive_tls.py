"""HTTPS from the settings, clients that verify it with a CA bundle (the CLI and the demo's client), and the
real service refusing to start in production on placeholder secrets."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from archive_helpers import ADMIN, ADMIN_TOKEN, ArchiveProcess, ServingTls, issue_serving_tls
from sgs_archive.server import uvicorn_config
from sgs_archive.settings import ArchiveSettings

from sgs.demo.http_archive import HttpArchive
from sgs.testing._process import free_port
from sgs.testing.nats import NatsPart

pytestmark = [pytest.mark.integration]


def sgs_archive(
    *args: str, env: dict[str, str] | None = None, timeout_s: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sgs.cli.main", "archive", *args],
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> ServingTls:
    return issue_serving_tls(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def https_archive(pg_database: str, nats_server: NatsPart, tls: ServingTls, tmp_path: Path) -> Iterator[ArchiveProcess]:
    process = ArchiveProcess(pg_database, nats_server.url, tmp_path / "archive.log", tls=tls).start()
    try:
        yield process
    finally:
        process.stop()


def test_cli_and_demo_client_round_trip_over_https_with_the_ca_bundle(
    https_archive: ArchiveProcess, tls: ServingTls, tmp_path: Path
) -> None:
    url = https_archive.url
    assert url.startswith("https://")
    with httpx.Client(base_url=url, headers=ADMIN, verify=tls.context()) as admin:
        body = {"name": "raw", "dimensions": ["exposure", "detector"], "storage_class": "Fits"}
        admin.post("/dataset-types", json=body).raise_for_status()
    at = ["--url", url, "--ca-bundle", str(tls.ca_bundle)]

    created = sgs_archive("token", "create", "sdc-fr-ingest", "--site", "sdc-fr", "--token", ADMIN_TOKEN, *at)
    assert created.returncode == 0, created.stdout + created.stderr
    site_token = created.stdout.strip().splitlines()[-1]
    assert site_token.startswith("sgs_")
    data = tmp_path / "raw_7_1.fits"
    data.write_bytes(b"a raw exposure")
    ingested = sgs_archive(
        "ingest", str(data), "--type", "raw", "--run", "fr/raw", "--site", "sdc-fr",
        "--data-id", "instrument=NISP", "--data-id", "exposure=7", "--data-id", "detector=1",
        "--token", site_token, *at,
    )  # fmt: skip
    assert ingested.returncode == 0, ingested.stdout + ingested.stderr
    assert "1 new" in ingested.stdout
    found = sgs_archive("query", "exposure = 7", "--type", "raw", "--token", site_token, "--json", *at)
    assert found.returncode == 0 and '"fr/raw"' in found.stdout, found.stdout + found.stderr

    with HttpArchive(url, ADMIN_TOKEN, ca_bundle=tls.ca_bundle) as client:
        assert [d["run"] for d in client.datasets("raw")] == ["fr/raw"]

    # The same commands without the CA: the certificate is not trusted, and the CLI says so in one line.
    untrusted = sgs_archive("query", "exposure = 7", "--token", site_token, "--url", url)
    assert untrusted.returncode == 1
    assert "certificate verify failed" in untrusted.stdout.lower() and "Traceback" not in untrusted.stderr
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        HttpArchive(url, ADMIN_TOKEN).placements()
    # Nor does the port answer plain HTTP: the token would have crossed in clear text.
    with pytest.raises(httpx.HTTPError):
        httpx.get(url.replace("https://", "http://") + "/datasets", headers=ADMIN, timeout=5)


def test_a_key_that_does_not_match_the_certificate_is_refused(tls: ServingTls, tmp_path: Path) -> None:
    other = issue_serving_tls(tmp_path / "other")
    settings = ArchiveSettings(admin_token=ADMIN_TOKEN, tls_cert_file=tls.cert_file, tls_key_file=other.key_file)
    with pytest.raises(ssl.SSLError, match="KEY_VALUES_MISMATCH"):
        uvicorn_config(settings, "127.0.0.1", free_port()).load()


def test_production_refuses_to_start_on_placeholder_secrets() -> None:
    """Neither entry point starts: `sgs archive serve` prints every reason in one message (no traceback, no
    secret), and uvicorn's factory fails in create_app with the same message. (Each rule: test_archive_settings.)"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SGS_ARCHIVE_")}
    env |= {"SGS_ARCHIVE_ADMIN_TOKEN": "changethis", "SGS_ARCHIVE_DSN": "postgresql://archive:postgres@db/archive"}
    port = str(free_port())
    served = subprocess.run(
        [sys.executable, "-m", "sgs.cli.main", "archive", "serve", "--port", port],
        env={**env, "COLUMNS": "300"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert served.returncode == 2, served.stdout + served.stderr
    message = " ".join(served.stdout.split())
    assert "refusing to start in production: admin_token: a placeholder value; dsn: its password is a placeholder" in (
        message
    )
    assert "Traceback" not in served.stderr
    assert "archive:postgres@" not in served.stdout and "changethis" not in served.stdout, "it printed the secret"
    factory = subprocess.run(
        [sys.executable, "-m", "uvicorn", "--factory", "sgs_archive.app:create_app", "--port", port],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert factory.returncode != 0 and "refusing to start in production" in factory.stderr, factory.stderr
    assert "archive:postgres@" not in factory.stderr and "changethis" not in factory.stderr

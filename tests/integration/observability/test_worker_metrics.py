"""`sgs transfer worker` on its own is a deployable: with SGS_TRANSFER_WORKER_METRICS_PORT it serves /metrics."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from transfer_kit import (
    WorkerProcess,
    archive_service,
    eventually,
    known_sites,
    posix_site,
    transfer_service,
    write_sites_file,
)

from sgs.testing import free_port
from sgs.testing.nats import NatsPart
from sgs.testing.postgres import PostgresPart

pytestmark = pytest.mark.integration


def scrape(port: int) -> str:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.HTTPError:
        return ""


def test_a_worker_process_serves_its_metrics(postgres: PostgresPart, nats_server: NatsPart, tmp_path: Path) -> None:
    with archive_service(postgres, nats_server.url) as archive:
        archive.issue_site_tokens(["site-w"])
        sites = [posix_site("site-w", tmp_path / "sites", archive.url)]
        book = known_sites(sites, archive.site_tokens)
        with transfer_service(archive.dsn, nats_server.url, archive.url, book) as transfer:
            port = free_port()
            settings = transfer.settings.model_copy(
                update={"worker_metrics_port": port, "worker_metrics_address": "127.0.0.1"}
            )
            sites_file = write_sites_file(tmp_path / "sites.yaml", sites, {}, archive.site_tokens)
            worker = WorkerProcess(settings, sites_file, tmp_path / "worker.log", "worker-m").start()
            try:
                text = eventually(lambda: scrape(port), what="the worker's /metrics", timeout_s=60)
            finally:
                worker.stop()
    assert "sgs_transfer_queued_total 0.0" in text and "sgs_transfer_reaped_total" in text

"""Smoke tests of the Prometheus part: it scrapes what it is told to, answers PromQL, reloads, runs rules."""

from __future__ import annotations

import subprocess
import time

import pytest
from prometheus_client import CollectorRegistry, Counter, start_http_server

from sgs.testing import free_port
from sgs.testing.prometheus import PrometheusPart, ScrapeJob, prometheus_binary, write_targets

pytestmark = pytest.mark.integration


def wait_value(prometheus: PrometheusPart, expr: str, expected: float, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while (found := prometheus.value(expr)) != expected:
        assert time.monotonic() < deadline, f"{expr} = {found}, wanted {expected}"
        time.sleep(0.25)


def test_scrapes_itself_and_a_static_target(prometheus: PrometheusPart) -> None:
    wait_value(prometheus, 'up{job="prometheus"}', 1.0)
    registry = CollectorRegistry()
    counter = Counter("sgs_smoke_things_total", "smoke", ["site"], registry=registry)
    counter.labels("site-a").inc(3)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        prometheus.scrape(ScrapeJob("smoke-static", targets={f"127.0.0.1:{port}": {"site": "site-a"}}))
        prometheus.wait_up("smoke-static")
        wait_value(prometheus, 'sgs_smoke_things_total{job="smoke-static",site="site-a"}', 3.0)
    finally:
        server.shutdown()
        thread.join(5)
    wait_value(prometheus, 'up{job="smoke-static"}', 0.0)


def test_file_discovery_targets_appear_without_a_reload(prometheus: PrometheusPart) -> None:
    registry = CollectorRegistry()
    Counter("sgs_smoke_found_total", "smoke", registry=registry).inc()
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    targets = prometheus.workdir / "targets" / "smoke-file.json"
    write_targets(targets, {})
    try:
        prometheus.scrape(ScrapeJob("smoke-file", file_sd=targets))
        write_targets(targets, {f"127.0.0.1:{port}": {"site": "site-b"}})
        wait_value(prometheus, 'sgs_smoke_found_total{job="smoke-file",site="site-b"}', 1.0, timeout_s=60)
    finally:
        server.shutdown()
        thread.join(5)


def test_a_bad_query_names_prometheus_error(prometheus: PrometheusPart) -> None:
    with pytest.raises(Exception, match="bad_data"):
        prometheus.query("sum(")


def test_promtool_is_installed_beside_it() -> None:
    promtool = prometheus_binary("promtool")
    assert promtool is not None
    result = subprocess.run([str(promtool), "--version"], capture_output=True, text=True, check=True)
    assert "promtool" in result.stdout + result.stderr

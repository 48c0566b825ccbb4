"""Every query the product ships, against the real Prometheus scraping the real stack after a real workload.

The operator, a bridge, the archive, the transfer and the trigger service are scraped as a deployment scrapes
them; a Run goes through the bridge (its tasks register their outputs in the archive; one fails), the
registrations are replicated to a second Site and each starts a Run of a triggered Pipeline. Then every PromQL
expression of every dashboard panel must return data, every alert expression must be valid PromQL over the
live series, and stopping the Site's bridge fires SgsSiteDown.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from observed_stack import (
    OTHER,
    SITE,
    Observed,
    observed_stack,
    run_through,
    serve_trigger,
    triggered_runs,
    wait_alert,
)
from operator_kit import OperatorProcess, wait_for

from sgs.telemetry.dashboards import alert_queries, dashboard_queries, instantiate
from sgs.testing.kube import KubePart
from sgs.testing.nats import NatsPart
from sgs.testing.postgres import PostgresPart
from sgs.testing.prometheus import PrometheusPart

pytest_plugins = ["operator_kit"]  # the operator fixtures (a conftest here would clash with mypy)
pytestmark = pytest.mark.integration

FAN_OUT = 4


@pytest.fixture(scope="module")
def observed(
    kube: KubePart,
    operator: OperatorProcess,
    postgres: PostgresPart,
    nats_server: NatsPart,
    prometheus: PrometheusPart,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Observed]:
    workdir = tmp_path_factory.mktemp("observed")
    with observed_stack(kube, operator, postgres, nats_server, prometheus, workdir) as stack:
        yield stack


@pytest.fixture(scope="module")
def workload(observed: Observed) -> Observed:
    """A Run whose tasks register datasets (replicated to the second Site by a rule; each triggers a Run of
    another Pipeline), and an archive 404."""
    run = f"obs-{uuid.uuid4().hex[:6]}"
    observed.archive.collection(run)
    rule = {"collections": [run], "copies": 2, "site_expression": f"{SITE} | {OTHER}"}
    observed.transfer.call("POST", "/rules", (201,), json=rule)
    serve_trigger(observed, "obs-triggered", run)
    status = run_through(observed, run, "obs-register", FAN_OUT)
    assert status["phase"] == "Failed" and status["tasks"]["succeeded"] == FAN_OUT, status
    wait_for(lambda: len(triggered_runs(observed, "obs-triggered")) >= FAN_OUT, "a triggered Run per exposure", 60)
    copies = f'sum(sgs_transfer_copies_total{{job="sgs-transfer", destination="{OTHER}", outcome="done"}})'
    deadline = time.monotonic() + 60
    while (observed.prometheus.value(copies) or 0) < FAN_OUT:
        assert time.monotonic() < deadline, f"{copies} = {observed.prometheus.value(copies)}"
        time.sleep(1)
    assert observed.archive.client.get(f"/datasets/{uuid.uuid4()}", headers={"Authorization": "Bearer x"}).is_error
    time.sleep(3)  # a few more scrapes: every rate() has two samples of every series
    return observed


def test_every_dashboard_query_returns_data(workload: Observed) -> None:
    queries = list(dashboard_queries())
    empty = [f"{q.source}: {q.expr}" for q in queries if not workload.prometheus.query(instantiate(q.expr))]
    assert empty == [], "\n".join(empty)
    print(f"{len(queries)} dashboard queries, each returned data")


def test_every_alert_expression_is_valid_over_the_live_series(workload: Observed) -> None:
    queries = list(alert_queries())
    for query in queries:
        workload.prometheus.query(query.expr)  # raises with Prometheus' error for a bad expression
    groups = {group["name"]: group for group in workload.prometheus.rule_groups()}
    assert {"sgs-sites", "sgs-tasks", "sgs-archive", "sgs-events", "sgs-transfers", "sgs-operator"} <= set(groups)
    unhealthy = [
        (rule["name"], rule.get("lastError"))
        for group in groups.values()
        for rule in group["rules"]
        if rule.get("health") not in ("ok", "unknown")
    ]
    assert unhealthy == []
    firing = {a["labels"]["alertname"] for a in workload.prometheus.alerts() if a["state"] == "firing"}
    assert "SgsSiteDown" not in firing, firing  # the Site is up: quiet before the test below stops it


def test_stopping_the_sites_bridge_fires_site_down(workload: Observed) -> None:
    workload.bridge.stop()
    began = time.monotonic()
    alert = wait_alert(workload.prometheus, "SgsSiteDown", {"site": SITE}, timeout_s=150)
    assert alert["labels"]["severity"] == "critical"
    assert SITE in alert["annotations"]["summary"]
    print(f"SgsSiteDown firing {time.monotonic() - began:.0f} s after the bridge stopped (for: 1m)")

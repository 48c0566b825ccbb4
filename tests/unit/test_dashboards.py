"""The dashboards and alert rules shipped in the chart: well-formed, and naming only metrics some component
exports (a renamed metric breaks this test, not a panel nobody looks at). The live check is
tests/integration/observability/test_promql_live.py: every query returns data from a real Prometheus."""

from __future__ import annotations

import json
from pathlib import Path

import prometheus_client
import pytest
import sgs_bridge.metrics  # noqa: F401  (registers the bridge's metrics on the default registry)
import sgs_operator.metrics  # noqa: F401  (idem, the operator's)
from sgs_archive.metrics import ArchiveMetrics
from sgs_transfer.metrics import TransferMetrics
from sgs_trigger.metrics import TriggerMetrics

from sgs.telemetry import dashboards
from sgs.telemetry.metrics import declared_names

BOARDS = sorted(dashboards.DASHBOARDS.glob("*.json"))


def exported() -> set[str]:
    registries = (
        prometheus_client.REGISTRY,
        ArchiveMetrics().registry,
        TransferMetrics().registry,
        TriggerMetrics().registry,
    )
    return {name for registry in registries for name in declared_names(registry)} | dashboards.PROMETHEUS_OWN


def test_the_issue_s_dashboards_are_all_there() -> None:
    titles = {json.loads(path.read_text())["title"] for path in BOARDS}
    assert titles == {f"sgs / {t}" for t in ("Overview", "Run campaign", "Sites", "Archive", "Transfers", "Events")}


@pytest.mark.parametrize("path", BOARDS, ids=[p.name for p in BOARDS])
def test_a_dashboard_is_grafana_json_with_queries_in_every_panel(path: Path) -> None:
    board = json.loads(path.read_text())
    assert board["uid"].startswith("sgs-") and board["schemaVersion"] >= 36
    variables = {v["name"] for v in board["templating"]["list"]}
    assert "datasource" in variables
    for panel in board["panels"]:
        assert panel["targets"], f"{panel['title']}: no query"
        assert panel["datasource"]["uid"] == "${datasource}"
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, f"{panel['title']}: wider than the dashboard"
        for target in panel["targets"]:
            used = set(dashboards._TEMPLATE_VAR.findall(target["expr"])) - {"__rate_interval", "__interval"}
            assert used <= variables, f"{panel['title']}: variables {used - variables} are not defined"
    assert len({board["uid"] for board in map(json.loads, map(Path.read_text, BOARDS))}) == len(BOARDS)


def test_every_query_names_only_metrics_a_component_exports() -> None:
    known = exported()
    queries = [*dashboards.dashboard_queries(), *dashboards.alert_queries()]
    assert len(queries) > 50
    unknown = {f"{q.source}: {sorted(q.metrics - known)}" for q in queries if q.metrics - known}
    assert unknown == set()
    assert all(q.metrics for q in queries), [q.source for q in queries if not q.metrics]


def test_a_dashboard_naming_a_metric_nobody_exports_is_caught(tmp_path: Path) -> None:
    board = {"panels": [{"title": "typo", "targets": [{"refId": "A", "expr": "rate(sgs_operatr_jobs_total[5m])"}]}]}
    (tmp_path / "bad.json").write_text(json.dumps(board))
    (query,) = dashboards.dashboard_queries(tmp_path)
    assert query.metrics - exported() == {"sgs_operatr_jobs_total"}


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (site, phase) (sgs_operator_runs{site=~"$site", phase="Running"})', {"sgs_operator_runs"}),
        (
            "histogram_quantile(0.95, sum by (le) (rate(sgs_task_wall_seconds_bucket[$__rate_interval])))",
            {"sgs_task_wall_seconds_bucket"},
        ),
        ("a / on(site) group_left(x) b > 1e3 or vector(0)", {"a", "b"}),
        ("min(x) - time() < 14 * 86400", {"x"}),
        ('up{job=~".*bridge.*"} == 0', {"up"}),
    ],
)
def test_metric_names_of_an_expression(expr: str, names: set[str]) -> None:
    assert dashboards.metric_names(expr) == names


def test_variables_are_instantiated_for_a_plain_prometheus() -> None:
    expr = 'rate(x{site=~"$site", d=~"${destination}"}[$__rate_interval])'
    assert dashboards.instantiate(expr) == 'rate(x{site=~".*", d=~".*"}[1m])'

"""The shipped alert rules (charts/sgs/files/alerts) under ``promtool test rules``: each alert fires on the
condition it names, with the labels and rendered annotations people will read, and stays quiet when all is well.

Prometheus' own rule evaluator runs these (promtool, from Debian's prometheus package); the live test beside
this one makes the Site-down alert fire in a real Prometheus scraping the real stack.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from sgs.testing.base import require_binary
from sgs.testing.prometheus import INSTALL_HINT, prometheus_binary

pytestmark = pytest.mark.integration

ALERTS = Path(__file__).resolve().parents[3] / "charts" / "sgs" / "files" / "alerts"
DAY = 86400


@dataclass
class Case:
    """Series over time (promtool's expanding notation, one sample a minute), and what is firing at ``at``."""

    name: str
    series: dict[str, str]
    at: str
    alert: str
    firing: list[dict[str, str]]
    values: list[str] = field(default_factory=list)  # what {{ $value }} renders to, one per firing alert
    rule_index: int = 0  # which of the rules named ``alert`` fired (two severities share a name)


CASES = [
    Case(
        "site down in the operator's view",
        {
            'sgs_operator_sites{site="site-a",phase="Ready"}': "1 1 0x10",
            'sgs_operator_sites{site="site-a",phase="Pending"}': "0 0 1x10",
            'sgs_operator_sites{site="site-b",phase="Ready"}': "1x12",
        },
        "5m",
        "SgsSiteDown",
        [{"site": "site-a", "severity": "critical"}],
        ["0"],
    ),
    Case(
        "a Site in its maintenance window is not down",
        {
            'sgs_operator_sites{site="site-a",phase="Ready"}': "0x12",
            'sgs_operator_sites{site="site-a",phase="Maintenance"}': "1x12",
        },
        "5m",
        "SgsSiteDown",
        [],
    ),
    Case(
        "site down: its bridge does not answer",
        {
            'up{job="sgs-bridge",instance="10.0.0.7:10250",site="site-c"}': "1 1 0x10",
            'sgs_operator_sites{site="site-c",phase="Ready"}': "1x12",
        },
        "5m",
        "SgsSiteDown",
        [{"site": "site-c", "severity": "critical"}],
        ["0"],
    ),
    Case(
        "the backend behind a bridge does not answer",
        {'sgs_bridge_node_ready{site="site-a",provider="slurm"}': "1 0x10"},
        "5m",
        "SgsSiteBackendUnreachable",
        [{"site": "site-a", "provider": "slurm", "severity": "warning"}],
    ),
    Case(
        "a third of the attempts fail at one Site",
        {
            'sgs_operator_task_attempts_finished_total{site="site-a",executable="calib",outcome="Completed"}': (
                "0+20x40"
            ),
            'sgs_operator_task_attempts_finished_total{site="site-a",executable="calib",outcome="Error"}': "0+10x40",
            'sgs_operator_task_attempts_finished_total{site="site-b",executable="calib",outcome="Completed"}': (
                "0+20x40"
            ),
        },
        "30m",
        "SgsTaskFailureRateHigh",
        [{"site": "site-a", "severity": "warning"}],
        ["33.33%"],
    ),
    Case(
        "one failure in three attempts is too few to alert on",
        {
            'sgs_operator_task_attempts_finished_total{site="site-a",executable="calib",outcome="Completed"}': (
                "0 2x40"
            ),
            'sgs_operator_task_attempts_finished_total{site="site-a",executable="calib",outcome="Error"}': "0 1x40",
        },
        "30m",
        "SgsTaskFailureRateHigh",
        [],
    ),
    Case(
        "an executable OOMKilled again and again",
        {'sgs_operator_task_attempts_finished_total{site="site-a",executable="stack",outcome="OOMKilled"}': "0+1x60"},
        "60m",
        "SgsTasksOomKilled",
        [{"site": "site-a", "executable": "stack", "severity": "info"}],
        ["60"],
    ),
    Case(
        "the outbox does not drain",
        {"sgs_archive_outbox_oldest_pending_age_seconds": "0 0+60x20"},
        "10m",
        "SgsOutboxLag",
        [{"severity": "warning"}],
        ["9m 0s"],
    ),
    Case(
        "an outbox that drains each minute is no lag",
        {"sgs_archive_outbox_oldest_pending_age_seconds": "0 2 0 3 0 1 0 2 0 1 0 0"},
        "10m",
        "SgsOutboxLag",
        [],
    ),
    Case(
        "slow archive requests",
        {
            'sgs_archive_request_seconds_bucket{route="/datasets",le="1"}': "0+1x40",
            'sgs_archive_request_seconds_bucket{route="/datasets",le="5"}': "0+10x40",
            'sgs_archive_request_seconds_bucket{route="/datasets",le="+Inf"}': "0+10x40",
        },
        "30m",
        "SgsArchiveSlowRequests",
        [{"severity": "warning"}],
        ["4.956s"],
    ),
    Case(
        "a consumer falling further behind",
        {'sgs_transfer_consumer_pending{consumer="evaluator"}': "0+200x40"},
        "30m",
        "SgsConsumerFallingBehind",
        [{"consumer": "evaluator", "severity": "warning"}],
        ["6000"],
    ),
    Case(
        "the trigger service's consumer falling further behind",
        {'sgs_trigger_consumer_pending{consumer="sgs-trigger"}': "0+100x40"},
        "30m",
        "SgsConsumerFallingBehind",
        [{"consumer": "sgs-trigger", "severity": "warning"}],
        ["3000"],
    ),
    Case(
        "a large backlog that is being worked off is not falling behind",
        {'sgs_transfer_consumer_pending{consumer="evaluator"}': "50000-500x40"},
        "30m",
        "SgsConsumerFallingBehind",
        [],
    ),
    Case(
        "events redelivered",
        {'sgs_transfer_events_redelivered_total{subject="sgs.dataset.registered"}': "0+30x40"},
        "30m",
        "SgsEventsRedelivered",
        [{"subject": "sgs.dataset.registered", "severity": "warning"}],
    ),
    Case(
        "events redelivered to the trigger service",
        {'sgs_trigger_events_redelivered_total{subject="sgs.replica.available"}': "0+30x40"},
        "30m",
        "SgsEventsRedelivered",
        [{"subject": "sgs.replica.available", "severity": "warning"}],
    ),
    Case(
        "a STUCK replication rule",
        {
            'sgs_transfer_rules{state="STUCK"}': "0 1x30",
            'sgs_transfer_rules{state="OK"}': "3x30",
        },
        "20m",
        "SgsReplicationRulesStuck",
        [{"severity": "warning"}],
        ["1"],
    ),
    Case(
        "STUCK transfers to one destination",
        {
            'sgs_transfer_transfers{destination="site-b",state="STUCK"}': "0 4x30",
            'sgs_transfer_transfers{destination="site-c",state="STUCK"}': "0x30",
        },
        "20m",
        "SgsTransfersStuck",
        [{"destination": "site-b", "severity": "warning"}],
        ["4"],
    ),
    Case(
        "a paused destination",
        {'sgs_transfer_destination_paused{destination="site-b"}': "0 1x20"},
        "15m",
        "SgsDestinationPaused",
        [{"destination": "site-b", "severity": "warning"}],
    ),
    Case(
        "the webhook's serving certificate expires in ten days",
        {'sgs_operator_webhook_certificate_expiry_timestamp_seconds{kind="serving"}': f"{10 * DAY}x120"},
        "90m",
        "SgsWebhookCertificateExpiresSoon",
        [{"kind": "serving", "severity": "warning"}],
        ["9d 22h 30m 0s"],
    ),
    Case(
        "the webhook's CA expires tomorrow",
        {'sgs_operator_webhook_certificate_expiry_timestamp_seconds{kind="ca"}': f"{DAY}x120"},
        "90m",
        "SgsWebhookCertificateExpiresSoon",
        [{"kind": "ca", "severity": "warning"}, {"kind": "ca", "severity": "critical"}],
        ["22h 30m 0s", "22h 30m 0s"],
    ),
    Case(
        "a certificate good for a year",
        {'sgs_operator_webhook_certificate_expiry_timestamp_seconds{kind="serving"}': f"{365 * DAY}x120"},
        "90m",
        "SgsWebhookCertificateExpiresSoon",
        [],
    ),
    Case(
        "a component down",
        {'up{job="sgs-archive",instance="archive:8000"}': "1 0x10"},
        "8m",
        "SgsComponentDown",
        [{"job": "sgs-archive", "instance": "archive:8000", "severity": "critical"}],
    ),
    Case(
        "the trigger service down (its ServiceMonitor's job is the Service's name)",
        {'up{job="sgs-trigger",instance="10.0.0.7:9091"}': "1 0x10", 'up{job="sgs-bridge-lyon",site="fr"}': "0x10"},
        "8m",
        "SgsComponentDown",
        [{"job": "sgs-trigger", "instance": "10.0.0.7:9091", "severity": "critical"}],  # a bridge is SgsSiteDown's
    ),
]


def rules() -> dict[str, list[dict[str, Any]]]:
    """alert name -> its rules (in file order), over every shipped rule file."""
    found: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(ALERTS.glob("*.yaml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    found.setdefault(rule["alert"], []).append(rule)
    return found


_TEMPLATE = re.compile(r"\{\{\s*(\$labels\.(\w+)|\$value(\s*\|\s*\w+)?)\s*\}\}")


def render(text: str, labels: dict[str, str], value: str | None) -> str:
    """The annotation as Prometheus renders it: ``$labels.x`` from the alert's labels, ``$value`` as given."""

    def one(match: re.Match[str]) -> str:
        if match.group(2) is not None:
            return labels[match.group(2)]  # a label the alert does not carry fails here, not in production
        assert value is not None, f"{text!r} shows $value: give the case its rendered value"
        return value

    return " ".join(_TEMPLATE.sub(one, text).split())


def expected(case: Case, rule: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for i, labels in enumerate(case.firing):
        value = case.values[i] if i < len(case.values) else None
        same_name = rules()[case.alert]
        severity_rule = next((r for r in same_name if r["labels"]["severity"] == labels["severity"]), rule)
        annotations = {key: render(text, labels, value) for key, text in severity_rule["annotations"].items()}
        out.append({"exp_labels": labels, "exp_annotations": annotations})
    return out


def test_every_shipped_alert_has_a_case() -> None:
    assert set(rules()) == {case.alert for case in CASES if case.firing}


def test_the_rule_files_are_valid() -> None:
    promtool = require_binary(prometheus_binary("promtool"), "promtool", INSTALL_HINT)
    checked = subprocess.run(
        [str(promtool), "check", "rules", *map(str, sorted(ALERTS.glob("*.yaml")))], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_promtool(case: Case, tmp_path: Path) -> None:
    promtool = require_binary(prometheus_binary("promtool"), "promtool", INSTALL_HINT)
    rule = rules()[case.alert][case.rule_index]
    suite = {
        "rule_files": [str(path) for path in sorted(ALERTS.glob("*.yaml"))],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": series, "values": values} for series, values in case.series.items()],
                "alert_rule_test": [
                    {"eval_time": case.at, "alertname": case.alert, "exp_alerts": expected(case, rule)}
                ],
            }
        ],
    }
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    result = subprocess.run([str(promtool), "test", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr

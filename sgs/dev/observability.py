"""The dev stack's observability parts: Prometheus scraping every component, Jaeger taking every trace.

Prometheus has one scrape job per component kind, each reading a file-discovery file under its work directory
(``targets/<job>.json``): ``sgs dev up`` writes those of the parts it runs, and the operator's port is reserved
and exported (``SGS_OPERATOR_METRICS_PORT``), so an ``sgs operator`` started from the stack's environment is
scraped as soon as it listens. ``SGS_TRACING_ENDPOINT`` in the environment sends every component's spans to Jaeger.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sgs.telemetry.dashboards import ALERTS
from sgs.testing._process import free_port
from sgs.testing.prometheus import PrometheusPart, ScrapeJob, write_targets

if TYPE_CHECKING:
    from sgs.dev.stack import PartState

RULES_DIR = ALERTS  # the rule files the chart ships
OPERATOR_JOB, BRIDGE_JOB, ARCHIVE_JOB, TRANSFER_JOB, JAEGER_JOB = (
    "sgs-operator",
    "sgs-bridge",
    "sgs-archive",
    "sgs-transfer",
    "jaeger",
)


def targets_file(prometheus_dir: Path, job: str) -> Path:
    return prometheus_dir / "targets" / f"{job}.json"


def scrape_jobs(prometheus_dir: Path, dev_dir: Path) -> list[ScrapeJob]:
    """The dev stack's jobs: the archive's /metrics needs a reader token (the stack's admin token), a bridge's
    kubelet API the API server's kubelet client certificate (its serving certificate is self-signed)."""
    kube_pki = dev_dir / "kube" / "pki"
    return [
        ScrapeJob(OPERATOR_JOB, file_sd=targets_file(prometheus_dir, OPERATOR_JOB)),
        ScrapeJob(
            BRIDGE_JOB,
            file_sd=targets_file(prometheus_dir, BRIDGE_JOB),
            scheme="https",
            client_cert=(kube_pki / "kubelet-client.crt", kube_pki / "kubelet-client.key"),
            insecure_skip_verify=True,
        ),
        ScrapeJob(
            ARCHIVE_JOB,
            file_sd=targets_file(prometheus_dir, ARCHIVE_JOB),
            bearer_token_file=dev_dir / "archive-admin-token",
        ),
        ScrapeJob(TRANSFER_JOB, file_sd=targets_file(prometheus_dir, TRANSFER_JOB)),
        ScrapeJob(JAEGER_JOB, file_sd=targets_file(prometheus_dir, JAEGER_JOB)),
    ]


def prometheus_unit(prometheus_dir: Path, dev_dir: Path) -> PrometheusPart:
    rules = sorted(RULES_DIR.glob("*.yaml")) if RULES_DIR.is_dir() else []
    jobs = scrape_jobs(prometheus_dir, dev_dir)
    return DevPrometheusPart(prometheus_dir, jobs=jobs, rule_files=rules, scrape_interval_s=5.0)


class DevPrometheusPart(PrometheusPart):
    """The dev stack's Prometheus, with a port kept free for the operator's /metrics."""

    def __init__(self, workdir: Path, **kwargs: Any) -> None:
        super().__init__(workdir, **kwargs)
        self.operator_metrics_port = free_port()

    def info(self) -> dict[str, Any]:
        return {**super().info(), "operator_metrics_port": self.operator_metrics_port}

    def exports(self) -> dict[str, str]:
        return {**super().exports(), "SGS_OPERATOR_METRICS_PORT": str(self.operator_metrics_port)}


def register_targets(units: Mapping[str, PartState]) -> None:
    """Write the file-discovery files of the running parts (called after every ``sgs dev up``)."""
    prometheus = units.get("prometheus")
    if prometheus is None:
        return
    directory = Path(prometheus.workdir)
    found: dict[str, dict[str, dict[str, str]]] = {job: {} for job in (OPERATOR_JOB, JAEGER_JOB, BRIDGE_JOB)}
    port = prometheus.info.get("operator_metrics_port")
    if port:
        found[OPERATOR_JOB][f"127.0.0.1:{port}"] = {}
    for unit in units.values():
        if unit.part == "jaeger":
            found[JAEGER_JOB][str(unit.info["metrics"]).removeprefix("http://").removesuffix("/metrics")] = {}
        if unit.part == "sgs" and "node" in unit.info:  # the dev stack's bridges (sgs.dev.components)
            address = str(unit.info["endpoint"]).removeprefix("https://")
            found[BRIDGE_JOB][address] = {"node": str(unit.info["node"]), "site": str(unit.info["site"])}
    for job, targets in found.items():
        write_targets(targets_file(directory, job), targets)
    for job in (ARCHIVE_JOB, TRANSFER_JOB):
        path = targets_file(directory, job)
        if not path.exists():
            write_targets(path, {})


def urls(units: Mapping[str, PartState]) -> dict[str, str]:
    """What `sgs dev up` prints: where to look at metrics and traces."""
    shown: dict[str, str] = {}
    for name, unit in units.items():
        if name == "console":
            shown["Console (sign in with a Kubernetes token: the admin's is in $KUBECONFIG)"] = str(unit.info["url"])
        if unit.part == "prometheus":
            shown["Prometheus (metrics, alerts)"] = str(unit.info["url"])
        if unit.part == "jaeger":
            shown["Jaeger (traces)"] = str(unit.info["url"])
            shown["OTLP endpoint (SGS_TRACING_ENDPOINT)"] = str(unit.info["otlp"])
    return shown

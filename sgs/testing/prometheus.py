"""Prometheus (Debian's `prometheus` package, or $SGS_PROMETHEUS_BIN) scraping the components it is told about.

Scrape jobs are data (``ScrapeJob``): static targets, or a file-discovery file other processes write (the dev
stack's components register themselves that way); changing them rewrites ``prometheus.yml`` and reloads it.
The query helpers are thin wrappers of the HTTP API (``/api/v1/query``, ``/api/v1/alerts``, ...).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sgs.testing._process import ManagedProcess, PartError, free_port, wait_until
from sgs.testing.base import Part, require_binary

INSTALL_HINT = "install Debian's prometheus package (tools/ci-setup.sh does: apt-get install prometheus)"


def prometheus_binary(name: str = "prometheus") -> Path | None:
    """``prometheus`` or ``promtool``: $SGS_<NAME>_BIN, else PATH."""
    override = os.environ.get(f"SGS_{name.upper()}_BIN")
    if override:
        return Path(override)
    found = shutil.which(name)
    return Path(found) if found else None


@dataclass(frozen=True)
class ScrapeJob:
    """One scrape job: targets (``host:port`` → extra labels) or a file-discovery file, and how to reach them."""

    name: str
    targets: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    file_sd: Path | None = None
    scheme: str = "http"
    metrics_path: str = "/metrics"
    bearer_token_file: Path | None = None
    client_cert: tuple[Path, Path] | None = None  # (certificate, key) presented to the target
    ca_file: Path | None = None
    insecure_skip_verify: bool = False  # the target's serving certificate is self-signed (a bridge's kubelet API)
    params: Mapping[str, str] = field(default_factory=dict)

    def config(self) -> dict[str, Any]:
        job: dict[str, Any] = {"job_name": self.name, "scheme": self.scheme, "metrics_path": self.metrics_path}
        if self.targets:
            job["static_configs"] = [
                {"targets": [address], "labels": dict(labels)} for address, labels in self.targets.items()
            ]
        if self.file_sd is not None:
            job["file_sd_configs"] = [{"files": [str(self.file_sd)], "refresh_interval": "5s"}]
        if self.bearer_token_file is not None:
            job["authorization"] = {"type": "Bearer", "credentials_file": str(self.bearer_token_file)}
        tls: dict[str, Any] = {}
        if self.client_cert is not None:
            tls |= {"cert_file": str(self.client_cert[0]), "key_file": str(self.client_cert[1])}
        if self.ca_file is not None:
            tls["ca_file"] = str(self.ca_file)
        if self.insecure_skip_verify:
            tls["insecure_skip_verify"] = True
        if tls:
            job["tls_config"] = tls
        if self.params:
            job["params"] = {key: [value] for key, value in self.params.items()}
        return job


def write_targets(path: Path, targets: Mapping[str, Mapping[str, str]]) -> None:
    """A file-discovery file (atomically replaced: Prometheus may read it at any moment)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    groups = [{"targets": [address], "labels": dict(labels)} for address, labels in targets.items()]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(groups, indent=2))
    tmp.replace(path)


class PrometheusQueries:
    """The HTTP API of a Prometheus at ``self.url``."""

    @property
    def url(self) -> str:
        raise NotImplementedError

    def api(self, path: str, **params: str) -> Any:
        """``data`` of a GET on the HTTP API; PartError naming Prometheus' error otherwise."""
        query = urllib.parse.urlencode(params)
        url = f"{self.url}/api/v1/{path}" + (f"?{query}" if query else "")
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                body = json.load(response)
        except urllib.error.HTTPError as err:
            body = json.loads(err.read() or b"{}")
        if body.get("status") != "success":
            raise PartError(f"prometheus {path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The result of an instant query (vectors as a list of {metric, value}; scalars as one entry)."""
        data = self.api("query", query=expr)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def value(self, expr: str) -> float | None:
        """The single number ``expr`` evaluates to now (None when it returns no series)."""
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def alerts(self) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = self.api("alerts")["alerts"]
        return alerts

    def rule_groups(self) -> list[dict[str, Any]]:
        groups: list[dict[str, Any]] = self.api("rules")["groups"]
        return groups

    def targets(self) -> list[dict[str, Any]]:
        active: list[dict[str, Any]] = self.api("targets")["activeTargets"]
        return active

    def wait_up(self, job: str, timeout_s: float = 60) -> None:
        """Until every target of ``job`` has been scraped successfully."""

        def up() -> bool:
            mine = [t for t in self.targets() if t["labels"].get("job") == job]
            return bool(mine) and all(t["health"] == "up" for t in mine)

        deadline = time.monotonic() + timeout_s
        while not up():
            if time.monotonic() > deadline:
                states = [(t["scrapeUrl"], t["health"], t["lastError"]) for t in self.targets()]
                raise PartError(f"prometheus: job {job} not up after {timeout_s:.0f} s: {states}")
            time.sleep(0.25)


class PrometheusClient(PrometheusQueries):
    """A running Prometheus found by its URL (the dev stack's, from ``SGS_PROMETHEUS_URL``)."""

    def __init__(self, url: str) -> None:
        self._url = url.rstrip("/")

    @property
    def url(self) -> str:
        return self._url


class PrometheusPart(Part, PrometheusQueries):
    """A Prometheus server on a free port of 127.0.0.1; ``.url`` is its HTTP API and UI."""

    name = "prometheus"

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        jobs: Sequence[ScrapeJob] = (),
        rule_files: Iterable[Path] = (),
        scrape_interval_s: float = 1.0,
        port: int | None = None,
        keep: bool = False,
    ) -> None:
        super().__init__(workdir, keep=keep)
        self.port = port or free_port()
        self.scrape_interval_s = scrape_interval_s
        self.jobs = {job.name: job for job in jobs}
        self.rule_files = [Path(path) for path in rule_files]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config_file(self) -> Path:
        return self.workdir / "prometheus.yml"

    def info(self) -> dict[str, Any]:
        return {"url": self.url, "config": str(self.config_file)}

    def exports(self) -> dict[str, str]:
        return {"SGS_PROMETHEUS_URL": self.url}

    def _start(self) -> None:
        binary = require_binary(prometheus_binary(), "prometheus", INSTALL_HINT)
        self._write_config()
        argv = [
            str(binary),
            f"--config.file={self.config_file}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-lifecycle",  # POST /-/reload after the jobs change (loopback only)
            "--storage.tsdb.retention.time=2d",
            "--log.level=warn",
        ]
        process = self._spawn(ManagedProcess("prometheus", argv, self.log_dir / "prometheus.log"))
        wait_until(self._ready, what="Prometheus to be ready", timeout_s=60, process=process)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def _write_config(self) -> None:
        interval = f"{self.scrape_interval_s:g}s"
        config = {
            "global": {"scrape_interval": interval, "evaluation_interval": interval, "scrape_timeout": interval},
            "rule_files": [str(path) for path in self.rule_files],
            "scrape_configs": [
                {"job_name": "prometheus", "static_configs": [{"targets": [f"127.0.0.1:{self.port}"]}]},
                *(job.config() for job in self.jobs.values()),
            ],
        }
        tmp = self.config_file.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(config, sort_keys=False))
        tmp.replace(self.config_file)

    # ------------------------------------------------------------------------------------------- changes

    def scrape(self, *jobs: ScrapeJob) -> None:
        """Add or replace scrape jobs, and reload."""
        self.jobs.update({job.name: job for job in jobs})
        self.reload()

    def load_rules(self, paths: Iterable[Path]) -> None:
        self.rule_files = [Path(path) for path in paths]
        self.reload()

    def reload(self) -> None:
        self._write_config()
        request = urllib.request.Request(f"{self.url}/-/reload", method="POST")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                response.read()
        except urllib.error.HTTPError as err:
            raise PartError(f"prometheus refused its new configuration: {err.read().decode(errors='replace')}") from err

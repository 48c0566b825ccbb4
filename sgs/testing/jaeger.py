"""Jaeger v2 all-in-one (built from its Go module by tools/build-binaries.sh): OTLP/HTTP in, traces queryable.

One process, in-memory storage: ``.otlp_endpoint`` takes spans (``SGS_TRACING_ENDPOINT``), ``.trace(id)`` and
``.traces(service)`` read them back through the query API the Jaeger UI uses (``.url``).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from sgs.testing._process import ManagedProcess, PartError, free_port, wait_until
from sgs.testing.base import Part, require_binary
from sgs.testing.binaries import BUILD_HINT, binary_path

MAX_TRACES = 50_000


class JaegerPart(Part):
    """Jaeger on free ports of 127.0.0.1: OTLP/HTTP receiver, query API + UI, health, its own /metrics."""

    name = "jaeger"

    def __init__(self, workdir: Path | None = None, *, keep: bool = False) -> None:
        super().__init__(workdir, keep=keep)
        self.otlp_port = free_port()
        self.query_port = free_port()
        self.query_grpc_port = free_port()
        self.health_port = free_port()
        self.metrics_port = free_port()

    @property
    def url(self) -> str:
        """The UI and the query API (``/api/traces/<id>``)."""
        return f"http://127.0.0.1:{self.query_port}"

    @property
    def otlp_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.otlp_port}"

    @property
    def metrics_address(self) -> str:
        return f"127.0.0.1:{self.metrics_port}"

    def info(self) -> dict[str, Any]:
        return {"url": self.url, "otlp": self.otlp_endpoint, "metrics": f"http://{self.metrics_address}/metrics"}

    def exports(self) -> dict[str, str]:
        return {"SGS_TRACING_ENDPOINT": self.otlp_endpoint, "SGS_JAEGER_URL": self.url}

    def config(self) -> dict[str, Any]:
        local = "127.0.0.1"
        return {
            "service": {
                "extensions": ["jaeger_storage", "jaeger_query", "healthcheckv2"],
                "pipelines": {
                    "traces": {"receivers": ["otlp"], "processors": ["batch"], "exporters": ["jaeger_storage_exporter"]}
                },
                "telemetry": {
                    "resource": {"service.name": "jaeger"},
                    "metrics": {
                        "level": "basic",
                        "readers": [{"pull": {"exporter": {"prometheus": {"host": local, "port": self.metrics_port}}}}],
                    },
                    "logs": {"level": "warn"},
                },
            },
            "extensions": {
                "healthcheckv2": {"use_v2": True, "http": {"endpoint": f"{local}:{self.health_port}"}},
                "jaeger_query": {
                    "storage": {"traces": "memstore"},
                    "http": {"endpoint": f"{local}:{self.query_port}"},
                    "grpc": {"endpoint": f"{local}:{self.query_grpc_port}"},
                },
                "jaeger_storage": {"backends": {"memstore": {"memory": {"max_traces": MAX_TRACES}}}},
            },
            "receivers": {"otlp": {"protocols": {"http": {"endpoint": f"{local}:{self.otlp_port}"}}}},
            "processors": {"batch": {"timeout": "200ms"}},
            "exporters": {"jaeger_storage_exporter": {"trace_storage": "memstore"}},
        }

    def _start(self) -> None:
        binary = require_binary(binary_path("jaeger"), "jaeger", BUILD_HINT)
        config = self.workdir / "jaeger.yaml"
        config.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        env = {"PATH": "/usr/bin:/bin", "HOME": str(self.workdir)}
        argv = [str(binary), "--config", str(config)]
        process = self._spawn(ManagedProcess("jaeger", argv, self.log_dir / "jaeger.log", env=env))
        wait_until(self._ready, what="Jaeger to accept spans and queries", timeout_s=60, process=process)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/status", timeout=2) as response:
                healthy = response.status == 200
            with urllib.request.urlopen(f"{self.url}/api/services", timeout=2) as response:
                return healthy and bool(response.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    # ------------------------------------------------------------------------------------------- queries

    def _get(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        url = f"{self.url}{path}" + (f"?{query}" if query else "")
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                return json.load(response)
        except urllib.error.HTTPError as err:
            if err.code == 404:
                return None
            raise PartError(f"jaeger {path}: HTTP {err.code}: {err.read().decode(errors='replace')[:500]}") from err

    def services(self) -> list[str]:
        body = self._get("/api/services")
        return sorted(body.get("data") or []) if body else []

    def trace(self, trace_id: int | str) -> list[dict[str, Any]]:
        """Every span stored under ``trace_id`` (Jaeger's JSON: operationName, spanID, references, tags,
        process: {serviceName}); empty when Jaeger has none."""
        hex_id = f"{trace_id:032x}" if isinstance(trace_id, int) else trace_id
        body = self._get(f"/api/traces/{hex_id}")
        if not body or not body.get("data"):
            return []
        found = body["data"][0]
        processes = found.get("processes") or {}
        spans: list[dict[str, Any]] = found.get("spans") or []
        for span in spans:
            span["process"] = processes.get(span.get("processID"), {})
        return spans

    def traces(self, service: str, limit: int = 100, lookback: str = "1h") -> list[dict[str, Any]]:
        body = self._get("/api/traces", service=service, limit=str(limit), lookback=lookback)
        found: list[dict[str, Any]] = (body or {}).get("data") or []
        return found


def span_tags(span: dict[str, Any]) -> dict[str, Any]:
    """A Jaeger span's tags (attributes) as a dict."""
    return {tag["key"]: tag["value"] for tag in span.get("tags") or []}


def parent_of(span: dict[str, Any]) -> str | None:
    """The span id of a Jaeger span's parent (CHILD_OF reference), if any."""
    for reference in span.get("references") or []:
        if reference.get("refType") == "CHILD_OF":
            return str(reference["spanID"])
    return None


def links_of(span: dict[str, Any]) -> list[tuple[str, str]]:
    """(trace id as 32 hex digits, span id) of each span a Jaeger span links to (OpenTelemetry span links are
    Jaeger's FOLLOWS_FROM references)."""
    return [
        (str(reference["traceID"]).rjust(32, "0"), str(reference["spanID"]))
        for reference in span.get("references") or []
        if reference.get("refType") == "FOLLOWS_FROM"
    ]

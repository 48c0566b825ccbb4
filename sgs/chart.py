"""Generated files of the Helm chart (charts/sgs): its copies of the CRDs and its values.schema.json.

Helm reads no file outside a chart, so `sgs crds` writes the CRDs there too (files/crds/, templated by
templates/crds.yaml). The values schema is derived from values.yaml — every mapping of the chart's own keys
becomes an object with ``additionalProperties: false``, so a misspelled key is refused at any depth — plus the
constraints below (enums, ranges, patterns, the shape of lists). A key whose shape the defaults cannot tell
(an empty list or mapping) must have a constraint here: the generator refuses to guess.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from sgs.crds import crd_path, render
from sgs.model import CUSTOM_RESOURCES

JSON = dict[str, Any]

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
STRING_MAP: JSON = {"type": "object", "additionalProperties": {"type": "string"}}
# Kubernetes objects the chart passes through unchanged: the API server's own schema checks them.
KUBE_OBJECT: JSON = {"type": "object"}
KUBE_LIST: JSON = {"type": "array", "items": {"type": "object"}}
STRINGS: JSON = {"type": "array", "items": {"type": "string"}}
QUANTITY: JSON = {"anyOf": [{"type": "string"}, {"type": "number"}]}
RESOURCES: JSON = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "requests": {"type": "object", "additionalProperties": QUANTITY},
        "limits": {"type": "object", "additionalProperties": QUANTITY},
    },
}
PORT: JSON = {"type": "integer", "minimum": 1, "maximum": 65535}
REPLICAS: JSON = {"type": "integer", "minimum": 0}
POSITIVE: JSON = {"type": "number", "exclusiveMinimum": 0}

BRIDGE: JSON = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": DNS_LABEL, "maxLength": 40},
        "site": {"type": "string", "pattern": DNS_LABEL},
        "provider": {"enum": ["slurm", "process"]},
        "partition": {"type": "string"},
        "gpuPartition": {"type": "string"},
        "sbatchArgs": STRINGS,
        "apptainer": {"type": "string"},
        "gpus": {"type": "integer", "minimum": 0},
        "pollInterval": POSITIVE,
        "metricsPort": PORT,
        "slurmConfigMap": {"type": "string"},
        "mungeKeySecret": {"type": "string"},
        "containerRuntime": {"enum": ["none", "crun"]},
        "imageStores": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["claimName", "path"],
                "properties": {
                    "claimName": {"type": "string", "pattern": DNS_LABEL},
                    "path": {"type": "string", "pattern": "^/[^,=]*$"},
                },
            },
        },
        "resources": RESOURCES,
        "nodeSelector": STRING_MAP,
        "tolerations": KUBE_LIST,
        "affinity": KUBE_OBJECT,
        "extraEnv": KUBE_LIST,
    },
}

# Constraints by dotted path; "*" matches one key (a deployable's name).
CONSTRAINTS: dict[str, JSON] = {
    "site.name": {"type": "string", "anyOf": [{"maxLength": 0}, {"pattern": DNS_LABEL}]},
    "bridges": {"type": "array", "items": BRIDGE},
    "environment": {"enum": ["production", "development"]},
    "image.digest": {"type": "string", "pattern": r"^(sha256:[a-f0-9]{64})?$"},
    "image.pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
    "image.pullSecrets": STRINGS,
    "tracing.sampling": {"type": "number", "minimum": 0, "maximum": 1},
    "*.replicas": REPLICAS,
    "*.port": PORT,
    "*.namespaces": STRINGS,
    "*.resources": RESOURCES,
    "*.nodeSelector": STRING_MAP,
    "*.tolerations": KUBE_LIST,
    "*.affinity": KUBE_OBJECT,
    "*.extraEnv": KUBE_LIST,
    "*.extraVolumes": KUBE_LIST,
    "*.extraVolumeMounts": KUBE_LIST,
    "*.image.name": {"type": "string", "pattern": r"^[a-z0-9][a-z0-9._/-]*$"},
    "*.existingSecret": {"type": "string", "anyOf": [{"maxLength": 0}, {"pattern": DNS_LABEL}]},
    "operator.reconcileInterval": POSITIVE,
    "operator.createConcurrency": {"type": "integer", "minimum": 1, "maximum": 512},
    "operator.recordWave": {"type": "integer", "minimum": 1, "maximum": 10000},
    "operator.finishedJobs": {"enum": ["delete", "keep"]},
    "operator.failedJobTtlSeconds": {"type": "integer", "minimum": 0},
    "operator.webhook.port": PORT,
    "operator.metricsPort": PORT,
    "operator.surveyRoots": STRINGS,
    "operator.siteCheckInterval": POSITIVE,
    "archive.maxBatch": {"type": "integer", "minimum": 1, "maximum": 500000},
    "archive.poolMaxSize": {"type": "integer", "minimum": 1},
    "trigger.namespace": {"type": "string", "anyOf": [{"maxLength": 0}, {"pattern": DNS_LABEL}]},
    "trigger.metricsPort": PORT,
    "trigger.batch": {"type": "integer", "minimum": 1, "maximum": 1000},
    "trigger.concurrency": {"type": "integer", "minimum": 1, "maximum": 256},
    "transfer.siteSecrets": STRINGS,
    "transfer.streamNamespace": {"type": "string", "pattern": r"^[a-z][a-z0-9-]{0,30}$"},
    "transfer.workers.replicas": REPLICAS,
    "transfer.workers.destinationConcurrency": {"type": "integer", "minimum": 1, "maximum": 256},
    "transfer.workers.linkConcurrency": {"type": "integer", "minimum": 1, "maximum": 256},
    "transfer.workers.sourceConcurrency": {"type": "integer", "minimum": 1, "maximum": 256},
    "transfer.workers.resources": RESOURCES,
    "networkPolicy.clientNamespaceSelectors": {"type": "array", "items": STRING_MAP},
    "networkPolicy.metricsNamespaceSelectors": {"type": "array", "items": STRING_MAP},
    "metrics.serviceMonitor.interval": {"type": "string", "pattern": r"^[0-9]+(ms|s|m|h)$"},
    "metrics.*.labels": STRING_MAP,
    "podAnnotations": STRING_MAP,
    "commonLabels": STRING_MAP,
}


class ChartSchemaError(ValueError):
    """values.yaml has a key whose shape neither its default nor CONSTRAINTS tells."""


def _constraint(path: str) -> JSON | None:
    parts = path.split(".")
    for pattern, schema in CONSTRAINTS.items():
        wanted = pattern.split(".")
        if len(wanted) == len(parts) and all(w in ("*", p) for w, p in zip(wanted, parts, strict=True)):
            return schema
    return None


def _schema(value: Any, path: str) -> JSON:
    constraint = _constraint(path)
    if constraint is not None:
        return constraint
    if isinstance(value, dict):
        if not value:
            raise ChartSchemaError(f"{path}: an empty mapping; say its shape in sgs.chart.CONSTRAINTS")
        return {
            "type": "object",
            "additionalProperties": False,
            "properties": {key: _schema(item, f"{path}.{key}" if path else key) for key, item in value.items()},
        }
    if isinstance(value, bool):
        return {"type": "boolean"}
    if isinstance(value, int):
        return {"type": "integer"}
    if isinstance(value, float):
        return {"type": "number"}
    if isinstance(value, str):
        return {"type": "string"}
    raise ChartSchemaError(f"{path}: a {type(value).__name__} default; say its shape in sgs.chart.CONSTRAINTS")


def values_schema(values: JSON) -> JSON:
    """The JSON schema of the chart's values: values.yaml's keys and nothing else, at every level."""
    schema = _schema(values, "")
    return {"$schema": "http://json-schema.org/draft-07/schema#", "title": "sgs chart values", **schema}


def _generated(chart: Path) -> Iterator[tuple[Path, str]]:
    for resource in CUSTOM_RESOURCES:
        yield crd_path(chart / "files" / "crds", resource), render(resource)
    values = yaml.safe_load((chart / "values.yaml").read_text())
    yield chart / "values.schema.json", json.dumps(values_schema(values), indent=2) + "\n"


def write_chart_files(chart: Path) -> list[Path]:
    written = []
    for path, text in _generated(chart):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written


def stale_chart_files(chart: Path) -> list[Path]:
    """Generated chart files that differ from what the models and values.yaml give (missing ones count)."""
    return [path for path, text in _generated(chart) if not path.is_file() or path.read_text() != text]

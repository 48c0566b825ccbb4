"""Prometheus naming rules every sgs metric follows, checked by a test over every component's registry.

From the Prometheus conventions: ``sgs_<component>_<what>_<unit>``; base units only (seconds, bytes, ratios
0..1 as ``_ratio``); counters end in ``_total``; labels are bounded — a Site, a Pipeline, an executable, an
outcome or reason — never a task, dataset, Run or pod id, which would make one series per object.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

PREFIX = "sgs_"
BASE_UNITS = ("seconds", "bytes", "ratio", "info", "timestamp_seconds")
FOREIGN_UNITS = ("milliseconds", "microseconds", "minutes", "hours", "kilobytes", "megabytes", "gigabytes", "percent")
BOUNDED_LABELS = frozenset(
    {
        "site",
        "destination",
        "source",
        "pipeline",
        "executable",
        "namespace",
        "phase",
        "state",
        "outcome",
        "reason",
        "provider",
        "operation",
        "direction",
        "subject",
        "consumer",
        "route",
        "method",
        "status",
        "partition",
        "kind",
        "version",
        "le",
        "quantile",
    }
)
"""Labels a metric may carry: each takes a handful of values an administrator configures or code enumerates."""
UNBOUNDED_LABELS = frozenset({"task", "task_id", "tid", "dataset", "dataset_id", "run", "run_uid", "uid", "pod", "job"})
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class MetricProblem:
    metric: str
    problem: str

    def __str__(self) -> str:
        return f"{self.metric}: {self.problem}"


def name_problems(name: str, kind: str, labels: Iterable[str] = ()) -> list[MetricProblem]:
    """What is wrong with a metric (``kind``: counter, gauge, histogram, summary, info); empty when nothing."""
    found: list[str] = []
    if not _NAME.match(name):
        found.append("not snake_case")
    if not name.startswith(PREFIX):
        found.append(f"does not start with {PREFIX!r}")
    words = name.split("_")
    for unit in FOREIGN_UNITS:
        if unit in words:
            found.append(f"unit {unit!r}: use a base unit ({', '.join(BASE_UNITS)})")
    if kind == "counter" and not name.endswith("_total"):
        found.append("a counter's name ends in _total")
    if kind != "counter" and name.endswith("_total"):
        found.append("only counters end in _total")
    for label in labels:
        if label in UNBOUNDED_LABELS:
            found.append(f"label {label!r} is unbounded (one series per object)")
        elif label not in BOUNDED_LABELS:
            found.append(f"label {label!r} is not among the bounded labels (sgs.telemetry.metrics.BOUNDED_LABELS)")
    return [MetricProblem(name, problem) for problem in found]


def registry_problems(registry: CollectorRegistry) -> list[MetricProblem]:
    """Every naming problem of the sgs metrics in ``registry`` (the client's own process_/python_ are skipped)."""
    problems: list[MetricProblem] = []
    for family in registry.collect():
        if not family.name.startswith(PREFIX):
            continue
        name = f"{family.name}_total" if family.type == "counter" else family.name
        labels = {label for sample in family.samples for label in sample.labels}
        problems.extend(name_problems(name, family.type, labels))
    return problems


def exported_names(registry: CollectorRegistry) -> set[str]:
    """The sample names a scrape of ``registry`` shows (``x_total``, ``x_bucket``, ``x_count`` ...)."""
    return {sample.name for family in registry.collect() for sample in family.samples}


def declared_names(registry: CollectorRegistry) -> set[str]:
    """Every sample name the metrics of ``registry`` can show, including labelled ones not observed yet (a
    histogram's ``_bucket``/``_count``/``_sum``, a counter's ``_total``)."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "summary": ("_count", "_sum", "")}
    names = set()
    for family in registry.collect():
        for suffix in suffixes.get(family.type, ("",)):
            names.add(family.name + suffix)
    return names

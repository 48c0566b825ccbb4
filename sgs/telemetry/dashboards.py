"""The PromQL the product ships (Grafana dashboards in charts/sgs/files/dashboards, Prometheus rule files in
charts/sgs/files/alerts), read back for the checks: which metrics each query names, and the query with the
dashboard's variables filled in so a plain Prometheus can evaluate it."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

CHART_FILES = Path(__file__).resolve().parents[2] / "charts" / "sgs" / "files"
DASHBOARDS = CHART_FILES / "dashboards"
ALERTS = CHART_FILES / "alerts"
PROMETHEUS_OWN = frozenset({"up", "ALERTS", "ALERTS_FOR_STATE"})
"""Series Prometheus makes itself (per target, per alert), not exported by any component."""

VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "5m"}
"""Grafana's built-in interval variables, as a check evaluates them; template variables become "any value"."""

_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset", "inf"}
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_TEMPLATE_VAR = re.compile(r"\$\{?(\w+)\}?")


@dataclass(frozen=True)
class Query:
    """One PromQL expression the product ships, and where: ``dashboards/overview.json: Runs by phase [A]``."""

    source: str
    expr: str

    @property
    def metrics(self) -> set[str]:
        return metric_names(self.expr)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not its functions, keywords, labels or label values)."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    names = set()
    for match in _IDENT.finditer(text):
        word = match.group(0)
        following = text[match.end() :].lstrip()[:1]
        preceding = text[: match.start()].rstrip()[-1:]
        if following == "(" or word.lower() in _KEYWORDS or preceding == "$" or word.isdigit():
            continue
        if re.fullmatch(r"\d+[smhdwy]", word) or re.fullmatch(r"e\d+", word):
            continue
        names.add(word)
    return names


def instantiate(expr: str) -> str:
    """``expr`` as a plain Prometheus can run it: interval variables as fixed durations, template variables
    (``$site``, a multi-value regex in Grafana) as "any value"."""
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    return _TEMPLATE_VAR.sub(".*", expr)


def dashboard_queries(directory: Path = DASHBOARDS) -> Iterator[Query]:
    for path in sorted(directory.glob("*.json")):
        board = json.loads(path.read_text())
        for panel in _panels(board.get("panels") or []):
            for target in panel.get("targets") or []:
                if target.get("expr"):
                    yield Query(f"dashboards/{path.name}: {panel.get('title')} [{target.get('refId')}]", target["expr"])


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        inner = panel.get("panels")
        if isinstance(inner, list):  # a collapsed row holds its panels
            yield from _panels(inner)


def alert_queries(directory: Path = ALERTS) -> Iterator[Query]:
    for path in sorted(directory.glob("*.yaml")):
        for group in yaml.safe_load(path.read_text()).get("groups") or []:
            for rule in group.get("rules") or []:
                name = rule.get("alert") or rule.get("record")
                yield Query(f"alerts/{path.name}: {name}", str(rule["expr"]))

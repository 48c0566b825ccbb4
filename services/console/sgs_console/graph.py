"""The data-flow graph of a Pipeline as SVG: one box per step, whatever its fan-out.

A ``@parallel`` map of 10,000 items is one box per body step with its tasks counted by state (a bar and the
numbers), drawn inside the map's frame; the tasks themselves open on demand (the box links to the task table
filtered to that step). The browser therefore draws tens of elements for a 100,000-task Run, never 100,000.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from markupsafe import Markup, escape

BOX_W, BOX_H, GAP_X, GAP_Y, PAD = 220, 62, 56, 22, 14
STATE_COLOURS = {
    "Succeeded": "#2e7d32",
    "Running": "#1565c0",
    "Retrying": "#ef6c00",
    "Failed": "#c62828",
    "Ready": "#78909c",
    "Waiting": "#b0bec5",
    "Skipped": "#d7ccc8",
}


@dataclass
class Node:
    name: str
    executable: str
    scope: str | None
    layer: int = 0
    row: int = 0
    inputs: set[str] = field(default_factory=set)


@dataclass
class Frame:
    """A map: its name, what it iterates over, and the steps drawn inside it."""

    name: str
    over: str
    members: list[str] = field(default_factory=list)


def build(spec: Mapping[str, Any]) -> tuple[dict[str, Node], dict[str, Frame]]:
    """Nodes (executable steps) with their producers resolved through maps, laid out in layers."""
    steps = {str(s["name"]): s for s in spec.get("steps") or []}
    nodes = {name: Node(name, str(s["executable"]), s.get("scope")) for name, s in steps.items() if s.get("executable")}
    frames = {name: Frame(name, str(s["map"].get("over", ""))) for name, s in steps.items() if s.get("map")}
    for node in nodes.values():
        for binding in (steps[node.name].get("inputs") or {}).values():
            for ref in binding.get("items") or [binding]:
                node.inputs |= _producers(ref, node.scope, steps, set())
        if node.scope in frames:
            frames[node.scope].members.append(node.name)
    _layer(nodes)
    _rows(nodes)
    return nodes, frames


def _producers(ref: Mapping[str, Any], scope: str | None, steps: Mapping[str, Any], seen: set[str]) -> set[str]:
    """The executable steps whose outputs feed ``ref`` (a map's outputs come from its body's steps)."""
    if ref.get("step"):
        target = str(ref["step"])
        spec = steps.get(target)
        if spec is None or target in seen:
            return set()
        if spec.get("executable"):
            return {target}
        found: set[str] = set()
        for out in (spec.get("map") or {}).get("outputs") or []:
            if out.get("name") == ref.get("output"):
                found |= _producers(out.get("from") or {}, target, steps, seen | {target})
        return found
    if ref.get("input") and scope is not None and scope in steps:
        # A map body's input is a parameter of the map: whatever the map was given in its own scope.
        outer = steps[scope]
        binding = (outer.get("inputs") or {}).get(str(ref["input"]))
        if binding is None:
            return set()
        found = set()
        for item in binding.get("items") or [binding]:
            found |= _producers(item, outer.get("scope"), steps, seen | {scope})
        return found
    return set()


def _layer(nodes: dict[str, Node]) -> None:
    """Longest path from the sources (steps are listed in dependency order, so one pass is enough)."""
    for node in nodes.values():
        node.layer = max((nodes[p].layer + 1 for p in node.inputs if p in nodes), default=0)


def _rows(nodes: dict[str, Node]) -> None:
    """Steps outside maps on the first rows of their layer, then each map in a band of rows of its own."""
    used: dict[int, int] = {}
    for node in nodes.values():
        if node.scope is None:
            node.row = used.get(node.layer, 0)
            used[node.layer] = node.row + 1
    by_top_scope: dict[str, list[Node]] = {}
    for node in nodes.values():
        if node.scope is not None:
            by_top_scope.setdefault(node.scope.split(".")[0], []).append(node)
    top = max(used.values(), default=0)
    for members in by_top_scope.values():
        band: dict[int, int] = {}
        for node in members:
            node.row = top + band.get(node.layer, 0)
            band[node.layer] = band.get(node.layer, 0) + 1
        top += max(band.values(), default=0)


def svg(
    spec: Mapping[str, Any],
    counts: Mapping[str, Mapping[str, int]] | None = None,
    link: str | None = None,
    resources: Mapping[str, str] | None = None,
) -> Markup:
    """The graph; ``counts`` (step → state → n) adds a state bar per box; ``link`` + step opens its tasks."""
    nodes, frames = build(spec)
    if not nodes:
        return Markup('<p class="muted">This pipeline has no steps.</p>')
    x_of = {n.name: PAD + n.layer * (BOX_W + GAP_X) for n in nodes.values()}
    y_of = {n.name: PAD + 18 + n.row * (BOX_H + GAP_Y) for n in nodes.values()}
    width = PAD * 2 + (max(n.layer for n in nodes.values()) + 1) * (BOX_W + GAP_X) - GAP_X
    height = PAD * 2 + 18 + (max(n.row for n in nodes.values()) + 1) * (BOX_H + GAP_Y)
    parts = [
        f'<svg class="graph" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="data-flow graph">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#90a4ae"/></marker></defs>',
    ]
    for frame in frames.values():
        members = [m for m in frame.members if m in nodes] or [
            n for n in nodes if (nodes[n].scope or "").startswith(frame.name + ".")
        ]
        if not members:
            continue
        x0 = min(x_of[m] for m in members) - 8
        y0 = min(y_of[m] for m in members) - 22
        x1 = max(x_of[m] for m in members) + BOX_W + 8
        y1 = max(y_of[m] for m in members) + BOX_H + 8
        parts.append(
            f'<g class="frame"><rect x="{x0}" y="{y0}" width="{x1 - x0}" height="{y1 - y0}" rx="10"/>'
            f'<text x="{x0 + 8}" y="{y0 + 15}">@parallel {escape(frame.name)} over {escape(frame.over)}</text></g>'
        )
    for node in nodes.values():
        for producer in sorted(node.inputs):
            if producer in nodes:
                path = _edge(nodes[producer], node, nodes, x_of, y_of)
                parts.append(f'<path class="edge" d="{path}" marker-end="url(#arrow)"/>')
    for node in nodes.values():
        parts.append(_box(node, x_of[node.name], y_of[node.name], (counts or {}).get(node.name), link, resources))
    parts.append("</svg>")
    return Markup("".join(parts))


def _edge(
    producer: Node, consumer: Node, nodes: Mapping[str, Node], x_of: Mapping[str, int], y_of: Mapping[str, int]
) -> str:
    """A curve from the producer's right side to the consumer's left; an edge that skips layers runs in a lane
    below the boxes of the layers it skips (a straight curve would pass behind them and look like their edge)."""
    sx, sy = x_of[producer.name] + BOX_W, y_of[producer.name] + BOX_H / 2
    tx, ty = x_of[consumer.name], y_of[consumer.name] + BOX_H / 2
    between = [n.name for n in nodes.values() if producer.layer < n.layer < consumer.layer]
    if not between:
        mid = (sx + tx) / 2
        return f"M {sx} {sy} C {mid} {sy}, {mid} {ty}, {tx} {ty}"
    lane = max(y_of[n] for n in between) + BOX_H + 15  # below a map's frame (8 below its boxes), above the next row
    a, b = sx + GAP_X / 2, tx - GAP_X / 2
    down = f"M {sx} {sy} C {a} {sy}, {a} {lane}, {sx + GAP_X} {lane}"
    return f"{down} L {tx - GAP_X} {lane} C {b} {lane}, {b} {ty}, {tx} {ty}"


def _box(
    node: Node,
    x: float,
    y: float,
    counts: Mapping[str, int] | None,
    link: str | None,
    resources: Mapping[str, str] | None,
) -> str:
    short = node.name.rsplit(".", 1)[-1]
    body = [
        f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="6"/>',
        f'<text class="title" x="{x + 8}" y="{y + 17}">{escape(_clip(short, 30))}</text>',
    ]
    if counts is not None:
        total = sum(counts.values())
        offset = 0.0
        for state, colour in STATE_COLOURS.items():
            n = counts.get(state, 0)
            if n:
                w = (BOX_W - 16) * n / total
                body.append(
                    f'<rect class="bar" x="{x + 8 + offset:.1f}" y="{y + 26}" width="{w:.1f}" height="8" '
                    f'fill="{colour}"><title>{n} {state}</title></rect>'
                )
                offset += w
        summary = " · ".join(f"{counts[s]} {s.lower()}" for s in STATE_COLOURS if counts.get(s))
        full = f"{total} tasks: {summary}"
        line = f"{escape(_clip(full, 40))}<title>{escape(full)}</title>"
        body.append(f'<text class="counts" x="{x + 8}" y="{y + 52}">{line}</text>')
    else:
        detail = (resources or {}).get(node.executable, node.executable)
        body.append(f'<text class="counts" x="{x + 8}" y="{y + 40}">{escape(_clip(detail, 35))}</text>')
    title = f"<title>{escape(node.name)} ({escape(node.executable)})</title>"
    inner = title + "".join(body)
    if link is not None:
        href = f"{link}{quote(node.name, safe='')}"
        return f'<a class="step" href="{escape(href)}" data-step="{escape(node.name)}"><g class="node">{inner}</g></a>'
    return f'<g class="node">{inner}</g>'


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"

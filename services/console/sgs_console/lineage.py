"""A dataset's lineage as a graph: its inputs (up) to the left, its products (down) to the right."""

from __future__ import annotations

from typing import Any

from markupsafe import Markup, escape

BOX_W, BOX_H, GAP_X, GAP_Y, PAD = 210, 56, 60, 12, 12
MAX_PER_COLUMN = 40
# What fits in a box (12 px bold title, 11 px lines; measured in Chromium's default sans-serif).
TITLE_CHARS, LINE_CHARS = 26, 32


def data_id_text(node: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted((node.get("data_id") or {}).items()))


def label(node: dict[str, Any]) -> str:
    return f"{node.get('dataset_type')} {data_id_text(node)}"


def clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def column_order(node: dict[str, Any]) -> tuple[str, list[tuple[str, str]]]:
    """Each column by type, then data ID: an input and its product sit on the same row, their edges parallel."""
    return str(node.get("dataset_type")), sorted((k, f"{v:>12}") for k, v in (node.get("data_id") or {}).items())


def lineage_svg(dataset: dict[str, Any], up: dict[str, Any], down: dict[str, Any]) -> Markup:
    columns: dict[int, list[dict[str, Any]]] = {0: [dict(dataset, depth=0)]}
    for node in up.get("nodes") or []:
        if int(node["depth"]) > 0:
            columns.setdefault(-int(node["depth"]), []).append(node)
    for node in down.get("nodes") or []:
        if int(node["depth"]) > 0:
            columns.setdefault(int(node["depth"]), []).append(node)
    order = sorted(columns)
    for nodes in columns.values():
        nodes.sort(key=column_order)
    position: dict[str, tuple[float, float]] = {}
    for i, key in enumerate(order):
        for j, node in enumerate(columns[key][:MAX_PER_COLUMN]):
            position[str(node["id"])] = (PAD + i * (BOX_W + GAP_X), PAD + j * (BOX_H + GAP_Y))
    rows = max(min(len(c), MAX_PER_COLUMN) for c in columns.values())
    width = PAD * 2 + len(order) * (BOX_W + GAP_X) - GAP_X
    height = PAD * 2 + rows * (BOX_H + GAP_Y)
    parts = [
        f'<svg class="graph" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="lineage">'
    ]
    for edge in [*(up.get("edges") or []), *(down.get("edges") or [])]:
        src, dst = position.get(str(edge["input"])), position.get(str(edge["output"]))
        if src and dst:
            x1, y1, x2, y2 = src[0] + BOX_W, src[1] + BOX_H / 2, dst[0], dst[1] + BOX_H / 2
            mid = (x1 + x2) / 2
            parts.append(f'<path class="edge" d="M {x1} {y1} C {mid} {y1}, {mid} {y2}, {x2} {y2}"/>')
    for key in order:
        for node in columns[key][:MAX_PER_COLUMN]:
            x, y = position[str(node["id"])]
            css = "node root" if key == 0 else "node"
            parts.append(node_box(node, x, y, css))
    parts.append("</svg>")
    truncated = up.get("truncated") or down.get("truncated") or any(len(c) > MAX_PER_COLUMN for c in columns.values())
    note = '<p class="muted">Lineage cut short: more nodes than drawn.</p>' if truncated else ""
    return Markup("".join(parts) + note)


def node_box(node: dict[str, Any], x: float, y: float, css: str) -> str:
    """A dataset as a link: its type, its data ID and its RUN collection, each clipped to the box (whole in
    the tooltip)."""
    lines = [
        ("title", 17, clip(str(node.get("dataset_type")), TITLE_CHARS)),
        ("counts", 32, clip(data_id_text(node), LINE_CHARS)),
        ("counts", 47, clip(str(node.get("run", "")), LINE_CHARS)),
    ]
    texts = "".join(f'<text class="{c}" x="{x + 8}" y="{y + dy}">{escape(t)}</text>' for c, dy, t in lines)
    return (
        f'<a href="/archive/datasets/{escape(str(node["id"]))}"><g class="{css}">'
        f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="6"/>'
        f"<title>{escape(label(node))} ({escape(str(node.get('run', '')))})</title>{texts}</g></a>"
    )

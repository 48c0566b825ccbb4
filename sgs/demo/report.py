"""What the archive holds after the demo, read back over its HTTP API: datasets per type, where the data is,
and how one source catalogue was made, back to its raw exposures."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from rich.table import Table
from rich.tree import Tree

from sgs.demo.http_archive import HttpArchive

LINEAGE_DEPTH = 30
CATALOG_TYPE = "nir_catalog"


@dataclass(frozen=True)
class SiteHoldings:
    site: str
    replicas: int
    bytes: int
    by_type: dict[str, int]


@dataclass(frozen=True)
class ArchiveReport:
    url: str
    datasets_by_type: dict[str, int]
    sites: list[SiteHoldings]
    placements: int
    catalog: dict[str, Any] | None = None
    lineage: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def datasets(self) -> int:
        return sum(self.datasets_by_type.values())

    @property
    def replicas(self) -> int:
        return sum(s.replicas for s in self.sites)


def read_report(archive: HttpArchive, sites: list[str], observation: int | None) -> ArchiveReport:
    """Query the archive (never the demo's own bookkeeping) for the summary."""
    datasets = list(archive.datasets())
    type_of = {d["id"]: d["dataset_type"] for d in datasets}
    holdings = []
    for site in sites:
        replicas = list(archive.replicas_at(site))
        holdings.append(
            SiteHoldings(
                site=site,
                replicas=len(replicas),
                bytes=sum(int(r["size"]) for r in replicas),
                by_type=dict(Counter(type_of.get(r["dataset_id"], "?") for r in replicas)),
            )
        )
    catalog = lineage = None
    if observation is not None:
        found = list(archive.datasets(CATALOG_TYPE, where=f"observation = {observation}"))
        if found:
            catalog = found[0]
            lineage = archive.lineage(catalog["id"], depth=LINEAGE_DEPTH)
    return ArchiveReport(
        url=archive.url,
        datasets_by_type=dict(sorted(Counter(type_of.values()).items())),
        sites=holdings,
        placements=len(archive.placements()),
        catalog=catalog,
        lineage=lineage,
    )


def format_size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def holdings_table(report: ArchiveReport) -> Table:
    """Datasets per type (rows) and the replicas each Site holds of them (columns): where the data is."""
    table = Table(title="the archive: datasets per type, replicas per Site", title_justify="left")
    table.add_column("dataset type")
    table.add_column("datasets", justify="right")
    for site in report.sites:
        table.add_column(f"@ {site.site}", justify="right")
    for dataset_type, count in report.datasets_by_type.items():
        cells = [str(site.by_type.get(dataset_type, 0) or "·") for site in report.sites]
        table.add_row(dataset_type, str(count), *cells)
    table.add_section()
    table.add_row("[bold]total", f"[bold]{report.datasets}", *(f"[bold]{s.replicas}" for s in report.sites))
    table.add_row("[dim]bytes", "", *(f"[dim]{format_size(s.bytes)}" for s in report.sites))
    return table


def _data_id(node: dict[str, Any], like: dict[str, Any] | None = None) -> str:
    """The data ID without the instrument and band every demo dataset shares (or the keys ``like`` shares)."""
    same = like["data_id"] if like is not None else {}
    return " ".join(
        f"{k}={v}" for k, v in node["data_id"].items() if k not in ("instrument", "band") and same.get(k) != v
    )


def _made_by(node: dict[str, Any]) -> str:
    provenance = node.get("provenance")
    return str(provenance["executable"]) if provenance else str(node["dataset_type"])


class _LineageView:
    """A lineage graph walked from its root toward the inputs, for printing."""

    def __init__(self, graph: dict[str, Any]) -> None:
        self.root = str(graph["root"])
        self.nodes = {str(n["id"]): n for n in graph["nodes"]}
        self.inputs: dict[str, list[str]] = {}
        for edge in graph["edges"]:
            self.inputs.setdefault(str(edge["output"]), []).append(str(edge["input"]))
        self._shapes: dict[str, tuple[Any, ...]] = {}

    def shape(self, node_id: str) -> tuple[Any, ...]:
        """How a dataset was made, recursively, ignoring which data IDs: the four dithers share one shape."""
        if node_id not in self._shapes:
            made_from = sorted(self.shape(i) for i in self.inputs.get(node_id, []))
            self._shapes[node_id] = (_made_by(self.nodes[node_id]), tuple(made_from))
        return self._shapes[node_id]

    def label(self, node_id: str) -> str:
        node = self.nodes[node_id]
        text = " ".join(filter(None, (f"[bold]{node['dataset_type']}[/]", _data_id(node))))
        if node["run"] != self.nodes[self.root]["run"]:
            text += f" [dim]in {node['run']}[/]"
        provenance = node.get("provenance")
        if provenance:
            text += f" [cyan]← {provenance['executable']}[/]"
            if provenance["task"] and provenance["task"] != provenance["executable"]:
                text += f" [dim]({provenance['task']})[/]"
        return text

    def sorted_inputs(self, node_id: str) -> list[str]:
        return sorted(
            self.inputs.get(node_id, []), key=lambda i: (self.nodes[i]["dataset_type"], _data_id(self.nodes[i]))
        )


def lineage_tree(graph: dict[str, Any]) -> Tree:
    """The catalogue's inputs, recursively. Inputs made the same way (the four dithers' calibration chains) are
    shown once in full and then listed on one line; a dataset reached again (the calibrations every dither uses)
    is shown once and then referred to, so the tree stays readable."""
    view = _LineageView(graph)
    shown = {view.root}

    def grow(tree: Tree, node_id: str) -> None:
        groups: dict[tuple[Any, ...], list[str]] = {}
        for input_id in view.sorted_inputs(node_id):
            groups.setdefault(view.shape(input_id), []).append(input_id)
        for members in groups.values():
            for done in (m for m in members if m in shown):
                node = view.nodes[done]
                tree.add(f"[dim]{node['dataset_type']} {_data_id(node)} (see above)[/]")
            fresh = [m for m in members if m not in shown]
            if not fresh:
                continue
            first, *alike = fresh
            shown.add(first)
            grow(tree.add(view.label(first)), first)
            if alike:
                names = ", ".join(_data_id(view.nodes[a], like=view.nodes[first]) for a in alike)
                tree.add(f"[dim]+ {len(alike)} more made the same way ({names})[/]")
                shown.update(alike)

    tree = Tree(view.label(view.root))
    grow(tree, view.root)
    return tree

"""Imports stay one-way: deployables import the `sgs` core; the core imports none of them (DESIGN.md).

The edges that compose deployables are exempt: the CLI (each `sgs <area>` command starts its deployable) and the
embedded demo stack.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parent.parent.parent
COMPOSERS = ("sgs/cli/", "sgs/demo/")
DEPLOYABLES = {"sgs_operator", "sgs_archive", "sgs_transfer", "sgs_bridge", "sgs_console"}
PURE = ("sgs/planner", "sgs/model", "sgs/dsl", "sgs/naming.py")
IO_MODULES = {"subprocess", "socket", "sqlite3", "psycopg", "httpx", "requests", "nats", "minio", "kopf"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _files(*roots: str) -> list[Path]:
    files: list[Path] = []
    for root in roots:
        path = ROOT / root
        files.extend([path] if path.is_file() else sorted(path.rglob("*.py")))
    return files


def test_core_imports_no_deployable() -> None:
    core = [p for p in _files("sgs") if not str(p.relative_to(ROOT)).startswith(COMPOSERS)]
    offenders = {str(p.relative_to(ROOT)): _imports(p) & DEPLOYABLES for p in core}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_pure_core_does_no_io() -> None:
    offenders = {str(p.relative_to(ROOT)): _imports(p) & IO_MODULES for p in _files(*PURE)}
    assert {k: v for k, v in offenders.items() if v} == {}

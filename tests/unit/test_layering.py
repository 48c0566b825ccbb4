"""Imports stay one-way (DESIGN.md), checked by import-linter's contracts in pyproject.toml (also `make lint`):
deployables import the `sgs` core and never each other; the core imports no deployable except where the CLI and
the embedded demo compose them; the pure core (planner, model, dsl, naming) does no I/O.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = ROOT / "pyproject.toml"


def _settings() -> dict[str, Any]:
    settings: dict[str, Any] = tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]
    return settings


def _contract(kind: str, source: str | None = None) -> dict[str, Any]:
    for contract in _settings()["contracts"]:
        if contract["type"] == kind and (source is None or contract.get("source_modules") == [source]):
            found: dict[str, Any] = contract
            return found
    raise AssertionError(f"no {kind} contract for {source}")


def _deployables() -> set[str]:
    """Every top-level package of a deployable folder (operators/, services/<name>/)."""
    folders = [ROOT / "operators", *sorted((ROOT / "services").iterdir())]
    return {p.parent.name for folder in folders for p in folder.glob("*/__init__.py") if p.parent.name != "tests"}


def test_the_import_contracts_are_kept() -> None:
    assert lint_imports(config_filename=str(PYPROJECT), no_cache=True, no_logo=True) == 0


def test_every_deployable_is_under_the_contracts() -> None:
    """A new deployable (services/<name>/) is not silently exempt: it must be named in each contract."""
    deployables = _deployables()
    assert deployables, "no deployable packages found"
    assert set(_settings()["root_packages"]) == {"sgs", *deployables}
    assert set(_contract("independence")["modules"]) == deployables
    assert set(_contract("forbidden", "sgs")["forbidden_modules"]) == deployables

"""The README's two commands work in either order: `make test` after command 1 still installs the test extras."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).parent.parent.parent


def _make_dry_run(workdir: Path) -> str:
    done = subprocess.run(
        ["make", "-n", "install"], cwd=workdir, capture_output=True, text=True, check=True, timeout=30
    )
    return done.stdout


def _checkout_with_venv(tmp_path: Path) -> Path:
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "sgs").touch()  # what README command 1 (`pip install -e .`) leaves: sgs without pytest
    return tmp_path


def test_install_after_readme_command_one_adds_the_test_extras(tmp_path: Path) -> None:
    checkout = _checkout_with_venv(tmp_path)
    assert "pip install -q -e '.[dev]'" in _make_dry_run(checkout)


def test_install_is_a_no_op_once_the_test_extras_are_in(tmp_path: Path) -> None:
    checkout = _checkout_with_venv(tmp_path)
    (checkout / ".venv" / ".sgs-dev-installed").touch()
    assert "pip install" not in _make_dry_run(checkout)

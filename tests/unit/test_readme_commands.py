"""The README's two commands work in either order: `make test` after command 1 still installs the test extras."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
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


def test_readme_command_one_after_make_install_keeps_the_test_extras(tmp_path: Path) -> None:
    """The other order: `make install` first, then command 1 (whose `python3 -m venv .venv` runs over the
    existing venv), then `make test` again: nothing to reinstall, the stamp still true."""
    checkout = _checkout_with_venv(tmp_path)
    stamp = checkout / ".venv" / ".sgs-dev-installed"
    stamp.touch()
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", ".venv"], cwd=checkout, check=True, timeout=60)

    assert stamp.is_file()
    assert "pip install" not in _make_dry_run(checkout)


def test_an_edited_pyproject_installs_again(tmp_path: Path) -> None:
    checkout = _checkout_with_venv(tmp_path)
    stamp = checkout / ".venv" / ".sgs-dev-installed"
    stamp.touch()
    later = stamp.stat().st_mtime + 10
    os.utime(checkout / "pyproject.toml", (later, later))  # a pull that changed the dependencies

    assert "pip install -q -e '.[dev]'" in _make_dry_run(checkout)


def _tour_lines(text: str) -> list[str]:
    """Command lines, their comments and blank lines dropped."""
    lines = (re.sub(r"\s+#\s.*$", "", line).strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def test_the_readme_tour_shows_exactly_the_tour_script() -> None:
    script = (ROOT / "examples" / "tour.sh").read_text().split("# --- the tour", 1)[1].split("\n", 1)[1]
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## A tour on the dev stack", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]

    assert _tour_lines(block) == _tour_lines(script)
    assert "sgs dev up" in _tour_lines(block)[0]


def test_the_opentelemetry_instrumentations_come_from_one_release() -> None:
    """Each pins opentelemetry-instrumentation to its own release: open ranges made the pip of a fresh venv
    (23.x, README command 1) give up with ResolutionImpossible (httpx 0.66b2 beside fastapi 0.66b1)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = [r for r in project["dependencies"] if r.startswith("opentelemetry-instrumentation-")]

    assert len(pins) >= 2
    assert all("==" in r for r in pins), pins
    assert len({r.split("==", 1)[1] for r in pins}) == 1, pins

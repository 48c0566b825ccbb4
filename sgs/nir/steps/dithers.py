"""The four dithers of one observation out of a list input (``sgs demo --stack``).

A trigger binds an observation's raw exposures to one pipeline input, which a task receives as a JSON file
holding the list of their paths (in data-ID order: exposure ascending); the NIR pipeline takes its dithers as
four inputs. This step copies each to its own output (copies, not links: a Run's outputs are its own files).
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from sgs.nir.fitsio import NirDataError
from sgs.nir.steps._cli import run_step

OUTPUTS = ("dither1", "dither2", "dither3", "dither4")


def exposure_paths(value: str) -> list[Path]:
    """The paths a list input holds (a JSON list file), or the one path given."""
    path = Path(value)
    try:
        listed = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError):
        return [path]
    except OSError as err:
        raise NirDataError(f"exposures: cannot read {value}: {err}") from err
    if not isinstance(listed, list) or not all(isinstance(item, str) for item in listed):
        raise NirDataError(f"exposures: {value} must hold a JSON list of paths")
    return [Path(item) for item in listed]


def split(inputs: dict[str, str], outputs: dict[str, Path]) -> str:
    paths = exposure_paths(inputs["exposures"])
    if len(paths) != len(OUTPUTS):
        raise NirDataError(f"exposures: expected {len(OUTPUTS)} dithers, got {len(paths)}")
    for source, name in zip(paths, OUTPUTS, strict=True):
        shutil.copyfile(source, outputs[name])
    return f"{len(paths)} dithers"


def main(argv: Sequence[str] | None = None) -> int:
    return run_step("sgs-nir-dithers", ["exposures"], OUTPUTS, split, argv)


if __name__ == "__main__":
    sys.exit(main())

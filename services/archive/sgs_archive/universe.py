"""Loading the dimension universe from YAML (the packaged default, or a file named by the settings)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml
from pydantic import ValidationError

from sgs.model.dataset import DimensionUniverse


class UniverseError(ValueError):
    """The universe file cannot be read or does not describe a consistent universe."""


def load_universe(path: Path | None = None) -> DimensionUniverse:
    """The universe in ``path``, or the packaged ``dimensions.yaml`` when no path is given."""
    if path is None:
        text = resources.files("sgs_archive").joinpath("dimensions.yaml").read_text(encoding="utf-8")
        origin = "packaged dimensions.yaml"
    else:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise UniverseError(f"cannot read dimension universe {path}: {error}") from error
        origin = str(path)
    try:
        return DimensionUniverse.model_validate(yaml.safe_load(text))
    except (yaml.YAMLError, ValidationError) as error:
        raise UniverseError(f"invalid dimension universe in {origin}: {error}") from error

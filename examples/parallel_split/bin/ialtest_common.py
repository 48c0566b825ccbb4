"""Helpers shared by the ialtest programs: small JSON 'images' (2-D lists of floats) and argument parsing."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def parse(description: str, inputs: list[str], outputs: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    for name in inputs + outputs:
        parser.add_argument(f"--{name}", required=True)
    return parser.parse_args()


def load(path: str) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        sys.exit(f"cannot read {path}: {err}")


def save(path: str, data: Any) -> None:
    Path(path).write_text(json.dumps(data))


def pixels(image: dict[str, Any]) -> list[list[float]]:
    data = image.get("pixels")
    if not isinstance(data, list) or not data or not all(isinstance(row, list) for row in data):
        sys.exit(f"image {image.get('name', '?')} has no 2-D 'pixels' array")
    return data

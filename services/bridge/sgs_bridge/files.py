"""Small JSON files that survive crashes: what runners and providers leave beside each pod."""

from __future__ import annotations

import json
from pathlib import Path


def write_json_atomically(path: Path, data: object) -> None:
    """Readers see the old file or the whole new one, never half of it (a crash mid-write included)."""
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(json.dumps(data))
    temporary.replace(path)


def read_json(path: Path) -> dict[str, object] | None:
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None

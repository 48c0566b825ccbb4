"""``python -m sgs.task [--manifest FILE] -- <command>``: the wrapper without the whole CLI's imports."""

from __future__ import annotations

import sys
from pathlib import Path

from sgs.task.execute import main


def run(args: list[str]) -> int:
    manifest: Path | None = None
    if args[:1] == ["exec"]:
        args = args[1:]
    if args[:1] == ["--manifest"] and len(args) > 1:
        manifest, args = Path(args[1]), args[2:]
    if args[:1] == ["--"]:
        args = args[1:]
    return main(args, manifest)


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))

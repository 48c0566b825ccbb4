"""Shared command-line handling of the ``sgs-nir-*`` executables.

The executor calls ``<command> --<input>=<path> ... --<output>=<path>``; argparse (not Typer) keeps the
start-up of these short-lived processes small. Bad or missing input goes to stderr as one line and the exit
status is 1.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from sgs.nir.fitsio import NirDataError

StepAction = Callable[[dict[str, str], dict[str, Path]], str]


def parse_ports(command: str, inputs: Sequence[str], outputs: Sequence[str], argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=command, description=f"{command}: one step of the NIR pipeline")
    for name in inputs:
        parser.add_argument(f"--{name}", required=True, metavar="PATH", help=f"input {name}")
    for name in outputs:
        parser.add_argument(f"--{name}", required=True, metavar="PATH", help=f"output {name}")
    return parser.parse_args(list(argv))


def run_step(
    command: str,
    inputs: Sequence[str],
    outputs: Sequence[str],
    action: StepAction,
    argv: Sequence[str] | None = None,
) -> int:
    """Parse the ports, run ``action`` and report; returns the process exit status."""
    args = parse_ports(command, inputs, outputs, sys.argv[1:] if argv is None else argv)
    values = vars(args)
    started = time.perf_counter()
    try:
        summary = action({name: values[name] for name in inputs}, {name: Path(values[name]) for name in outputs})
    except (NirDataError, OSError) as exc:  # anything else is a bug: let the traceback show
        print(f"{command}: error: {exc}", file=sys.stderr)
        return 1
    print(f"{command}: {summary} ({time.perf_counter() - started:.2f} s)")
    return 0

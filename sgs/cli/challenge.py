"""`sgs challenge SITE`: prove a Site works (after an upgrade) by running the Dummy Pipeline suite there."""

from __future__ import annotations

import sys
from typing import Annotated

import typer


def challenge_command(
    site: Annotated[str, typer.Argument(help="The Site to challenge (a Site resource in --site-namespace)")],
    site_namespace: Annotated[str, typer.Option(help="Namespace of the Site resource and its Secrets")] = "default",
    timeout: Annotated[float, typer.Option(min=10, help="Seconds to wait for the suite's Runs")] = 180.0,
    python: Annotated[
        str, typer.Option(help="Interpreter at the Site that runs `-m sgs.challenge.tasks` (default: this one)")
    ] = sys.executable,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the challenge's namespace for a look")] = False,
) -> None:
    """Run every feature's Run at SITE through the operator and print a pass/fail table; exit 1 on any failure."""
    from sgs.challenge.runner import ChallengeOptions, run_challenge
    from sgs.challenge.suite import exit_code, render
    from sgs.demo.stack import StackError, find_stack

    try:
        target = find_stack()
        rows = run_challenge(
            target,
            ChallengeOptions(site, site_namespace, timeout, python, keep),
            say=lambda line: print(line, flush=True),
        )
    except StackError as err:
        print(f"sgs challenge: {err}", file=sys.stderr)
        raise typer.Exit(2) from err
    print(render(rows))
    raise typer.Exit(exit_code(rows))

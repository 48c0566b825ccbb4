"""`sgs challenge SITE`: prove a Site works (after an upgrade) by running the Dummy Pipeline suite there."""

from __future__ import annotations

import sys
from typing import Annotated

import typer


def challenge_command(
    site: Annotated[str, typer.Argument(help="The Site to challenge (a Site resource in --site-namespace)")],
    other: Annotated[
        str | None,
        typer.Argument(help="A second Site: the cross-Site check (the same Pipeline and input at both, compared)"),
    ] = None,
    site_namespace: Annotated[str, typer.Option(help="Namespace of the Site resource and its Secrets")] = "default",
    timeout: Annotated[float, typer.Option(min=10, help="Seconds to wait for the suite's Runs")] = 180.0,
    python: Annotated[
        str, typer.Option(help="Interpreter at the Site that runs `-m sgs.challenge.tasks` (default: this one)")
    ] = sys.executable,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the challenge's namespace for a look")] = False,
    replica_site: Annotated[
        str | None,
        typer.Option(help="Second Site of the replication row (default: another Site the transfer service knows)"),
    ] = None,
    perturb: Annotated[
        str | None,
        typer.Option(help="Self-test of the cross-Site comparison: change this Site's input a little (must fail)"),
    ] = None,
) -> None:
    """Run every feature's Run at SITE through the operator and print a pass/fail table; exit 1 on any failure.

    With a second Site, run the cross-Site check instead: one Pipeline (one spec digest), a Run at each Site over
    the same input, and each product compared between them (sha256, or numbers within a tolerance)."""
    from sgs.challenge.runner import ChallengeOptions, CrossSiteOptions, run_challenge, run_cross_site
    from sgs.challenge.suite import exit_code, render
    from sgs.demo.stack import StackError, find_stack

    def say(line: str) -> None:
        print(line, flush=True)

    try:
        if perturb is not None and perturb not in (site, other):
            raise StackError(f"--perturb {perturb}: not one of the two Sites compared")
        target = find_stack()
        if other is None:
            one = ChallengeOptions(site, site_namespace, timeout, python, keep, replica_site=replica_site)
            rows = run_challenge(target, one, say=say)
        else:
            if other == site:
                raise StackError("the cross-Site check needs two different Sites")
            options = CrossSiteOptions((site, other), site_namespace, timeout, python, keep, perturb=perturb)
            rows = run_cross_site(target, options, say=say)
    except StackError as err:
        print(f"sgs challenge: {err}", file=sys.stderr)
        raise typer.Exit(2) from err
    print(render(rows))
    raise typer.Exit(exit_code(rows))

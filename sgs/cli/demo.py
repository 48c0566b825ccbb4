"""`sgs demo`: the README's first command — a tiny survey processed end to end on this machine."""

from __future__ import annotations

import signal
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from rich.console import Console


def _exit_on_sigterm(signum: int, _: object) -> None:
    raise SystemExit(128 + signum)


class ArchiveChoice(StrEnum):
    SERVICE = "service"
    LOCAL = "local"


def demo_command(
    root: Annotated[Path, typer.Option(help="Directory for the Sites, runs, archive record and preview")] = Path(
        "sgs-demo"
    ),
    observations: Annotated[
        int | None, typer.Option(min=1, max=60, help="Observations to simulate (default 6; with --stack 2)")
    ] = None,
    tiles: Annotated[int | None, typer.Option(min=1, max=20, help="Sky tiles they cover (default 2)")] = None,
    sites: Annotated[int, typer.Option(min=1, max=9, help="Sites (local directories)")] = 3,
    parallel: Annotated[int, typer.Option(min=1, max=16, help="Observations processed at once")] = 2,
    cores: Annotated[int | None, typer.Option(min=1, help="Cores per observation run (default: all)")] = None,
    seed: Annotated[int, typer.Option(help="Simulation seed")] = 1,
    clean: Annotated[bool, typer.Option("--clean", help="Start from an empty root directory")] = False,
    archive: Annotated[
        ArchiveChoice,
        typer.Option(help="service: embedded PostgreSQL + archive service; local: a JSON-lines record"),
    ] = ArchiveChoice.SERVICE,
    keep_serving: Annotated[
        bool, typer.Option("--keep-serving", help="Keep the archive service up after the demo, until Ctrl-C")
    ] = False,
    archive_port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Port of the archive service (default: a free one)")
    ] = None,
    stack: Annotated[
        bool,
        typer.Option(
            "--stack",
            help="Run on the stack (`sgs dev up`, or KUBECONFIG + SGS_ARCHIVE_*): triggers create the Runs, "
            "the operator runs them through the bridges and registers the products",
        ),
    ] = False,
    namespace: Annotated[str, typer.Option(help="--stack: namespace of the Sites, Pipeline and Runs")] = "sgs-demo",
    timeout: Annotated[float, typer.Option(min=1, help="--stack: seconds to wait for the Runs")] = 900.0,
) -> None:
    """Simulate a small survey, run the NIR pipeline per observation at its Site, record and copy products."""
    from rich.console import Console

    console = Console(width=None if sys.stdout.isatty() else 160)
    if stack:
        _stack_demo(observations or 2, tiles or 2, seed, namespace, timeout, console)
        return

    from sgs.demo.app import DemoOptions, run_demo

    if keep_serving and archive is ArchiveChoice.LOCAL:
        raise typer.BadParameter("needs --archive service", param_hint="--keep-serving")
    options = DemoOptions(
        root,
        observations or 6,
        tiles or 2,
        sites,
        parallel,
        cores,
        seed,
        clean,
        archive.value,
        keep_serving,
        archive_port,
    )
    # `kill` (SIGTERM) unwinds like Ctrl-C, so the archive service and PostgreSQL are stopped, not orphaned.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    # Piped output (CI logs) gets a width that fits the summary tables instead of rich's 80 columns.
    result = run_demo(options, console)
    if not result.succeeded:
        raise typer.Exit(1)


def _stack_demo(observations: int, tiles: int, seed: int, namespace: str, timeout: float, console: Console) -> None:
    from sgs.demo.stack import StackError, StackOptions, run_stack_demo

    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        result = run_stack_demo(StackOptions(observations, tiles, seed, namespace, timeout), console)
    except StackError as err:
        console.print(f"[red]error:[/] {err}")
        raise typer.Exit(2) from err
    if not result.succeeded:
        raise typer.Exit(1)

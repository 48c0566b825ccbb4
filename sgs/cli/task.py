"""`sgs task exec`: what a Job at an S3 Site runs — inputs downloaded into scratch, the command, outputs uploaded."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(name="task", help="What runs inside a task's pod.", no_args_is_help=True)


@app.command("exec", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def exec_command(
    command: Annotated[list[str], typer.Argument(help="The task's command and its arguments, after '--'.")],
    manifest: Annotated[
        Path | None,
        typer.Option("--manifest", help="The task's manifest (JSON); default: the SGS_TASK_MANIFEST variable."),
    ] = None,
) -> None:
    """Download the task's inputs from its Site's S3 store into $TMPDIR (checksums verified), run the command
    (its exit status and signals pass through), and only if it succeeded upload its outputs with their size,
    adler32 and sha256."""
    from sgs.task.execute import main

    raise typer.Exit(main(command, manifest))

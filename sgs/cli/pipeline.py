"""`sgs compile`, `sgs run --local`, `sgs status`, `sgs crds`: pipelines on the developer's machine."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from sgs.dsl import DslError
from sgs.planner import Value

RUN_TABLE_ROWS = 20  # the table printed after `sgs run --local`
STATUS_TABLE_ROWS = 200
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True)

run_app = typer.Typer(
    help="Run a pipeline (`sgs run --local PIPELINE --input name=path ...`) or operate on Runs.",
    invoke_without_command=True,
    no_args_is_help=False,
)


def compile_command(
    reference: Annotated[str, typer.Argument(help="module:function, path/file.py:function, or a manifest")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write the manifest here")] = None,
) -> None:
    """Compile a pipeline script into its Pipeline manifest (YAML)."""
    from sgs.dsl.load import dump_manifest, load_pipeline

    try:
        text = dump_manifest(load_pipeline(reference))
    except (DslError, ValueError) as err:
        err_console.print(f"[red]error:[/] {err}")
        raise typer.Exit(2) from err
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text)
        err_console.print(f"wrote {output}")


def parse_inputs(pairs: list[str]) -> dict[str, Value]:
    """``name=path`` pairs; ``name=a,b,c`` or ``name=@list.json`` bind a list; repeating a name appends."""
    inputs: dict[str, Value] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"{pair!r}: expected name=path", param_hint="--input")
        parsed: Value
        if value.startswith("@"):
            data = json.loads(Path(value[1:]).read_text())
            if not isinstance(data, list):
                raise typer.BadParameter(f"{value[1:]} must hold a JSON list", param_hint="--input")
            parsed = [str(x) for x in data]
        elif "," in value:
            parsed = value.split(",")
        else:
            parsed = value
        if name in inputs:
            previous = inputs[name]
            inputs[name] = [*(previous if isinstance(previous, list) else [previous]), parsed]
        else:
            inputs[name] = parsed
    return inputs


@run_app.callback()
def run_command(
    ctx: typer.Context,
    local: Annotated[
        str | None,
        typer.Option("--local", help="Run this pipeline here (module:function, file.py:function, yaml)"),
    ] = None,
    inputs: Annotated[list[str] | None, typer.Option("--input", "-i", help="name=path (repeatable)")] = None,
    workdir: Annotated[Path | None, typer.Option(help="Work directory (default ./sgs-runs/<run-id>)")] = None,
    run_id: Annotated[str | None, typer.Option(help="Run id; reuse one to resume a stopped run")] = None,
    cores: Annotated[int | None, typer.Option(help="Cores to use at once (default: all)")] = None,
    memory: Annotated[float | None, typer.Option(help="GiB of memory to use at once (default: all)")] = None,
    gpus: Annotated[int, typer.Option(help="GPUs this machine offers")] = 0,
    path: Annotated[list[Path] | None, typer.Option(help="Directory prepended to PATH for the commands")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar")] = True,
) -> None:
    if ctx.invoked_subcommand is not None:
        return
    if local is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(2)
    from sgs.dsl.load import load_pipeline
    from sgs.local import LocalRunError, run_local
    from sgs.local.status import print_status

    try:
        pipeline = load_pipeline(local)
        bound = parse_inputs(inputs or [])
    except (DslError, ValueError, OSError) as err:
        err_console.print(f"[red]error:[/] {err}")
        raise typer.Exit(2) from err
    workdir = workdir or Path("sgs-runs") / (run_id or pipeline.metadata.name)
    extra = list(path or []) + _bin_beside(local)
    try:
        result = run_local(
            pipeline,
            bound,
            workdir,
            run_id=run_id,
            cores=cores,
            memory_gib=memory,
            gpus=gpus,
            progress=progress,
            extra_path=extra,
        )
    except LocalRunError as err:
        err_console.print(f"[red]error:[/] {err}")
        raise typer.Exit(2) from err
    print_status(workdir, console, limit=RUN_TABLE_ROWS)
    if not result.succeeded:
        raise typer.Exit(1)


def _bin_beside(reference: str) -> list[Path]:
    """A ``bin/`` directory next to a pipeline file holds its programs: put it on PATH."""
    file = Path(reference.partition(":")[0])
    candidate = file.parent / "bin"
    return [candidate] if file.suffix in (".py", ".yaml", ".yml") and candidate.is_dir() else []


def status_command(
    workdir: Annotated[Path, typer.Argument(help="Work directory of a local run")],
    task: Annotated[str | None, typer.Option(help="Show one task in detail")] = None,
    lineage: Annotated[bool, typer.Option(help="Also list every product with the inputs it used")] = False,
    show_all: Annotated[bool, typer.Option("--all", help=f"List every task (default: {STATUS_TABLE_ROWS})")] = False,
) -> None:
    """Show a run like the Euclid Pipeline Run Server: tasks, durations, retries, used vs requested, lineage."""
    from sgs.local.status import print_status, print_task

    try:
        if task is None:
            print_status(workdir, console, lineage=lineage, limit=None if show_all else STATUS_TABLE_ROWS)
        else:
            print_task(workdir, task, console)
    except (FileNotFoundError, KeyError) as err:
        err_console.print(f"[red]error:[/] {err}")
        raise typer.Exit(2) from err


def crds_command(
    out: Annotated[Path, typer.Option(help="Directory of the generated CRDs")] = Path("crds"),
    check: Annotated[bool, typer.Option(help="Only check that the committed CRDs are up to date")] = False,
    chart: Annotated[
        Path, typer.Option(help="Helm chart whose CRD copies and values.schema.json are generated too (if present)")
    ] = Path("charts/sgs"),
) -> None:
    """Generate the CustomResourceDefinitions from the domain model (and the Helm chart's copies and schema)."""
    from sgs.chart import stale_chart_files, write_chart_files
    from sgs.crds import stale_crds, write_crds

    # Outside a checkout there is no chart: only the CRDs.
    with_chart = (chart / "Chart.yaml").is_file()
    if check:
        stale = stale_crds(out) + (stale_chart_files(chart) if with_chart else [])
        if stale:
            err_console.print(f"[red]out of date:[/] {', '.join(map(str, stale))} — run `sgs crds`")
            raise typer.Exit(1)
        console.print("CRDs are up to date")
        return
    for path in write_crds(out) + (write_chart_files(chart) if with_chart else []):
        console.print(f"wrote {path}")

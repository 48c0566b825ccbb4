"""`sgs dev`: build the Go binaries; run the real dev stack (PostgreSQL, NATS, MinIO, Kubernetes, Slurm)."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from sgs.dev.stack import PartState

app = typer.Typer(name="dev", help="Run the real dev stack on this machine.", no_args_is_help=True)
console = Console()
ALL_PARTS = "pg,nats,minio,kube,slurm,prometheus,jaeger,archive,transfer,sgs"

PARTS_HELP = (
    "Comma-separated subset of: pg, nats, minio, kube, slurm, prometheus, jaeger, archive (needs pg, nats), "
    "transfer (the transfer service and a worker; needs pg, nats, minio, archive), sgs (the operator and one bridge "
    "node per dev Site; needs pg and kube), remote (a second control plane as the cluster Site site-r, with its own "
    "operator and bridge when sgs runs)."
)
PartsOption = Annotated[str, typer.Option("--parts", help=PARTS_HELP)]
# `up` also reads $SGS_DEV_PARTS, so a script (examples/tour.sh) runs as shown and a test can shrink the stack.
UpPartsOption = Annotated[str, typer.Option("--parts", envvar="SGS_DEV_PARTS", help=PARTS_HELP)]


def _parts(spec: str) -> list[str]:
    from sgs.dev.stack import parse_parts

    try:
        return parse_parts(spec)
    except ValueError as err:
        raise typer.BadParameter(str(err).removeprefix("--parts: "), param_hint="--parts") from err


def _report(unit: str, message: str) -> None:
    style = "red" if message.startswith("FAILED") else "green"
    console.print(f"  [{style}]{unit:<14}[/{style}] {message}")


@app.command()
def build(
    names: Annotated[list[str] | None, typer.Argument(help="Binaries to build (default: all).")] = None,
) -> None:
    """Build (or reuse) etcd, kube-apiserver/-controller-manager/-scheduler, kubectl, MinIO and Jaeger."""
    from sgs.testing.binaries import BUILD_SCRIPT

    if not BUILD_SCRIPT.is_file():
        console.print(f"[red]{BUILD_SCRIPT} not found: `sgs dev build` needs a source checkout[/red]")
        raise typer.Exit(2)
    result = subprocess.run(["bash", str(BUILD_SCRIPT), *(names or [])], check=False)
    raise typer.Exit(result.returncode)


SitesOption = Annotated[
    int,
    typer.Option(
        "--sites",
        min=1,
        max=2,
        help="Control planes: 2 adds part remote (a second cluster, the cluster Site site-r): --parts ...,remote.",
    ),
]


@app.command()
def up(parts: UpPartsOption = ALL_PARTS, sites: SitesOption = 1) -> None:
    """Start the stack (or the parts named) detached; prints endpoints and writes the env file."""
    from sgs.dev import stack

    chosen = _parts(parts + (f",{stack.REMOTE_PART}" if sites == 2 else ""))
    console.print(f"starting {', '.join(chosen)} (state in {stack.dev_dir()})")
    started = time.monotonic()
    try:
        state = stack.up(chosen, _report)
    except RuntimeError as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(1) from err
    console.print(f"stack ready in {time.monotonic() - started:.1f} s")
    _print_units(state)
    _print_urls(state)
    console.print(f'environment: [bold]source {stack.env_file()}[/bold]  (or: eval "$(sgs dev env)")')


@app.command()
def down(
    parts: PartsOption = f"{ALL_PARTS},remote",
    purge: Annotated[bool, typer.Option(help="Also delete the parts' data directories.")] = False,
) -> None:
    """Stop the stack (or the parts named)."""
    from sgs.dev import stack

    stack.down(_parts(parts), purge=purge, report=_report)


@app.command()
def status(
    units: Annotated[
        list[str] | None, typer.Argument(help="Only these units: exit 1 unless each one runs (a readiness probe).")
    ] = None,
) -> None:
    """Show which parts run, their endpoints and memory; exit 1 if one of them died."""
    from sgs.dev import stack

    state = stack.load_state()
    missing = [name for name in units or [] if name not in state]
    if units:
        state = {name: unit for name, unit in state.items() if name in units}
    if not state:
        console.print(
            "nothing running (start with `sgs dev up`)" if not units else f"not running: {', '.join(missing)}"
        )
        raise typer.Exit(1 if units else 0)
    _print_units(state)
    _print_urls(state)
    if missing:
        console.print(f"[red]not running: {', '.join(missing)}[/red]")
    if missing or not all(all(unit.alive()) for unit in state.values()):
        raise typer.Exit(1)


@app.command()
def serve(
    unit: Annotated[str, typer.Argument(help="archive, transfer, operator, bridge-site-a, trigger, console, ...")],
) -> None:
    """Run one unit in the foreground, as `up` would start it (Tilt's serve_cmd): its log on stdout, stopped on
    Ctrl-C or SIGTERM; exit 1 if it dies. A copy already running is stopped first; the services keep their port."""
    from sgs.dev.serve import serve as serve_unit

    if isinstance(sys.stdout, io.TextIOWrapper):  # Tilt reads a pipe: each line as it comes, not a buffer at exit
        sys.stdout.reconfigure(line_buffering=True)
    raise typer.Exit(serve_unit(unit, _report))


@app.command()
def env() -> None:
    """Print the stack's environment as shell exports: eval \"$(sgs dev env)\"."""
    from sgs.dev import stack

    path = stack.env_file()
    if path.is_file():
        typer.echo(path.read_text(), nl=False)


def _print_units(state: dict[str, PartState]) -> None:
    table = Table("unit", "alive", "memory", "endpoint", "work dir")
    for column in table.columns[3:]:
        column.overflow = "fold"
    total = 0
    for name, unit in state.items():
        alive = unit.alive()
        memory = unit.memory_bytes()
        total += memory
        endpoint = next(
            (str(unit.info[k]) for k in ("dsn", "url", "endpoint", "server", "slurm_conf") if k in unit.info),
            "",
        )
        table.add_row(name, f"{sum(alive)}/{len(alive)}", f"{memory / 2**20:.0f} MiB", endpoint, unit.workdir)
    console.print(table)
    console.print(f"memory of the stack: {total / 2**20:.0f} MiB")


def _print_urls(state: dict[str, PartState]) -> None:
    from sgs.dev.observability import urls

    for what, url in urls(state).items():
        console.print(f"{what}: [bold]{url}[/bold]")

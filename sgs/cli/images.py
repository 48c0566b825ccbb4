"""`sgs images build|list|prune|lock`: the deployables' OCI images, built without a Docker daemon (sgs.images)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(help="Reproducible OCI images of sgs, built without a container daemon.", no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)

CacheOption = Annotated[
    Path | None, typer.Option("--cache-dir", help="Where images are built ($SGS_IMAGES_CACHE, ~/.cache/sgs/images)")
]


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


@app.command("build")
def build_command(
    names: Annotated[list[str] | None, typer.Argument(help="Images to build (default: all)")] = None,
    cache_dir: CacheOption = None,
) -> None:
    """Build images (mmdebstrap + chroot + umoci, as root): an OCI layout and an OCI archive each; unchanged
    inputs reuse the cached build."""
    from sgs.images import IMAGE_NAMES, ImageBuilder, ImageBuildError
    from sgs.images.dockerfile import DockerfileError

    started = time.monotonic()

    def progress(line: str) -> None:
        err_console.print(f"[dim]{time.monotonic() - started:6.1f} s[/] {line}", soft_wrap=True)

    try:
        images = ImageBuilder(cache_dir=cache_dir, progress=progress).build(names or IMAGE_NAMES)
    except (ImageBuildError, DockerfileError) as err:
        err_console.print(f"[red]error:[/] {err}")
        raise typer.Exit(2) from err
    for image in images:
        reused = " (cached)" if image.reused else ""
        # Plain lines (no wrapping): scripts read the digest from them.
        typer.echo(
            f"{image.name}:{image.tag} {image.digest} {_mib(image.size)} built in {image.build_seconds:.1f} s{reused}"
        )
        typer.echo(f"  {image.tarball}")


@app.command("list")
def list_command(cache_dir: CacheOption = None) -> None:
    """The images of this checkout: built for the current sources (digest, size) or not."""
    from sgs.images import ImageBuilder, ImageBuildError

    try:
        cached = ImageBuilder(cache_dir=cache_dir).cached()
    except ImageBuildError as err:
        err_console.print(f"[red]error:[/] {err}")
        raise typer.Exit(2) from err
    for name, image in cached:
        if image is None:
            typer.echo(f"{name}: not built for these sources (sgs images build {name})")
        else:
            typer.echo(
                f"{name}:{image.tag} {image.digest} {_mib(image.size)} built in {image.build_seconds:.1f} s"
                f"  {image.tarball}"
            )


@app.command("prune")
def prune_command(cache_dir: CacheOption = None) -> None:
    """Remove the cached builds of other sources than this checkout's (keeps what `list` shows as built)."""
    from sgs.images import ImageBuilder

    removed = ImageBuilder(cache_dir=cache_dir).prune()
    for entry in removed:
        typer.echo(f"removed {entry}")
    typer.echo(f"{len(removed)} cached builds removed")


@app.command("lock")
def lock_command() -> None:
    """Rewrite images/requirements.lock: the runtime dependencies at this environment's (tested) versions."""
    from sgs.images.build import repo_root, write_lock

    repo = repo_root()
    count = write_lock(repo, repo / "images" / "requirements.lock")
    console.print(f"images/requirements.lock: {count} pinned packages")

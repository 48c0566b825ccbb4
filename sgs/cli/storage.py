"""`sgs storage`: look into Sites' stores and copy between them with sgs.storage — the code transfers use.

Sites come from a Sites file (``--sites``, the embedded default) or from the Site resources of the cluster the
kubeconfig points at (``--namespace``). Objects are named ``SITE:KEY``.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
from rich.table import Table

from sgs.model.checksum import Adler32, Checksums
from sgs.storage import StorageError, Store, copy, replica_key, verify
from sgs.storage.sites import Sites, SitesFileError, load_sites_file

app = typer.Typer(
    name="storage", help="Sites' stores: list, copy (verified), verify, replica keys.", no_args_is_help=True
)
console = Console(soft_wrap=True)  # keys, URIs and digests stay whole, so they can be copied

SitesOption = Annotated[
    Path | None,
    typer.Option("--sites", envvar="SGS_SITES_FILE", help="Sites file (Site + Secret manifests); else the cluster."),
]
NamespaceOption = Annotated[
    str | None, typer.Option("--namespace", "-n", help="Namespace of the Site resources (default: all).")
]


def _sites(sites_file: Path | None, namespace: str | None) -> Sites:
    if sites_file is not None:
        try:
            return load_sites_file(sites_file)
        except SitesFileError as error:
            console.print(f"[red]error[/red] {error}")
            raise typer.Exit(2) from None
    from sgs.kube import KubeClient
    from sgs.storage.site_watch import load_sites_from_cluster

    async def read() -> Sites:
        client = await KubeClient.connect()
        try:
            return await load_sites_from_cluster(client, namespace)
        finally:
            await client.close()

    return asyncio.run(read())


def _store(sites: Sites, name: str) -> Store:
    try:
        return sites[name].store()
    except KeyError as error:
        console.print(f"[red]error[/red] {error.args[0]}")
        raise typer.Exit(2) from None


def _object(text: str) -> tuple[str, str]:
    site, sep, key = text.partition(":")
    if not sep or not site:
        raise typer.BadParameter(f"{text!r}: expected SITE:KEY")
    return site, key


@app.command("ls")
def list_objects(
    site: Annotated[str, typer.Argument(help="Site name, optionally SITE:PREFIX.")],
    sites_file: SitesOption = None,
    namespace: NamespaceOption = None,
    limit: Annotated[int, typer.Option(help="Show at most this many objects.")] = 100,
) -> None:
    """Objects of a Site's store under a key prefix."""
    name, _, prefix = site.partition(":")
    store = _store(_sites(sites_file, namespace), name)
    table = Table("key", "size", "modified")
    shown = 0
    try:
        for info in store.list(prefix):
            if shown == limit:
                break
            table.add_row(
                info.key, f"{info.size:,}", info.modified.isoformat(timespec="seconds") if info.modified else ""
            )
            shown += 1
    except StorageError as error:
        console.print(f"[red]error[/red] {error}")
        raise typer.Exit(1) from None
    console.print(table)
    console.print(f"{shown} objects shown from {store!r}" + (" (--limit reached)" if shown == limit else ""))


def _expected(size: int | None, adler32: str | None, sha256: str | None) -> Checksums | None:
    given = [size is not None, adler32 is not None, sha256 is not None]
    if not any(given):
        return None
    if not all(given):
        raise typer.BadParameter("give --size, --adler32 and --sha256 together (or none)")
    assert size is not None and adler32 is not None and sha256 is not None
    try:
        return Checksums(size=size, adler32=Adler32.parse(adler32), sha256=sha256)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None


SizeOption = Annotated[int | None, typer.Option(help="Expected size in bytes.")]
AdlerOption = Annotated[str | None, typer.Option(help="Expected adler32 (1-8 hex digits).")]
ShaOption = Annotated[str | None, typer.Option(help="Expected sha256.")]


@app.command("cp")
def copy_command(
    source: Annotated[str, typer.Argument(help="SITE:KEY to copy.")],
    destination: Annotated[str, typer.Argument(help="SITE[:KEY] (the same key when omitted).")],
    sites_file: SitesOption = None,
    namespace: NamespaceOption = None,
    size: SizeOption = None,
    adler32: AdlerOption = None,
    sha256: ShaOption = None,
) -> None:
    """Stream one object between Sites, checksummed and verified at the destination (as a transfer does)."""
    (source_site, source_key), (destination_site, _, destination_key) = _object(source), destination.partition(":")
    expected = _expected(size, adler32, sha256)
    sites = _sites(sites_file, namespace)
    source_store, destination_store = _store(sites, source_site), _store(sites, destination_site)
    try:
        total = source_store.stat(source_key).size
        with Progress(
            TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), console=console
        ) as progress:
            bar = progress.add_task(f"{source} → {destination_site}", total=total)
            result = copy(
                source_store,
                source_key,
                destination_store,
                destination_key or source_key,
                expected=expected,
                progress=lambda n: progress.advance(bar, n),
            )
    except StorageError as error:
        console.print(f"[red]error[/red] {error}")
        raise typer.Exit(1) from None
    sums = result.checksums
    console.print(
        f"copied {sums.size:,} bytes in {result.seconds:.2f} s to {result.destination_uri}, verified: "
        f"adler32 {sums.adler32} sha256 {sums.sha256}"
    )


@app.command("verify")
def verify_command(
    target: Annotated[str, typer.Argument(help="SITE:KEY to read back.")],
    size: Annotated[int, typer.Option(help="Expected size in bytes.")],
    adler32: Annotated[str, typer.Option(help="Expected adler32 (1-8 hex digits).")],
    sha256: Annotated[str, typer.Option(help="Expected sha256.")],
    sites_file: SitesOption = None,
    namespace: NamespaceOption = None,
) -> None:
    """Re-read an object and compare its size and checksums with the expected ones (exit 1 if they differ)."""
    site, key = _object(target)
    expected = _expected(size, adler32, sha256)
    assert expected is not None
    store = _store(_sites(sites_file, namespace), site)
    try:
        verify(store, key, expected)
    except StorageError as error:
        console.print(f"[red]error[/red] {error}")
        raise typer.Exit(1) from None
    console.print(f"{target}: size, adler32 and sha256 match")


@app.command("key")
def key_command(
    dataset_type: Annotated[str, typer.Argument(help="Dataset type.")],
    dataset_id: Annotated[uuid.UUID, typer.Argument(help="Dataset id.")],
    suffix: Annotated[str, typer.Option(help="File suffix, e.g. .fits")] = "",
) -> None:
    """The key a dataset's replica has at every Site (the deterministic layout)."""
    try:
        console.print(replica_key(dataset_type, dataset_id, suffix), highlight=False)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None

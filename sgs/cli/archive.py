"""`sgs archive ...`: run the archive service, migrate its schema, ingest, query and show lineage."""

from __future__ import annotations

import json
import re
import ssl
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.tree import Tree

from sgs.storage import Store, checksum_file, replica_key

app = typer.Typer(
    name="archive", help="The archive: datasets, collections, replicas and lineage.", no_args_is_help=True
)
console = Console()

DEFAULT_URL = "http://127.0.0.1:8400"
UrlOption = Annotated[str, typer.Option("--url", envvar="SGS_ARCHIVE_URL", help="Archive base URL.")]
TokenOption = Annotated[
    str | None, typer.Option("--token", envvar="SGS_ARCHIVE_TOKEN", help="Bearer token (Site or admin).")
]


CaBundleOption = Annotated[
    Path | None,
    typer.Option(
        "--ca-bundle",
        envvar="SGS_ARCHIVE_CA_BUNDLE",
        exists=True,
        dir_okay=False,
        help="PEM CA certificates to verify an https:// archive with (default: the system's).",
    ),
]


@contextmanager
def _client(url: str, token: str | None, ca_bundle: Path | None = None) -> Iterator[httpx.Client]:
    """A client for the archive; a connection or TLS failure ends the command with its reason, not a traceback.

    Run inside a task (``TRACEPARENT`` set by its Job), its requests join the task's trace."""
    from sgs.telemetry.context import headers_from_env

    headers = headers_from_env()
    if token:
        headers["Authorization"] = f"Bearer {token}"
    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(ca_bundle)) if ca_bundle else True
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=120, verify=verify) as client:
            yield client
    except httpx.TransportError as error:
        console.print(f"[red]error[/red] cannot reach the archive at {url}: {error}")
        raise typer.Exit(1) from error


def _fail_on_error(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        try:
            details = response.json().get("detail", response.text)
        except ValueError:
            details = response.text
        if isinstance(details, list):
            for item in details:
                where = ".".join(str(p) for p in item.get("loc", []))
                console.print(f"[red]error[/red] {response.status_code} {where}: {item.get('msg')}")
        else:
            console.print(f"[red]error[/red] {response.status_code}: {details}")
        raise typer.Exit(1)
    return response.json() if response.content else None


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8400,
    dsn: Annotated[str | None, typer.Option(envvar="SGS_ARCHIVE_DSN", help="PostgreSQL DSN.")] = None,
    nats_url: Annotated[str | None, typer.Option(envvar="SGS_ARCHIVE_NATS_URL", help="NATS URL.")] = None,
) -> None:
    """Run the archive service (migrates the schema on start-up; HTTPS with SGS_ARCHIVE_TLS_CERT_FILE/KEY_FILE)."""
    from pydantic import ValidationError
    from sgs_archive.server import serve as serve_archive
    from sgs_archive.settings import ArchiveSettings

    overrides: dict[str, Any] = {}
    if dsn:
        overrides["dsn"] = dsn
    if nats_url:
        overrides["nats_url"] = nats_url
    try:
        settings = ArchiveSettings(**overrides)
    except ValidationError as error:
        for item in error.errors():
            where = ".".join(map(str, item["loc"]))
            console.print(
                f"[red]error[/red] {where + ': ' if where else ''}{item['msg'].removeprefix('Value error, ')}"
            )
        raise typer.Exit(2) from None
    serve_archive(settings, host, port)


@app.command()
def migrate(
    dsn: Annotated[str, typer.Option(envvar="SGS_ARCHIVE_DSN", help="PostgreSQL DSN.")],
    universe: Annotated[Path | None, typer.Option(help="Dimension universe YAML (default: packaged).")] = None,
) -> None:
    """Apply pending schema migrations and dimension columns, then exit."""
    from sgs_archive.migrate import migrate as run_migrations
    from sgs_archive.universe import load_universe

    applied = run_migrations(dsn, load_universe(universe))
    if not applied:
        console.print("schema is up to date")
    for name in applied:
        console.print(f"applied [green]{name}[/green]")


def _parse_pairs(pairs: list[str]) -> dict[str, int | str]:
    values: dict[str, int | str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r}: expected dimension=value", param_hint="--data-id")
        values[key] = int(value) if value.isdigit() else value
    return values


def _manifest_datasets(path: Path) -> list[dict[str, Any]]:
    loaded = yaml.safe_load(path.read_text()) if path.suffix in (".yaml", ".yml") else json.loads(path.read_text())
    datasets = loaded.get("datasets") if isinstance(loaded, dict) else loaded
    if not isinstance(datasets, list):
        raise typer.BadParameter(f"{path}: expected a list of datasets or {{datasets: [...]}}")
    return datasets


def _file_dataset(
    path: Path,
    dataset_type: str,
    run: str,
    site: str,
    common: dict[str, int | str],
    pattern: re.Pattern[str] | None,
    store: Store | None = None,
) -> dict[str, Any]:
    """A plain file as a dataset: registered where it lies, or (``store``) uploaded first to the Site's store at
    the dataset's deterministic key, so that transfers and every other Site find it under the same key."""
    data_id = dict(common)
    if pattern is not None:
        match = pattern.search(path.name)
        if match is None:
            raise typer.BadParameter(f"{path.name} does not match --pattern", param_hint="--pattern")
        data_id.update({k: int(v) if v.isdigit() else v for k, v in match.groupdict().items() if v is not None})
    dataset: dict[str, Any] = {"dataset_type": dataset_type, "data_id": data_id, "run": run}
    if store is None:
        replica = {"site": site, "uri": path.resolve().as_uri(), **checksum_file(path).model_dump(mode="json")}
    else:
        dataset_id = uuid.uuid4()
        key = replica_key(dataset_type, dataset_id, "".join(path.suffixes))
        with path.open("rb") as source:
            sums = store.put(key, source)
        dataset["id"] = str(dataset_id)
        replica = {"site": site, "uri": str(store.uri(key)), **sums.model_dump(mode="json")}
    return {**dataset, "replicas": [replica]}


def _upload_store(sites_file: Path | None, site: str) -> Store:
    from sgs.storage.sites import SitesFileError, load_sites_file

    if sites_file is None:
        raise typer.BadParameter("--upload needs the Sites file (--sites or SGS_SITES_FILE)", param_hint="--sites")
    try:
        return load_sites_file(sites_file)[site].store()
    except SitesFileError as error:
        raise typer.BadParameter(str(error), param_hint="--sites") from None
    except KeyError:
        raise typer.BadParameter(f"Site {site!r} is not in {sites_file}", param_hint="--site") from None


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(exists=True, help="Manifests (.json/.yaml) or data files.")],
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    ca_bundle: CaBundleOption = None,
    dataset_type: Annotated[str | None, typer.Option("--type", help="Dataset type of plain data files.")] = None,
    run: Annotated[str | None, typer.Option(help="RUN collection of plain data files.")] = None,
    site: Annotated[str | None, typer.Option(help="Site holding plain data files.")] = None,
    data_id: Annotated[list[str] | None, typer.Option("--data-id", help="dimension=value for every file.")] = None,
    pattern: Annotated[
        str | None, typer.Option(help=r"Regex with named groups giving dimensions from file names.")
    ] = None,
    batch: Annotated[int, typer.Option(min=1, max=50_000, help="Datasets per request.")] = 5000,
    upload: Annotated[
        bool, typer.Option(help="Upload plain files to the Site's store first (its deterministic keys).")
    ] = False,
    sites_file: Annotated[
        Path | None,
        typer.Option("--sites", envvar="SGS_SITES_FILE", help="Sites file (Site + Secret manifests) for --upload."),
    ] = None,
) -> None:
    """Register datasets from manifests, or plain files (checksummed here) with --type/--run/--site."""
    datasets: list[dict[str, Any]] = []
    manifests = [p for p in paths if p.suffix in (".json", ".yaml", ".yml")]
    files = [p for p in paths if p not in manifests]
    for manifest in manifests:
        datasets.extend(_manifest_datasets(manifest))
    if files:
        if not (dataset_type and run and site):
            raise typer.BadParameter("plain files need --type, --run and --site", param_hint="--type")
        regex = re.compile(pattern) if pattern else None
        common = _parse_pairs(data_id or [])
        store = _upload_store(sites_file, site) if upload else None
        datasets.extend(_file_dataset(f, dataset_type, run, site, common, regex, store) for f in files)
    inserted = existing = 0
    with _client(url, token, ca_bundle) as client, _progress() as progress:
        task = progress.add_task("ingesting", total=len(datasets))
        for start in range(0, len(datasets), batch):
            chunk = datasets[start : start + batch]
            result = _fail_on_error(client.post("/datasets/ingest", json={"datasets": chunk}))
            inserted += result["inserted"]
            existing += result["existing"]
            progress.advance(task, len(chunk))
    console.print(f"[green]{inserted}[/green] new, {existing} already registered")


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console
    )


@app.command()
def query(
    where: Annotated[str, typer.Argument(help="Dimension expression, e.g. \"band IN ('VIS','Y') AND tile = 1\".")] = "",
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    ca_bundle: CaBundleOption = None,
    dataset_type: Annotated[str | None, typer.Option("--type", help="Only this dataset type.")] = None,
    collection: Annotated[list[str] | None, typer.Option(help="Collections to search, in order.")] = None,
    find_first: Annotated[bool, typer.Option(help="One dataset per data ID: the first collection's.")] = False,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Find datasets by type, collections and a dimension expression."""
    body = {
        "dataset_type": dataset_type,
        "collections": collection or [],
        "where": where,
        "find_first": find_first,
        "limit": limit,
    }
    with _client(url, token, ca_bundle) as client:
        page = _fail_on_error(client.post("/datasets/query", json=body))
    if as_json:
        console.print_json(data=page)
        return
    table = Table("id", "type", "data ID", "run")
    for item in page["items"]:
        data = ", ".join(f"{k}={v}" for k, v in item["data_id"].items())
        table.add_row(item["id"], item["dataset_type"], data, item["run"])
    console.print(table)
    more = " (more: use the API's cursor)" if page["next_cursor"] else ""
    console.print(f"{len(page['items'])} datasets{more}")


@app.command("replicas")
def replicas_command(
    dataset_id: Annotated[uuid.UUID, typer.Argument(help="Dataset id.")],
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    ca_bundle: CaBundleOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Where a dataset's file is: every Site's replica with its state and checksums."""
    with _client(url, token, ca_bundle) as client:
        found = _fail_on_error(client.get(f"/datasets/{dataset_id}/replicas"))
    if as_json:
        typer.echo(json.dumps(found, indent=2))
        return
    table = Table("site", "state", "size", "adler32", "sha256", "uri")
    for item in found:
        table.add_row(item["site"], item["state"], f"{item['size']:,}", item["adler32"], item["sha256"], item["uri"])
    console.print(table)


type_app = typer.Typer(
    name="type", help="Dataset types (admin): name, dimensions, storage class.", no_args_is_help=True
)
app.add_typer(type_app)


@type_app.command("add")
def type_add(
    name: Annotated[str, typer.Argument(help="Dataset type name, e.g. raw.")],
    dimensions: Annotated[str, typer.Option(help="Comma-separated dimensions, e.g. exposure,detector.")],
    storage_class: Annotated[str, typer.Option(help="Storage class of its files.")] = "Fits",
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    ca_bundle: CaBundleOption = None,
) -> None:
    """Declare a dataset type (the same declaration again is accepted; a different one is refused)."""
    body = {"name": name, "dimensions": [d.strip() for d in dimensions.split(",") if d.strip()]}
    with _client(url, token, ca_bundle) as client:
        created = _fail_on_error(client.post("/dataset-types", json={**body, "storage_class": storage_class}))
    console.print(f"dataset type [bold]{created['name']}[/bold]: {', '.join(created['dimensions'])}")


token_app = typer.Typer(
    name="token",
    help="Tokens and their roles (admin only): one `site` token per Site, `reader` tokens for read-only clients.",
    no_args_is_help=True,
)
app.add_typer(token_app)


class TokenRoleChoice(StrEnum):
    SITE = "site"
    READER = "reader"
    ADMIN = "admin"


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Argument(help="Token name, e.g. sdc-fr-ingest.")],
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    ca_bundle: CaBundleOption = None,
    role: Annotated[TokenRoleChoice, typer.Option(help="site: one Site's writes; reader; admin.")] = (
        TokenRoleChoice.SITE
    ),
    site: Annotated[str | None, typer.Option(help="The Site a site token writes for.")] = None,
) -> None:
    """Create a token and print it (once: the archive keeps only its hash)."""
    with _client(url, token, ca_bundle) as client:
        created = _fail_on_error(client.post("/tokens", json={"name": name, "role": role.value, "site": site}))
    scope = f" for site {created['site']}" if created["site"] else ""
    console.print(f"created {created['role']} token [bold]{name}[/bold]{scope}; it is shown only now:")
    typer.echo(created["token"])


@token_app.command("list")
def token_list(url: UrlOption = DEFAULT_URL, token: TokenOption = None, ca_bundle: CaBundleOption = None) -> None:
    """Token names, roles and Sites (never the secrets)."""
    with _client(url, token, ca_bundle) as client:
        tokens = _fail_on_error(client.get("/tokens"))
    table = Table("name", "role", "site", "created")
    for item in tokens:
        table.add_row(item["name"], item["role"], item["site"] or "", item["created_at"])
    console.print(table)


@token_app.command("revoke")
def token_revoke(
    name: Annotated[str, typer.Argument(help="Token name.")],
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    ca_bundle: CaBundleOption = None,
) -> None:
    """Revoke a token: the next request that carries it gets 401."""
    with _client(url, token, ca_bundle) as client:
        _fail_on_error(client.delete(f"/tokens/{name}"))
    console.print(f"revoked [bold]{name}[/bold]")


@app.command()
def lineage(
    dataset: Annotated[str, typer.Argument(help="Dataset id.")],
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    ca_bundle: CaBundleOption = None,
    direction: Annotated[str, typer.Option(help="up: inputs; down: products.")] = "up",
    depth: Annotated[int, typer.Option(min=1, max=100)] = 5,
) -> None:
    """Print how a dataset was made (up) or what was made from it (down), as a tree."""
    if direction not in ("up", "down"):
        raise typer.BadParameter("must be 'up' or 'down'", param_hint="--direction")
    with _client(url, token, ca_bundle) as client:
        graph = _fail_on_error(
            client.get(f"/datasets/{dataset}/lineage", params={"direction": direction, "depth": depth})
        )
    console.print(render_lineage(graph))


def render_lineage(graph: dict[str, Any]) -> Tree:
    """The lineage graph as a rich tree rooted at the dataset (a node reached twice is shown once per path)."""
    nodes = {n["id"]: n for n in graph["nodes"]}
    children: dict[str, list[str]] = {}
    for edge in graph["edges"]:
        parent, child = (
            (edge["output"], edge["input"]) if graph["direction"] == "up" else (edge["input"], edge["output"])
        )
        children.setdefault(parent, []).append(child)

    def label(node: dict[str, Any]) -> str:
        data = ", ".join(f"{k}={v}" for k, v in node["data_id"].items())
        text = f"[bold]{node['dataset_type']}[/bold] {data} [dim]{node['run']} {node['id']}[/dim]"
        provenance = node.get("provenance")
        if provenance:
            made = f"{provenance['executable']} {provenance['version']}"
            if provenance.get("image"):
                made += f" ({provenance['image']})"
            text += f"\n  [cyan]made by[/cyan] {made}, config {provenance['config_digest']}"
            if provenance.get("pipeline_run"):
                text += f", run {provenance['pipeline_run']} task {provenance.get('task')} #{provenance['attempt']}"
        return text

    def grow(tree: Tree, node_id: str, path: frozenset[str]) -> None:
        for child_id in sorted(children.get(node_id, [])):
            if child_id in nodes and child_id not in path:
                grow(tree.add(label(nodes[child_id])), child_id, path | {child_id})

    root = graph["root"]
    tree = Tree(label(nodes[root]))
    grow(tree, root, frozenset({root}))
    return tree

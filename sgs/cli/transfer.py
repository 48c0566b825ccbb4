"""`sgs transfer ...` (run the transfer service and its workers) and `sgs replicate ...` (rules and requests)."""

from __future__ import annotations

import re
import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from sgs.cli.http import client, fail_on_error

transfer_app = typer.Typer(
    name="transfer", help="The transfer service: rules, verified copies between Sites.", no_args_is_help=True
)
replicate_app = typer.Typer(name="replicate", help="Replication rules and transfer requests.", no_args_is_help=True)
rule_app = typer.Typer(
    name="rule", help="Replication rules: add, list, show, suspend, resume, delete.", no_args_is_help=True
)
replicate_app.add_typer(rule_app, name="rule")
console = Console()

DEFAULT_URL = "http://127.0.0.1:8500"
UrlOption = Annotated[str, typer.Option("--url", envvar="SGS_TRANSFER_URL", help="Transfer service base URL.")]
TokenOption = Annotated[
    str | None, typer.Option("--token", envvar="SGS_TRANSFER_TOKEN", help="Bearer token (named or admin).")
]
_DURATION = re.compile(r"^(\d+)([smhdw]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


# ------------------------------------------------------------------------------------------ the service


@transfer_app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8500,
    worker: Annotated[bool, typer.Option(help="Also run a transfer worker in this process.")] = False,
) -> None:
    """Run the transfer service: API, rule evaluator, repair pass and reaper (settings: SGS_TRANSFER_*)."""
    import uvicorn
    from sgs_transfer.app import create_app
    from sgs_transfer.settings import TransferSettings

    settings = TransferSettings(embedded_worker=True) if worker else TransferSettings()
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")


@transfer_app.command("worker")
def worker_command() -> None:
    """Run a transfer worker: copies into every Site, verified, registered at the destination's archive."""
    import asyncio
    import logging

    from sgs_transfer.settings import TransferSettings
    from sgs_transfer.worker import serve_worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve_worker(TransferSettings()))


@transfer_app.command()
def migrate(
    dsn: Annotated[str, typer.Option(envvar="SGS_TRANSFER_DSN", help="PostgreSQL DSN.")],
    schema: Annotated[str, typer.Option(envvar="SGS_TRANSFER_DB_SCHEMA", help="Schema.")] = "sgs_transfer",
) -> None:
    """Apply pending schema migrations, then exit."""
    from sgs_transfer.db import migrate as run_migrations

    applied = run_migrations(dsn, schema)
    console.print("schema is up to date" if not applied else "\n".join(f"applied [green]{a}[/green]" for a in applied))


# ------------------------------------------------------------------------------------------ rules


def parse_duration(text: str) -> int:
    """``90``, ``90s``, ``15m``, ``12h``, ``30d``, ``2w`` -> seconds."""
    match = _DURATION.match(text.strip())
    if match is None or int(match.group(1)) == 0:
        raise typer.BadParameter(f"{text!r}: expected a positive number with s, m, h, d or w", param_hint="--lifetime")
    return int(match.group(1)) * _UNITS[match.group(2)]


@rule_app.command("add")
def rule_add(
    sites: Annotated[str, typer.Option("--sites", help="Site expression, e.g. 'tier=primary & !maintenance'.")],
    copies: Annotated[int, typer.Option(min=1, max=64, help="Copies wanted at those Sites.")] = 1,
    dataset_type: Annotated[str | None, typer.Option("--type", help="Only this dataset type.")] = None,
    collection: Annotated[list[str] | None, typer.Option(help="RUN collection or glob pattern (repeatable).")] = None,
    where: Annotated[str, typer.Option(help="Dimension expression, e.g. \"band = 'H'\".")] = "",
    source: Annotated[str | None, typer.Option(help="Site expression of preferred sources.")] = None,
    grouping: Annotated[str, typer.Option(help="'dataset' (spread) or 'all' (same Sites).")] = "dataset",
    priority: Annotated[int, typer.Option(min=1, max=5)] = 3,
    lifetime: Annotated[str | None, typer.Option(help="Expire after, e.g. 30d.")] = None,
    wait: Annotated[bool, typer.Option(help="Follow the rule until it is OK or STUCK.")] = False,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """Create a rule: N copies of the datasets selected, at Sites matching the expression."""
    if grouping not in ("dataset", "all"):
        raise typer.BadParameter("must be 'dataset' or 'all'", param_hint="--grouping")
    body: dict[str, Any] = {
        "site_expression": sites,
        "copies": copies,
        "dataset_type": dataset_type,
        "collections": collection or [],
        "where": where,
        "source_expression": source,
        "grouping": grouping,
        "priority": priority,
        "lifetime_s": parse_duration(lifetime) if lifetime else None,
    }
    with client(url, token) as http:
        rule = fail_on_error(http.post("/rules", json=body), console)
        console.print(f"rule [bold]{rule['id']}[/bold] created: {rule['state']}")
        if wait:
            rule = _follow(http, rule["id"])
    _print_rule(rule)


def _follow(http: Any, rule_id: str, interval_s: float = 0.5) -> dict[str, Any]:
    """Print the rule's progress until it is OK or STUCK."""
    with console.status("") as status:
        while True:
            rule: dict[str, Any] = fail_on_error(http.get(f"/rules/{rule_id}"), console)
            locks = rule["locks"]
            status.update(
                f"{rule['state']}: {locks['ok']} copies OK, {locks['replicating']} replicating, {locks['stuck']} stuck"
            )
            if rule["state"] in ("OK", "STUCK", "SUSPENDED") and rule["evaluated_at"]:
                return rule
            time.sleep(interval_s)


def _print_rule(rule: dict[str, Any]) -> None:
    locks = rule["locks"]
    table = Table(show_header=False, box=None)
    selector = " ".join(
        part
        for part in (
            f"type={rule['dataset_type']}" if rule["dataset_type"] else "",
            f"collections={','.join(rule['collections'])}" if rule["collections"] else "",
            f"where {rule['where']}" if rule["where"] else "",
        )
        if part
    )
    style = {"OK": "green", "REPLICATING": "yellow", "STUCK": "red", "SUSPENDED": "magenta"}[rule["state"]]
    for key, value in (
        ("id", rule["id"]),
        ("state", f"[{style}]{rule['state']}[/{style}]" + (f" — {rule['reason']}" if rule["reason"] else "")),
        ("selects", selector or "every dataset"),
        ("copies", f"{rule['copies']} at {rule['site_expression']}" + (f" (grouping {rule['grouping']})")),
        ("sources", rule["source_expression"] or "any"),
        ("locks", f"{locks['ok']} OK, {locks['replicating']} replicating, {locks['stuck']} stuck"),
        ("chosen Sites", ", ".join(rule["chosen_sites"]) if rule["chosen_sites"] else "-"),
        ("owner / priority", f"{rule['owner']} / {rule['priority']}"),
        ("expires", rule["expires_at"] or "never"),
        ("created", rule["created_at"]),
    ):
        table.add_row(f"[bold]{key}[/bold]", str(value))
    console.print(table)


@rule_app.command("list")
def rule_list(
    state: Annotated[str | None, typer.Option(help="OK, REPLICATING, STUCK or SUSPENDED.")] = None,
    owner: Annotated[str | None, typer.Option()] = None,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """List rules (all pages) with their state and lock counters."""
    table = Table("id", "state", "selects", "copies @ Sites", "OK", "repl.", "stuck", "reason")
    params: dict[str, Any] = {"limit": 1000}
    if state:
        params["state"] = state.upper()
    if owner:
        params["owner"] = owner
    count = 0
    with client(url, token) as http:
        while True:
            page = fail_on_error(http.get("/rules", params=params), console)
            for rule in page["items"]:
                count += 1
                locks = rule["locks"]
                table.add_row(
                    rule["id"][:8],
                    rule["state"],
                    rule["dataset_type"] or "*",
                    f"{rule['copies']} @ {rule['site_expression']}",
                    str(locks["ok"]),
                    str(locks["replicating"]),
                    str(locks["stuck"]),
                    (rule["reason"] or "")[:60],
                )
            if page["next_cursor"] is None:
                break
            params["cursor"] = page["next_cursor"]
    console.print(table)
    console.print(f"{count} rules")


def _resolve(http: Any, rule: str) -> str:
    """A full rule id from a prefix (as `rule list` prints them)."""
    if len(rule) == 36:
        return rule
    params: dict[str, Any] = {"limit": 1000}
    matches = []
    while True:
        page = fail_on_error(http.get("/rules", params=params), console)
        matches += [r["id"] for r in page["items"] if r["id"].startswith(rule)]
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    if len(matches) != 1:
        console.print(f"[red]error[/red] {rule!r} matches {len(matches)} rules")
        raise typer.Exit(1)
    return str(matches[0])


@rule_app.command("show")
def rule_show(
    rule: Annotated[str, typer.Argument(help="Rule id (or a unique prefix).")],
    watch: Annotated[bool, typer.Option(help="Follow it until OK or STUCK.")] = False,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """One rule: state, why when STUCK, lock counters."""
    with client(url, token) as http:
        rule_id = _resolve(http, rule)
        found = _follow(http, rule_id) if watch else fail_on_error(http.get(f"/rules/{rule_id}"), console)
    _print_rule(found)


@rule_app.command("suspend")
def rule_suspend(
    rule: Annotated[str, typer.Argument(help="Rule id (or a unique prefix).")],
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """Stop copying for a rule (its copies stay protected)."""
    with client(url, token) as http:
        _print_rule(fail_on_error(http.post(f"/rules/{_resolve(http, rule)}/suspend"), console))


@rule_app.command("resume")
def rule_resume(
    rule: Annotated[str, typer.Argument(help="Rule id (or a unique prefix).")],
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """Resume a suspended rule."""
    with client(url, token) as http:
        _print_rule(fail_on_error(http.post(f"/rules/{_resolve(http, rule)}/resume"), console))


@rule_app.command("delete")
def rule_delete(
    rule: Annotated[str, typer.Argument(help="Rule id (or a unique prefix).")],
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """Delete a rule; copies no other rule holds become the reaper's (never the last copy)."""
    with client(url, token) as http:
        rule_id = _resolve(http, rule)
        fail_on_error(http.delete(f"/rules/{rule_id}"), console)
    console.print(f"rule {rule_id} deleted")


# ------------------------------------------------------------------------------------------ requests


@replicate_app.command("requests")
def requests_command(
    state: Annotated[str | None, typer.Option(help="QUEUED, ACTIVE, DONE, STUCK or CANCELLED.")] = None,
    destination: Annotated[str | None, typer.Option(help="Only transfers into this Site.")] = None,
    rule: Annotated[str | None, typer.Option(help="Only transfers a rule wants.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """Transfer requests by state (the last error of those retrying or STUCK)."""
    params: dict[str, Any] = {"limit": limit}
    if state:
        params["state"] = state.upper()
    if destination:
        params["destination"] = destination
    with client(url, token) as http:
        if rule:
            params["rule"] = _resolve(http, rule)
        page = fail_on_error(http.get("/transfers", params=params), console)
        counts = fail_on_error(http.get("/transfers/counts"), console)
    table = Table("id", "dataset", "source → destination", "state", "tries", "bytes", "last error")
    for item in page["items"]:
        table.add_row(
            str(item["id"]),
            item["dataset_id"][:8],
            f"{item['source'] or '?'} → {item['destination']}",
            item["state"],
            str(item["attempts"]),
            str(item["bytes"] or "-"),
            (item["last_error"] or "")[:70],
        )
    console.print(table)
    console.print(", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no transfers")

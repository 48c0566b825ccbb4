"""`sgs console`: the web console (services/console), served by uvicorn."""

from __future__ import annotations

import logging
from typing import Annotated, Any

import typer
from rich.console import Console

err_console = Console(stderr=True)


def console_command(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8600,
    kubeconfig: Annotated[
        str | None, typer.Option(help="The console's own read-only credentials ($SGS_CONSOLE_KUBECONFIG)")
    ] = None,
    dsn: Annotated[str | None, typer.Option(help="Operator task records, read-only ($SGS_CONSOLE_DSN)")] = None,
    development: Annotated[bool, typer.Option(help="Plain-HTTP cookies, a random session key")] = False,
) -> None:
    """Serve the web console: Runs, Pipelines, Sites, transfers, the archive and placement, in a browser."""
    import uvicorn
    from pydantic import ValidationError
    from sgs_console.app import create_app
    from sgs_console.settings import ConsoleSettings

    overrides: dict[str, Any] = {}
    for key, value in (("kubeconfig", kubeconfig), ("dsn", dsn)):
        if value:
            overrides[key] = value
    if development:
        overrides["environment"] = "development"
    try:
        settings = ConsoleSettings(**overrides)
    except ValidationError as err:
        for problem in err.errors():
            err_console.print(f"[red]error:[/] {problem['msg']}")
        raise typer.Exit(2) from err
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    tls: dict[str, Any] = {}
    if settings.tls_cert_file is not None:
        tls = {"ssl_certfile": str(settings.tls_cert_file), "ssl_keyfile": str(settings.tls_key_file)}
    scheme = "https" if tls else "http"
    err_console.print(f"sgs console on {scheme}://{host}:{port}")
    uvicorn.run(create_app(settings), host=host, port=port, log_level="warning", access_log=False, **tls)

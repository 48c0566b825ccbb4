"""What the CLI commands that talk to a service share: a client with a bearer token, errors printed per field."""

from __future__ import annotations

from typing import Any

import httpx
import typer
from rich.console import Console


def client(url: str, token: str | None, timeout_s: float = 120.0) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=url, headers=headers, timeout=timeout_s, trust_env=False)


def fail_on_error(response: httpx.Response, console: Console) -> Any:
    """The JSON answer, or each error printed with the field it names, then exit 1."""
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

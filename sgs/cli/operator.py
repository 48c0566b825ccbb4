"""`sgs operator` (the kopf operator) and the Run operations: `sgs run priority|suspend|resume|retry-failed`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

T = TypeVar("T")
console = Console()
err_console = Console(stderr=True)

NamespaceOption = Annotated[str, typer.Option("-n", "--namespace", help="Namespace of the Run")]
KubeconfigOption = Annotated[str | None, typer.Option(help="Kubeconfig (default $KUBECONFIG)")]


def operator_command(
    namespace: Annotated[
        list[str] | None, typer.Option("-n", "--namespace", help="Namespace to serve (repeatable; default all)")
    ] = None,
    dsn: Annotated[str | None, typer.Option(help="PostgreSQL DSN of the task table ($SGS_OPERATOR_DSN)")] = None,
    webhook_port: Annotated[int | None, typer.Option(help="Admission webhook port (0 = any free)")] = None,
    webhook: Annotated[bool, typer.Option(help="Serve the validating admission webhook")] = True,
    metrics_port: Annotated[int | None, typer.Option(help="Serve Prometheus metrics on this port")] = None,
    verbose: Annotated[bool, typer.Option("-v", "--verbose", help="Debug logs")] = False,
) -> None:
    """Run the operator: Sites, Pipelines and Runs reconciled into Jobs (kopf)."""
    from pydantic import ValidationError
    from sgs_operator.runner import run
    from sgs_operator.settings import OperatorSettings

    overrides: dict[str, Any] = {"webhook": webhook}
    for key, value in (
        ("namespaces", namespace),
        ("dsn", dsn),
        ("webhook_port", webhook_port),
        ("metrics_port", metrics_port),
    ):
        if value:
            overrides[key] = value
    try:
        settings = OperatorSettings(**overrides)
    except ValidationError as err:
        err_console.print(f"[red]error:[/] {err}")
        raise typer.Exit(2) from err
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    run(settings)


def priority_command(
    run: Annotated[str, typer.Argument(help="Run name")],
    priority: Annotated[int, typer.Argument(help="New priority (higher runs first, -1000..1000)")],
    namespace: NamespaceOption = "default",
    kubeconfig: KubeconfigOption = None,
) -> None:
    """Change a Run's priority: its queued tasks are re-ranked at once."""
    _patch(namespace, run, {"priority": priority}, kubeconfig)
    console.print(f"run {run}: priority {priority}")


def suspend_command(
    run: Annotated[str, typer.Argument(help="Run name")],
    namespace: NamespaceOption = "default",
    kubeconfig: KubeconfigOption = None,
) -> None:
    """Stop starting new tasks of a Run (running ones finish)."""
    _patch(namespace, run, {"suspend": True}, kubeconfig)
    console.print(f"run {run}: suspended")


def resume_command(
    run: Annotated[str, typer.Argument(help="Run name")],
    namespace: NamespaceOption = "default",
    kubeconfig: KubeconfigOption = None,
) -> None:
    """Start a suspended Run's tasks again."""
    _patch(namespace, run, {"suspend": False}, kubeconfig)
    console.print(f"run {run}: resumed")


def retry_failed_command(
    run: Annotated[str, typer.Argument(help="Run name")],
    namespace: NamespaceOption = "default",
    kubeconfig: KubeconfigOption = None,
) -> None:
    """Give every failed task of a Run one more attempt; successful tasks are not run again."""
    current = _call(_get(namespace, run, kubeconfig), f"run {namespace}/{run}")
    count = int((current.get("spec") or {}).get("retryFailed") or 0) + 1
    _patch(namespace, run, {"retryFailed": count}, kubeconfig)
    console.print(f"run {run}: retry-failed request #{count}")


def add_run_commands(run_app: typer.Typer) -> None:
    run_app.command("priority")(priority_command)
    run_app.command("suspend")(suspend_command)
    run_app.command("resume")(resume_command)
    run_app.command("retry-failed")(retry_failed_command)


def _patch(namespace: str, run: str, spec: dict[str, Any], kubeconfig: str | None) -> None:
    _call(_patch_async(namespace, run, spec, kubeconfig), f"run {namespace}/{run}")


def _call(work: Coroutine[Any, Any, T], what: str) -> T:
    """Run ``work``; an API or credentials error is one line naming ``what``, not a traceback."""
    from sgs.kube import ConfigError, KubeError

    try:
        return asyncio.run(work)
    except (KubeError, ConfigError) as err:
        err_console.print(f"[red]error:[/] {what}: {err}")
        raise typer.Exit(1) from err


def _run_path(namespace: str, run: str) -> str:
    from sgs.model.base import GROUP, VERSION

    return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/runs/{run}"


async def _patch_async(namespace: str, run: str, spec: dict[str, Any], kubeconfig: str | None) -> None:
    from sgs.kube import KubeClient

    kube = await KubeClient.connect(kubeconfig, user_agent="sgs-cli")
    try:
        await kube.merge_patch(_run_path(namespace, run), {"spec": spec})
    finally:
        await kube.close()


async def _get(namespace: str, run: str, kubeconfig: str | None) -> dict[str, Any]:
    from sgs.kube import KubeClient

    kube = await KubeClient.connect(kubeconfig, user_agent="sgs-cli")
    try:
        found = await kube.get_or_none(_run_path(namespace, run))
    finally:
        await kube.close()
    if found is None:
        err_console.print(f"[red]error:[/] no Run {run!r} in namespace {namespace}")
        raise typer.Exit(1)
    return found

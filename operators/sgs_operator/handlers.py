"""kopf handlers: thin translations between watched objects and the operator's plain functions.

Importing this module registers the handlers on kopf's default registry (``kopf run -m sgs_operator.handlers``
or ``sgs operator``).
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kopf
from pydantic import ValidationError

import sgs_operator.placements  # noqa: F401  (importing it registers the DataPlacement handlers)
from sgs.model.base import GROUP, VERSION
from sgs.model.run import RunSpec
from sgs.model.site import SiteSpec, StorageKind
from sgs_operator import checks, metrics, tls, watch
from sgs_operator.controller import RunController, Shared
from sgs_operator.kube import Kube
from sgs_operator.naming import LABEL_RUN, label_value
from sgs_operator.observe import JobSeen, PodSeen, run_key
from sgs_operator.records import TaskStore
from sgs_operator.settings import OperatorSettings
from sgs_operator.status import utc_now

RESTART_DELAY_S = 2.0
BLOCKED_RECHECK_S = 3.0


# ----------------------------------------------------------------------------------------------- lifecycle


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    config: OperatorSettings = memo.get("settings") or OperatorSettings.model_validate({})
    settings.posting.level = logging.WARNING  # one Event per handled object would flood a 100k-task Run
    settings.persistence.finalizer = f"{GROUP}/operator"
    if config.webhook:
        settings.admission.server = webhook_server(config)
        settings.admission.managed = config.webhook_name
    store = await TaskStore.open(config.dsn)
    # Two connections are held by the Job and pod watches; the rest serve creations, status patches, reads.
    kube = await Kube.connect(config.kubeconfig, pool_size=config.create_concurrency + 8)
    memo["shared"] = Shared(kube, store, config, create_slots=asyncio.Semaphore(config.create_concurrency))
    memo["jobs"], memo["pods"] = watch.job_objects(config.namespaces), watch.pod_objects(config.namespaces)
    memo["watch_stop"] = asyncio.Event()
    memo["watches"] = [
        asyncio.create_task(watch.follow(kube, memo[kind], memo["watch_stop"]), name=f"watch-{kind}")
        for kind in ("jobs", "pods")
    ]
    if config.metrics_port is not None:
        metrics.serve(config.metrics_port)
    logger.info(f"sgs operator: namespaces {config.namespaces or 'all'}, task table {store.table_pointer('*')}")


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    if "watch_stop" in memo:
        memo["watch_stop"].set()
        for task in memo["watches"]:
            task.cancel()
        await asyncio.gather(*memo["watches"], return_exceptions=True)
    shared: Shared | None = memo.get("shared")
    if shared is not None:
        await shared.kube.close()
        await shared.store.close()


def webhook_server(config: OperatorSettings) -> kopf.WebhookServer:
    certs = tls.issue(Path(tempfile.mkdtemp(prefix="sgs-webhook-")), config.webhook_host)
    return kopf.WebhookServer(
        addr=config.webhook_host,
        host=config.webhook_host,
        port=config.webhook_port or None,
        certfile=str(certs.cert_file),
        pkeyfile=str(certs.key_file),
        cafile=str(certs.ca_file),
    )


# ----------------------------------------------------------------------------------------------- indexes


@kopf.index(GROUP, VERSION, "sites")
def site_specs(
    name: str, namespace: str | None, spec: Mapping[str, Any], **_: Any
) -> dict[tuple[str, str], dict[str, Any]]:
    return {(namespace or "", name): dict(spec)}


@kopf.index(GROUP, VERSION, "sites")
def site_phases(name: str, namespace: str | None, status: Mapping[str, Any], **_: Any) -> dict[tuple[str, str], str]:
    """For Runs without spec.site: only a Ready Site is chosen."""
    return {(namespace or "", name): str((status or {}).get("phase") or "Pending")}


# ----------------------------------------------------------------------------------------------- admission


@kopf.on.validate(GROUP, VERSION, "pipelines", operations=["CREATE", "UPDATE"], ignore_failures=True)
def validate_pipeline(spec: Mapping[str, Any], **_: Any) -> None:
    """Graph rules a CRD schema cannot state (references resolve, no cycle, inputs bound): refused at apply."""
    status = checks.pipeline_status(spec, None)
    if status.conditions and status.conditions[0].status.value == "False":
        raise kopf.AdmissionError(status.conditions[0].message, code=422)


@kopf.on.validate(GROUP, VERSION, "runs", operations=["CREATE", "UPDATE"], ignore_failures=True)
def validate_run(spec: Mapping[str, Any], **_: Any) -> None:
    try:
        RunSpec.model_validate(spec)
    except ValidationError as err:
        raise kopf.AdmissionError(checks.describe_errors(err), code=422) from err


# ----------------------------------------------------------------------------------------------- Pipelines


@kopf.on.resume(GROUP, VERSION, "pipelines")
@kopf.on.create(GROUP, VERSION, "pipelines")
@kopf.on.update(GROUP, VERSION, "pipelines", field="spec")
def pipeline_changed(spec: Mapping[str, Any], meta: Mapping[str, Any], patch: kopf.Patch, **_: Any) -> None:
    status = checks.pipeline_status(spec, meta.get("generation"))
    patch.status.update(status.model_dump(mode="json", by_alias=True, exclude_none=True))


# ----------------------------------------------------------------------------------------------- Sites


@kopf.on.resume(GROUP, VERSION, "sites")
@kopf.on.create(GROUP, VERSION, "sites")
@kopf.on.update(GROUP, VERSION, "sites", field="spec")
async def site_changed(
    name: str, spec: Mapping[str, Any], meta: Mapping[str, Any], patch: kopf.Patch, memo: kopf.Memo, **_: Any
) -> None:
    await check_site(name, spec, meta, patch, memo)


@kopf.timer(GROUP, VERSION, "sites", interval=10.0, idle=None)
async def site_timer(
    name: str, spec: Mapping[str, Any], meta: Mapping[str, Any], patch: kopf.Patch, memo: kopf.Memo, **_: Any
) -> None:
    await check_site(name, spec, meta, patch, memo)


async def check_site(
    name: str, spec: Mapping[str, Any], meta: Mapping[str, Any], patch: kopf.Patch, memo: kopf.Memo
) -> None:
    shared: Shared = memo["shared"]
    try:
        site = SiteSpec.model_validate(spec)
    except ValidationError as err:
        raise kopf.PermanentError(checks.describe_errors(err)) from err
    nodes = await shared.kube.nodes(checks.site_selector(name, site))
    ok, detail = await storage_reachable(site)
    status = checks.site_status(site, nodes, ok, detail, utc_now(), meta.get("generation"))
    status.running_tasks = shared.board.running(f"{meta.get('namespace')}/{name}")
    patch.status.update(status.model_dump(mode="json", by_alias=True, exclude_none=True))


async def storage_reachable(site: SiteSpec) -> tuple[bool, str]:
    storage = site.storage
    if storage.kind is StorageKind.POSIX:
        return await asyncio.to_thread(_directory_exists, Path(storage.path or ""))
    endpoint = storage.endpoint or ""
    parts = urlsplit(endpoint if "://" in endpoint else f"//{endpoint}")
    host, port = parts.hostname or "", parts.port or (443 if storage.secure else 80)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout=3)
    except (OSError, TimeoutError) as err:
        return False, f"{host}:{port}: {err or 'timeout'}"
    writer.close()
    return True, f"{host}:{port} accepts connections"


def _directory_exists(path: Path) -> tuple[bool, str]:
    found = path.is_dir()
    return found, f"{path} is {'a directory' if found else 'missing'}"


# ----------------------------------------------------------------------------------------------- Runs


# kopf injects the Site indexes by parameter name, which its DaemonFn protocol cannot express.
@kopf.daemon(GROUP, VERSION, "runs", cancellation_timeout=10.0)  # type: ignore[arg-type]
async def run_daemon(
    stopped: kopf.DaemonStopped,
    body: kopf.Body,
    memo: kopf.Memo,
    logger: kopf.Logger,
    site_specs: kopf.Index[tuple[str, str], dict[str, Any]],
    site_phases: kopf.Index[tuple[str, str], str],
    **_: Any,
) -> None:
    """Reconcile one Run until it is deleted; any unexpected error rebuilds it from the records."""
    shared: Shared = memo["shared"]
    jobs: watch.RunObjects[JobSeen] = memo["jobs"]
    pods: watch.RunObjects[PodSeen] = memo["pods"]
    controller = RunController(shared, body, logger)
    key = run_key(controller.namespace, {LABEL_RUN: label_value(controller.name)})
    # Reconciling before the first LIST of Jobs would take existing Jobs for missing ones.
    await asyncio.gather(jobs.synced.wait(), pods.synced.wait())
    try:
        while not stopped:
            try:
                if controller.planner is None and not await controller.start(site_specs, site_phases):
                    await stopped.wait(BLOCKED_RECHECK_S)
                    continue
                await controller.step(jobs.of(key), pods.of(key), site_specs)
            except Exception:
                logger.exception(f"run {controller.key}: reconcile failed; rebuilding from the task records")
                controller.leave()
                controller = RunController(shared, body, logger)
                await stopped.wait(RESTART_DELAY_S)
                continue
            await stopped.wait(shared.settings.reconcile_interval)
    finally:
        controller.leave()

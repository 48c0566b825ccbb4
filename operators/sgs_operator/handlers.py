"""kopf handlers: thin translations between watched objects and the operator's plain functions.

Importing this module registers the handlers on kopf's default registry (``kopf run -m sgs_operator.handlers``
or ``sgs operator``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kopf
from pydantic import ValidationError

import sgs_operator.admission  # importing it makes the API server skip the updates that keep a spec
import sgs_operator.placements  # noqa: F401  (importing it registers the DataPlacement handlers)
from sgs.dynamic.registry import DynamicFunctions
from sgs.kube import ClusterConfig, load
from sgs.kube.lease import LeaderElector
from sgs.model.base import GROUP, VERSION
from sgs.model.run import RunSpec
from sgs.model.site import ComputeKind, SiteSpec, StorageKind
from sgs.telemetry import Tracing, TracingSettings, configure
from sgs_operator import checks, metrics, mirror, tls, watch
from sgs_operator.controller import RunController, Shared
from sgs_operator.kube import Kube, home_namespace
from sgs_operator.naming import LABEL_RUN, label_value
from sgs_operator.observe import JobSeen, PodSeen, run_key
from sgs_operator.records import TaskStore
from sgs_operator.settings import OperatorSettings
from sgs_operator.status import utc_now

RESTART_DELAY_S = 2.0
CREDENTIALS_TTL = timedelta(minutes=1)
BLOCKED_RECHECK_S = 3.0


# ----------------------------------------------------------------------------------------------- lifecycle


@kopf.on.login()
async def login(memo: kopf.Memo, **_: Any) -> kopf.ConnectionInfo:
    """kopf's own client uses the operator's credentials: its kubeconfig, or the pod's service account."""
    cluster: ClusterConfig = memo.get("cluster") or await load_cluster(_settings(memo))
    return connection_info(cluster, await cluster.auth_headers())


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    config = _settings(memo)
    cluster: ClusterConfig = memo.get("cluster") or await load_cluster(config)
    elector: LeaderElector | None = memo.get("elector")
    settings.posting.level = logging.WARNING  # one Event per handled object would flood a 100k-task Run
    settings.persistence.finalizer = f"{GROUP}/operator"
    store = await TaskStore.open(config.dsn)
    # Two connections are held by the Job and pod watches; the rest serve creations, status patches, reads.
    job_manager = f"sgs-operator.{elector.identity}" if elector is not None else None
    kube = await Kube.connect(config=cluster, pool_size=config.create_concurrency + 8, job_manager=job_manager)
    if elector is not None:
        kube.client.write_guard = elector.check  # a replica that cannot vouch for its Lease creates nothing
    if config.webhook:
        memo["webhook_dir"] = Path(tempfile.mkdtemp(prefix="sgs-webhook-"))
        namespace = home_namespace(config.operator_namespace, cluster)
        settings.admission.server = await webhook_server(config, kube, namespace, memo["webhook_dir"])
        settings.admission.managed = config.webhook_name
    # SGS_TRACING_* from the environment: off (nothing of the SDK imported) unless an endpoint is set.
    identity = {"service.instance.id": elector.identity} if elector is not None else {}
    tracing: Tracing = configure("sgs-operator", TracingSettings(), resource=identity)
    memo["shared"] = Shared(
        kube,
        store,
        config,
        create_slots=asyncio.Semaphore(config.create_concurrency),
        tracing=tracing,
        origin=config.origin or await cluster_origin(kube),
    )
    memo["jobs"], memo["pods"] = watch.job_objects(config.namespaces), watch.pod_objects(config.namespaces)
    memo["watch_stop"] = asyncio.Event()
    memo["watches"] = [
        asyncio.create_task(watch.follow(kube, memo[kind], memo["watch_stop"]), name=f"watch-{kind}")
        for kind in ("jobs", "pods")
    ]
    if config.metrics_port is not None:
        metrics.serve(config.metrics_port, config.metrics_address)
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
        await shared.remotes.close()
        await shared.kube.close()
        await shared.store.close()
        await shared.archive.close()
        await asyncio.to_thread(shared.tracing.shutdown)  # exports what is still buffered
    if "webhook_dir" in memo:
        shutil.rmtree(memo["webhook_dir"], ignore_errors=True)


async def cluster_origin(kube: Kube) -> str:
    """This control plane's name on its copies at cluster Sites: its kube-system namespace's uid (stable for the
    cluster's life, unique across clusters), else the default namespace's."""
    for namespace in ("kube-system", "default"):
        found = await kube.client.get_or_none(f"/api/v1/namespaces/{namespace}")
        if found is not None:
            return str(found["metadata"]["uid"])
    return "sgs"


def _settings(memo: kopf.Memo) -> OperatorSettings:
    found: OperatorSettings | None = memo.get("settings")
    return found or OperatorSettings.model_validate({})


async def load_cluster(config: OperatorSettings) -> ClusterConfig:
    return await load(config.kubeconfig, service_account_dir=config.service_account_dir)


def connection_info(cluster: ClusterConfig, headers: Mapping[str, str]) -> kopf.ConnectionInfo:
    scheme, _, token = headers.get("Authorization", "").partition(" ")
    return kopf.ConnectionInfo(
        server=cluster.server,
        ca_path=str(cluster.ca_file) if cluster.ca_file else None,
        insecure=cluster.insecure or None,
        scheme=scheme or None,
        token=token or None,
        certificate_path=str(cluster.cert_file) if cluster.cert_file else None,
        private_key_path=str(cluster.key_file) if cluster.key_file else None,
        default_namespace=cluster.namespace,
        # Rotating credentials (a pod's bound token, exec plugins): kopf logs in again once this passes.
        expiration=datetime.now(UTC) + CREDENTIALS_TTL if cluster.refreshes else None,
    )


async def webhook_server(config: OperatorSettings, kube: Kube, namespace: str, directory: Path) -> kopf.WebhookServer:
    """The admission webhook on its listen address, under a serving certificate from the stable CA."""
    ca = await tls.stable_authority(kube.client, namespace, config.webhook_ca_secret)
    certs = tls.serve_with(ca, directory, tls.webhook_hosts(config.webhook_host, config.webhook_listen))
    metrics.webhook_certificates(certs.cert_file, certs.ca_file)
    return kopf.WebhookServer(
        addr=config.webhook_listen,
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


@kopf.index(GROUP, VERSION, "pipelines")
def pipeline_digests(name: str, namespace: str | None, spec: Mapping[str, Any], **_: Any) -> dict[tuple[str, str], str]:
    """What each Pipeline's spec is now: a running Run compares it with the spec it was started with."""
    return {(namespace or "", name): checks.pipeline_digest(spec)}


@kopf.index(GROUP, VERSION, "sites")
def site_phases(name: str, namespace: str | None, status: Mapping[str, Any], **_: Any) -> dict[tuple[str, str], str]:
    """For Runs without spec.site: only a Ready Site is chosen."""
    return {(namespace or "", name): str((status or {}).get("phase") or "Pending")}


# ----------------------------------------------------------------------------------------------- admission


# persistent + failures not ignored = failurePolicy Fail, left in place while no operator runs: an invalid spec is
# refused, never admitted unchecked because the operator is down (or between two leaders).
@kopf.on.validate(GROUP, VERSION, "pipelines", operations=["CREATE", "UPDATE"], persistent=True)
def validate_pipeline(spec: Mapping[str, Any], memo: kopf.Memo, **kwargs: Any) -> None:
    """Graph rules a CRD schema cannot state (references resolve, no cycle, inputs bound) and dynamic-resource
    functions this operator does not run: refused at apply."""
    if checks.spec_unchanged(kwargs.get("old"), spec):  # `old` is passed, but kopf's WebhookFn protocol omits it
        return
    status = checks.pipeline_status(spec, None, _functions(memo))
    if status.conditions and status.conditions[0].status.value == "False":
        raise kopf.AdmissionError(status.conditions[0].message, code=422)


# kopf injects the Site index by parameter name, which its WebhookFn protocol cannot express.
@kopf.on.validate(GROUP, VERSION, "runs", operations=["CREATE", "UPDATE"], persistent=True)  # type: ignore[arg-type]
async def validate_run(
    namespace: str | None,
    spec: Mapping[str, Any],
    old: kopf.Body | None,
    memo: kopf.Memo,
    site_specs: kopf.Index[tuple[str, str], dict[str, Any]],
    **_: Any,
) -> None:
    """A valid spec whose every path lies under its Site's declared roots (the start checks again)."""
    if checks.spec_unchanged(old, spec):
        return
    try:
        run = RunSpec.model_validate(spec)
    except ValidationError as err:
        raise kopf.AdmissionError(checks.describe_errors(err), code=422) from err
    if old is not None and checks.same_paths(old.get("spec") or {}, spec):
        return  # a priority, suspend or metadata change: the paths were judged when they were set
    problems = None
    indexed = next(iter(site_specs.get((namespace or "", run.site), ())), None) if run.site is not None else None
    if run.site is not None and indexed is not None:
        # The index's Site first (no GET per admission in a burst of Runs); refused only as the API server has
        # the Site now, so an index a moment behind a Site's change never refuses what the Site allows.
        known = _valid_sites({run.site: indexed})
        problems = await asyncio.to_thread(checks.run_path_problems, run, run.site, known) if known else None
    if problems is None or problems:
        sites = await _namespace_sites(memo, namespace or "", run.site, site_specs)
        problems = await asyncio.to_thread(checks.run_path_problems, run, run.site, sites)
    if problems:
        raise kopf.AdmissionError("; ".join(problems), code=422)


@kopf.on.validate(GROUP, VERSION, "sites", operations=["CREATE", "UPDATE"], persistent=True)
def validate_site(name: str | None, spec: Mapping[str, Any], **kwargs: Any) -> None:
    if checks.spec_unchanged(kwargs.get("old"), spec):
        return
    problems = checks.admission_site_problems(name or "", spec)
    if problems:
        raise kopf.AdmissionError("; ".join(problems), code=422)


async def _namespace_sites(
    memo: kopf.Memo, namespace: str, named: str | None, index: kopf.Index[tuple[str, str], dict[str, Any]]
) -> dict[str, SiteSpec]:
    """The named Site as the API server has it now, else the namespace's Sites the index knows."""
    if named is not None:
        shared: Shared | None = memo.get("shared")
        found = await shared.kube.get_object(namespace, "sites", named) if shared is not None else None
        raw = {named: found.get("spec") or {}} if found is not None else {}
    else:
        raw = {name: spec for (ns, name), store in index.items() if ns == namespace for spec in store}
    return _valid_sites(raw)


def _valid_sites(raw: Mapping[str, Mapping[str, Any]]) -> dict[str, SiteSpec]:
    sites: dict[str, SiteSpec] = {}
    for name, spec in raw.items():
        with contextlib.suppress(ValidationError):  # an invalid Site takes no Run: its start says so
            site = SiteSpec.model_validate(spec)
            if not checks.site_problems(name, site):
                sites[name] = site
    return sites


def _functions(memo: kopf.Memo) -> DynamicFunctions | None:
    shared: Shared | None = memo.get("shared")
    return shared.dynamic.functions if shared is not None else None


# ----------------------------------------------------------------------------------------------- Pipelines


@kopf.on.resume(GROUP, VERSION, "pipelines")
@kopf.on.create(GROUP, VERSION, "pipelines")
@kopf.on.update(GROUP, VERSION, "pipelines", field="spec")
def pipeline_changed(
    spec: Mapping[str, Any], meta: Mapping[str, Any], patch: kopf.Patch, memo: kopf.Memo, **_: Any
) -> None:
    status = checks.pipeline_status(spec, meta.get("generation"), _functions(memo))
    patch.status.update(status.model_dump(mode="json", by_alias=True, exclude_none=True))


# ----------------------------------------------------------------------------------------------- Sites


@kopf.on.resume(GROUP, VERSION, "sites")
@kopf.on.create(GROUP, VERSION, "sites")
@kopf.on.update(GROUP, VERSION, "sites", field="spec")
async def site_changed(
    name: str,
    spec: Mapping[str, Any],
    meta: Mapping[str, Any],
    patch: kopf.Patch,
    memo: kopf.Memo,
    logger: kopf.Logger,
    **_: Any,
) -> None:
    await check_site(name, spec, meta, patch, memo, logger)


@kopf.timer(GROUP, VERSION, "sites", interval=10.0, idle=None)
async def site_timer(
    name: str,
    spec: Mapping[str, Any],
    meta: Mapping[str, Any],
    patch: kopf.Patch,
    memo: kopf.Memo,
    logger: kopf.Logger,
    **_: Any,
) -> None:
    await check_site(name, spec, meta, patch, memo, logger)


async def check_site(
    name: str,
    spec: Mapping[str, Any],
    meta: Mapping[str, Any],
    patch: kopf.Patch,
    memo: kopf.Memo,
    logger: kopf.Logger,
) -> None:
    shared: Shared = memo["shared"]
    try:
        site = SiteSpec.model_validate(spec)
    except ValidationError as err:
        raise kopf.PermanentError(checks.describe_errors(err)) from err
    if site.compute.kind is ComputeKind.CLUSTER:
        await check_cluster_site(shared, name, str(meta.get("namespace") or ""), site, meta, patch, logger)
        return
    nodes = await shared.kube.nodes(checks.site_selector(name, site))
    ok, detail = await storage_reachable(site)
    status = checks.site_status(site, nodes, ok, detail, utc_now(), meta.get("generation"))
    status.running_tasks = shared.board.running(f"{meta.get('namespace')}/{name}")
    metrics.site_phase(name, status.phase.value)
    patch.status.update(status.model_dump(mode="json", by_alias=True, exclude_none=True))


async def check_cluster_site(
    shared: Shared,
    name: str,
    namespace: str,
    site: SiteSpec,
    meta: Mapping[str, Any],
    patch: kopf.Patch,
    logger: kopf.Logger,
) -> None:
    """Its kubeconfig, its API server, the remote Site's phase; then the copies whose central Run is gone go."""
    status, client = await mirror.cluster_site_status(shared.remotes, namespace, name, site, meta.get("generation"))
    metrics.site_phase(name, status.phase.value)
    patch.status.update(status.model_dump(mode="json", by_alias=True, exclude_none=True))
    if client is None:
        return
    try:
        removed = await mirror.collect_orphans(shared.remotes, shared.kube.client, shared.origin, namespace, name, site)
    except Exception as err:
        if not mirror.is_unreachable(err):
            raise
        logger.warning(f"site {namespace}/{name}: orphan collection postponed: {mirror.describe(err)}")
        return
    if removed:
        logger.info(f"site {namespace}/{name}: deleted {len(removed)} orphaned copies: {', '.join(removed)}")


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
    pipeline_digests: kopf.Index[tuple[str, str], str],
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
                started = any(c is not None for c in (controller.planner, controller.mirror, controller.split))
                if not started and not await controller.start(site_specs, site_phases):
                    await stopped.wait(BLOCKED_RECHECK_S)
                    continue
                if controller.split is not None:  # a campaign: its children, one per Site, run it
                    await controller.split.step()
                    await stopped.wait(shared.settings.reconcile_interval)
                    continue
                mirror = controller.mirror
                if mirror is not None:  # at a cluster Site: its own operator runs the copy
                    await mirror.step(site_specs)
                    if mirror.redispatch_due is not None and await controller.redispatch(site_specs, site_phases):
                        controller.leave()  # sent elsewhere: the next controller starts it at its new Site
                        controller = RunController(shared, body, logger)
                        continue
                    await mirror.pause(shared.settings.reconcile_interval)
                    continue
                await controller.step(jobs.of(key), pods.of(key), site_specs, pipeline_digests)
            except Exception:
                logger.exception(f"run {controller.key}: reconcile failed; rebuilding from the task records")
                controller.leave()
                controller = RunController(shared, body, logger)
                await stopped.wait(RESTART_DELAY_S)
                continue
            await stopped.wait(shared.settings.reconcile_interval)
    finally:
        deleted = bool(stopped.reason and stopped.reason & kopf.DaemonStoppingReason.RESOURCE_DELETED)
        if controller.mirror is not None and deleted:
            # In the daemon, not an on.delete handler: one would make kopf patch every Run's diff-base annotation
            # on creation and on each spec change. Not reached now (cut off, cancelled): orphan collection.
            await controller.mirror.remove_copy()
        if controller.split is not None and deleted:
            await controller.split.remove_children()
        controller.leave()

"""The bridge: one virtual node, its pods' lifecycle, and the kubelet API, over one provider.

Level-triggered: a watch keeps a cache of the node's pods; a sweep (on every pod change, else every
`poll_interval_s`) compares each pod with its backend job and writes what differs. Everything the sweep
needs survives a restart: the job id is a pod annotation, the providers find a pod's job by its UID, and
status is compared with what the pod already shows, so a restarted bridge re-adopts jobs and rewrites
nothing it already wrote.

A pod's host directory holds its Secret and ConfigMap files and its scratch space: its volumes are removed
once the pod has ended (as a kubelet unmounts a terminated pod's volumes; the log stays for `kubectl logs`),
and the whole directory once the pod is gone from the API — also a pod deleted while the bridge was down.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sgs.kube import JSON, KubeClient, KubeError, Watch, is_status, load
from sgs.telemetry import Tracing, TracingSettings, configure
from sgs_bridge import metrics
from sgs_bridge.kubelet_api import Authorizer, KubeletServer, LogSource, serving_certificate
from sgs_bridge.node import NodeIdentity, NodeKeeper
from sgs_bridge.podspec import PodSpecError, TaskSpec, pod_priority, referenced_objects, task_from_pod
from sgs_bridge.providers.base import BackendUnavailableError, Provider, Reprioritizable, SubmitRefusedError
from sgs_bridge.state import JobState, Phase, failed_before_submit, now, pod_status, rfc3339
from sgs_bridge.tracing import task_span

log = logging.getLogger("sgs_bridge")
JOB_ID_ANNOTATION = "sgs.io/job-id"
PROVIDER_ANNOTATION = "sgs.io/provider"
USAGE_ANNOTATION = "sgs.io/usage"
COMPONENT = "sgs-bridge"
CANCEL_GRACE_S = 30.0
LOST_JOB_GRACE_S = 60.0


@dataclass
class BridgeConfig:
    node_name: str
    site: str
    provider: str = "process"
    kubeconfig: Path | None = None
    port: int = 10250
    address: str = "127.0.0.1"
    # Plain HTTP /metrics on this port (same address) for Prometheus; 0: /metrics only on the kubelet port.
    metrics_port: int = 0
    workdir: Path | None = None
    poll_interval_s: float = 1.0
    lease_renew_s: float = 10.0
    status_every_s: float = 30.0
    # API writes (submissions, status updates) in flight at once: a burst of pods is bound by the API server's
    # latency, not its CPU (bench/pilot_throughput.py: 1,000 payloads at 23.6/s with 8, 54.8/s with 32).
    submit_concurrency: int = 32
    gpus: int = 0  # process provider: GPUs to advertise
    # process and slurm providers: "crun" runs each pod's image (resolved only in image_stores); "none" its command.
    container_runtime: str = "none"
    image_stores: list[Path] = field(default_factory=list)
    slurm_partition: str | None = None
    slurm_gpu_partition: str | None = None
    slurm_extra_args: list[str] = field(default_factory=list)
    apptainer: str | None = None  # path of apptainer: run the container image through it
    # CA bundle that signs the API server's kubelet client certificate; default: the cluster's CA.
    client_ca: Path | None = None
    # slurm: pilot mode, with these settings (pipelinerunner.pilots.* properties or YAML; see pilot_config).
    pilots: Path | None = None
    pilot_address: str | None = None  # where the pilots' agents reach the bridge; default: `address`
    pilot_port: int = 0  # 0: any free port (each pilot's script names the one chosen)

    @property
    def root(self) -> Path:
        return self.workdir or Path.home() / ".cache" / "sgs" / "bridge" / self.node_name


def make_provider(config: BridgeConfig) -> Provider:
    pods_root = config.root / "pods"
    if config.provider == "process":
        from sgs_bridge.providers.process import ProcessProvider

        return ProcessProvider(
            pods_root, gpus=config.gpus, container_runtime=config.container_runtime, image_stores=config.image_stores
        )
    if config.provider == "slurm":
        from sgs_bridge.providers.slurm import SlurmProvider

        slurm = SlurmProvider(
            pods_root,
            partition=config.slurm_partition,
            gpu_partition=config.slurm_gpu_partition,
            extra_args=config.slurm_extra_args,
            apptainer=config.apptainer,
            container_runtime=config.container_runtime,
            image_stores=config.image_stores,
        )
        if config.pilots is None:
            return slurm
        from sgs_bridge.pilot_config import PilotConfigError, load_pilot_settings
        from sgs_bridge.providers.pilots import PilotProvider

        if slurm.containers:
            raise BridgeConfigError("container runtime: not in pilot mode (a pilot runs its payloads directly)")

        try:
            settings = load_pilot_settings(config.pilots)
        except PilotConfigError as error:
            raise BridgeConfigError(str(error)) from error
        return PilotProvider(
            pods_root,
            settings,
            slurm,
            pilots_root=config.root / "pilots",
            address=config.pilot_address or config.address,
            port=config.pilot_port,
        )
    raise ValueError(f"provider: must be 'process' or 'slurm', got {config.provider!r}")


class BridgeConfigError(RuntimeError):
    """The bridge cannot serve safely with this configuration."""


@dataclass
class _Doomed:
    """A pod gone from the API whose directory is to be removed once its job (if any) has ended."""

    job_id: str | None
    cancelled_at: float | None = None


@dataclass
class _Tracked:
    pod: JSON
    cancel_requested_at: float | None = None
    unknown_since: float | None = None
    finished: bool = False
    busy: bool = False


class Bridge:
    """`await Bridge(config).run()` runs until cancelled; `ready` is set once the node is registered."""

    def __init__(self, config: BridgeConfig, provider: Provider | None = None, tracing: Tracing | None = None) -> None:
        self.config = config
        self.provider = provider or make_provider(config)
        # SGS_TRACING_* from the environment unless given: off (no SDK imported) without an endpoint.
        self._owns_tracing = tracing is None
        self.tracing = tracing or configure(
            "sgs-bridge", TracingSettings(), resource={"service.instance.id": config.node_name}
        )
        self.identity = NodeIdentity(config.node_name, config.site, self.provider.name, config.port, config.address)
        self.ready = asyncio.Event()
        self._pods: dict[str, _Tracked] = {}
        self._doomed: dict[str, _Doomed] = {}
        self._wake = asyncio.Event()
        self._kube: KubeClient | None = None
        self._object_cache: dict[tuple[str, str, str], tuple[float, dict[str, str] | None]] = {}
        self._pods_root = config.root / "pods"
        self._base_env = dict(os.environ)
        for operation in ("submit", "observe"):  # at 0 from the start: a rate over them shows 0, not nothing
            metrics.BACKEND_ERRORS.labels(self.provider.name, operation)

    @property
    def kube(self) -> KubeClient:
        if self._kube is None:
            raise RuntimeError("the bridge is not connected yet")
        return self._kube

    async def run(self) -> None:
        cluster = await load(self.config.kubeconfig)
        client_ca = self.config.client_ca or cluster.ca_file
        if client_ca is None:
            raise BridgeConfigError(
                f"{cluster.source} names no cluster CA: give the bridge the CA that signs the API server's "
                "kubelet client certificate (--client-ca-file), or its kubelet API would trust anyone"
            )
        self._kube = await KubeClient.from_config(cluster, user_agent="sgs-bridge")
        keeper = NodeKeeper(
            self.kube,
            self.provider,
            self.identity,
            lease_renew_s=self.config.lease_renew_s,
            status_every_s=self.config.status_every_s,
        )
        cert, key = serving_certificate(self.config.root / "pki", self.identity.name, self.identity.address)
        server = KubeletServer(
            self._log_source,
            Authorizer(self.kube, self.identity.name),
            host=self.config.address,
            port=self.config.port,
            cert=cert,
            key=key,
            client_ca=client_ca,
        )
        metrics_server = metrics.MetricsServer(host=self.config.address, port=self.config.metrics_port)
        watch = Watch(self.kube, "/api/v1/pods", self, {"fieldSelector": f"spec.nodeName={self.identity.name}"})
        try:
            start_provider = getattr(self.provider, "start", None)  # a provider with its own endpoint (pilots)
            if start_provider is not None:
                self.provider.wake = self._wake.set  # type: ignore[attr-defined]
                await start_provider()
            await server.start()
            if self.config.metrics_port:
                await metrics_server.start()
            await keeper.register()
            version = await watch.list_all()
            log.info(
                "node %s (site %s, provider %s) registered; kubelet API on https://%s:%d",
                self.identity.name,
                self.identity.site,
                self.provider.name,
                self.config.address,
                self.config.port,
            )
            if self.config.metrics_port:
                log.info("metrics on http://%s:%d/metrics", self.config.address, self.config.metrics_port)
            self.ready.set()
            async with asyncio.TaskGroup() as group:
                group.create_task(keeper.run(), name="node-heartbeat")
                group.create_task(watch.run(resume_from=version), name="pod-watch")
                group.create_task(self._sweep_forever(), name="pod-sweep")
        finally:
            await metrics_server.stop()
            await server.stop()
            await self.provider.close()
            await self.kube.close()
            if self._owns_tracing:
                await asyncio.to_thread(self.tracing.shutdown)  # exports the spans still buffered

    # --- the pod cache (kept current by the watch; the work it implies is the sweep's) ---------------

    def replace(self, items: list[JSON]) -> None:
        seen = set()
        for pod in items:
            seen.add(pod["metadata"]["uid"])
            self._remember(pod)
        for uid in set(self._pods) - seen:
            self._forget(uid)
        for uid in self._pod_dirs() - seen - set(self._doomed):
            # Left by a pod deleted while the bridge was down: its job (if still running) is stopped first.
            self._doomed[uid] = _Doomed(self.provider.job_of(uid))
        self._wake.set()

    def apply(self, kind: str, obj: JSON) -> None:
        uid = obj.get("metadata", {}).get("uid", "")
        if kind == "DELETED":
            self._forget(uid)
        else:
            self._remember(obj)
        self._wake.set()

    def _pod_dirs(self) -> set[str]:
        try:
            return {entry.name for entry in os.scandir(self._pods_root) if entry.is_dir(follow_symlinks=False)}
        except FileNotFoundError:
            return set()

    def _remember(self, pod: JSON) -> None:
        uid = pod["metadata"]["uid"]
        tracked = self._pods.get(uid)
        if tracked is None:
            self._pods[uid] = _Tracked(pod)
        else:
            tracked.pod = pod

    def _forget(self, uid: str) -> None:
        """The pod is gone from the API (force-deleted, or we deleted it): its job must not run on, and its
        directory goes once the job has ended."""
        tracked = self._pods.pop(uid, None)
        if tracked is None:
            return
        running = not tracked.finished and not _terminal(tracked.pod)
        self._doomed[uid] = _Doomed(_job_id(tracked.pod) if running else None)

    async def _clean_up(self) -> None:
        """Stop the jobs of pods that are gone, then remove their directories."""
        running = {uid: str(doomed.job_id) for uid, doomed in self._doomed.items() if doomed.job_id}
        states = await self.provider.observe(running) if running else {}
        for uid, doomed in list(self._doomed.items()):
            state = states.get(uid)
            ended = doomed.job_id is None or state is None or state.phase.terminal or state.phase is Phase.UNKNOWN
            if not ended and doomed.cancelled_at is None:
                doomed.cancelled_at = time.monotonic()
                await self.provider.cancel(str(doomed.job_id), uid)
                continue
            if ended or time.monotonic() - (doomed.cancelled_at or 0.0) > CANCEL_GRACE_S:
                await asyncio.to_thread(_remove_tree, self._pods_root / uid)
                del self._doomed[uid]

    # --- the sweep -----------------------------------------------------------------------------

    async def _sweep_forever(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.config.poll_interval_s)
            self._wake.clear()
            try:
                await self.sweep()
            except BackendUnavailableError as error:
                metrics.BACKEND_ERRORS.labels(self.provider.name, "observe").inc()
                log.warning("backend unavailable: %s", error)
            except KubeError as error:
                log.warning("API error during sweep: %s", error)

    async def sweep(self) -> None:
        """One pass over every pod on the node, and over the directories of pods that are gone."""
        if self._doomed:
            await self._clean_up()
        tracked = [t for t in self._pods.values() if not t.finished]
        self._count_phases()
        fresh = [t for t in tracked if not _job_id(t.pod) and not _terminal(t.pod) and not _deleting(t.pod)]
        await self._bounded(self._submit(t) for t in fresh)
        jobs = {_uid(t.pod): job for t in tracked if (job := _job_id(t.pod)) and not _terminal(t.pod)}
        states = await self.provider.observe(jobs) if jobs else {}
        self._rerank(tracked, states)
        self._count_backend(states.values())
        await self._bounded(self._reconcile(t, states.get(_uid(t.pod))) for t in tracked)

    def _rerank(self, tracked: list[_Tracked], states: Mapping[str, JobState]) -> None:
        """Waiting pods follow their Run's priority (a pod change wakes the sweep): level-triggered, so a change
        made while the bridge was down is taken too. Only a provider that queues pods itself re-ranks."""
        if not isinstance(self.provider, Reprioritizable):
            return
        for item in tracked:
            uid = _uid(item.pod)
            state = states.get(uid)
            if state is not None and state.phase is Phase.PENDING:
                self.provider.reprioritize(uid, pod_priority(item.pod))

    async def _bounded(self, work: Iterable[Awaitable[None]]) -> None:
        limit = asyncio.Semaphore(self.config.submit_concurrency)

        async def one(item: Awaitable[None]) -> None:
            async with limit:
                await item

        await asyncio.gather(*(one(item) for item in work))

    def _count_phases(self) -> None:
        counts: dict[str, int] = {"Pending": 0, "Running": 0, "Succeeded": 0, "Failed": 0}
        for tracked in self._pods.values():
            phase = tracked.pod.get("status", {}).get("phase", "Pending")
            counts[phase] = counts.get(phase, 0) + 1
        for phase, count in counts.items():
            metrics.PODS.labels(self.provider.name, phase).set(count)

    def _count_backend(self, states: Iterable[JobState]) -> None:
        counts = dict.fromkeys((Phase.PENDING.value, Phase.RUNNING.value, Phase.UNKNOWN.value), 0)
        for state in states:
            if not state.phase.terminal:
                counts[state.phase.value] = counts.get(state.phase.value, 0) + 1
        for state_name, count in counts.items():
            metrics.BACKEND_JOBS.labels(self.identity.site, self.provider.name, state_name).set(count)

    async def _submit(self, tracked: _Tracked) -> None:
        pod = tracked.pod
        try:
            spec = await self._task_spec(pod)
        except PodSpecError as error:
            await self._fail_before_submit(pod, "InvalidPodSpec", str(error))
            return
        started = time.monotonic()
        try:
            job_id = await self.provider.submit(spec)
        except SubmitRefusedError as error:
            metrics.BACKEND_ERRORS.labels(self.provider.name, "submit").inc()
            await self._fail_before_submit(pod, error.reason, f"{self.provider.name}: {error}")
            return
        except BackendUnavailableError as error:
            metrics.BACKEND_ERRORS.labels(self.provider.name, "submit").inc()
            log.warning("submit of %s deferred: %s", spec.key, error)
            return
        metrics.SUBMIT_SECONDS.labels(self.provider.name).observe(time.monotonic() - started)
        annotations = {JOB_ID_ANNOTATION: job_id, PROVIDER_ANNOTATION: self.provider.name}
        patched = await self._patch_pod(pod, {"metadata": {"annotations": annotations}})
        if patched is not None:
            tracked.pod = patched
        await self._event(pod, "Submitted", f"{self.provider.name} job {job_id}: {_describe(spec)}")

    async def _task_spec(self, pod: JSON) -> TaskSpec:
        namespace = pod["metadata"].get("namespace", "default")
        configmap_names, secret_names = referenced_objects(pod)
        configmaps = {
            n: d for n in configmap_names if (d := await self._object(namespace, "configmaps", n)) is not None
        }
        secrets = {n: d for n in secret_names if (d := await self._object(namespace, "secrets", n)) is not None}
        containers = getattr(self.provider, "containers", False) is True
        return task_from_pod(
            pod,
            self._pods_root,
            configmaps=configmaps,
            secrets=secrets,
            base_env=self._base_env,
            container_runtime=containers,
        )

    async def _object(self, namespace: str, kind: str, name: str) -> dict[str, str] | None:
        key = (namespace, kind, name)
        cached = self._object_cache.get(key)
        if cached is not None and time.monotonic() - cached[0] < 10.0:
            return cached[1]
        try:
            data: dict[str, str] | None = (await self.kube.get(f"/api/v1/namespaces/{namespace}/{kind}/{name}")).get(
                "data"
            ) or {}
        except KubeError as error:
            if error.status != 404:
                raise
            data = None
        self._object_cache[key] = (time.monotonic(), data)
        return data

    async def _reconcile(self, tracked: _Tracked, state: JobState | None) -> None:
        pod = tracked.pod
        if _deleting(pod):
            await self._reconcile_deletion(tracked, state)
            return
        if _terminal(pod):
            tracked.finished = True
            # Its Secret and ConfigMap files and its scratch space, as a kubelet unmounts an ended pod's volumes.
            await asyncio.to_thread(_remove_tree, self._pods_root / _uid(pod) / "volumes")
            return
        if state is None:
            return  # not submitted yet
        if state.phase is Phase.UNKNOWN:
            state = self._unknown_or_lost(tracked, state)
            if state is None:
                return
        else:
            tracked.unknown_since = None
        await self._write_status(tracked, state)

    def _unknown_or_lost(self, tracked: _Tracked, state: JobState) -> JobState | None:
        moment = time.monotonic()
        if tracked.unknown_since is None:
            tracked.unknown_since = moment
        if moment - tracked.unknown_since < LOST_JOB_GRACE_S:
            return None
        message = f"{self.provider.name} no longer knows job {state.job_id}: {state.message}"
        return JobState(Phase.FAILED, state.job_id, reason="Error", message=message, exit_code=1, finished_at=now())

    async def _reconcile_deletion(self, tracked: _Tracked, state: JobState | None) -> None:
        pod = tracked.pod
        job_id = _job_id(pod)
        ended = state is None or state.phase.terminal or state.phase is Phase.UNKNOWN or not job_id
        waited_long = (
            tracked.cancel_requested_at is not None and time.monotonic() - tracked.cancel_requested_at > CANCEL_GRACE_S
        )
        if not ended and job_id and tracked.cancel_requested_at is None:
            tracked.cancel_requested_at = time.monotonic()
            await self._event(pod, "Killing", f"cancelling {self.provider.name} job {job_id}")
            await self.provider.cancel(job_id, _uid(pod))
            return
        if ended or waited_long:
            await self._remove_pod(pod)
            tracked.finished = True

    async def _remove_pod(self, pod: JSON) -> None:
        meta = pod["metadata"]
        body = {"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}}
        try:
            await self.kube.delete(f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}", body)
        except KubeError as error:
            if error.status not in (404, 409):
                raise

    async def _write_status(self, tracked: _Tracked, state: JobState) -> None:
        pod = tracked.pod
        container = _container_name(pod)
        status = pod_status(state, container, created=_start_time(pod), image=_image(pod))
        if _summary(status) == _summary(pod.get("status", {})):
            return
        if state.phase is Phase.PENDING and not state.message and pod.get("status", {}).get("phase") == "Pending":
            return  # a moment before the task starts: nothing worth a status write
        if state.phase.terminal and state.usage:
            usage = json.dumps(dict(state.usage), sort_keys=True)
            await self._patch_pod(pod, {"metadata": {"annotations": {USAGE_ANNOTATION: usage}}})
        patched = await self._patch_pod(pod, {"status": status}, subresource="/status")
        if patched is None:
            return
        tracked.pod = patched
        metrics.STATUS_WRITES.labels(self.provider.name).inc()
        await self._announce(pod, state)

    async def _announce(self, pod: JSON, state: JobState) -> None:
        old = pod.get("status", {}).get("phase")
        if state.phase is Phase.RUNNING and old != "Running":
            elapsed = (now() - _created(pod)).total_seconds()
            metrics.PENDING_TO_RUNNING_SECONDS.labels(self.provider.name).observe(max(0.0, elapsed))
            await self._event(
                pod, "Started", f"{self.provider.name} job {state.job_id} started {state.message}".strip()
            )
        elif state.phase is Phase.PENDING and state.message:
            await self._event(pod, state.reason, state.message, warning=True)
        elif state.phase.terminal:
            metrics.POD_OUTCOMES.labels(self.provider.name, state.reason).inc()
            self._trace_task(pod, state)
            text = f"{self.provider.name} job {state.job_id} ended: exit code {state.exit_code}"
            message = f"{text}; {state.message}" if state.message else text
            await self._event(pod, state.reason or state.phase.value, message, warning=state.phase is Phase.FAILED)

    def _trace_task(self, pod: JSON, state: JobState) -> None:
        """The attempt's span in its Run's trace (nothing for a pod that is not a Run's task, or tracing off)."""
        if not self.tracing.enabled:
            return
        start = state.started_at or _start_time(pod)
        span = task_span(
            pod,
            state,
            site=self.identity.site,
            node=self.identity.name,
            provider=self.provider.name,
            start=start,
            end=state.finished_at or now(),
        )
        if span is not None:
            self.tracing.record(span)

    async def _fail_before_submit(self, pod: JSON, reason: str, message: str) -> None:
        log.warning("pod %s/%s failed: %s", pod["metadata"].get("namespace"), pod["metadata"].get("name"), message)
        failed = JobState(Phase.FAILED, "", reason=reason, message=message, finished_at=now())
        self._trace_task(pod, failed)
        status = failed_before_submit(reason, message, _container_name(pod), created=_start_time(pod))
        await self._patch_pod(pod, {"status": status}, subresource="/status")
        await self._event(pod, reason, message, warning=True)

    async def _patch_pod(self, pod: JSON, patch: JSON, *, subresource: str = "") -> JSON | None:
        meta = pod["metadata"]
        path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}{subresource}"
        # Guard against a same-named successor: the patch must land on this pod (uid) or nowhere.
        guarded = {**patch, "metadata": {**patch.get("metadata", {}), "uid": meta["uid"]}}
        try:
            return await self.kube.merge_patch(path, guarded)
        except KubeError as error:
            if error.status in (404, 409):
                return None
            raise

    async def _event(self, pod: JSON, reason: str, message: str, *, warning: bool = False) -> None:
        """An Event named after (pod, reason, message): a restarted bridge cannot post the same one twice."""
        meta = pod["metadata"]
        digest = hashlib.sha256(f"{meta['uid']}/{reason}/{message}".encode()).hexdigest()[:16]
        moment = rfc3339(now())
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{meta['name']}.{digest}", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
                "fieldPath": f"spec.containers{{{_container_name(pod)}}}",
            },
            "reason": reason[:128],
            "message": message[:1024],
            "type": "Warning" if warning else "Normal",
            "source": {"component": COMPONENT, "host": self.identity.name},
            "reportingComponent": COMPONENT,
            "reportingInstance": self.identity.name,
            "firstTimestamp": moment,
            "lastTimestamp": moment,
            "count": 1,
        }
        try:
            await self.kube.create(f"/api/v1/namespaces/{meta['namespace']}/events", event)
        except KubeError as error:
            if not is_status(error, 409, 403, 404):
                log.warning("event %s for %s not recorded: %s", reason, meta["name"], error)

    # --- the kubelet API's view -------------------------------------------------------------------

    async def _log_source(self, namespace: str, name: str, container: str) -> LogSource | None:
        for tracked in list(self._pods.values()):
            meta = tracked.pod["metadata"]
            if meta.get("namespace") != namespace or meta.get("name") != name:
                continue
            if container != _container_name(tracked.pod):
                return None
            path = self.provider.log_path(meta["uid"], container)
            if not path.exists():
                return None
            return LogSource(path, _finished_check(self, meta["uid"]))
        return None


def _remove_tree(path: Path) -> None:
    """Remove a pod's directory (or part of it); symlinks a task left inside are removed, never followed."""
    if path.is_symlink():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def _finished_check(bridge: Bridge, uid: str) -> Callable[[], bool]:
    def finished() -> bool:
        tracked = bridge._pods.get(uid)
        return tracked is None or _terminal(tracked.pod)

    return finished


def _uid(pod: JSON) -> str:
    return str(pod["metadata"]["uid"])


def _annotations(pod: JSON) -> dict[str, str]:
    return pod.get("metadata", {}).get("annotations") or {}


def _job_id(pod: JSON) -> str | None:
    return _annotations(pod).get(JOB_ID_ANNOTATION)


def _terminal(pod: JSON) -> bool:
    return pod.get("status", {}).get("phase") in ("Succeeded", "Failed")


def _deleting(pod: JSON) -> bool:
    return bool(pod.get("metadata", {}).get("deletionTimestamp"))


def _container_name(pod: JSON) -> str:
    containers = pod.get("spec", {}).get("containers") or [{}]
    return str(containers[0].get("name", "main"))


def _image(pod: JSON) -> str:
    containers = pod.get("spec", {}).get("containers") or [{}]
    return str(containers[0].get("image", ""))


def _parse_time(text: str | None) -> datetime.datetime | None:
    if not text:
        return None
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)


def _created(pod: JSON) -> datetime.datetime:
    return _parse_time(pod.get("metadata", {}).get("creationTimestamp")) or now()


def _start_time(pod: JSON) -> datetime.datetime:
    """When this node took the pod: kept from the first status we wrote."""
    return _parse_time(pod.get("status", {}).get("startTime")) or now()


def _summary(status: JSON) -> tuple[Any, ...]:
    """What a status change means: phase, the container's state and reason (not heartbeat-like timestamps)."""
    containers = status.get("containerStatuses") or [{}]
    state = containers[0].get("state") or {}
    kind = next(iter(state), "")
    detail = state.get(kind) or {}
    return (
        status.get("phase"),
        kind,
        detail.get("reason"),
        detail.get("message"),
        detail.get("exitCode"),
    )


def _describe(spec: TaskSpec) -> str:
    parts = [f"cpus={spec.cpus:g}"]
    if spec.memory_bytes:
        parts.append(f"memory={spec.memory_bytes // 2**20}Mi")
    if spec.gpus:
        parts.append(f"gpus={spec.gpus}")
    if spec.walltime_s:
        parts.append(f"walltime={spec.walltime_s}s")
    if spec.tmp_bytes:
        parts.append(f"tmp={spec.tmp_bytes // 2**20}Mi")
    return " ".join(parts)

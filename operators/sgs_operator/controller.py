"""One Run's reconcile loop: observed Jobs + task records → the planner → new Jobs, records and a status.

A ``RunController`` lives as long as the Run's kopf daemon. It is rebuilt from the task records on every
operator start, so it holds nothing that is not either in PostgreSQL or derivable from the cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import kopf
from pydantic import ValidationError

from sgs.dynamic.resolve import apply_answers
from sgs.kube import KubeError
from sgs.model.base import Condition
from sgs.model.pipeline import PipelinePhase, PipelineSpec
from sgs.model.run import RunPhase, RunSpec, RunStatus
from sgs.model.site import ComputeKind, SiteSpec
from sgs.placement.consequences import RunSite, run_site
from sgs.planner import Planner, PlannerError, Task, TaskState
from sgs.telemetry import Tracing
from sgs.telemetry.context import CAUSE_ANNOTATION
from sgs_operator import checks, metrics, placement, split
from sgs_operator.archive import ArchiveClient, ArchiveError
from sgs_operator.blocked import RunBlockedError
from sgs_operator.board import SiteBoard
from sgs_operator.crash import crash_point
from sgs_operator.dynamic import DynamicResolver
from sgs_operator.finished import JobDisposal
from sgs_operator.inputs import InputsBlockedError, values_of
from sgs_operator.jobs import RunRef, SitePlacement, job_name
from sgs_operator.kube import Kube
from sgs_operator.launch import planner_config, site_placement, task_job
from sgs_operator.mirror import PERMIT_GRANTED, START_PERMIT_ANNOTATION, RunMirror
from sgs_operator.naming import ANNOTATION_PRIORITY
from sgs_operator.objects import (
    BucketRunStorage,
    CredentialsError,
    SiteBucket,
    TaskStorage,
    open_bucket,
    runs_on_objects,
    wrapper_outcome,
)
from sgs_operator.observe import (
    NODE_REFUSALS,
    RELEASE_NOT_VERIFIED,
    JobSeen,
    Outcome,
    PodSeen,
    outcome,
    pod_is_final,
    release_verified,
)
from sgs_operator.placement import SiteChoice
from sgs_operator.records import Finished, Registration, Started, TaskStore
from sgs_operator.registration import pinned_image
from sgs_operator.remote import RemoteClusters
from sgs_operator.run_archive import RunArchive
from sgs_operator.settings import OperatorSettings
from sgs_operator.split import RunSplitter
from sgs_operator.stage_in import StageIn, StageInRecords, TransferClient, TransferUnavailableError, owner_of
from sgs_operator.status import (
    condition,
    merge_conditions,
    pipeline_condition,
    run_phase,
    run_status,
    status_patch,
    utc_now,
)
from sgs_operator.storage import (
    Mounts,
    OutsideRootsError,
    Roots,
    RunStorage,
    StorageError,
    input_files,
    resolve_inputs,
    run_mounts,
)
from sgs_operator.tracing import RunTracer

POD_WAIT_S = 5.0  # a failed Job's pod update may trail the Job's; wait this long for its reason
CLIENT_ERRORS_TO_RETRY = frozenset({409, 429})
FIRST_WAVE = 16  # tasks recorded before the first Jobs are created
DYNAMIC_PER_STEP = 256  # dynamic-resource files evaluated per reconcile (the rest wait for the next one)


@dataclass
class Shared:
    """What all Run controllers of one operator share."""

    kube: Kube
    store: TaskStore
    settings: OperatorSettings
    board: SiteBoard = field(default_factory=SiteBoard)
    create_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(32))
    tracing: Tracing = field(default_factory=Tracing.off)
    archive: ArchiveClient = field(default_factory=ArchiveClient)
    origin: str = "sgs"  # this control plane's name on the copies it makes at cluster Sites
    dynamic: DynamicResolver = field(init=False)
    remotes: RemoteClusters = field(init=False)
    transfer: TransferClient | None = field(init=False)

    def __post_init__(self) -> None:
        self.dynamic = DynamicResolver.from_settings(self.settings)
        config = self.settings
        token = config.transfer_token.get_secret_value() if config.transfer_token else None
        self.transfer = TransferClient(config.transfer_url, token) if config.transfer_url and config.stage_in else None
        self.remotes = RemoteClusters(self.kube.client, config.allowed_cluster_servers)


@dataclass
class InFlight:
    job: str
    created_at: float | None  # monotonic; None = adopted after a restart
    finished_seen_at: float | None = None


class RunController:
    def __init__(self, shared: Shared, body: Mapping[str, Any], logger: kopf.Logger):
        self.shared = shared
        self.body = body  # kopf's live view: spec changes (priority, suspend, retryFailed) show up here
        self.log = logger
        meta = body["metadata"]
        self.name: str = meta["name"]
        self.namespace: str = meta["namespace"]
        self.uid: str = meta["uid"]
        self.planner: Planner | None = None
        self.storage: TaskStorage | None = None
        self.site: SitePlacement | None = None
        self.site_spec: SiteSpec | None = None
        self.mounts: Mounts | None = None
        self.pipeline_name = ""
        self.pipeline_digest = ""  # of the spec this Run was started with (pinned in the task table)
        self.disposal = JobDisposal(shared.kube, shared.settings, self.namespace)
        self.inflight: dict[str, InFlight] = {}
        self.priority = 0
        self.retry_applied = 0
        self.started_at = utc_now()
        self.finished_at: datetime | None = None
        self._last_status: dict[str, Any] | None = None
        self._blocked: RunBlockedError | None = None
        self.choice: SiteChoice | None = None
        self.mirror: RunMirror | None = None  # at a cluster Site: the Run runs there, this mirrors it
        self.split: RunSplitter | None = None  # spec.split: the Run is its children, one per Site
        self.permit: Condition | None = None  # a central's copy: StartPermit while it waits for the permit
        self.moved = _redispatched(body)  # kept on every status write from here on
        self.release: str | None = None  # spec.release as the Run started (status.release): every task's image
        self.archive = RunArchive(
            shared.kube, shared.store, shared.archive, self.namespace, self.name, self.uid, logger
        )
        if shared.transfer is not None:
            owner = owner_of(self.namespace, self.name, self.uid)
            records = StageInRecords(shared.store.pool)
            self.archive.stage = StageIn(records, shared.transfer, self.uid, owner, shared.settings.stage_in_lifetime_s)
        cause = (meta.get("annotations") or {}).get(CAUSE_ANNOTATION)
        self.tracer = RunTracer(shared.tracing, self.uid, f"{self.namespace}/{self.name}", cause)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def site_key(self) -> str:
        assert self.site is not None
        return f"{self.namespace}/{self.site.name}"

    def spec(self) -> RunSpec:
        return RunSpec.model_validate(self.body.get("spec") or {})

    def spec_pipeline(self) -> str:
        """The Pipeline the Run names, even when its spec is invalid (for the Runs-by-phase metric)."""
        return str((self.body.get("spec") or {}).get("pipeline") or self.pipeline_name)

    # ------------------------------------------------------------------------------------------- start

    async def start(self, sites: Mapping[Any, Any], phases: Mapping[Any, Any]) -> bool:
        """Build the planner from the Pipeline, the Site and the records; False (with a condition) if blocked."""
        try:
            await self._start(sites, phases)
        except RunBlockedError as blocked:
            self._blocked = blocked
            await self._write_blocked_status(blocked)
            return False
        self._blocked = None
        return True

    async def _start(self, sites: Mapping[Any, Any], phases: Mapping[Any, Any]) -> None:
        try:
            spec = self.spec()
        except ValidationError as err:
            raise RunBlockedError("SpecValid", "InvalidSpec", f"spec: {err}") from err
        pipeline, digest = await self._pinned_pipeline(spec.pipeline)
        refused = self.shared.dynamic.functions.pipeline_problems(pipeline)
        if refused:
            message = "; ".join(f"Pipeline {spec.pipeline!r}: spec.{problem}" for problem in refused)
            raise RunBlockedError("PipelineReady", "DynamicFunctionNotAllowed", message)
        if spec.split is not None:
            await self._start_split(spec, sites, phases, pipeline, digest)
            return
        placed = spec.site or (self.body.get("status") or {}).get("site")
        mine = {name: raw for (ns, name), raw in _site_items(sites) if ns == self.namespace}
        pinned_inputs = await self.archive.recorded_or_resolve(spec, mine, placed)
        site_name, site_spec = await self._site(spec, sites, phases)
        if site_spec.compute.kind is ComputeKind.CLUSTER:
            await self._start_mirror(spec, site_name, site_spec, pipeline, digest)
            return
        try:
            storage = await self._storage(site_name, site_spec, spec.output_prefix)
            inputs = await asyncio.to_thread(resolve_inputs, spec.inputs, storage.roots)
            pinned_inputs = await self.archive.pin(pinned_inputs, site_name, storage, mine, spec.priority)
            if isinstance(storage, BucketRunStorage):
                storage.know_inputs(pinned_inputs)
            inputs |= values_of(pinned_inputs)
            await asyncio.to_thread(storage.ensure_root)
            planner = Planner(pipeline, self.name, inputs, planner_config(spec, site_spec))
        except InputsBlockedError as err:
            raise RunBlockedError("InputsReady", err.reason, str(err)) from err
        except OutsideRootsError as err:
            raise RunBlockedError("InputsReady", "PathOutsideRoots", str(err)) from err
        except (StorageError, PlannerError) as err:
            raise RunBlockedError("InputsReady", "InvalidInputs", str(err)) from err
        await self.archive.connect_outputs(site_name, site_spec)
        self.retry_applied = await self._pin(spec.pipeline, pipeline, digest)
        records = await self.shared.store.load(self.uid)
        try:
            running = planner.restore(records)
        except PlannerError as err:
            raise RunBlockedError(
                "RecordsValid", "RecordsDoNotFit", f"task records do not fit the pipeline: {err}"
            ) from err
        self.planner, self.storage, self.site_spec = planner, storage, site_spec
        self.pipeline_name, self.pipeline_digest = spec.pipeline, digest
        self.mounts = await asyncio.to_thread(run_mounts, storage.roots, storage.run_dir, inputs, planner)
        self.site = site_placement(site_name, site_spec, self.mounts)
        self.priority = spec.priority
        self.release = (self.body.get("status") or {}).get("release") or spec.release
        self.inflight = {t.id: InFlight(job_name(self._ref(), t.id, t.attempt), None) for t in running}
        self.started_at = _status_time(self.body, "startTime") or utc_now()
        metrics.known_series(site_name, spec.pipeline, [executable.name for executable in pipeline.executables])
        self.log.info(f"run {self.key}: {len(planner.tasks)} tasks, {len(records)} records, {len(running)} running")

    async def _start_mirror(
        self, spec: RunSpec, site_name: str, site_spec: SiteSpec, pipeline: PipelineSpec, digest: str
    ) -> None:
        """The Run goes to another cluster: pin its Pipeline here (the copy names that spec), then mirror it."""
        await self._pin(spec.pipeline, pipeline, digest)
        wire = pipeline.model_dump(mode="json", by_alias=True, exclude_none=True)
        message = self.choice.message if self.choice else f"dispatched to {site_name}"
        self.pipeline_name, self.pipeline_digest = spec.pipeline, digest
        self.mirror = RunMirror(
            self.shared.remotes,
            self.shared.kube.client,
            self.shared.origin,
            self.body,
            site_name,
            site_spec,
            (spec.pipeline, digest, wire),
            message,
            self.log,
            redispatch_after_s=0.0 if spec.site else self.shared.settings.redispatch_after_s,
        )
        self.log.info(f"run {self.key}: at cluster Site {site_name}, mirrored as {self.mirror.target.shown}")

    async def _start_split(
        self, spec: RunSpec, sites: Mapping[Any, Any], phases: Mapping[Any, Any], pipeline: PipelineSpec, digest: str
    ) -> None:
        """The Run is a campaign over several Sites: plan its children (once), make those not made yet."""
        await self._pin(spec.pipeline, pipeline, digest)
        self.pipeline_name, self.pipeline_digest = spec.pipeline, digest
        pinned = (spec.pipeline, digest, pipeline.model_dump(mode="json", by_alias=True))
        splitter = RunSplitter(self.shared.kube.client, self.shared.store, self.body, pinned, self.log)
        if not splitter.planned or any(entry.uid is None for entry in splitter.entries):
            plans = await self._split_plan(spec, sites, phases)
            if not splitter.planned:
                await splitter.record_plan(plans, split.plan_message(plans))
            try:
                await splitter.make_missing(spec, plans, self.body.get("spec") or {})
            except KubeError as err:
                raise RunBlockedError("Split", "ChildNotCreated", f"split: {_api_message(err)}") from err
        self.split = splitter
        self.log.info(f"run {self.key}: split into {len(splitter.entries)} child Run(s)")

    async def _split_plan(
        self, spec: RunSpec, sites: Mapping[Any, Any], phases: Mapping[Any, Any]
    ) -> list[split.ChildPlan]:
        mine = {name: raw for (ns, name), raw in _site_items(sites) if ns == self.namespace}
        valid: dict[str, SiteSpec] = {}
        for name, raw in mine.items():
            with contextlib.suppress(ValidationError):  # an invalid Site is given nothing
                valid[name] = SiteSpec.model_validate(raw)
        phase_of = {name: str(phase) for (ns, name), phase in _site_items(phases) if ns == self.namespace}
        divided = spec.divided_inputs()
        items: list[split.Item] = []
        if any(spec.inputs[name].from_archive for name in divided):
            await self.archive.recorded_or_resolve(spec, mine, None)
            found = self.archive.resolution.found if self.archive.resolution is not None else []
            items += split.archive_items(found, divided, valid)
        files = [name for name in divided if spec.inputs[name].uris is not None]
        items += await asyncio.to_thread(split.file_items, spec, files, valid)
        placed = await self._split_placements(split.placements_needed(items), valid, phase_of)
        return split.plan(self.name, spec, items, phase_of, placed)

    async def _split_placements(
        self, observations: list[int], sites: Mapping[str, SiteSpec], phases: Mapping[str, str]
    ) -> dict[int, str | None]:
        """Where the survey's placement sends each observation now (primary, else secondary; None: neither)."""
        archive = self.archive.inputs_archive
        if archive is None or not observations:
            return {}
        maintenance = {name: site.maintenance for name, site in sites.items()}
        placed: dict[int, str | None] = {}
        for start in range(0, len(observations), 16):  # the archive has no bulk placement read
            chunk = observations[start : start + 16]
            try:
                answers = await asyncio.gather(*(self.shared.archive.placement(archive, o) for o in chunk))
            except ArchiveError as err:
                raise RunBlockedError("SiteReady", "ArchiveUnavailable", f"split: reading placements: {err}") from err
            for observation, where in zip(chunk, answers, strict=True):
                placed[observation] = run_site(observation, where, phases, maintenance, utc_now()).site
        return placed

    async def redispatch(self, sites: Mapping[Any, Any], phases: Mapping[Any, Any]) -> bool:
        """The mirror says the Run's cluster Site has been unreachable long enough and its copy never started
        there: send the Run to another Ready Site (the usual choice, without that Site and any the Run left
        before). The copy left behind is listed as abandoned: it never gets its start permit, and the Site's
        orphan collection deletes it once it can. False (logged) when no other Site can take the Run now."""
        assert self.mirror is not None and self.mirror.redispatch_due is not None
        left, since, now = self.mirror.target, self.mirror.redispatch_due, utc_now()
        spec = self.spec()
        status = self.body.get("status") or {}
        gone = {left.site} | {str(a.get("site")) for a in status.get("abandoned") or []}
        mine = {name: raw for (ns, name), raw in _site_items(sites) if ns == self.namespace and name not in gone}
        try:
            choice = await self._choose_site(spec, mine, phases)
        except RunBlockedError as err:
            self.log.warning(f"run {self.key}: Site {left.site} unreachable since {since:%H:%M:%S}, no other: {err}")
            return False
        outage = (now - since).total_seconds()
        reason = (
            f"Site {left.site} unreachable since {since.isoformat()} ({outage:.0f} s), copy {left.shown} never started"
        )
        abandoned = [
            *(status.get("abandoned") or []),
            {
                "site": left.site,
                "namespace": left.namespace,
                "name": left.name,
                "at": now.isoformat(),
                "reason": reason,
            },
        ]
        message = f"{reason}; sent to {choice.name}: {choice.message}"
        kept = [c for c in status.get("conditions") or [] if c.get("type") not in ("SiteReady", "SiteUnreachable")]
        moved = condition("Redispatched", True, "SiteUnreachable", message)
        wire = merge_conditions([], [moved], now)[0].model_dump(mode="json", by_alias=True, exclude_none=True)
        conditions = [*[c for c in kept if c.get("type") != "Redispatched"], wire]
        patch = {"status": {"site": None, "remote": None, "abandoned": abandoned, "conditions": conditions}}
        await self.shared.kube.patch_status(self.namespace, "runs", self.name, patch)
        self.log.info(f"run {self.key}: re-dispatched: {message}")
        for _ in range(100):  # the next controller reads the body: it must see the Run unplaced
            if len((self.body.get("status") or {}).get("abandoned") or []) == len(abandoned):
                break
            await asyncio.sleep(0.1)
        return True

    async def _storage(self, site_name: str, site: SiteSpec, output_prefix: str | None) -> TaskStorage:
        """The Run's directory at the Site; at an S3 Site without one, its prefix in the Site's bucket."""
        if not runs_on_objects(site, output_prefix):
            return RunStorage.for_run(site_name, site, output_prefix, self.namespace, self.name)
        bucket = SiteBucket.of(site_name, site)
        try:
            store = await open_bucket(self.shared.kube, self.namespace, bucket)
        except CredentialsError as err:
            raise RunBlockedError("SiteReady", "CredentialsUnset", str(err)) from err
        return BucketRunStorage(bucket, store, Roots.of(site_name, site), f"{self.namespace}/{self.name}")

    async def _pinned_pipeline(self, name: str) -> tuple[PipelineSpec, str]:
        """The spec this Run started with (kept in the task table), else the Pipeline as it is now."""
        pinned = await self.shared.store.pinned_pipeline(self.uid)
        if pinned is None:
            return await self._pipeline(name)
        digest, raw = pinned
        try:
            return PipelineSpec.model_validate(raw), digest
        except ValidationError as err:
            raise RunBlockedError(
                "PipelineReady", "PinnedPipelineInvalid", f"the Pipeline spec this Run started with: {err}"
            ) from err

    async def _pin(self, name: str, pipeline: PipelineSpec, digest: str) -> int:
        """Keep the spec this Run starts with; returns how many retry-failed requests were applied."""
        pinned_digest, applied = await self.shared.store.ensure_run(
            self.uid, self.namespace, self.name, name, digest, pipeline.model_dump(mode="json", by_alias=True)
        )
        if pinned_digest != digest:
            # A Run recorded before specs were kept, whose Pipeline was edited since: its spec is gone.
            raise RunBlockedError(
                "PipelineReady",
                "PipelineChanged",
                f"Pipeline {name!r} changed since this Run started (sha256 {pinned_digest} → {digest}) and the "
                "spec it started with was not kept; restore the Pipeline or re-create the Run",
            )
        return applied

    async def _pipeline(self, name: str) -> tuple[PipelineSpec, str]:
        obj = await self.shared.kube.get_object(self.namespace, "pipelines", name)
        if obj is None:
            raise RunBlockedError(
                "PipelineReady", "PipelineNotFound", f"spec.pipeline: no Pipeline {name!r} in {self.namespace}"
            )
        status = obj.get("status") or {}
        if status.get("phase") == PipelinePhase.INVALID.value:
            raise RunBlockedError(
                "PipelineReady", "PipelineInvalid", f"Pipeline {name!r} is Invalid: {_ready_message(status)}"
            )
        try:
            spec = PipelineSpec.model_validate(obj.get("spec") or {})
        except ValidationError as err:
            raise RunBlockedError("PipelineReady", "PipelineInvalid", f"Pipeline {name!r}: {err}") from err
        return spec, spec.digest()

    async def _site(self, spec: RunSpec, sites: Mapping[Any, Any], phases: Mapping[Any, Any]) -> tuple[str, SiteSpec]:
        mine = {name: s for (ns, name), s in _site_items(sites) if ns == self.namespace}
        status = self.body.get("status") or {}
        left = {str(a.get("site")) for a in status.get("abandoned") or []}
        placed = status.get("site") if status.get("site") not in left else None
        if spec.site is None:  # a Site the Run was sent away from is not chosen again
            mine = {name: s for name, s in mine.items() if name not in left}
        if spec.site is not None:
            self.choice = SiteChoice(spec.site, placement.REASON_NAMED, f"dispatched to {spec.site} (spec.site)")
        elif placed:
            self.choice = SiteChoice(placed, placement.REASON_KEPT, f"dispatched to {placed}, chosen at its start")
        else:
            self.choice = await self._choose_site(spec, mine, phases)
            await self._write_choice(self.choice)  # before any task starts: a restart keeps this Site
        name = self.choice.name
        if name not in mine:
            raise RunBlockedError("SiteReady", "SiteNotFound", f"spec.site: no Site {name!r} in {self.namespace}")
        try:
            site = SiteSpec.model_validate(mine[name])
        except ValidationError as err:
            raise RunBlockedError("SiteReady", "SiteInvalid", f"Site {name!r}: {err}") from err
        problems = checks.site_problems(name, site)
        if problems:
            raise RunBlockedError("SiteReady", "SiteInvalid", f"Site {name!r}: {'; '.join(problems)}")
        if site.compute.namespace not in (None, self.namespace):
            # Jobs in another namespace could not be owned by the Run (ownerReferences stay in one namespace).
            raise RunBlockedError(
                "SiteReady",
                "SiteNamespaceUnsupported",
                f"Site {name!r}: spec.compute.namespace {site.compute.namespace!r} is not supported: the operator "
                f"creates a Run's Jobs in the Run's namespace ({self.namespace}); leave it unset or set it to that",
            )
        return name, site

    async def _choose_site(self, spec: RunSpec, mine: Mapping[str, Any], phases: Mapping[Any, Any]) -> SiteChoice:
        valid: dict[str, SiteSpec] = {}
        for name, raw in mine.items():
            with contextlib.suppress(ValidationError):  # an invalid Site is never chosen
                valid[name] = SiteSpec.model_validate(raw)
        phase_of = {name: str(phase) for (ns, name), phase in _site_items(phases) if ns == self.namespace}
        running = {name: self.shared.board.running(f"{self.namespace}/{name}") for name in valid}
        sizes = await asyncio.to_thread(_input_sizes, spec)
        held = placement.input_bytes_by_site(valid, sizes)
        for name, size in self.archive.held_bytes().items():  # the archive's replica view: S3 Sites too
            if name in held:
                held[name] += size
        placed = await self._placed(valid, phase_of)
        try:
            return placement.choose_site(valid, phase_of, running, self.namespace, held, placed)
        except placement.NoReadySiteError as err:
            raise RunBlockedError("SiteReady", "NoReadySite", str(err)) from err

    async def _placed(self, sites: Mapping[str, SiteSpec], phases: Mapping[str, str]) -> RunSite | None:
        """Where the survey's placement sends the Run's observation (its primary Site, else its secondary when
        the primary is in maintenance or not Ready); None when the Run is not that of one placed observation."""
        found = await self.archive.observation_placement()
        if found is None:
            return None
        observation, where = found
        maintenance = {name: site.maintenance for name, site in sites.items()}
        return run_site(observation, where, phases, maintenance, utc_now())

    async def _write_choice(self, choice: SiteChoice) -> None:
        chosen = [condition("SiteReady", True, choice.reason, choice.message), *([self.moved] if self.moved else [])]
        conditions = merge_conditions((self.body.get("status") or {}).get("conditions") or [], chosen, utc_now())
        wire = [c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in conditions]
        patch = {"status": {"site": choice.name, "conditions": wire}}
        await self.shared.kube.patch_status(self.namespace, "runs", self.name, patch)
        self.log.info(f"run {self.key}: {choice.message}")

    def _ref(self) -> RunRef:
        return RunRef(self.name, self.namespace, self.uid, self.priority)

    # ------------------------------------------------------------------------------------------- step

    async def step(
        self,
        jobs: Iterable[JobSeen],
        pods: Iterable[PodSeen],
        sites: Mapping[Any, Any],
        pipelines: Mapping[Any, Any] | None = None,
    ) -> None:
        """One reconcile: apply spec changes, take finished Jobs, start what may start, write the status."""
        assert self.planner is not None
        began = time.perf_counter()
        with self.tracer.reconcile(self.site.name if self.site else None):
            spec = self.spec()
            pods = list(pods)
            await self._apply_spec(spec)
            await self._rerank_waiting(pods)
            await self._observe({j.name: j for j in jobs}, {p.job: p for p in pods})
            await self._resolve_dynamic()
            if not spec.suspend and not self.planner.finished:
                await self._launch(spec, self._site_limit(sites))
            await self.archive.register()
            self._report(spec)
            await self._write_status(spec, self._pipeline_change(pipelines or {}))
            if self.finished_at is not None and self.archive.stage is not None:
                await self._release_stage_in(self.archive.stage)
        metrics.RECONCILE_SECONDS.observe(time.perf_counter() - began)

    async def _release_stage_in(self, stage: StageIn) -> None:
        """The Run is done with its inputs: its stage-in rule goes (retried next reconcile if the service is down)."""
        try:
            await stage.release()
        except TransferUnavailableError as err:
            self.log.warning(f"run {self.key}: stage-in rule not deleted yet: {err}")

    def _pipeline_change(self, pipelines: Mapping[Any, Any]) -> Condition:
        """Whether the Pipeline was edited (or deleted) since this Run started with it."""
        store = pipelines.get((self.namespace, self.pipeline_name))  # a kopf Index: key → store of values
        current = next(iter(store), None) if store is not None else None
        return pipeline_condition(self.pipeline_name, self.pipeline_digest, current)

    def _site_limit(self, sites: Mapping[Any, Any]) -> int:
        assert self.site is not None and self.site_spec is not None
        for (ns, name), raw in _site_items(sites):
            if ns == self.namespace and name == self.site.name:
                with contextlib.suppress(ValidationError):  # keep the last valid spec
                    self.site_spec = SiteSpec.model_validate(raw)
        return self.site_spec.compute.max_parallel

    async def _apply_spec(self, spec: RunSpec) -> None:
        assert self.planner is not None
        if spec.priority != self.priority:
            self.log.info(f"run {self.key}: priority {self.priority} → {spec.priority}")
            self.priority = spec.priority
            self.planner.set_priority(float(spec.priority))
        if spec.retry_failed > self.retry_applied:
            await self._retry_failed(spec.retry_failed)

    async def _rerank_waiting(self, pods: Iterable[PodSeen]) -> None:
        """Pods still waiting carry the Run's priority now (their spec.priority is fixed at creation): a bridge
        that queues pods itself (pilot mode) re-ranks them. Level-triggered: a pod that says another priority is
        patched, so a restart or a lost patch is caught up by the next reconcile."""
        stale = [p for p in pods if p.phase == "Pending" and p.priority is not None and p.priority != self.priority]
        for pod in stale:
            try:
                await self.shared.kube.annotate_pod(self.namespace, pod.name, {ANNOTATION_PRIORITY: str(self.priority)})
            except KubeError as error:  # gone meanwhile, or not allowed: the queue keeps the old order, the Run goes on
                self.log.warning(f"run {self.key}: pod {pod.name} not re-ranked: {error}")
        if stale:
            self.log.info(f"run {self.key}: {len(stale)} waiting pod(s) re-ranked to priority {self.priority}")

    async def _retry_failed(self, requested: int) -> None:
        """Failed tasks get one more attempt, successes stay; recorded as Retrying(now) with the request mark."""
        assert self.planner is not None
        revived = self.planner.retry_failed()
        now = time.time()
        records = [
            self.planner.record(tid).model_copy(update={"state": TaskState.RETRYING, "not_before": now})
            for tid in revived
        ]
        await self.shared.store.save_records(
            self.uid, records, message="retry-failed requested", retry_failed_applied=requested
        )
        self.retry_applied = requested
        self.finished_at = None
        self.log.info(f"run {self.key}: retry-failed #{requested} revived {len(revived)} task(s)")

    async def _observe(self, jobs: Mapping[str, JobSeen], pods: Mapping[str, PodSeen]) -> None:
        now = time.monotonic()
        missing: list[str] = []
        await self.disposal.leftovers(jobs, {flight.job for flight in self.inflight.values()})
        for tid, flight in list(self.inflight.items()):
            job = jobs.get(flight.job)
            if job is None:
                if flight.created_at is None or now - flight.created_at > self.shared.settings.job_grace_s:
                    missing.append(tid)
                continue
            if job.finished is None:
                continue
            pod = pods.get(flight.job)
            if job.finished == "Failed" and not pod_is_final(pod):
                flight.finished_seen_at = flight.finished_seen_at or now
                if now - flight.finished_seen_at < POD_WAIT_S:
                    continue
            await self._finish(tid, flight, outcome(job, pod))
        if missing:
            assert self.planner is not None
            await self._create_jobs([self.planner.tasks[tid] for tid in missing])

    async def _finish(self, tid: str, flight: InFlight, seen: Outcome) -> None:
        assert self.planner is not None and self.storage is not None
        task = self.planner.tasks[tid]
        attempt, requested = task.attempt, task.resources
        inputs = self.planner.task_inputs(tid)  # before the planner takes the outcome: what the task was given
        seen = await self._take_outcome(task, seen)
        crash_point("after-finish-before-record")
        registrations = await self._outbox_rows(task, inputs, seen.image_id) if seen.succeeded else []
        usage = seen.usage
        if usage is not None:
            usage = {**usage, **metrics.profile_summary(usage, requested)}
        await self.shared.store.save_finished(
            self.uid,
            Finished(
                record=self.planner.record(tid),
                attempt=attempt,
                job=flight.job,
                outcome=seen.reason,
                exit_code=seen.exit_code,
                message=seen.message or None,
                usage=usage,
                registrations=registrations,
            ),
        )
        crash_point("after-finish-before-register")
        assert self.site is not None
        attempt_s = time.monotonic() - flight.created_at if flight.created_at is not None else None
        metrics.observe_attempt(self.site.name, task.executable.name, seen.reason, seen.usage, requested, attempt_s)
        self.tracer.count(finished=1)
        del self.inflight[tid]
        await self.disposal.dispose(flight.job, seen.succeeded)

    async def _take_outcome(self, task: Task, seen: Outcome) -> Outcome:
        """Tell the planner; a Job that succeeded without writing its outputs (or a bad list) is an Error."""
        assert self.planner is not None and self.storage is not None
        if seen.succeeded and self.release is not None:
            seen = release_verified(seen, self.release)
        if seen.succeeded:
            outputs = self.storage.outputs(task.id, task.executable)
            try:
                missing = await asyncio.to_thread(self.storage.missing_outputs, outputs)
            except ValueError as err:  # an S3 Site's store unreachable, or an object without checksums
                missing, seen = [], Outcome("Error", seen.exit_code, str(err), seen.usage)
            if missing:
                seen = Outcome("Error", seen.exit_code, f"exited 0 but did not write {missing}", seen.usage)
            elif seen.succeeded:
                try:
                    ports = self.planner.list_ports(task.id)
                    lists, directories = (
                        await asyncio.to_thread(self.storage.read_lists, outputs, ports) if ports else ({}, set())
                    )
                except ValueError as err:
                    seen = Outcome("Error", seen.exit_code, str(err), seen.usage)
                else:
                    self.planner.succeed(task.id, outputs, lists)
                    self._expose(directories)
                    return seen
        if isinstance(self.storage, BucketRunStorage):
            seen = wrapper_outcome(seen)
        failure = f"{seen.reason}: {seen.message}" if seen.message else seen.reason
        refused = seen.reason in NODE_REFUSALS or seen.reason == RELEASE_NOT_VERIFIED  # the same again: no retry
        state = self.planner.fail(task.id, time.time(), failure, oom=seen.reason == "OOMKilled", permanent=refused)
        self.log.info(f"run {self.key}: {task.id} attempt {task.attempt} {seen.reason} → {state.value}")
        return seen

    async def _outbox_rows(self, task: Task, inputs: Mapping[str, Any], image_id: str) -> list[Registration]:
        assert self.storage is not None
        # The lineage names the image by the digest it ran (repo@sha256:…) when the node reports one, not a tag.
        image = pinned_image(self.release or task.executable.image or self.shared.settings.default_image, image_id)
        return await self.archive.outbox_rows(task, inputs, self.storage, image, self.pipeline_digest)

    def _expose(self, directories: Iterable[str]) -> None:
        """Directories that list outputs named become visible (read-only) to the Jobs created from now on."""
        assert self.mounts is not None and self.site is not None
        if self.mounts.add(directories):
            self.site = replace(self.site, mounts=self.mounts.host_mounts())

    async def _resolve_dynamic(self) -> None:
        """Resources read from upstream files: JSON here, named functions in the sandbox (off the loop)."""
        assert self.planner is not None and self.storage is not None
        pending = self.planner.pending_dynamic()[:DYNAMIC_PER_STEP]
        if not pending:
            return
        answers = await asyncio.to_thread(self.shared.dynamic.answers, pending, self.storage, self.log)
        for task, message in apply_answers(self.planner, pending, answers):
            await self.shared.store.save_records(self.uid, [self.planner.record(task.id)], message=message)

    async def _launch(self, spec: RunSpec, site_limit: int) -> None:
        assert self.planner is not None
        running = len(self.inflight)
        self._report(spec)
        wanted = min(spec.max_parallel - running, self.planner.counts[TaskState.READY] + self._due_retries())
        grant = self.shared.board.grant(self.site_key, self.key, site_limit, wanted)
        if grant <= 0:
            return
        if not self._may_start():
            return
        tasks = self.planner.take(time.time(), None, limit=grant)
        if not tasks:
            return
        for task in tasks:
            self.inflight[task.id] = InFlight(job_name(self._ref(), task.id, task.attempt), time.monotonic())
        self._report(spec)  # before any await: other Runs at this Site see the slots as taken
        self.tracer.count(started=len(tasks))
        assert self.site is not None
        metrics.TASKS_STARTED.labels(self.site.name, self.pipeline_name).inc(len(tasks))
        began = time.perf_counter()
        await self._record_then_create(tasks)
        crash_point("after-job-before-status")
        self.log.info(f"run {self.key}: started {len(tasks)} task(s) in {time.perf_counter() - began:.2f} s")

    def _may_start(self) -> bool:
        """A copy sent by a central control plane starts its first task only once that centre granted it (the
        annotation it writes): the centre then knows exactly which copies may have run, and may send one that
        never started to another Site during a partition without any task running twice. Until then the copy
        asks through its StartPermit condition. Runs made here (no such annotation) start as always."""
        annotations = self.body["metadata"].get("annotations") or {}
        permit = annotations.get(START_PERMIT_ANNOTATION)
        if permit is None or permit == PERMIT_GRANTED or self.started_at_least_once():
            self.permit = None if permit is None else condition("StartPermit", True, "Granted", "granted by the centre")
            return True
        message = "asked the central control plane for its permit to start (it has not answered yet)"
        self.permit = condition("StartPermit", False, "Requested", message)
        return False

    def started_at_least_once(self) -> bool:
        assert self.planner is not None
        return bool(self.inflight) or any(
            self.planner.counts[state] for state in (TaskState.SUCCEEDED, TaskState.FAILED, TaskState.RETRYING)
        )

    async def _record_then_create(self, tasks: list[Task]) -> None:
        """Record a wave Running (one transaction), then create its Jobs while the next wave is recorded.

        Each Job is created only once its own record is durable; overlapping the two keeps the API server
        busy from the first wave on instead of waiting for a whole fan-out's records.
        """
        creating: list[asyncio.Task[None]] = []
        try:
            for wave in _waves(tasks, self.shared.settings.record_wave):
                await asyncio.gather(
                    self.shared.store.save_started(self.uid, [self._started(t) for t in wave]),
                    asyncio.to_thread(self._prepare_dirs, wave),
                )
                crash_point("after-record-before-job")
                creating.append(asyncio.create_task(self._create_jobs(wave, prepared=True)))
        finally:
            await asyncio.gather(*creating)

    def _due_retries(self) -> int:
        assert self.planner is not None
        due = self.planner.next_retry_at()
        return self.planner.counts[TaskState.RETRYING] if due is not None and due <= time.time() else 0

    def _started(self, task: Task) -> Started:
        assert self.site is not None
        return Started(
            record=self.planner.record(task.id),  # type: ignore[union-attr]
            job=self.inflight[task.id].job,
            site=self.site.name,
            executable=task.executable.name,
            requested=task.resources.model_dump(mode="json", exclude={"dynamic"}),
        )

    def _prepare_dirs(self, tasks: list[Task]) -> None:
        """Each task's output directory (a mkdir costs ~0.3 ms here: off the event loop, a wave at a time)."""
        assert self.storage is not None
        for task in tasks:
            self.storage.prepare(task.id)

    async def _create_jobs(self, tasks: list[Task], prepared: bool = False) -> None:
        if not prepared:
            await asyncio.to_thread(self._prepare_dirs, tasks)
        await self.shared.kube.ensure_priority_class(self.priority)
        results = await asyncio.gather(*(self._create_job(t) for t in tasks), return_exceptions=True)
        for task, result in zip(tasks, results, strict=True):
            if isinstance(result, BaseException):
                await self._creation_failed(task, result)

    async def _create_job(self, task: Task) -> None:
        assert self.site is not None
        async with self.shared.create_slots:  # built in the slot: a wave's building never stalls the responses
            job = self._job(task)
            with self.tracer.job_creation(job["metadata"]["name"], task.id, task.attempt, self.site.name) as span:
                created = await self.shared.kube.create_job(job)
                span.set_attribute("sgs.job.existed", not created)
        flight = self.inflight.get(task.id)
        if flight is not None:
            flight.created_at = time.monotonic()
        if created:
            self.tracer.count(created=1)
            metrics.JOBS_CREATED.labels(self.site.name).inc()

    async def _creation_failed(self, task: Task, error: BaseException) -> None:
        """A refused Job (4xx, or a path the operator will not write) fails the task for good with the reason;
        anything else is retried."""
        assert self.planner is not None
        refused = isinstance(error, KubeError) and _refused(error.status)
        if refused or isinstance(error, StorageError):
            message = (
                f"Job refused by the API server ({error.status}): {_api_message(error)}"
                if isinstance(error, KubeError)
                else f"Job not created: {error}"
            )
            self.planner.fail(task.id, time.time(), message, permanent=True)
            self.inflight.pop(task.id, None)
            await self.shared.store.save_records(self.uid, [self.planner.record(task.id)], message=message)
            self.log.error(f"run {self.key}: {task.id}: {message}")
            return
        flight = self.inflight.get(task.id)
        if flight is not None:
            flight.created_at = None  # created again at the next reconcile
        self.log.warning(f"run {self.key}: creating the Job of {task.id} failed, will retry: {error!r}")

    def _job(self, task: Task) -> dict[str, Any]:
        assert self.planner is not None and self.storage is not None and self.site is not None
        settings = self.shared.settings
        image = self.release or task.executable.image or settings.default_image
        return task_job(
            self._ref(),
            self.site,
            self.storage,
            self.planner,
            task,
            image,
            settings.tmpdir_mount,
            settings.task_wrapper,
        )

    # ------------------------------------------------------------------------------------------- status

    def _report(self, spec: RunSpec) -> None:
        assert self.planner is not None
        ready = 0 if spec.suspend or self.planner.finished else self.planner.counts[TaskState.READY]
        self.shared.board.report(self.site_key, self.key, self.priority, len(self.inflight), ready)

    def leave(self) -> None:
        metrics.RUNS.forget(self.key)
        if self.mirror is not None:
            self.mirror.leave()
        if self.site is not None:
            self.shared.board.leave(self.site_key, self.key)

    def status(self, spec: RunSpec, pipeline_change: Condition | None = None) -> RunStatus:
        status = self._status(spec, pipeline_change)
        status.release = self.release
        return status

    def _status(self, spec: RunSpec, pipeline_change: Condition | None = None) -> RunStatus:
        assert self.planner is not None and self.site is not None
        if run_phase(self.planner, spec.suspend) in (RunPhase.SUCCEEDED, RunPhase.FAILED):
            self.finished_at = self.finished_at or utc_now()
        else:
            self.finished_at = None
        return run_status(
            self.planner,
            suspended=spec.suspend,
            site=self.site.name,
            start_time=self.started_at,
            completion_time=self.finished_at,
            task_table=self.shared.store.table_pointer(self.uid),
            site_reason=self.choice.reason if self.choice else "SiteResolved",
            site_message=self.choice.message if self.choice else f"dispatched to {self.site.name}",
            generation=self.body["metadata"].get("generation"),
            pipeline_digest=self.pipeline_digest or None,
            pipeline_change=pipeline_change,
            extra=[
                c for c in (self.archive.outputs_condition, self._staged(), self.permit, self.moved) if c is not None
            ],
        )

    def _staged(self) -> Condition | None:
        return self.archive.stage.condition if self.archive.stage is not None else None

    async def _write_status(self, spec: RunSpec, pipeline_change: Condition | None = None) -> None:
        status = self.status(spec, pipeline_change)
        metrics.RUNS.set(self.key, status.site or "", self.pipeline_name, status.phase.value)
        comparable = status.model_dump(mode="json", exclude={"conditions"}) | {
            "conditions": [c.model_dump(mode="json", exclude={"last_transition_time"}) for c in status.conditions]
        }
        if comparable == self._last_status:
            return
        previous = (self.body.get("status") or {}).get("conditions") or []
        # Read before the patch: kopf updates the live body from the watch, possibly before the patch returns.
        shown_phase = (self.body.get("status") or {}).get("phase")
        status.conditions = merge_conditions(previous, status.conditions, utc_now())
        crash_point("before-status-patch")
        await self.shared.kube.patch_status(self.namespace, "runs", self.name, status_patch(status))
        self._last_status = comparable
        self._trace_end(status, shown_phase)

    def _trace_end(self, status: RunStatus, shown_phase: str | None) -> None:
        """The Run's root span, when this reconcile wrote its end (not again after a restart: the Run's
        status already showed it)."""
        ended = (RunPhase.SUCCEEDED.value, RunPhase.FAILED.value)
        if status.phase.value not in ended or shown_phase in ended:
            return
        counts = status.tasks.model_dump(mode="json")
        self.tracer.run_ended(
            self.started_at,
            status.completion_time or utc_now(),
            status.phase.value,
            status.site or "",
            self.pipeline_name,
            {key: int(value) for key, value in counts.items() if isinstance(value, int)},
        )

    async def _write_blocked_status(self, blocked: RunBlockedError) -> None:
        previous = self.body.get("status") or {}
        conditions = [condition(blocked.kind, False, blocked.reason, str(blocked))]
        phase = RunPhase.FAILED if blocked.failed else RunPhase.PENDING
        metrics.RUNS.set(self.key, "", self.spec_pipeline(), phase.value)
        if blocked.failed:
            self.finished_at = self.finished_at or _status_time(self.body, "completionTime") or utc_now()
        status = RunStatus(
            phase=phase,
            completion_time=self.finished_at if blocked.failed else None,
            observed_generation=self.body["metadata"].get("generation"),
            conditions=merge_conditions(previous.get("conditions") or [], conditions, utc_now()),
        )
        comparable = status.model_dump(mode="json", exclude={"conditions"}) | {"blocked": str(blocked)}
        if comparable == self._last_status:
            return
        await self.shared.kube.patch_status(self.namespace, "runs", self.name, status_patch(status))
        self._last_status = comparable


def _waves(tasks: list[Task], size: int) -> Iterator[list[Task]]:
    """A small first wave (Jobs start flowing at once), then waves of ``size``."""
    first = min(size, FIRST_WAVE)
    yield tasks[:first]
    for i in range(first, len(tasks), size):
        yield tasks[i : i + size]


def _site_items(sites: Mapping[Any, Any]) -> list[tuple[tuple[str, str], Mapping[str, Any]]]:
    """(namespace, name) → spec from the Site index (a kopf Index: key → store of values)."""
    items = []
    for key, store in sites.items():
        for spec in store:
            items.append((key, spec))
    return items


def _input_sizes(spec: RunSpec) -> dict[str, int]:
    """Size of each of the Run's input files that exists (inputs the operator cannot resolve count as none)."""
    try:
        values = resolve_inputs(spec.inputs)
    except StorageError:
        return {}
    sizes: dict[str, int] = {}
    for path in input_files(values):
        with contextlib.suppress(OSError):
            sizes[path] = Path(path).stat().st_size
    return sizes


def _ready_message(status: Mapping[str, Any]) -> str:
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Ready":
            return str(cond.get("message") or cond.get("reason") or "")
    return ""


def _status_time(body: Mapping[str, Any], field_name: str) -> datetime | None:
    value = (body.get("status") or {}).get(field_name)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")) if value else None


def _refused(status: int | None) -> bool:
    return status is not None and 400 <= status < 500 and status not in CLIENT_ERRORS_TO_RETRY


def _api_message(error: KubeError) -> str:
    return error.message or error.reason


def _redispatched(body: Mapping[str, Any]) -> Condition | None:
    """The Redispatched condition a re-dispatch wrote: it stays, saying where the Run came from and why."""
    for raw in (body.get("status") or {}).get("conditions") or []:
        if raw.get("type") == "Redispatched":
            with contextlib.suppress(ValidationError):
                return Condition.model_validate(raw)
    return None

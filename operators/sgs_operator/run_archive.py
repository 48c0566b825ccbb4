"""One Run's dealings with its Site's archive, kept out of the reconcile loop: archive inputs resolved (once) and
pinned at the chosen Site, the bytes each Site holds for the Site choice, the outbox rows of a succeeded task,
and the registration of its outputs with the condition that reports it."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import kopf
from pydantic import ValidationError

from sgs.local.process import command_argv
from sgs.model.base import Condition
from sgs.model.run import RunSpec
from sgs.model.site import SiteSpec
from sgs.planner import Task
from sgs_operator.archive import ArchiveClient, ArchiveError, ArchiveUnsetError, SiteArchive, site_archive
from sgs_operator.blocked import RunBlockedError
from sgs_operator.inputs import InputsBlockedError, Resolution, archive_inputs
from sgs_operator.inputs import resolve as resolve_inputs
from sgs_operator.kube import Kube
from sgs_operator.objects import BucketRunStorage, TaskStorage
from sgs_operator.records import InputRow, Registration, TaskStore
from sgs_operator.registration import Registrar, file_checksums, output_facts, run_collection
from sgs_operator.stage_in import StageIn
from sgs_operator.status import condition


@dataclass
class RunArchive:
    kube: Kube
    store: TaskStore
    client: ArchiveClient
    namespace: str
    name: str
    uid: str
    log: kopf.Logger
    resolution: Resolution | None = None
    registrar: Registrar | None = None
    outputs_condition: Condition | None = None
    pending: bool = True  # rows may wait in the outbox (unknown at start; set by a success, cleared when drained)
    site: tuple[str, SiteSpec] | None = None
    stage: StageIn | None = None  # None: the operator has no transfer service (or stage-in is off)
    inputs_archive: SiteArchive | None = None  # the archive the inputs were resolved at (and placements read from)

    # ------------------------------------------------------------------------------------------- inputs

    async def recorded_or_resolve(
        self, spec: RunSpec, sites: Mapping[str, Mapping[str, Any]], placed: str | None
    ) -> list[InputRow]:
        """The archive inputs recorded at an earlier start; else resolve them now (``resolution``, for the Site
        choice, then ``pin``) and return []. [] too when the Run has none."""
        wanted = archive_inputs(spec)
        self.resolution = None
        if not wanted:
            return []
        recorded = await self.store.load_inputs(self.uid)
        if recorded:
            return recorded
        archive = self.inputs_archive = await self._archive_for_inputs(sites, placed)
        try:
            self.resolution = await resolve_inputs(self.client, archive, wanted)
        except InputsBlockedError as err:
            raise RunBlockedError("InputsReady", err.reason, str(err)) from err
        except ArchiveError as err:
            raise RunBlockedError("InputsReady", "ArchiveUnavailable", f"resolving spec.inputs: {err}") from err
        return []

    async def _archive_for_inputs(self, sites: Mapping[str, Mapping[str, Any]], placed: str | None) -> SiteArchive:
        """The archive of the Run's Site; unplaced, that of the first of the namespace's Sites (by name) naming
        one: the Site is then chosen from the replicas that archive knows of."""
        for name in [placed] if placed else sorted(sites):
            with contextlib.suppress(ValidationError):
                site = SiteSpec.model_validate(sites.get(name) or {})
                if site.archive_url or placed:
                    try:
                        return await site_archive(self.kube, self.namespace, name, site)
                    except ArchiveUnsetError as err:
                        raise RunBlockedError("InputsReady", "ArchiveUnset", str(err)) from err
        which = f"is named {placed!r}" if placed else "has spec.archiveUrl"
        raise RunBlockedError(
            "InputsReady", "ArchiveUnset", f"spec.inputs name archive datasets, but no Site of {self.namespace} {which}"
        )

    async def observation_placement(self) -> tuple[int, tuple[str, str | None] | None] | None:
        """The observation the resolved inputs all belong to and its (primary, secondary) placement (None: not
        placed); None when the inputs are not those of one observation."""
        observation = self.resolution.observation() if self.resolution is not None else None
        if observation is None or self.inputs_archive is None:
            return None
        try:
            return observation, await self.client.placement(self.inputs_archive, observation)
        except ArchiveError as err:
            message = f"reading the placement of observation {observation}: {err}"
            raise RunBlockedError("SiteReady", "ArchiveUnavailable", message) from err

    def held_bytes(self) -> dict[str, int]:
        """Input bytes per Site by the archive's replicas (POSIX and S3 Sites alike); {} without a resolution."""
        return self.resolution.held_bytes() if self.resolution is not None else {}

    async def pin(
        self, recorded: list[InputRow], site: str, storage: TaskStorage, sites: Iterable[str] = (), priority: int = 0
    ) -> list[InputRow]:
        """The resolved inputs as their replicas' paths at the Site, recorded before any task starts; those
        missing there are staged in first (``sgs_operator.stage_in``: RunBlockedError while they are copied)."""
        if recorded or self.resolution is None:
            return recorded
        if self.stage is not None:
            self.resolution = await self.stage.check(self.resolution, site, sites, priority)
        bucket = storage.bucket.bucket if isinstance(storage, BucketRunStorage) else None
        rows = await asyncio.to_thread(self.resolution.at_site, site, storage.roots, bucket)  # realpath: file system
        kept = await self.store.save_inputs(self.uid, rows)
        self.log.info(f"run {self.namespace}/{self.name}: {len(kept)} archive input dataset(s) resolved at {site}")
        return kept

    # ------------------------------------------------------------------------------------------- outputs

    async def connect_outputs(self, site_name: str, site: SiteSpec) -> None:
        """Outputs are registered when the Site names an archive (else they stay files, as before)."""
        if not site.archive_url:
            self.registrar = None
            return
        try:
            archive = await site_archive(self.kube, self.namespace, site_name, site)
        except ArchiveUnsetError as err:
            raise RunBlockedError("SiteReady", "ArchiveUnset", str(err)) from err
        self.site = (site_name, site)
        collection = run_collection(self.namespace, self.name, self.uid)
        run = f"{self.namespace}/{self.name}"
        self.registrar = await Registrar.load(self.store, self.client, archive, self.uid, collection, run)

    async def outbox_rows(
        self, task: Task, inputs: Mapping[str, Any], storage: TaskStorage, image: str, pipeline_digest: str
    ) -> list[Registration]:
        """A succeeded task's outputs to register (checksums read off the event loop); none without an archive."""
        if self.registrar is None:
            return []
        outputs = storage.outputs(task.id, task.executable)
        given = {**{k: v if isinstance(v, str) else json.dumps(v) for k, v in inputs.items()}, **outputs}
        argv = command_argv(task.executable.command, [f"--{k}={v}" for k, v in given.items()])
        sums = storage.checksums_of if isinstance(storage, BucketRunStorage) else file_checksums
        rows = await asyncio.to_thread(output_facts, task, outputs, inputs, argv, image, pipeline_digest, sums)
        self.pending = self.pending or bool(rows)
        return rows

    async def register(self) -> None:
        """Register what is pending, then say how far the Run's outputs are (OutputsRegistered)."""
        if self.registrar is None or not self.pending:
            return  # nothing new since the outbox was last seen empty: no query per reconcile
        if self.registrar.refused and self.site is not None:
            await self._reread_token(*self.site)
        await self.registrar.drain()
        counts, error = await self.store.registration_counts(self.uid)
        self.outputs_condition = outputs_condition(counts, error, self.registrar.archive.url) if counts else None
        self.pending = counts.get("pending", 0) > 0

    async def _reread_token(self, site_name: str, site: SiteSpec) -> None:
        """A token the archive refused may have been rotated in its Secret since: take the Secret's current one."""
        assert self.registrar is not None
        with contextlib.suppress(ArchiveUnsetError):  # the row keeps waiting with the archive's reason
            self.registrar.archive = await site_archive(self.kube, self.namespace, site_name, site)
            self.registrar.refused = False


def outputs_condition(counts: Mapping[str, int], error: str | None, url: str) -> Condition:
    registered, pending, failed = (counts.get(k, 0) for k in ("registered", "pending", "failed"))
    message = f"{registered} output(s) registered at {url}, {pending} pending, {failed} failed, "
    message += f"{counts.get('skipped', 0)} not registered (register: false)"
    if error and (pending or failed):
        message += f"; {error}"
    reason = "RegistrationFailed" if failed else "Registering" if pending else "Registered"
    return condition("OutputsRegistered", not pending and not failed, reason, message[:1024])

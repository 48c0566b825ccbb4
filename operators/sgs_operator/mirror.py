"""Runs at cluster Sites: one copy in the Site's own cluster, run by its own operator, its status mirrored back.

The copy has the central Run's name in the Site's remote namespace and carries the origin (this control plane)
and the central Run's uid as labels, so creating it is idempotent: a restart, a replayed event or two reconciles
at once find the copy by name and adopt it, never make a second. A copy with our origin label and another uid is
an orphan of an earlier central Run of that name (deleted while the Site was unreachable): it is deleted before
the new copy is made, and the Site's timer deletes every orphan whose central Run is gone (MultiKueue's garbage
collector, keyed the same way). The Pipeline goes along under a content-addressed name (``<name>-<digest>``), so
copies of Runs pinned to different specs of one Pipeline never overwrite each other.

Spec changes that may change while a Run runs (priority, suspend, retryFailed, maxParallel) flow down; the
copy's status (phase, counts, conditions, failed tasks, times) flows up. When the Site's API server cannot be
reached the central Run keeps its last mirrored status and gets ``SiteUnreachable`` (True, since when); the
copy keeps running there, and the next successful read converges the two.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

import aiohttp
import kopf
from pydantic import ValidationError

from sgs.kube import CONFLICT, JSON, NOT_FOUND, KubeClient, KubeError
from sgs.model.base import GROUP, VERSION
from sgs.model.site import SitePhase, SiteSpec, SiteStatus
from sgs.naming import dns_label
from sgs_operator.naming import MANAGED_BY, label_value
from sgs_operator.remote import KubeconfigError, RemoteClusters
from sgs_operator.remote_runs import RemoteRuns
from sgs_operator.status import condition, utc_now

ORIGIN_LABEL = "sgs.io/origin"  # the control plane that made a copy (its kube-system namespace uid, or as set)
ORIGIN_UID_LABEL = "sgs.io/origin-uid"  # the central Run's uid
ORIGIN_SITE_LABEL = "sgs.io/origin-site"  # the central cluster Site the copy was sent through
ORIGIN_RUN_ANNOTATION = "sgs.io/origin-run"  # <namespace>/<name> of the central Run
DIGEST_ANNOTATION = "sgs.io/pipeline-digest"
# The fence against running a Run twice: a copy starts its first task only once the centre wrote "granted" here,
# and the centre records that it did before it does. A copy it never granted cannot have run anything.
START_PERMIT_ANNOTATION = "sgs.io/start-permit"
PERMIT_AWAITING, PERMIT_GRANTED = "awaiting", "granted"
SPEC_DOWN = ("priority", "suspend", "retryFailed", "maxParallel")  # what may change while a Run runs
STATUS_UP = ("phase", "tasks", "progress", "startTime", "completionTime", "failedTasks", "pipelineDigest")
OURS = (
    "SiteReady",
    "SiteUnreachable",
    "Redispatched",
)  # conditions the central operator writes; the copy's others go up as-is
MAX_NAME = 253
UNAUTHORIZED, FORBIDDEN = 401, 403
FINISHED = ("Succeeded", "Failed")
STARTED_COUNTS = ("running", "retrying", "succeeded", "failed")  # a task of these has run (or runs) at the Site
# What a remote API server that is down or cut off looks like from here.
UNREACHABLE: tuple[type[BaseException], ...] = (aiohttp.ClientError, OSError, asyncio.TimeoutError)
REMOTE_ERRORS: tuple[type[BaseException], ...] = (KubeError, *UNREACHABLE)
REMOVAL_ERRORS: tuple[type[BaseException], ...] = (KubeconfigError, *REMOTE_ERRORS)


class RemoteRefusedError(Exception):
    """The Site's cluster refuses the copy (name taken, namespace missing, admission): ``reason`` says which."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Target:
    """Where one central Run's copy lives."""

    site: str  # the central cluster Site
    namespace: str  # in the Site's cluster
    name: str
    remote_site: str  # the Site there that runs it

    @classmethod
    def of(cls, site: str, spec: SiteSpec, namespace: str, name: str) -> Target:
        compute = spec.compute
        return cls(site, compute.remote_namespace or namespace, name, compute.remote_site or site)

    @property
    def shown(self) -> str:
        return f"{self.namespace}/{self.name}"


# ----------------------------------------------------------------------------------------------- pure parts


def runs_path(namespace: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{quote(namespace, safe='')}/runs"


def run_path(namespace: str, name: str) -> str:
    return f"{runs_path(namespace)}/{quote(name, safe='')}"


def pipelines_path(namespace: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{quote(namespace, safe='')}/pipelines"


def mirrored_pipeline_name(name: str, digest: str) -> str:
    """``<name>-<first 10 of the digest>``: one immutable copy per Pipeline spec."""
    suffix = f"-{digest[:10]}"
    return f"{dns_label(name)[: MAX_NAME - len(suffix)].rstrip('-')}{suffix}"


def origin_labels(origin: str, site: str, uid: str | None = None) -> dict[str, str]:
    labels = {**MANAGED_BY, ORIGIN_LABEL: label_value(origin), ORIGIN_SITE_LABEL: label_value(site)}
    return labels | ({ORIGIN_UID_LABEL: uid} if uid else {})


def remote_pipeline(name: str, digest: str, spec: Mapping[str, Any], target: Target, origin: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Pipeline",
        "metadata": {
            "name": mirrored_pipeline_name(name, digest),
            "namespace": target.namespace,
            "labels": origin_labels(origin, target.site),
            "annotations": {DIGEST_ANNOTATION: digest},
        },
        "spec": dict(spec),
    }


def remote_run(
    central: Mapping[str, Any], target: Target, pipeline: str, origin: str, central_namespace: str
) -> dict[str, Any]:
    """The copy: the central spec, at the remote Site, naming the mirrored Pipeline."""
    meta = central["metadata"]
    spec = {**dict(central.get("spec") or {}), "site": target.remote_site, "pipeline": pipeline}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Run",
        "metadata": {
            "name": target.name,
            "namespace": target.namespace,
            "labels": origin_labels(origin, target.site, meta["uid"]),
            "annotations": {
                ORIGIN_RUN_ANNOTATION: f"{central_namespace}/{meta['name']}",
                START_PERMIT_ANNOTATION: PERMIT_AWAITING,
            },
        },
        "spec": spec,
    }


def spec_changes(central: Mapping[str, Any], remote: Mapping[str, Any]) -> dict[str, Any]:
    """The fields that flow down and differ (None = unset centrally: the copy's default applies)."""
    return {key: central.get(key) for key in SPEC_DOWN if central.get(key) != remote.get(key)}


def _cond(kind: str, ok: bool, reason: str, message: str, previous: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """A condition keeping its lastTransitionTime while its status stays the same."""
    wire = condition(kind, ok, reason, message).model_dump(mode="json", by_alias=True, exclude_none=True)
    old = {c.get("type"): c for c in previous.get("conditions") or []}.get(kind)
    kept = old.get("lastTransitionTime") if old is not None and old.get("status") == wire["status"] else None
    wire["lastTransitionTime"] = kept or now.isoformat().replace("+00:00", "Z")
    return wire


def mirrored_status(
    remote: Mapping[str, Any], target: Target, previous: Mapping[str, Any], choice: str, now: datetime
) -> dict[str, Any]:
    """The central status from the copy's: its fields and conditions, our SiteReady and SiteUnreachable=False."""
    theirs = remote.get("status") or {}
    status: dict[str, Any] = {key: theirs.get(key) for key in STATUS_UP}
    status["phase"] = status["phase"] or "Pending"
    table = theirs.get("taskTable")
    status["taskTable"] = f"site {target.site}: {table}" if table else None
    status["site"] = target.site
    annotations = (remote.get("metadata") or {}).get("annotations") or {}
    status["remote"] = {
        "site": target.site,
        "namespace": target.namespace,
        "name": target.name,
        "remoteSite": target.remote_site,
        "uid": (remote.get("metadata") or {}).get("uid"),
        "lastSeen": now.isoformat().replace("+00:00", "Z"),
        "fenced": START_PERMIT_ANNOTATION in annotations,
    }
    message = f"{choice}; runs there as Run {target.shown} (Site {target.remote_site})"
    conditions = [
        _cond("SiteReady", True, "Mirrored", message, previous, now),
        _cond("SiteUnreachable", False, "Reachable", f"Site {target.site}'s API server answers", previous, now),
    ]
    conditions += [c for c in previous.get("conditions") or [] if c.get("type") == "Redispatched"]  # it stays
    conditions += [c for c in theirs.get("conditions") or [] if c.get("type") not in OURS]
    status["conditions"] = conditions
    return status


def unreachable_status(previous: Mapping[str, Any], target: Target, error: str, now: datetime) -> dict[str, Any]:
    """The last mirrored status stays; SiteUnreachable turns True (its time: since when)."""
    message = f"Site {target.site}'s API server: {error}; its copy {target.shown} keeps running there"
    unreachable = _cond("SiteUnreachable", True, "Unreachable", message, previous, now)
    others = [c for c in previous.get("conditions") or [] if c.get("type") != "SiteUnreachable"]
    return {"site": target.site, "conditions": [*others, unreachable]}


def blocked_status(
    previous: Mapping[str, Any], target: Target, reason: str, message: str, now: datetime
) -> dict[str, Any]:
    """The copy cannot be made or read (a bad kubeconfig, a refusal there): SiteReady False with the reason."""
    blocked = _cond("SiteReady", False, reason, f"Site {target.site}: {message}", previous, now)
    others = [c for c in previous.get("conditions") or [] if c.get("type") != "SiteReady"]
    return {"site": target.site, "phase": previous.get("phase") or "Pending", "conditions": [blocked, *others]}


def wants_permit(remote: Mapping[str, Any]) -> bool:
    """The copy asks to start (its operator's StartPermit condition) and was not granted yet."""
    annotations = (remote.get("metadata") or {}).get("annotations") or {}
    if annotations.get(START_PERMIT_ANNOTATION) != PERMIT_AWAITING:
        return False
    conditions = (remote.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "StartPermit" and c.get("reason") == "Requested" for c in conditions)


def never_started(previous: Mapping[str, Any]) -> bool:
    """None of the Run's tasks can have run at its Site: the copy (if one was made at all) is fenced and this
    control plane never granted it. A copy seen without the fence (made before it existed) counts as started, and
    so does one whose last mirrored counts show a task running or run although it was never granted (a Site
    operator of a release that does not honour the fence): the counts are believed over the fence."""
    if any((previous.get("tasks") or {}).get(k) for k in STARTED_COUNTS):
        return False
    remote = previous.get("remote")
    if remote is None:
        return True  # a copy made meanwhile carries the fence and waits for a grant that will not come
    return bool(remote.get("fenced")) and not remote.get("permitted")


def unreachable_since(previous: Mapping[str, Any]) -> datetime | None:
    found = next((c for c in previous.get("conditions") or [] if c.get("type") == "SiteUnreachable"), None)
    if found is None or found.get("status") != "True" or not found.get("lastTransitionTime"):
        return None
    return datetime.fromisoformat(str(found["lastTransitionTime"]).replace("Z", "+00:00"))


def describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def is_unreachable(error: BaseException) -> bool:
    """A connection that fails, times out, or an API server not serving yet (5xx)."""
    return isinstance(error, UNREACHABLE) or (isinstance(error, KubeError) and error.status >= 500)


# ----------------------------------------------------------------------------------------------- one Run


class RunMirror:
    """One central Run whose Site is a cluster: keeps exactly one copy there and mirrors it."""

    def __init__(
        self,
        remotes: RemoteClusters,
        central: KubeClient,
        origin: str,
        body: Mapping[str, Any],
        site: str,
        site_spec: SiteSpec,
        pipeline: tuple[str, str, Mapping[str, Any]],
        choice: str,
        logger: kopf.Logger,
        redispatch_after_s: float = 0.0,
    ) -> None:
        meta = body["metadata"]
        self.remotes, self.central, self.origin, self.body = remotes, central, origin, body
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        self.uid: str = meta["uid"]
        self.site, self.site_spec = site, site_spec
        self.target = _kept_target(body, site) or Target.of(site, site_spec, self.namespace, self.name)
        self.pipeline_name, self.digest, self.pipeline_spec = pipeline
        self.choice = choice
        self.log = logger
        self._pipeline_made = False
        self._last: dict[str, Any] | None = None
        self.copies: RemoteRuns | None = None
        self.redispatch_after_s = redispatch_after_s  # 0: never (spec.site named, or the operator says so)
        self.redispatch_due: datetime | None = None  # set by a step: since when the Site is unreachable
        self.redispatch_in: float | None = None  # not due yet: in how many seconds it will be (the pause's end)
        self.granted = False  # this mirror granted the copy its start (the body may not show it yet)

    async def step(self, sites: Mapping[Any, Any] | None = None) -> None:
        """One reconcile: make or adopt the copy, push spec changes, pull its status."""
        if self.body["metadata"].get("deletionTimestamp"):
            return  # being deleted: the delete handler takes the copy away; making it again would orphan it
        self._refresh_site(sites or {})
        previous = dict(self.body.get("status") or {})
        now = utc_now()
        try:
            where = (self.namespace, self.site, self.site_spec, self.origin)
            client, self.copies = await site_copies(self.remotes, *where)
            if self.copies.unreachable_since is not None:
                since = self.copies.unreachable_since
                status = unreachable_status(previous, self.target, self.copies.error, since)
                await self._write(status)
                self._judge_redispatch(previous, status, now)
                return
            remote = await self._ensure(client)
            if remote is None:
                return  # an orphan of the same name is being deleted: the copy is made next time
            remote = await self._push_spec(client, remote)
            await self._grant_if_asked(client, remote, now)
            status = mirrored_status(remote, self.target, previous, self.choice, now)
        except (KubeconfigError, RemoteRefusedError) as err:
            if previous.get("phase") in FINISHED and isinstance(err, RemoteRefusedError):
                return  # a finished Run's copy may go there (their clean-up): its last status stays
            status = blocked_status(previous, self.target, err.reason, str(err), now)
        except KubeError as err:
            if is_unreachable(err):
                status = unreachable_status(previous, self.target, describe(err), now)
            elif err.status in (UNAUTHORIZED, FORBIDDEN):  # the kubeconfig's identity may not do this there
                status = blocked_status(previous, self.target, "RemoteForbidden", describe(err), now)
            else:
                raise
        except UNREACHABLE as err:
            status = unreachable_status(previous, self.target, describe(err), now)
        await self._write(status)
        self._judge_redispatch(previous, status, now)

    def _judge_redispatch(self, previous: Mapping[str, Any], written: Mapping[str, Any], now: datetime) -> None:
        """Due when the status this step wrote says the Site has been unreachable for the configured time and the
        Run never started there. Judged on what this step wrote, never on the kopf body, which may lag behind it:
        a step that reached the Site (and may just have granted the copy) is never due, whatever an older body says;
        a grant this mirror wrote counts even before the body shows it."""
        self.redispatch_due, self.redispatch_in = None, None
        if self.redispatch_after_s <= 0 or self.granted or previous.get("phase") in FINISHED:
            return
        if not never_started(previous):
            return
        since = unreachable_since(written)
        if since is None:
            return
        left = self.redispatch_after_s - (now - since).total_seconds()
        if left <= 0:
            self.redispatch_due = since
        else:
            self.redispatch_in = left

    async def _grant_if_asked(self, client: KubeClient, remote: Mapping[str, Any], now: datetime) -> None:
        """Record the grant here first, then write it there: whatever fails in between, this side never thinks a
        copy that may run has not."""
        if not wants_permit(remote):
            return
        stamp = now.isoformat().replace("+00:00", "Z")
        self.granted = True  # before the record: a record that failed may still have been written
        await self._patch_status({"remote": {"permitted": stamp}})
        patch = {"metadata": {"annotations": {START_PERMIT_ANNOTATION: PERMIT_GRANTED}}}
        self._seen(await client.merge_patch(run_path(self.target.namespace, self.target.name), patch))
        self.log.info(f"run {self.namespace}/{self.name}: copy {self.target.shown} granted its start")

    def _refresh_site(self, sites: Mapping[Any, Any]) -> None:
        """The Site as it is now (a repaired kubeconfig Secret reference); the copy's place stays where it is."""
        store = sites.get((self.namespace, self.site))  # a kopf Index: key → store of values
        for raw in store or ():
            with contextlib.suppress(ValidationError):
                self.site_spec = SiteSpec.model_validate(raw)

    async def pause(self, timeout_s: float) -> None:
        """Until the copy changes there (the Site's watch wakes this Run), the link changes, ``timeout_s``, or the
        moment a re-dispatch falls due (so it is not a reconcile interval late)."""
        if self.redispatch_in is not None:
            timeout_s = min(timeout_s, self.redispatch_in + 0.01)
        if self.copies is None:
            await asyncio.sleep(timeout_s)
            return
        waker = self.copies.waker(self.name)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(waker.wait(), timeout_s)
        waker.clear()

    async def remove_copy(self) -> None:
        """The central Run is being deleted: its copy goes too (if it is its copy: same uid label); when the Site
        cannot be reached now, its orphan collection deletes the copy once it can."""
        try:
            client = await self.remotes.client(self.namespace, self.site, self.site_spec)
            found = await client.get_or_none(run_path(self.target.namespace, self.target.name))
            labels = ((found or {}).get("metadata") or {}).get("labels") or {}
            if found is not None and labels.get(ORIGIN_UID_LABEL) == self.uid:
                await _delete(client, self.target.namespace, self.target.name)
                self.log.info(f"run {self.namespace}/{self.name}: copy {self.target.shown} deleted")
        except REMOVAL_ERRORS as err:
            self.log.warning(f"run {self.namespace}/{self.name}: copy left to orphan collection: {describe(err)}")

    def leave(self) -> None:
        if self.copies is not None:
            self.copies.forget(self.name)

    def _cached(self) -> JSON | None:
        """The copy as the Site's watch has it (None: not there, or the watch cannot vouch for it)."""
        copies = self.copies
        if copies is None or not copies.synced or copies.path != runs_path(self.target.namespace):
            return None
        return copies.objects.get(self.target.name)

    def _seen(self, obj: JSON) -> JSON:
        if self.copies is not None and self.copies.path == runs_path(self.target.namespace):
            self.copies.seen(obj)
        return obj

    async def _ensure(self, client: KubeClient) -> Mapping[str, Any] | None:
        target = self.target
        seen = (self.body.get("status") or {}).get("remote") or {}
        found = self._cached()
        if found is None and (seen.get("uid") or not (self.copies is not None and self.copies.synced)):
            # Asked for when the watch cannot vouch, or before saying a copy that existed is gone. A copy not
            # made yet is simply POSTed: a name taken meanwhile answers 409 and is judged below.
            found = await client.get_or_none(run_path(target.namespace, target.name))
        if found is not None:
            return await self._adopt_or_clear(client, found)
        if seen.get("uid"):
            # It existed and is gone (deleted there): made again, its tasks could run twice.
            raise RemoteRefusedError(
                "RemoteCopyGone",
                f"its copy {target.shown} (uid {seen['uid']}) was deleted there and is not made again (its tasks "
                "may have run); delete and re-create this Run to run it again",
            )
        await self._ensure_pipeline(client)
        pipeline = mirrored_pipeline_name(self.pipeline_name, self.digest)
        body = remote_run(self.body, target, pipeline, self.origin, self.namespace)
        try:
            created = await client.create(runs_path(target.namespace), body)
        except KubeError as err:
            if err.status == CONFLICT:  # made meanwhile (an earlier life of this operator), or someone else's
                taken = await client.get_or_none(run_path(target.namespace, target.name))
                return await self._adopt_or_clear(client, taken) if taken is not None else None
            raise _refusal(err, target, "Run") from err
        self.log.info(f"run {self.namespace}/{self.name}: copy {target.shown} created at Site {target.site}")
        return self._seen(created)

    async def _adopt_or_clear(self, client: KubeClient, found: Mapping[str, Any]) -> Mapping[str, Any] | None:
        labels = (found.get("metadata") or {}).get("labels") or {}
        if labels.get(ORIGIN_UID_LABEL) == self.uid:
            return found
        if labels.get(ORIGIN_LABEL) != label_value(self.origin):
            raise RemoteRefusedError(
                "RemoteNameTaken",
                f"a Run {self.target.shown} exists there that this control plane did not make; rename one of them",
            )
        if not (found.get("metadata") or {}).get("deletionTimestamp"):
            self.log.info(f"run {self.namespace}/{self.name}: deleting {self.target.shown}, an earlier Run's copy")
            await _delete(client, self.target.namespace, self.target.name)
        return None

    async def _ensure_pipeline(self, client: KubeClient) -> None:
        """Once per Pipeline spec and Site (the copies share it), not once per Run."""
        made = self.copies.pipelines if self.copies is not None else set()
        name = f"{self.target.namespace}/{mirrored_pipeline_name(self.pipeline_name, self.digest)}"
        if self._pipeline_made or name in made:
            return
        body = remote_pipeline(self.pipeline_name, self.digest, self.pipeline_spec, self.target, self.origin)
        try:
            await client.create(pipelines_path(self.target.namespace), body)
        except KubeError as err:
            if err.status != CONFLICT:  # the same name is the same spec (content-addressed)
                raise _refusal(err, self.target, "Pipeline") from err
        self._pipeline_made = True
        made.add(name)

    async def _push_spec(self, client: KubeClient, remote: Mapping[str, Any]) -> Mapping[str, Any]:
        changes = spec_changes(self.body.get("spec") or {}, remote.get("spec") or {})
        if not changes:
            return remote
        self.log.info(f"run {self.namespace}/{self.name}: {sorted(changes)} → copy {self.target.shown}")
        patched = await client.merge_patch(run_path(self.target.namespace, self.target.name), {"spec": changes})
        return self._seen(patched)

    async def _patch_status(self, status: dict[str, Any]) -> None:
        """A merge patch of the central Run's status (what is not named stays)."""
        await self.central.request(
            "PATCH",
            f"{run_path(self.namespace, self.name)}/status",
            body={"status": status},
            content_type="application/merge-patch+json",
            parse=False,
        )

    async def _write(self, status: dict[str, Any]) -> None:
        comparable = {**status, "remote": {**(status.get("remote") or {}), "lastSeen": None}}
        comparable["conditions"] = [{**c, "lastTransitionTime": None} for c in status.get("conditions") or []]
        if comparable == self._last:
            return
        status["observedGeneration"] = self.body["metadata"].get("generation")
        await self._patch_status(status)
        self._last = comparable


def _kept_target(body: Mapping[str, Any], site: str) -> Target | None:
    """Where an earlier reconcile put the copy (status.remote): it stays there whatever the Site says now."""
    remote = (body.get("status") or {}).get("remote") or {}
    if remote.get("site") != site or not remote.get("namespace") or not remote.get("name"):
        return None
    spec_site = remote.get("remoteSite")
    return Target(site, str(remote["namespace"]), str(remote["name"]), str(spec_site or site))


def _refusal(err: KubeError, target: Target, kind: str) -> Exception:
    if err.status >= 500 or err.status == 429:
        return err  # not a refusal: unreachable for now
    if err.status == NOT_FOUND:
        return RemoteRefusedError("RemoteNamespaceNotFound", f"no namespace {target.namespace!r} there for the {kind}")
    return RemoteRefusedError("RemoteRefused", f"the {kind} copy was refused there ({err.status}): {err.message}")


async def _delete(client: KubeClient, namespace: str, name: str) -> None:
    try:
        await client.delete(run_path(namespace, name))
    except KubeError as err:
        if err.status != NOT_FOUND:
            raise


async def site_copies(
    remotes: RemoteClusters, namespace: str, site: str, spec: SiteSpec, origin: str
) -> tuple[KubeClient, RemoteRuns]:
    """The Site's client and the watch of the copies made through it (started on first use, and again when the
    Site's kubeconfig changed)."""
    client = await remotes.client(namespace, site, spec)
    key = (namespace, site)
    copies = remotes.watches.get(key)
    if copies is None or copies.client is not client:
        if copies is not None:
            await copies.close()
        path = runs_path(spec.compute.remote_namespace or namespace)
        selector = f"{ORIGIN_LABEL}={label_value(origin)},{ORIGIN_SITE_LABEL}={label_value(site)}"
        copies = RemoteRuns(client, path, selector, utc_now, describe)
        remotes.watches[key] = copies
        copies.start()
    return client, copies


# ----------------------------------------------------------------------------------------------- deletion, GC


async def collect_orphans(
    remotes: RemoteClusters, central: KubeClient, origin: str, namespace: str, site: str, spec: SiteSpec
) -> list[str]:
    """Delete the copies made through this Site whose central Run is gone (or is another Run of that name)."""
    client = await remotes.client(namespace, site, spec)
    rns = spec.compute.remote_namespace or namespace
    selector = f"{ORIGIN_LABEL}={label_value(origin)},{ORIGIN_SITE_LABEL}={label_value(site)}"
    listing = await client.get(runs_path(rns), {"labelSelector": selector})
    removed: list[str] = []
    for item in listing.get("items") or []:
        meta = item.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            continue
        central_ns, _, central_name = str((meta.get("annotations") or {}).get(ORIGIN_RUN_ANNOTATION, "")).partition("/")
        if central_ns != namespace:
            continue  # sent from another namespace's Site of the same name: that Site's timer judges it
        owner = await central.get_or_none(run_path(central_ns, central_name)) if central_name else None
        if _owned_by(owner, meta, site, rns):
            continue
        await _delete(client, rns, str(meta.get("name")))
        removed.append(f"{rns}/{meta.get('name')}")
    return removed


def _owned_by(owner: Mapping[str, Any] | None, copy: Mapping[str, Any], site: str, namespace: str) -> bool:
    """The central Run exists, is the one that made the copy, and did not abandon it (sent elsewhere)."""
    if owner is None or (owner.get("metadata") or {}).get("uid") != (copy.get("labels") or {}).get(ORIGIN_UID_LABEL):
        return False
    left = (owner.get("status") or {}).get("abandoned") or []
    return not any(
        a.get("site") == site and (a.get("namespace"), a.get("name")) == (namespace, copy.get("name")) for a in left
    )


async def cluster_site_status(
    remotes: RemoteClusters, namespace: str, name: str, spec: SiteSpec, generation: int | None
) -> tuple[SiteStatus, KubeClient | None]:
    """A cluster Site's status: its kubeconfig, its API server, and the remote Site's own phase."""
    try:
        client = await remotes.client(namespace, name, spec)
    except KubeconfigError as err:
        return _site(SitePhase.PENDING, generation, condition("KubeconfigValid", False, err.reason, str(err))), None
    valid = condition("KubeconfigValid", True, "Valid", f"server {client.server} is allowed")
    rns, rsite = spec.compute.remote_namespace or namespace, spec.compute.remote_site or name
    try:
        found = await client.get_or_none(f"/apis/{GROUP}/{VERSION}/namespaces/{quote(rns)}/sites/{quote(rsite)}")
    except REMOTE_ERRORS as err:
        reason = "Unreachable" if is_unreachable(err) else "Refused"  # a 4xx: there, but not letting us read
        down = condition("ClusterReachable", False, reason, f"{client.server}: {describe(err)}")
        return _site(SitePhase.PENDING, generation, valid, down), None
    reachable = condition("ClusterReachable", True, "Reachable", f"{client.server} answers")
    if found is None:
        missing = condition("RemoteSiteReady", False, "RemoteSiteNotFound", f"no Site {rns}/{rsite} there")
        return _site(SitePhase.DEGRADED, generation, valid, reachable, missing), client
    theirs = found.get("status") or {}
    phase = str(theirs.get("phase") or "Pending")
    ready = phase == SitePhase.READY.value
    remote = condition("RemoteSiteReady", ready, phase, f"Site {rns}/{rsite} there is {phase}")
    known = {p.value for p in SitePhase}
    status = _site(SitePhase(phase) if phase in known else SitePhase.DEGRADED, generation, valid, reachable, remote)
    status.nodes_ready = theirs.get("nodesReady")
    status.running_tasks = theirs.get("runningTasks")
    return status, client


def _site(phase: SitePhase, generation: int | None, *conditions: Any) -> SiteStatus:
    return SiteStatus(phase=phase, observed_generation=generation, conditions=list(conditions))

"""What the operator watches, reduced to what the planner needs: Jobs and their pods, per Run.

Index functions (``job_entry``, ``pod_entry``) turn watched objects into small frozen values; ``outcome``
turns a finished Job (and its pod, when known) into the reason the planner is told.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sgs_operator.naming import ANNOTATION_PRIORITY, ANNOTATION_TASK_ID, ANNOTATION_USAGE, LABEL_ATTEMPT, LABEL_RUN

JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name")
# Reasons the node gives a pod it refused before running anything: the same pod would be refused again, so the
# task fails for good (`sgs run retry-failed` once the cause is fixed, e.g. the image put in a store).
NODE_REFUSALS = frozenset({"InvalidPodSpec", "NoPilotFits", "ImageNotFound", "ImageNotAllowed"})


@dataclass(frozen=True)
class JobSeen:
    name: str
    tid: str
    attempt: int
    finished: str | None  # Complete or Failed
    reason: str
    message: str


@dataclass(frozen=True)
class PodSeen:
    name: str
    job: str
    phase: str
    reason: str | None  # container terminated reason: Completed, Error, OOMKilled, DeadlineExceeded
    exit_code: int | None
    message: str
    usage: dict[str, Any] | None
    priority: int | None = None  # the sgs.io/priority annotation: the Run's priority last written on the pod
    image_id: str = ""  # containerStatuses[].imageID: the manifest digest a container runtime ran, when it says


@dataclass(frozen=True)
class Outcome:
    reason: str
    exit_code: int | None
    message: str
    usage: dict[str, Any] | None
    image_id: str = ""  # the image's manifest digest (sha256:…) the task ran in, when its node reports one

    @property
    def succeeded(self) -> bool:
        return self.reason == "Completed"


def run_key(namespace: str | None, labels: Mapping[str, str]) -> tuple[str, str]:
    return (namespace or "", labels.get(LABEL_RUN, ""))


def job_entry(
    name: str, annotations: Mapping[str, str], labels: Mapping[str, str], status: Mapping[str, Any]
) -> JobSeen:
    finished, reason, message = None, "", ""
    for cond in status.get("conditions") or []:
        if cond.get("type") in ("Complete", "Failed") and cond.get("status") == "True":
            finished, reason, message = cond["type"], cond.get("reason") or "", cond.get("message") or ""
    return JobSeen(
        name=name,
        tid=annotations.get(ANNOTATION_TASK_ID, ""),
        attempt=int(labels.get(LABEL_ATTEMPT, "0")),
        finished=finished,
        reason=reason,
        message=message,
    )


def pod_entry(
    name: str, annotations: Mapping[str, str], labels: Mapping[str, str], status: Mapping[str, Any]
) -> PodSeen:
    job = next((labels[k] for k in JOB_NAME_LABELS if k in labels), "")
    reason: str | None = None
    exit_code: int | None = None
    message = status.get("message") or ""
    image_id = ""
    for container in status.get("containerStatuses") or []:
        image_id = _digest(container.get("imageID")) or image_id
        terminated = (container.get("state") or {}).get("terminated")
        if terminated:
            reason = terminated.get("reason") or ("Completed" if terminated.get("exitCode") == 0 else "Error")
            exit_code = terminated.get("exitCode")
            message = terminated.get("message") or message
            break
    return PodSeen(
        name=name,
        job=job,
        phase=status.get("phase") or "Pending",
        reason=reason,
        exit_code=exit_code,
        message=message,
        usage=parse_usage(annotations.get(ANNOTATION_USAGE)),
        priority=parse_priority(annotations.get(ANNOTATION_PRIORITY)),
        image_id=image_id,
    )


def parse_priority(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _digest(image_id: object) -> str:
    """The sha256 digest in a kubelet's imageID (``sha256:…``, ``repo@sha256:…``, ``docker-pullable://…``)."""
    text = str(image_id or "")
    _, _, digest = text.rpartition("@") if "@" in text else ("", "", text)
    algorithm, _, hexdigest = digest.partition(":")
    if algorithm == "sha256" and len(hexdigest) == 64 and all(c in "0123456789abcdef" for c in hexdigest):
        return digest
    return ""


RELEASE_NOT_VERIFIED = "ReleaseNotVerified"


def release_verified(seen: Outcome, release: str) -> Outcome:
    """A task of a Run pinned to a release succeeded: only if its node ran exactly that image (by digest)."""
    wanted = release.rpartition("@")[2]
    if seen.image_id == wanted:
        return seen
    ran = f"image {seen.image_id}" if seen.image_id else "no image (a node without a container runtime)"
    message = f"the Run is pinned to {release}, its node ran {ran}: its outputs are not this release's"
    return Outcome(RELEASE_NOT_VERIFIED, seen.exit_code, message, seen.usage, seen.image_id)


def parse_usage(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def pod_is_final(pod: PodSeen | None) -> bool:
    return pod is not None and pod.phase in ("Succeeded", "Failed") and pod.reason is not None


def outcome(job: JobSeen, pod: PodSeen | None) -> Outcome:
    usage = pod.usage if pod is not None else None
    exit_code = pod.exit_code if pod is not None else None
    if job.finished == "Complete":
        image_id = pod.image_id if pod is not None else ""
        return Outcome("Completed", exit_code if exit_code is not None else 0, "", usage, image_id)
    if job.reason == "DeadlineExceeded" or (pod is not None and pod.reason == "DeadlineExceeded"):
        return Outcome("DeadlineExceeded", exit_code, job.message or "walltime exceeded", usage)
    if pod is not None and pod.reason == "OOMKilled":
        return Outcome("OOMKilled", exit_code, pod.message or "memory limit exceeded", usage)
    if pod is not None and pod.reason in NODE_REFUSALS:
        return Outcome(pod.reason, exit_code, pod.message or "refused by the node", usage)
    detail = pod.message if pod is not None and pod.message else job.message or job.reason
    if exit_code is not None:
        detail = f"exit code {exit_code}" + (f": {detail}" if detail else "")
    return Outcome("Error", exit_code, detail, usage)

"""The Job a task attempt runs as: a pure function of the task, its Run and its Site.

Contract with the bridge (issue 7): nodeSelector ``sgs.io/site`` + the Site's labels, a toleration of the
virtual-kubelet taint, the first container's command+args are the task's argv, ``activeDeadlineSeconds`` is
the walltime, TMPDIR is an emptyDir (with a sizeLimit when the executable asks for scratch), and host
directories are mounted at their own path so argv paths need no rewriting: only directories under the Site's
declared roots, read-only but for the Run's own directory (see ``storage``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from sgs.model.base import API_VERSION
from sgs.model.pipeline import Resources
from sgs.naming import object_name
from sgs.telemetry.ids import task_traceparent
from sgs_operator.naming import (
    ANNOTATION_PRIORITY,
    ANNOTATION_TASK_ID,
    LABEL_ATTEMPT,
    LABEL_RUN,
    LABEL_SITE,
    LABEL_TASK,
    MANAGED_BY,
    label_value,
    priority_class_name,
)

VK_TOLERATION = "virtual-kubelet.io/provider"


@dataclass(frozen=True)
class RunRef:
    name: str
    namespace: str
    uid: str
    priority: int


@dataclass(frozen=True)
class HostMount:
    """A host directory a task sees at the same path: read-only, but for its Run's own directory."""

    path: str
    read_only: bool


@dataclass(frozen=True)
class SitePlacement:
    """What a Job needs to know of its Site."""

    name: str
    node_selector: dict[str, str] = field(default_factory=dict)
    toleration: str | None = None
    mounts: tuple[HostMount, ...] = ()


@dataclass(frozen=True)
class TaskAttempt:
    tid: str
    attempt: int
    argv: list[str]
    resources: Resources
    image: str
    env: dict[str, str] = field(default_factory=dict)
    secret_env: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Variable → (Secret, key), by secretKeyRef: the value never enters the Job's spec."""


def job_name(run: RunRef, tid: str, attempt: int) -> str:
    return object_name(run.name, tid, attempt)


def job_labels(run: RunRef, tid: str, attempt: int, site: str) -> dict[str, str]:
    return {
        **MANAGED_BY,
        LABEL_RUN: label_value(run.name),
        LABEL_TASK: label_value(tid),
        LABEL_ATTEMPT: str(attempt),
        LABEL_SITE: label_value(site),
    }


def build_job(run: RunRef, site: SitePlacement, task: TaskAttempt, tmpdir_mount: str) -> dict[str, Any]:
    labels = job_labels(run, task.tid, task.attempt, site.name)
    annotations = {ANNOTATION_TASK_ID: task.tid, ANNOTATION_PRIORITY: str(run.priority)}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(run, task.tid, task.attempt),
            "namespace": run.namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [_owner(run)],
        },
        "spec": {
            "backoffLimit": 0,  # the planner decides retries (backoff, OOM memory factor), not the Job
            "activeDeadlineSeconds": max(1, math.ceil(task.resources.walltime_seconds)),
            "template": {
                "metadata": {"labels": labels, "annotations": annotations},
                "spec": _pod_spec(run, site, task, tmpdir_mount),
            },
        },
    }


def _owner(run: RunRef) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "Run",
        "name": run.name,
        "uid": run.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _pod_spec(run: RunRef, site: SitePlacement, task: TaskAttempt, tmpdir_mount: str) -> dict[str, Any]:
    env = {
        **task.env,
        "TMPDIR": tmpdir_mount,
        "OMP_NUM_THREADS": str(task.resources.cores),
        "TRACEPARENT": task_traceparent(run.uid, task.tid, task.attempt),
    }
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": tmpdir_mount}]
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": _empty_dir(task.resources)}]
    for i, host in enumerate(site.mounts):
        # Type Directory: a missing directory fails the pod instead of being created on the node.
        mounts.append({"name": f"data-{i}", "mountPath": host.path, "readOnly": host.read_only})
        volumes.append({"name": f"data-{i}", "hostPath": {"path": host.path, "type": "Directory"}})
    return {
        "restartPolicy": "Never",
        "priorityClassName": priority_class_name(run.priority),
        "nodeSelector": {**site.node_selector, "sgs.io/site": site.name},
        "tolerations": _tolerations(site),
        "containers": [
            {
                "name": "task",
                "image": task.image,
                "command": task.argv[:1],
                "args": task.argv[1:],
                "env": [{"name": k, "value": v} for k, v in env.items()] + _secret_env(task),
                "resources": resource_requirements(task.resources),
                "volumeMounts": mounts,
            }
        ],
        "volumes": volumes,
    }


def _secret_env(task: TaskAttempt) -> list[dict[str, Any]]:
    return [
        {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
        for name, (secret, key) in task.secret_env.items()
    ]


def _empty_dir(resources: Resources) -> dict[str, Any]:
    return {"sizeLimit": mebibytes(resources.tmpdir)} if resources.tmpdir > 0 else {}


def _tolerations(site: SitePlacement) -> list[dict[str, Any]]:
    keys = [VK_TOLERATION] + ([site.toleration] if site.toleration and site.toleration != VK_TOLERATION else [])
    return [{"key": key, "operator": "Exists"} for key in keys]


def resource_requirements(resources: Resources) -> dict[str, dict[str, str]]:
    """Requests = limits (the Guaranteed QoS class): the memory limit is what an OOM kill is measured against."""
    amounts = {"cpu": str(resources.cores), "memory": mebibytes(resources.ram)}
    if resources.gpus:
        amounts["nvidia.com/gpu"] = str(resources.gpus)
    if resources.tmpdir > 0:
        amounts["ephemeral-storage"] = mebibytes(resources.tmpdir)
    return {"requests": dict(amounts), "limits": dict(amounts)}


def mebibytes(gib: float) -> str:
    """A Kubernetes quantity in whole MiB, rounded up (never zero)."""
    return f"{max(1, math.ceil(gib * 1024))}Mi"

"""Tasks at S3 Sites: the manifest the operator writes (:mod:`sgs.task.manifest`) and the wrapper that stages a
task's files in and out of its scratch directory around its command (:mod:`sgs.task.execute`,
``sgs task exec -- <command>``, also ``python -m sgs.task``)."""

from sgs.task.manifest import (
    ACCESS_KEY_ENV,
    MANIFEST_ENV,
    SCRATCH_REFERENCE,
    SECRET_KEY_ENV,
    ManifestError,
    Scratch,
    TaskInput,
    TaskList,
    TaskManifest,
    TaskOutput,
)

__all__ = [
    "ACCESS_KEY_ENV",
    "MANIFEST_ENV",
    "SCRATCH_REFERENCE",
    "SECRET_KEY_ENV",
    "ManifestError",
    "Scratch",
    "TaskInput",
    "TaskList",
    "TaskManifest",
    "TaskOutput",
]

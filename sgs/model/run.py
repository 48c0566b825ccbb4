"""The Run resource: one execution of a Pipeline on concrete inputs at a Site.

The status stays small whatever the Run's size (counts, conditions, a bounded list of failures); the full
per-task table lives outside etcd, where ``status.taskTable`` points.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import ClassVar, Self

from pydantic import Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from sgs.expression.errors import ExpressionError
from sgs.model.base import Condition, KubeObject, PrinterColumn, SgsModel
from sgs.model.dataset import DATASET_TYPE_PATTERN
from sgs.model.pipeline import RetryPolicy

# An image by digest only: a tag can be moved, a digest names the bytes (lower-case path components, as OCI).
_COMPONENT = r"[a-z0-9]+([._-][a-z0-9]+)*"
RELEASE_PATTERN = rf"^{_COMPONENT}(/{_COMPONENT})*(:[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})?@sha256:[0-9a-f]{{64}}$"

MAX_FAILED_TASKS = 20


class RunInput(SgsModel):
    """What a pipeline input is bound to: one URI, a list of URIs, an archive query, or archive dataset ids.

    A query (with ``datasetType`` and optionally ``collections``) and ``datasetIds`` are resolved through the
    archive of the Run's Site when the Run starts; the resolved dataset ids are kept by the operator, so a later
    registration never changes a running Run's inputs. Archive inputs are delivered as a list of files.
    """

    uri: str | None = Field(default=None, description="One file or object URI.")
    uris: list[str] | None = Field(default=None, max_length=100_000, description="Several URIs, as a list.")
    query: str | None = Field(
        default=None, max_length=10_000, description='Archive dimension expression, e.g. "tile = 102345".'
    )
    dataset_type: str | None = Field(
        default=None, pattern=DATASET_TYPE_PATTERN, description="Dataset type the query selects."
    )
    collections: list[str] | None = Field(default=None, max_length=100, description="Collections searched, in order.")
    dataset_ids: list[uuid.UUID] | None = Field(
        default=None, min_length=1, max_length=100_000, description="Archive dataset ids, delivered in this order."
    )

    @field_validator("query")
    @classmethod
    def _query_parses(cls, value: str | None) -> str | None:
        if value is None:
            return value
        from sgs.expression.dimensions import parse  # astropy comes with it: only when a query is given

        try:
            parse(value)
        except ExpressionError as err:
            raise ValueError(f"not a dimension expression: {err}") from None
        return value

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        given = [name for name in ("uri", "uris", "query", "dataset_ids") if getattr(self, name) is not None]
        if len(given) != 1:
            shown = f" (got {', '.join(to_camel(n) for n in given)})" if given else ""
            raise ValueError(f"give exactly one of uri, uris, query or datasetIds{shown}")
        if self.query is not None and not self.dataset_type:
            raise ValueError("a query needs datasetType")
        if self.query is None and (self.dataset_type is not None or self.collections is not None):
            raise ValueError("datasetType and collections go with a query")
        if self.dataset_ids is not None and len(set(self.dataset_ids)) != len(self.dataset_ids):
            raise ValueError("datasetIds: an id is given twice")
        return self

    @property
    def from_archive(self) -> bool:
        return self.query is not None or self.dataset_ids is not None


class SplitBy(StrEnum):
    SITE = "site"


class RunSplit(SgsModel):
    """A campaign over data spread across Sites, run as one child Run per Site holding part of it."""

    by: SplitBy = Field(default=SplitBy.SITE, description="What the Run is split by: the Site holding each input.")
    inputs: list[str] | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        description="The inputs divided among the children (archive inputs or uris lists); the others go whole to "
        "every child. Default: every archive input and every uris list.",
    )


class RunSpec(SgsModel):
    pipeline: str = Field(min_length=1, description="Name of the Pipeline (same namespace).")
    site: str | None = Field(
        default=None,
        description="Site to run at; when absent, the Ready Site holding most input bytes, then most free slots.",
    )
    inputs: dict[str, RunInput] = Field(default_factory=dict, description="Pipeline input name → data.")
    priority: int = Field(default=0, ge=-1000, le=1000, description="Higher runs first; can change while running.")
    suspend: bool = Field(default=False, description="Stop starting new tasks (running ones finish).")
    max_parallel: int = Field(default=50, ge=1, le=10_000, description="Tasks of this Run running at once.")
    retry: RetryPolicy | None = Field(default=None, description="Default retry policy for the Run's tasks.")
    retry_failed: int = Field(
        default=0, ge=0, description="Bump to give every failed task one more attempt (successes are kept)."
    )
    output_prefix: str | None = Field(
        default=None,
        description="Directory under which the Run's outputs are written (<prefix>/<namespace>/<run>); it must "
        "lie under the Site's storage path. Default: the Site's storage path.",
    )
    release: str | None = Field(
        default=None,
        max_length=255,
        pattern=RELEASE_PATTERN,
        description="A pinned software release, as an image by digest ([host/]name@sha256:<64 hex>): every task "
        "runs in it (instead of its executable's image), and a task whose node reports another image, or none, "
        "fails with ReleaseNotVerified. Fixed when the Run starts.",
    )
    split: RunSplit | None = Field(
        default=None,
        description="Split the Run into one child Run per Site holding part of its inputs (by the archive's "
        "replicas, the placement, the Sites' storage paths), each dispatched to its Site; this Run then shows the "
        "children and their totals. Exclusive with spec.site.",
    )

    @model_validator(mode="after")
    def _split_fits(self) -> Self:
        if self.split is None:
            return self
        if self.site is not None:
            raise ValueError("split: a split Run goes to the Sites holding its inputs; leave spec.site unset")
        divisible = {name for name, given in self.inputs.items() if given.from_archive or given.uris is not None}
        for name in self.split.inputs or []:
            if name not in self.inputs:
                raise ValueError(f"split.inputs: {name!r} is not one of spec.inputs")
            if name not in divisible:
                raise ValueError(f"split.inputs: {name!r} is one uri; only archive inputs and uris lists divide")
        if not divisible:
            raise ValueError("split: the Run has no archive input or uris list to divide among Sites")
        return self

    def divided_inputs(self) -> list[str]:
        """The inputs a split divides among its children."""
        if self.split is None:
            return []
        if self.split.inputs is not None:
            return sorted(self.split.inputs)
        return sorted(name for name, given in self.inputs.items() if given.from_archive or given.uris is not None)


class RunPhase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUSPENDED = "Suspended"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class TaskCounts(SgsModel):
    total: int = 0
    waiting: int = 0
    ready: int = 0
    running: int = 0
    retrying: int = 0
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0


class FailedTask(SgsModel):
    task: str
    attempt: int
    reason: str
    message: str = Field(default="", max_length=1024)


class RemoteCopy(SgsModel):
    """The one copy of a Run at a cluster Site, run there by that cluster's own operator."""

    site: str = Field(description="The cluster Site (this cluster's Site resource).")
    namespace: str = Field(description="Namespace of the copy in the Site's cluster.")
    name: str
    remote_site: str | None = Field(default=None, description="The Site there that runs it.")
    uid: str | None = Field(default=None, description="The copy's uid there, once it was seen.")
    last_seen: datetime | None = Field(default=None, description="When the copy's status was last read.")
    fenced: bool | None = Field(
        default=None, description="The copy starts only once this control plane grants it (sgs.io/start-permit)."
    )
    permitted: datetime | None = Field(
        default=None, description="When this control plane granted the copy its start: from then on it may have run."
    )


class AbandonedCopy(SgsModel):
    """A copy left at a cluster Site that stayed unreachable before it could start; deleted once reachable."""

    site: str
    namespace: str
    name: str
    at: datetime = Field(description="When the Run was sent elsewhere.")
    reason: str = Field(default="", max_length=1024)


class ChildRun(SgsModel):
    """One child of a split Run: the part of its inputs one Site holds, run there."""

    name: str
    site: str
    inputs: int = Field(default=0, description="Input datasets or files given to this child.")
    uid: str | None = Field(default=None, description="The child's uid, once created.")
    phase: RunPhase | None = None
    progress: str | None = None


class RunStatus(SgsModel):
    phase: RunPhase = Field(default=RunPhase.PENDING)
    site: str | None = Field(default=None, description="Site the Run was dispatched to.")
    tasks: TaskCounts = Field(default_factory=TaskCounts)
    progress: str | None = Field(default=None, description="succeeded/total, for kubectl get.")
    start_time: datetime | None = None
    completion_time: datetime | None = None
    failed_tasks: list[FailedTask] = Field(
        default_factory=list, max_length=MAX_FAILED_TASKS, description="The first failed tasks (bounded)."
    )
    task_table: str | None = Field(default=None, description="Where the full per-task records are.")
    pipeline_digest: str | None = Field(
        default=None, description="sha256 of the Pipeline spec this Run was started with (and keeps running)."
    )
    observed_generation: int | None = None
    remote: RemoteCopy | None = Field(default=None, description="At a cluster Site: where the Run's copy runs.")
    release: str | None = Field(
        default=None, description="The pinned release its tasks run in (spec.release at start)."
    )
    abandoned: list[AbandonedCopy] = Field(
        default_factory=list, max_length=16, description="Copies left at unreachable Sites before they started."
    )
    children: list[ChildRun] = Field(
        default_factory=list, max_length=200, description="A split Run's child Runs, one per Site (spec.split)."
    )
    conditions: list[Condition] = Field(default_factory=list)


class Run(KubeObject):
    """One execution of a Pipeline on concrete inputs at a Site."""

    kind: str = "Run"
    spec: RunSpec
    status: RunStatus | None = None

    plural: ClassVar[str] = "runs"
    short_names: ClassVar[tuple[str, ...]] = ("sgsrun",)
    printer_columns: ClassVar[tuple[PrinterColumn, ...]] = (
        PrinterColumn(name="Pipeline", type="string", json_path=".spec.pipeline"),
        PrinterColumn(name="Site", type="string", json_path=".status.site"),
        PrinterColumn(name="Phase", type="string", json_path=".status.phase"),
        PrinterColumn(name="Done", type="string", json_path=".status.progress", description="succeeded/total"),
        PrinterColumn(name="Priority", type="integer", json_path=".spec.priority", priority=1),
        PrinterColumn(name="Age", type="date", json_path=".metadata.creationTimestamp"),
    )

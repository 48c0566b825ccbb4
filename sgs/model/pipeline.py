"""The Pipeline resource: a data-flow graph of Executables, as compiled from the Euclid-style DSL.

The graph is stored flat (steps carry the name of the map that encloses them) because a Kubernetes structural
schema cannot be recursive; the planner rebuilds the nesting.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import ClassVar, Self

from pydantic import Field, field_validator, model_validator

from sgs.model.base import Condition, KubeObject, PrinterColumn, SgsModel
from sgs.model.dataset import DATASET_TYPE_PATTERN, DataIdError, DimensionValue

PORT_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
STEP_NAME = r"^[A-Za-z_][A-Za-z0-9_.\-\[\]]*$"
_PORT_RE = re.compile(PORT_NAME)


DYNAMIC_FUNCTIONS = "sgs.dynamic_resources"  # entry-point group of the functions a Pipeline may name
_ENTRY_POINT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


class DynamicResources(SgsModel):
    """Resources decided at run time from an upstream product (Euclid IAL 3.0 dynamic resources).

    The file bound to ``input`` is read when the task becomes ready: a JSON object with any of ``cores``,
    ``ram``, ``walltime``, ``vms``, ``gpus``, ``tmpdir``; or, when ``function`` names an entry point of the
    ``sgs.dynamic_resources`` group, that function is given the file's path and returns such a mapping. A
    Pipeline names functions, never code: only entry points of packages installed with the executor (and, for
    the operator, allowed by its administrator) run, each in a sandboxed subprocess.
    """

    input: str = Field(pattern=PORT_NAME, description="Name of the input whose file holds the resources.")
    function: str | None = Field(
        default=None,
        max_length=100,
        description=f"Optional entry-point name (group {DYNAMIC_FUNCTIONS}) turning the file into a resources "
        "mapping, e.g. fits-header.",
    )

    @field_validator("function")
    @classmethod
    def _entry_point_name(cls, value: str | None) -> str | None:
        # A validator, not a schema pattern: the admission webhook's message says why, the schema's would not.
        if value is None:
            return value
        if ":" in value:
            raise ValueError(
                f"{value!r} is a module:qualname; name an entry point of group {DYNAMIC_FUNCTIONS!r} instead "
                "(a function the executor's administrator installed and allows), e.g. 'fits-header'"
            )
        if not _ENTRY_POINT_NAME.match(value):
            raise ValueError(f"{value!r} is not an entry-point name (letters, digits, '.', '_' and '-')")
        return value


class Resources(SgsModel):
    """What one task may use: the Euclid Package Definition's ComputingResources plus GPU and scratch."""

    cores: int = Field(default=1, ge=1, le=1024, description="CPU cores.")
    ram: float = Field(default=1.0, gt=0, le=4096, description="Memory in GiB (RSS limit).")
    walltime: float = Field(default=1.0, gt=0, le=720, description="Wall-clock limit in hours.")
    vms: float | None = Field(default=None, gt=0, le=16384, description="Virtual memory in GiB (advisory).")
    gpus: int = Field(default=0, ge=0, le=16, description="GPUs (nvidia.com/gpu).")
    tmpdir: float = Field(default=0.0, ge=0, le=16384, description="Local scratch (TMPDIR) in GiB.")
    dynamic: DynamicResources | None = Field(default=None, description="Resources read at run time.")

    @property
    def ram_bytes(self) -> int:
        return int(self.ram * 1024**3)

    @property
    def walltime_seconds(self) -> float:
        return self.walltime * 3600.0


class RetryPolicy(SgsModel):
    """How a failed task is retried (Rubin's memoryMultiplier for OOM, exponential backoff with jitter)."""

    max: int = Field(default=2, ge=0, le=100, description="Retries after the first attempt.")
    backoff: float = Field(default=10.0, ge=0, le=86400, description="First retry delay in seconds.")
    backoff_factor: float = Field(default=2.0, ge=1, le=10, description="Delay multiplier per attempt.")
    max_backoff: float = Field(default=600.0, ge=0, le=86400, description="Upper bound of a delay in seconds.")
    jitter: float = Field(default=0.1, ge=0, le=1, description="Fraction of the delay randomised (seeded).")
    memory_multiplier: float = Field(
        default=2.0, ge=1, le=16, description="Memory factor applied to a retry after an out-of-memory kill."
    )


class PortSpec(SgsModel):
    name: str = Field(pattern=PORT_NAME, description="Port name, also the command-line option name.")
    optional: bool = Field(default=False, description="An optional input may be left unbound.")


class OutputSpec(SgsModel):
    """An output port; when its task succeeds, the file becomes a dataset in the Site's archive (``register``)."""

    name: str = Field(pattern=PORT_NAME, description="Port name, also the command-line option name.")
    lineage: list[str] | None = Field(
        default=None, description="Inputs this output derives from (all inputs when absent)."
    )
    suffix: str = Field(default="", max_length=32, description="File name suffix, e.g. .fits.")
    dataset_type: str | None = Field(
        default=None,
        pattern=DATASET_TYPE_PATTERN,
        description="Dataset type the output is registered as (default: the output's name).",
    )
    # "register" on the wire; not the Python name, which would shadow ABCMeta.register of every pydantic model.
    register_dataset: bool = Field(
        default=True,
        alias="register",
        description="Register the output in the Site's archive (false for intermediate products).",
    )
    dimensions: list[str] | None = Field(
        default=None,
        max_length=32,
        description="Dimensions of the output's data ID, each taken from the lineage inputs' data IDs (which must "
        "agree on it). Default: every dimension all of those inputs share with the same value.",
    )

    @field_validator("dimensions")
    @classmethod
    def _dimension_names(cls, value: list[str] | None) -> list[str] | None:
        for name in value or []:
            if not _PORT_RE.match(name):
                raise ValueError(f"{name!r} is not a dimension name (letters, digits and '_')")
        if value is not None and len(set(value)) != len(value):
            raise ValueError(f"dimensions named twice: {sorted({n for n in value if value.count(n) > 1})}")
        return value

    def registered_type(self) -> str:
        return self.dataset_type or self.name

    def derive_data_id(self, inputs: Sequence[Mapping[str, DimensionValue]]) -> dict[str, DimensionValue]:
        """The output's data ID from the data IDs of the datasets its lineage inputs were bound to.

        Without ``dimensions``: the intersection (keys every input data ID has, with the same value), so the
        4 dithers of one observation give the observation's data ID. With ``dimensions``: each one's value, which
        every input that has it must agree on. Inputs that are not archive datasets (plain files, literals) have
        no data ID and are not among ``inputs``. Raises DataIdError naming the dimension.
        """
        if self.dimensions is None:
            if not inputs:
                return {}
            first, *rest = inputs
            return {k: v for k, v in first.items() if all(k in other and other[k] == v for other in rest)}
        data_id: dict[str, DimensionValue] = {}
        for name in self.dimensions:
            values = {d[name] for d in inputs if name in d}
            if not values:
                raise DataIdError(name, f"output {self.name!r}: no input data ID has dimension {name!r}")
            if len(values) > 1:
                shown = ", ".join(sorted(map(repr, values)))
                raise DataIdError(name, f"output {self.name!r}: inputs disagree on {name!r} ({shown})")
            data_id[name] = values.pop()
        return data_id


class ExecutableSpec(SgsModel):
    """One command with named inputs and outputs (Euclid Package Definition)."""

    name: str = Field(pattern=PORT_NAME, description="Unique name of the executable in this pipeline.")
    command: str = Field(min_length=1, description="Program run as `command --in=path ... --out=path ...`.")
    inputs: list[PortSpec] = Field(default_factory=list)
    outputs: list[OutputSpec] = Field(default_factory=list)
    resources: Resources = Field(default_factory=Resources)
    image: str | None = Field(default=None, description="Container image; the command runs directly if absent.")
    retry: RetryPolicy | None = Field(default=None, description="Retry policy; the Run's default if absent.")

    @model_validator(mode="after")
    def _ports_are_consistent(self) -> Self:
        names = [p.name for p in self.inputs] + [o.name for o in self.outputs]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"executable {self.name!r}: port names used twice: {', '.join(duplicates)}")
        inputs = {p.name for p in self.inputs}
        for out in self.outputs:
            unknown = [n for n in out.lineage or [] if n not in inputs]
            if unknown:
                raise ValueError(
                    f"executable {self.name!r}: output {out.name!r} lineage names unknown inputs {unknown}"
                )
        dyn = self.resources.dynamic
        if dyn is not None and dyn.input not in inputs:
            raise ValueError(f"executable {self.name!r}: dynamic resources read unknown input {dyn.input!r}")
        return self


class Ref(SgsModel):
    """Where a value comes from: a pipeline (or map) input, a step's output, or a literal."""

    input: str | None = Field(default=None, pattern=PORT_NAME, description="Name of an enclosing input.")
    step: str | None = Field(default=None, pattern=STEP_NAME, description="Name of a step in the same scope.")
    output: str | None = Field(default=None, pattern=PORT_NAME, description="Output port of that step.")
    value: str | None = Field(default=None, description="A literal passed as is on the command line.")

    @model_validator(mode="after")
    def _exactly_one_source(self) -> Self:
        _check_single_source(self)
        return self

    def __str__(self) -> str:
        if self.input is not None:
            return f"input {self.input}"
        if self.step is not None:
            return f"{self.step}.{self.output}"
        return repr(self.value)


def _check_single_source(ref: Ref) -> None:
    sources = [ref.input is not None, ref.step is not None, ref.value is not None]
    if sum(sources) != 1:
        raise ValueError("a reference needs exactly one of input, step or value")
    if (ref.step is None) != (ref.output is None):
        raise ValueError("step and output go together")


class Binding(Ref):
    """A Ref, or a list of Refs (``items``) delivered to the task as one JSON list file."""

    items: list[Ref] | None = Field(default=None, description="Several references passed as one list.")

    @model_validator(mode="after")
    def _exactly_one_source(self) -> Self:
        if self.items is None:
            _check_single_source(self)
        elif any(v is not None for v in (self.input, self.step, self.output, self.value)):
            raise ValueError("a binding with items takes no other source")
        return self

    def refs(self) -> list[Ref]:
        if self.items is not None:
            return self.items
        return [Ref(input=self.input, step=self.step, output=self.output, value=self.value)]


class NamedBinding(SgsModel):
    name: str = Field(pattern=PORT_NAME)
    source: Binding = Field(alias="from", description="Where the value comes from.")


class MapSpec(SgsModel):
    """A ``@parallel`` function: its body's steps (``scope`` = this step) run once per item of ``over``."""

    over: str = Field(pattern=PORT_NAME, description="The parameter whose list is iterated.")
    params: list[str] = Field(description="Parameters of the parallel function, in order.")
    outputs: list[NamedBinding] = Field(description="Body values returned per item, gathered into lists.")

    @model_validator(mode="after")
    def _over_is_a_param(self) -> Self:
        if self.over not in self.params:
            raise ValueError(f"map iterates over {self.over!r}, which is not one of its params {self.params}")
        return self


class StepSpec(SgsModel):
    """A node of the graph: an Executable applied to its inputs, or a map over a list."""

    name: str = Field(pattern=STEP_NAME, max_length=200)
    executable: str | None = Field(default=None, pattern=PORT_NAME, description="Executable run by this step.")
    map: MapSpec | None = Field(default=None, description="Set when this step fans out over a list.")
    scope: str | None = Field(default=None, description="The map step whose body holds this step.")
    inputs: dict[str, Binding] = Field(default_factory=dict, description="Input or parameter name → source.")
    source: str | None = Field(default=None, description="Where the call was written: file:line.")

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        if (self.executable is None) == (self.map is None):
            raise ValueError(f"step {self.name!r} needs exactly one of executable or map")
        return self


TRIGGER_NAME = r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$"
_DIMENSION_NAME = re.compile(r"^[a-z][a-z0-9_]{0,30}$")  # the archive's dimension names (sgs.model.dataset)


class TriggerInput(SgsModel):
    """An input every triggered Run binds the same way (a calibration file, a configuration)."""

    uri: str | None = Field(default=None, description="One file or object URI.")
    uris: list[str] | None = Field(default=None, max_length=10_000, description="Several URIs, as a list.")

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.uri is None) == (self.uris is None):
            raise ValueError("give exactly one of uri or uris")
        return self


class TriggerCompletion(SgsModel):
    """When a group is complete, so its Run is created: ``count`` datasets of the group are available at the Site,
    or (``allKnown``) every dataset the archive knows for the group key is."""

    count: int | None = Field(default=None, ge=1, le=10_000, description="Datasets a complete group holds.")
    all_known: bool = Field(
        default=False,
        description="Complete once every dataset of the group the archive knows has a replica available at the "
        "Site (for datasets registered together, e.g. one ingest per observation, then copied).",
    )

    @model_validator(mode="after")
    def _one_rule(self) -> Self:
        if (self.count is None) == (not self.all_known):
            raise ValueError("give exactly one of count or allKnown: true")
        return self


class TriggerSpec(SgsModel):
    """Create a Run when datasets arrive: those of ``datasetType`` matching ``where`` that become available at a
    Site (``sites``) are grouped by the values of ``groupBy``; each complete group becomes one Run at that Site,
    with the group's datasets bound to ``input`` (as archive dataset ids) and ``inputs`` bound as given. The
    Run's name is the pipeline's plus a hash of (trigger, Site, group key): a group makes one Run, however
    often its events are delivered."""

    name: str = Field(pattern=TRIGGER_NAME, description="Unique name of the trigger in this pipeline.")
    input: str = Field(pattern=PORT_NAME, description="The pipeline input the group's datasets are bound to.")
    dataset_type: str = Field(
        pattern=r"^[A-Za-z][A-Za-z0-9_.]{0,127}$", description="Dataset type of the datasets that fire it."
    )
    where: str = Field(
        default="", max_length=10_000, description="Dimension expression the datasets' data IDs must match."
    )
    collections: list[str] | None = Field(
        default=None, max_length=100, description="RUN collections the datasets must belong to (any when absent)."
    )
    sites: str | None = Field(
        default=None, max_length=2_000, description="Site expression: where arrivals count (every Site when absent)."
    )
    group_by: list[str] = Field(
        min_length=1, max_length=32, description="Dimensions whose values form the group key, e.g. [observation]."
    )
    complete: TriggerCompletion = Field(description="When a group is complete.")
    inputs: dict[str, TriggerInput] = Field(
        default_factory=dict, description="Other pipeline inputs, bound the same way in every Run."
    )
    priority: int = Field(default=0, ge=-1000, le=1000, description="Priority of the Runs it creates.")

    @field_validator("where")
    @classmethod
    def _where_parses(cls, value: str) -> str:
        if not value.strip():
            return value
        from sgs.expression.dimensions import parse  # astropy comes with it: only when an expression is given
        from sgs.expression.errors import ExpressionError

        try:
            parse(value)
        except ExpressionError as err:
            raise ValueError(f"not a dimension expression: {err}") from None
        return value

    @field_validator("sites")
    @classmethod
    def _sites_parse(cls, value: str | None) -> str | None:
        if value is None:
            return value
        from sgs.expression.errors import ExpressionError
        from sgs.expression.sites import parse_sites

        try:
            parse_sites(value)
        except ExpressionError as err:
            raise ValueError(f"not a Site expression: {err}") from None
        return value

    @field_validator("group_by")
    @classmethod
    def _dimension_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not _DIMENSION_NAME.match(name):
                raise ValueError(f"{name!r} is not a dimension name (lower-case letters, digits and '_')")
        twice = sorted({n for n in value if value.count(n) > 1})
        if twice:
            raise ValueError(f"dimensions named twice: {twice}")
        return value


class PipelineSpec(SgsModel):
    """A compiled pipeline: the executables it uses and the flat list of steps in dependency order."""

    inputs: list[PortSpec] = Field(default_factory=list, description="Pipeline inputs, bound by each Run.")
    outputs: list[NamedBinding] = Field(default_factory=list, description="Products the pipeline returns.")
    executables: list[ExecutableSpec] = Field(default_factory=list)
    steps: list[StepSpec] = Field(default_factory=list)
    source: str | None = Field(default=None, description="Module and function the pipeline was compiled from.")
    triggers: list[TriggerSpec] = Field(
        default_factory=list, max_length=32, description="Runs created when matching datasets arrive."
    )

    @model_validator(mode="after")
    def _graph_is_well_formed(self) -> Self:
        from sgs.model.validate import check_pipeline  # the checks need the whole graph

        check_pipeline(self)
        return self

    def digest(self) -> str:
        """sha256 of the canonical manifest form: what a Run is pinned to, and what tells an edit apart.

        Keys are sorted: the API server hands objects back with their keys in its own order.
        """
        wire = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        return hashlib.sha256(json.dumps(wire, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    def executable(self, name: str) -> ExecutableSpec:
        for exe in self.executables:
            if exe.name == name:
                return exe
        raise KeyError(name)


class PipelinePhase(StrEnum):
    PENDING = "Pending"
    READY = "Ready"
    INVALID = "Invalid"


class PipelineStatus(SgsModel):
    phase: PipelinePhase = Field(default=PipelinePhase.PENDING)
    tasks_per_run: int | None = Field(default=None, description="Static task count (maps count once).")
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)


class Pipeline(KubeObject):
    """A pipeline definition, compiled from the DSL (`sgs compile`) or written as YAML."""

    kind: str = "Pipeline"
    spec: PipelineSpec
    status: PipelineStatus | None = None

    plural: ClassVar[str] = "pipelines"
    short_names: ClassVar[tuple[str, ...]] = ("pl",)
    printer_columns: ClassVar[tuple[PrinterColumn, ...]] = (
        PrinterColumn(name="Phase", type="string", json_path=".status.phase"),
        PrinterColumn(name="Steps", type="integer", json_path=".status.tasksPerRun"),
        PrinterColumn(name="Age", type="date", json_path=".metadata.creationTimestamp"),
    )


def is_port_name(name: str) -> bool:
    return bool(_PORT_RE.match(name))

"""The Euclid Package Definition vocabulary: Executable, Input, Output, ComputingResources.

An ``Executable`` is declared once in a package module and called inside ``@pipeline`` / ``@parallel``
functions; calls are traced into the data-flow graph (see ``sgs.dsl.trace``), never executed in Python.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from sgs.dynamic.registry import entry_point_name
from sgs.model.pipeline import (
    DYNAMIC_FUNCTIONS,
    DynamicResources,
    ExecutableSpec,
    OutputSpec,
    PortSpec,
    Resources,
    RetryPolicy,
    is_port_name,
)


class DslError(Exception):
    """A pipeline script mistake, reported at the file and line where it was written."""

    def __init__(self, message: str, location: str | None = None) -> None:
        self.message = message
        self.location = location
        super().__init__(f"{location}: {message}" if location else message)


@dataclass(frozen=True)
class Input:
    """A named input port of an Executable (``--name=path`` on the command line)."""

    name: str
    optional: bool = False

    def __post_init__(self) -> None:
        if not is_port_name(self.name):
            raise DslError(f"input name {self.name!r} is not a valid identifier")


@dataclass(frozen=True)
class Output:
    """A named output port; ``lineage`` lists the inputs it derives from (all of them when omitted).

    When its task succeeds the file is registered in the Site's archive as a dataset of ``dataset_type``
    (default: the port's name), its data ID made of ``dimensions`` taken from the lineage inputs' data IDs
    (default: the dimensions they all share with the same value); ``register=False`` keeps an intermediate
    product out of the archive.
    """

    name: str
    lineage: Sequence[str] | None = None
    suffix: str = ""
    dataset_type: str | None = None
    register: bool = True
    dimensions: Sequence[str] | None = None

    def __post_init__(self) -> None:
        if not is_port_name(self.name):
            raise DslError(f"output name {self.name!r} is not a valid identifier")
        try:
            self.to_model()
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(map(str, first["loc"]))
            raise DslError(f"output {self.name!r}: {where}: {first['msg'].removeprefix('Value error, ')}") from err

    def to_model(self) -> OutputSpec:
        return OutputSpec(
            name=self.name,
            lineage=list(self.lineage) if self.lineage is not None else None,
            suffix=self.suffix,
            dataset_type=self.dataset_type,
            register_dataset=self.register,
            dimensions=list(self.dimensions) if self.dimensions is not None else None,
        )


DynamicFunctionRef = str | Callable[[str], Mapping[str, Any]]
DynamicSpec = str | tuple[str, DynamicFunctionRef]


@dataclass(frozen=True)
class ComputingResources:
    """Maximum resources of one task: cores, ram (GiB), walltime (hours), vms (GiB); plus gpus and tmpdir (GiB).

    ``dynamic`` makes them depend on an upstream product: the name of an input whose file is a JSON mapping of
    resource overrides, or ``(input_name, function)`` where ``function(path)`` returns that mapping. The
    function is an entry point of group ``sgs.dynamic_resources`` — given by its name, or as the installed
    function itself — because the manifest names it and executors run only installed, allowed functions.
    """

    cores: int = 1
    ram: float = 1.0
    walltime: float = 1.0
    vms: float | None = None
    gpus: int = 0
    tmpdir: float = 0.0
    dynamic: DynamicSpec | None = None

    def to_model(self) -> Resources:
        return Resources(
            cores=self.cores,
            ram=self.ram,
            walltime=self.walltime,
            vms=self.vms,
            gpus=self.gpus,
            tmpdir=self.tmpdir,
            dynamic=_dynamic_model(self.dynamic),
        )


def _dynamic_model(dynamic: DynamicSpec | None) -> DynamicResources | None:
    if dynamic is None:
        return None
    if isinstance(dynamic, str):
        return DynamicResources(input=dynamic)
    if isinstance(dynamic, tuple):
        name, function = dynamic
        try:
            return DynamicResources(input=name, function=function_name(function))
        except ValidationError as err:
            raise DslError(f"dynamic resources: {err.errors()[0]['msg'].removeprefix('Value error, ')}") from err
    raise DslError("dynamic resources take an input name, or (input name, function)")


def function_name(function: DynamicFunctionRef) -> str:
    """The entry-point name a manifest uses for a dynamic-resources function."""
    if isinstance(function, str):
        return function
    name = entry_point_name(function)
    if name is None:
        module = getattr(function, "__module__", None) or "?"
        qualname = getattr(function, "__qualname__", None) or repr(function)
        raise DslError(
            f"{module}:{qualname} is not an entry point of group {DYNAMIC_FUNCTIONS!r}: declare it in its "
            f'package (pyproject.toml: [project.entry-points."{DYNAMIC_FUNCTIONS}"] my-sizes = '
            f'"{module}:{qualname}"), install the package, and name it here or pass the entry-point name'
        )
    return name


@dataclass(eq=False)
class Executable:
    """One command with named inputs and outputs and the resources it needs (Euclid Package Definition).

    Called inside a pipeline with keyword (or positional) arguments named after its inputs; returns a handle per
    output (a tuple when there are several).
    """

    command: str
    inputs: Sequence[Input] = ()
    outputs: Sequence[Output] = ()
    resources: ComputingResources = field(default_factory=ComputingResources)
    image: str | None = None
    retry: RetryPolicy | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        if not self.command.strip():
            raise DslError("Executable needs a command")
        self.inputs = tuple(self.inputs)
        self.outputs = tuple(self.outputs)
        names = [p.name for p in self.inputs] + [o.name for o in self.outputs]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise DslError(f"Executable {self.command!r}: port names used twice: {duplicates}")

    def spec(self, name: str) -> ExecutableSpec:
        return ExecutableSpec(
            name=name,
            command=self.command,
            inputs=[PortSpec(name=p.name, optional=p.optional) for p in self.inputs],
            outputs=[o.to_model() for o in self.outputs],
            resources=self.resources.to_model(),
            image=self.image,
            retry=self.retry,
        )

    def default_name(self) -> str:
        base = self.command.strip().split()[0].rsplit("/", 1)[-1]
        name = re.sub(r"\W", "_", base)
        return name if is_port_name(name) else f"x_{name}"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from sgs.dsl.trace import trace_executable_call

        return trace_executable_call(self, args, kwargs)

"""Which dynamic-resource functions an executor runs: installed entry points, optionally allow-listed."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

from sgs.model.pipeline import DYNAMIC_FUNCTIONS, PipelineSpec


@dataclass(frozen=True)
class DynamicFunction:
    name: str  # the entry-point name a Pipeline uses
    target: str  # module:attr, as the installed package declares it
    location: str  # the sys.path entry holding the package (the sandbox imports from there)


class DynamicFunctions:
    """The functions one executor will run, by name; anything else is refused with the reason."""

    def __init__(self, functions: Mapping[str, DynamicFunction], installed: Collection[str], owner: str) -> None:
        self.functions = dict(functions)
        self.installed = sorted(installed)
        self.owner = owner  # "the operator", "this machine": who refuses, in messages

    @classmethod
    def discover(cls, owner: str, allowed: Collection[str] | None = None) -> DynamicFunctions:
        """Entry points of group ``sgs.dynamic_resources`` installed here; ``allowed`` restricts them further."""
        found = {ep.name: _function(ep) for ep in entry_points(group=DYNAMIC_FUNCTIONS)}
        chosen = found if allowed is None else {name: fn for name, fn in found.items() if name in allowed}
        return cls(chosen, found, owner)

    def names(self) -> list[str]:
        return sorted(self.functions)

    def problem(self, name: str) -> str | None:
        """Why ``name`` cannot be run here, or None when it can."""
        if name in self.functions:
            return None
        allowed = ", ".join(self.names()) or "none"
        if name in self.installed:
            return f"{name!r} is installed but not allowed by {self.owner}'s administrator (allowed: {allowed})"
        return (
            f"{name!r} is not a dynamic-resources function installed with {self.owner} (entry points of group "
            f"{DYNAMIC_FUNCTIONS!r} allowed: {allowed})"
        )

    def pipeline_problems(self, spec: PipelineSpec) -> list[str]:
        """``executables[i].resources.dynamic.function: why`` for each function the Pipeline names in vain."""
        problems = []
        for i, exe in enumerate(spec.executables):
            dynamic = exe.resources.dynamic
            if dynamic is not None and dynamic.function is not None:
                problem = self.problem(dynamic.function)
                if problem is not None:
                    problems.append(f"executables[{i}].resources.dynamic.function: {problem}")
        return problems

    def get(self, name: str) -> DynamicFunction:
        problem = self.problem(name)
        if problem is not None:
            raise LookupError(problem)
        return self.functions[name]


def entry_point_name(function: Callable[..., Any]) -> str | None:
    """The name under which ``function`` is installed as a dynamic-resources entry point, if it is."""
    for ep in entry_points(group=DYNAMIC_FUNCTIONS):
        with contextlib.suppress(Exception):  # a broken package elsewhere must not hide the one asked for
            if ep.load() is function:
                return ep.name
    return None


def _function(ep: EntryPoint) -> DynamicFunction:
    location = str(Path(str(ep.dist.locate_file(""))).absolute()) if ep.dist is not None else ""
    return DynamicFunction(ep.name, ep.value, location)

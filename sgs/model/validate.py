"""Whole-graph checks of a PipelineSpec: every reference resolves, every required input is bound, no cycle.

Each problem names where it is (``steps[3].inputs.image``) and why, so a rejected manifest says what to fix.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sgs.model.pipeline import Binding, ExecutableSpec, PipelineSpec, Ref, StepSpec


class PipelineError(ValueError):
    """A pipeline graph that cannot run; the message lists every problem found."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


def check_pipeline(spec: PipelineSpec) -> None:
    problems = list(_problems(spec))
    if problems:
        raise PipelineError(problems)


def _problems(spec: PipelineSpec) -> Iterator[str]:
    yield from _duplicates("executables", [e.name for e in spec.executables])
    yield from _duplicates("steps", [s.name for s in spec.steps])
    yield from _duplicates("steps (as Kubernetes names)", [_dns(s.name) for s in spec.steps])
    yield from _duplicates("inputs", [p.name for p in spec.inputs])
    executables = {e.name: e for e in spec.executables}
    steps = {s.name: s for s in spec.steps}
    for i, step in enumerate(spec.steps):
        yield from _step_problems(spec, f"steps[{i}]", step, steps, executables)
    top_inputs = {p.name for p in spec.inputs}
    for i, out in enumerate(spec.outputs):
        yield from _binding_problems(f"outputs[{i}].from", out.source, None, top_inputs, steps, executables)
    cycle = find_cycle(spec)
    if cycle:
        yield f"steps: cycle {' -> '.join(cycle)}"
    yield from _trigger_problems(spec)


def _dns(name: str) -> str:
    from sgs.naming import dns_label

    return dns_label(name)


def _duplicates(field: str, names: list[str]) -> Iterator[str]:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            yield f"{field}: name {name!r} used twice"
        seen.add(name)


def _step_problems(
    spec: PipelineSpec,
    where: str,
    step: StepSpec,
    steps: dict[str, StepSpec],
    executables: Mapping[str, ExecutableSpec],
) -> Iterator[str]:
    scope_inputs = _scope_inputs(spec, step.scope, steps)
    if step.scope is not None and (step.scope not in steps or steps[step.scope].map is None):
        yield f"{where}.scope: {step.scope!r} is not a map step"
        return
    for name, binding in step.inputs.items():
        yield from _binding_problems(f"{where}.inputs.{name}", binding, step.scope, scope_inputs, steps, executables)
    if step.executable is not None:
        exe = executables.get(step.executable)
        if exe is None:
            yield f"{where}.executable: unknown executable {step.executable!r}"
            return
        declared = {p.name for p in exe.inputs}
        for name in step.inputs:
            if name not in declared:
                yield f"{where}.inputs.{name}: {exe.name} has no input {name!r} (inputs: {sorted(declared)})"
        for port in exe.inputs:
            if not port.optional and port.name not in step.inputs:
                yield f"{where}.inputs: required input {port.name!r} of {exe.name} is not bound"
    elif step.map is not None:
        for name in step.inputs:
            if name not in step.map.params:
                yield f"{where}.inputs.{name}: not a parameter of the map (params: {step.map.params})"
        for param in step.map.params:
            if param not in step.inputs:
                yield f"{where}.inputs: parameter {param!r} is not bound"
        for j, out in enumerate(step.map.outputs):
            yield from _binding_problems(
                f"{where}.map.outputs[{j}].from",
                out.source,
                step.name,
                set(step.map.params),
                steps,
                executables,
            )


def _scope_inputs(spec: PipelineSpec, scope: str | None, steps: dict[str, StepSpec]) -> set[str]:
    if scope is None:
        return {p.name for p in spec.inputs}
    enclosing = steps.get(scope)
    if enclosing is None or enclosing.map is None:
        return set()
    return set(enclosing.map.params)


def _binding_problems(
    where: str,
    binding: Binding,
    scope: str | None,
    scope_inputs: set[str],
    steps: dict[str, StepSpec],
    executables: Mapping[str, ExecutableSpec],
) -> Iterator[str]:
    for ref in binding.refs():
        yield from _ref_problems(where, ref, scope, scope_inputs, steps, executables)


def _ref_problems(
    where: str,
    ref: Ref,
    scope: str | None,
    scope_inputs: set[str],
    steps: dict[str, StepSpec],
    executables: Mapping[str, ExecutableSpec],
) -> Iterator[str]:
    if ref.input is not None and ref.input not in scope_inputs:
        yield f"{where}: unknown input {ref.input!r} (known: {sorted(scope_inputs)})"
    if ref.step is None:
        return
    producer = steps.get(ref.step)
    if producer is None:
        yield f"{where}: unknown step {ref.step!r}"
        return
    if producer.scope != scope:
        yield f"{where}: step {ref.step!r} is in another scope ({producer.scope or 'top level'})"
    if producer.map is not None:
        ports = [o.name for o in producer.map.outputs]
    else:
        exe = executables.get(producer.executable or "")
        ports = [o.name for o in exe.outputs] if exe is not None else []
    if ref.output not in ports:
        yield f"{where}: step {ref.step!r} has no output {ref.output!r} (outputs: {ports})"


def step_dependencies(step: StepSpec) -> set[str]:
    """Names of the steps whose outputs this step reads directly (same scope)."""
    return {ref.step for b in step.inputs.values() for ref in b.refs() if ref.step is not None}


def find_cycle(spec: PipelineSpec) -> list[str]:
    """A dependency cycle among steps (map bodies count as depending on what they read), or []."""
    deps: dict[str, set[str]] = {s.name: step_dependencies(s) for s in spec.steps}
    for s in spec.steps:
        if s.map is not None:
            deps[s.name] |= {r.step for o in s.map.outputs for r in o.source.refs() if r.step is not None}
        if s.scope is not None and s.scope in deps:
            # A map finishes after its body, so the map depends on each body step.
            deps[s.scope].add(s.name)
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for dep in sorted(deps.get(node, ())):
            if dep not in deps:
                continue
            if state.get(dep) == 1:
                return [*stack[stack.index(dep) :], dep]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return []

    for name in deps:
        if name not in state:
            found = visit(name)
            if found:
                return found
    return []


def _trigger_problems(spec: PipelineSpec) -> Iterator[str]:
    """Each trigger feeds a pipeline input, binds only pipeline inputs, and leaves no required input unbound."""
    yield from _duplicates("triggers", [t.name for t in spec.triggers])
    ports = {p.name: p for p in spec.inputs}
    for i, trigger in enumerate(spec.triggers):
        where = f"triggers[{i}]"
        if trigger.input not in ports:
            yield f"{where}.input: {trigger.input!r} is not an input of the pipeline (inputs: {_names(ports)})"
        for name in trigger.inputs:
            if name == trigger.input:
                yield f"{where}.inputs.{name}: the trigger's own input is bound to the group's datasets"
            elif name not in ports:
                yield f"{where}.inputs.{name}: not an input of the pipeline (inputs: {_names(ports)})"
        bound = {trigger.input, *trigger.inputs}
        unbound = [p.name for p in spec.inputs if not p.optional and p.name not in bound]
        if unbound:
            yield f"{where}.inputs: required pipeline inputs left unbound: {', '.join(unbound)}"


def _names(ports: Mapping[str, object]) -> str:
    return ", ".join(ports) or "none"

"""Tracing a Euclid-style pipeline script into a PipelineSpec.

Inside ``@pipeline`` the body runs once at compile time with placeholder handles as arguments. Each Executable
call records a step and returns handles for its outputs, so the data flow between calls becomes the graph
(independent calls have no edge between them and run in parallel). A ``@parallel`` function is traced once
into a map body that fans out over a list produced at run time. Plain helper functions (``calibrateDither``)
are simply executed, which inlines them; their name becomes part of the step names they create.
"""

from __future__ import annotations

import ast
import contextvars
import functools
import inspect
import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import CodeType, FrameType
from typing import Any, ParamSpec, TypeVar, overload

from sgs.dsl.package import DslError, Executable
from sgs.dsl.trigger import Trigger
from sgs.model.pipeline import (
    Binding,
    ExecutableSpec,
    MapSpec,
    NamedBinding,
    PipelineSpec,
    PortSpec,
    Ref,
    StepSpec,
)

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(eq=False)
class _Node:
    """A step while tracing; its final name is assigned once every call is known."""

    label: tuple[tuple[str, int], ...]
    scope: _Node | None
    executable: str | None
    inputs: dict[str, Any]
    location: str
    source: str
    map_over: str | None = None
    map_params: list[str] = field(default_factory=list)
    map_outputs: list[tuple[str, Any]] = field(default_factory=list)
    name: str = ""


@dataclass(frozen=True, eq=False)
class Handle:
    """A value inside a traced pipeline: an input of the enclosing scope or an output of a step."""

    scope: _Node | None
    node: _Node | None
    port: str

    def __repr__(self) -> str:
        where = self.node.label[-1][0] if self.node else "input"
        return f"<sgs value {where}.{self.port}>"

    def __bool__(self) -> bool:
        raise DslError("a pipeline value has no truth value at compile time: branch in the executable instead")

    def __iter__(self) -> Iterator[Any]:
        raise DslError("a single pipeline value cannot be unpacked")


@dataclass(eq=False)
class _Scope:
    """The pipeline body or a @parallel body being traced."""

    node: _Node | None
    code: CodeType
    used: set[str] = field(default_factory=set)


class _Tracer:
    def __init__(self) -> None:
        self.nodes: list[_Node] = []
        self.scopes: list[_Scope] = []
        self.executables: dict[str, Executable] = {}
        self.executable_names: dict[int, str] = {}
        self._counters: dict[tuple[Any, ...], int] = {}
        self._frame_labels: dict[int, tuple[str, int]] = {}
        self._kept_frames: list[FrameType] = []

    @property
    def scope(self) -> _Scope:
        return self.scopes[-1]

    def label_for_call(self, caller: FrameType, leaf: str) -> tuple[tuple[str, int], ...]:
        """Step label from the helper functions between the scope's body and this call, plus the leaf name."""
        helpers: list[FrameType] = []
        frame: FrameType | None = caller
        while frame is not None and frame.f_code is not self.scope.code:
            helpers.append(frame)
            frame = frame.f_back
        if frame is None:
            raise DslError("pipeline values used outside the pipeline that made them", _where(caller))
        parts: list[tuple[str, int]] = []
        parent: tuple[Any, ...] = (id(self.scope.node),)
        for helper in reversed(helpers):
            key = id(helper)
            if key not in self._frame_labels:
                self._kept_frames.append(helper)  # keeps id() unique while tracing
                self._frame_labels[key] = (helper.f_code.co_name, self._next(parent, helper.f_code.co_name))
            parts.append(self._frame_labels[key])
            parent = (*parent, self._frame_labels[key])
        parts.append((leaf, self._next(parent, leaf)))
        return tuple(parts)

    def _next(self, parent: tuple[Any, ...], name: str) -> int:
        key = (*parent, name)
        self._counters[key] = self._counters.get(key, 0) + 1
        return self._counters[key]

    def count(self, parent: tuple[Any, ...], name: str) -> int:
        return self._counters.get((*parent, name), 0)

    def executable_name(self, exe: Executable, caller: FrameType) -> str:
        known = self.executable_names.get(id(exe))
        if known is not None:
            return known
        name = exe.name or _bound_name(exe, caller) or exe.default_name()
        other = self.executables.get(name)
        if other is not None and other is not exe and other.spec(name) != exe.spec(name):
            raise DslError(f"two different executables are both named {name!r}", _where(caller))
        self.executables[name] = exe
        self.executable_names[id(exe)] = name
        return name


_TRACER: contextvars.ContextVar[_Tracer | None] = contextvars.ContextVar("sgs_tracer", default=None)


def _where(frame: FrameType) -> str:
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"


def _bound_name(obj: object, frame: FrameType) -> str | None:
    """The variable name the pipeline author used for this executable (``runInitialize``), if any."""
    for namespace in (frame.f_locals, frame.f_globals):
        for name, value in namespace.items():
            if value is obj and not name.startswith("_"):
                return name
    return None


def _module_relative_source(frame: FrameType) -> str:
    module = frame.f_globals.get("__name__", "")
    path = module.replace(".", "/") + ".py" if module and module != "__main__" else frame.f_code.co_filename
    return f"{path}:{frame.f_lineno}"


def _caller(depth: int) -> FrameType:
    return sys._getframe(depth + 1)


def trace_executable_call(exe: Executable, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    tracer = _TRACER.get()
    caller = _caller(2)
    if tracer is None:
        raise DslError(
            f"executable {exe.command!r} called outside a @pipeline: pipelines are compiled, not run in Python",
            _where(caller),
        )
    name = tracer.executable_name(exe, caller)
    location = _where(caller)
    bound = _bind_arguments(name, [p.name for p in exe.inputs], args, kwargs, location)
    missing = [p.name for p in exe.inputs if not p.optional and p.name not in bound]
    if missing:
        raise DslError(f"{name}() is missing required input(s) {missing}", location)
    inputs = {key: _argument(tracer, value, f"{name}({key}=...)", location) for key, value in bound.items()}
    node = _Node(
        label=tracer.label_for_call(caller, name),
        scope=tracer.scope.node,
        executable=name,
        inputs=inputs,
        location=location,
        source=_module_relative_source(caller),
    )
    tracer.nodes.append(node)
    handles = tuple(Handle(tracer.scope.node, node, o.name) for o in exe.outputs)
    if not handles:
        return None
    return handles[0] if len(handles) == 1 else handles


def _bind_arguments(
    what: str, params: list[str], args: tuple[Any, ...], kwargs: dict[str, Any], location: str
) -> dict[str, Any]:
    if len(args) > len(params):
        raise DslError(f"{what}() takes {len(params)} input(s) {params} but {len(args)} were given", location)
    bound = dict(zip(params, args, strict=False))
    for key, value in kwargs.items():
        if key not in params:
            raise DslError(f"{what}() has no input {key!r}; its inputs are {params}", location)
        if key in bound:
            raise DslError(f"{what}() got input {key!r} twice", location)
        bound[key] = value
    return bound


def _argument(tracer: _Tracer, value: Any, what: str, location: str) -> Any:
    """Check an argument: a handle of this scope, a list/tuple of them, or a literal scalar."""
    if isinstance(value, Handle):
        _check_scope(tracer, value, what, location)
        return value
    if isinstance(value, list | tuple):
        return [_scalar_or_handle(tracer, item, what, location) for item in value]
    return _scalar_or_handle(tracer, value, what, location)


def _scalar_or_handle(tracer: _Tracer, value: Any, what: str, location: str) -> Any:
    if isinstance(value, Handle):
        _check_scope(tracer, value, what, location)
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise DslError(
        f"{what}: argument of type {type(value).__name__} cannot be serialised into a pipeline "
        "(pass pipeline values, lists of them, or str/int/float/bool literals)",
        location,
    )


def _check_scope(tracer: _Tracer, handle: Handle, what: str, location: str) -> None:
    if handle.scope is not tracer.scope.node:
        raise DslError(f"{what}: a value from inside a @parallel body is used outside it", location)
    if handle.node is None:
        tracer.scope.used.add(handle.port)


@contextmanager
def _tracing() -> Iterator[_Tracer]:
    tracer = _Tracer()
    token = _TRACER.set(tracer)
    try:
        yield tracer
    finally:
        _TRACER.reset(token)


def _function_location(fn: Callable[..., Any]) -> str:
    code = getattr(fn, "__code__", None)
    if code is None:
        return getattr(fn, "__qualname__", "?")
    return f"{code.co_filename}:{code.co_firstlineno}"


def _return_names(fn: Callable[..., Any], count: int) -> list[str]:
    """Names of the returned variables (``return a, b``), used to name a map's outputs."""
    fallback = [f"out{i}" for i in range(count)]
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    except (OSError, TypeError, SyntaxError):
        return fallback
    returns = [n for n in ast.walk(tree) if isinstance(n, ast.Return) and n.value is not None]
    if not returns:
        return fallback
    value = returns[-1].value
    elements = value.elts if isinstance(value, ast.Tuple) else [value]
    names = [e.id if isinstance(e, ast.Name) else "" for e in elements]
    if len(names) != count or "" in names or len(set(names)) != count:
        return fallback
    return names


def _returned_handles(result: Any) -> list[Any]:
    if result is None:
        return []
    if isinstance(result, tuple):
        return list(result)
    return [result]


class ParallelFunction:
    """A ``@parallel(iterable=...)`` function: traced once, run once per item of ``iterable`` at run time."""

    def __init__(self, fn: Callable[..., Any], iterable: str) -> None:
        params = list(inspect.signature(fn).parameters)
        if iterable not in params:
            raise DslError(
                f"@parallel(iterable={iterable!r}): {fn.__name__} has no parameter {iterable!r}",
                _function_location(fn),
            )
        self.fn = fn
        self.iterable = iterable
        self.params = params
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        tracer = _TRACER.get()
        caller = _caller(1)
        location = _where(caller)
        if tracer is None:
            raise DslError(f"@parallel function {self.fn.__name__} called outside a @pipeline", location)
        bound = _bind_arguments(self.fn.__name__, self.params, args, kwargs, location)
        missing = [p for p in self.params if p not in bound]
        if missing:
            raise DslError(f"{self.fn.__name__}() is missing argument(s) {missing}", location)
        inputs = {k: _argument(tracer, v, f"{self.fn.__name__}({k}=...)", location) for k, v in bound.items()}
        if not isinstance(inputs[self.iterable], Handle):
            raise DslError(
                f"{self.fn.__name__}({self.iterable}=...) must be a list produced upstream in the pipeline",
                location,
            )
        node = _Node(
            label=tracer.label_for_call(caller, self.fn.__name__),
            scope=tracer.scope.node,
            executable=None,
            inputs=inputs,
            location=location,
            source=_module_relative_source(caller),
            map_over=self.iterable,
            map_params=list(self.params),
        )
        tracer.nodes.append(node)
        returned = self._trace_body(tracer, node)
        names = _return_names(self.fn, len(returned))
        node.map_outputs = list(zip(names, returned, strict=True))
        handles = tuple(Handle(tracer.scope.node, node, n) for n in names)
        if not handles:
            raise DslError(f"@parallel function {self.fn.__name__} returns nothing", location)
        return handles[0] if len(handles) == 1 else handles

    def _trace_body(self, tracer: _Tracer, node: _Node) -> list[Any]:
        location = _function_location(self.fn)
        with _scope(tracer, node, self.fn) as scope:
            returned = _returned_handles(self.fn(**{p: Handle(node, None, p) for p in self.params}))
            checked = [_argument(tracer, v, f"{self.fn.__name__} return value", location) for v in returned]
        _check_all_used(self.params, scope.used, self.fn.__name__, location)
        return checked


@contextmanager
def _scope(tracer: _Tracer, node: _Node | None, fn: Callable[..., Any]) -> Iterator[_Scope]:
    scope = _Scope(node=node, code=fn.__code__)
    tracer.scopes.append(scope)
    try:
        yield scope
    finally:
        tracer.scopes.pop()


def _check_all_used(params: list[str], used: set[str], fn_name: str, location: str) -> None:
    unused = [p for p in params if p not in used]
    if unused:
        raise DslError(f"{fn_name}: input(s) {unused} are never used", location)


class PipelineFunction:
    """A ``@pipeline`` function. ``.spec()`` compiles it; calling it inside another pipeline inlines it."""

    def __init__(self, fn: Callable[..., Any], outputs: tuple[str, ...], triggers: Sequence[Trigger] = ()) -> None:
        self.fn = fn
        self.outputs = outputs
        self.triggers = tuple(triggers)
        self.params = list(inspect.signature(fn).parameters)
        functools.update_wrapper(self, fn)

    @property
    def name(self) -> str:
        return self.fn.__name__

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if _TRACER.get() is None:
            raise DslError(
                f"pipeline {self.name} is compiled, not called: use `sgs compile` or `sgs run --local`",
                _where(_caller(1)),
            )
        return self.fn(*args, **kwargs)

    def spec(self) -> PipelineSpec:
        location = _function_location(self.fn)
        with _tracing() as tracer, _scope(tracer, None, self.fn) as scope:
            returned = _returned_handles(self.fn(**{p: Handle(None, None, p) for p in self.params}))
            if len(returned) != len(self.outputs):
                raise DslError(
                    f"pipeline {self.name} declares {len(self.outputs)} output(s) {list(self.outputs)} "
                    f"but returns {len(returned)}",
                    location,
                )
            outputs = [_argument(tracer, v, f"{self.name} return value", location) for v in returned]
            _check_all_used(self.params, scope.used, self.name, location)
            return _build_spec(tracer, self, outputs, location)


def _build_spec(tracer: _Tracer, pipe: PipelineFunction, outputs: list[Any], location: str) -> PipelineSpec:
    _assign_names(tracer)
    executables: list[ExecutableSpec] = []
    for name, exe in tracer.executables.items():
        try:
            executables.append(exe.spec(name))
        except ValueError as err:
            raise DslError(f"executable {name}: {err}", location) from err
    steps = [_step_spec(node) for node in tracer.nodes]
    triggers = []
    for trigger in pipe.triggers:
        try:
            triggers.append(trigger.to_model())
        except ValueError as err:
            raise DslError(f"trigger {trigger.name}: {err}", location) from err
    try:
        return PipelineSpec(
            inputs=[PortSpec(name=p) for p in pipe.params],
            outputs=[NamedBinding(name=n, source=_binding(v)) for n, v in zip(pipe.outputs, outputs, strict=True)],
            executables=executables,
            steps=steps,
            source=f"{pipe.fn.__module__}:{pipe.fn.__qualname__}",
            triggers=triggers,
        )
    except ValueError as err:  # PipelineError, or pydantic's ValidationError wrapping it
        raise DslError(f"pipeline {pipe.name} is not valid: {err}", location) from err


def _assign_names(tracer: _Tracer) -> None:
    """Number repeated labels (``calibrateDither_1`` … ``_4``) and leave unique ones bare."""
    for node in tracer.nodes:
        parts: list[str] = []
        parent: tuple[Any, ...] = (id(node.scope),)
        for label, index in node.label:
            repeated = tracer.count(parent, label) > 1
            parts.append(f"{label}_{index}" if repeated else label)
            parent = (*parent, (label, index))
        prefix = f"{node.scope.name}." if node.scope is not None else ""
        node.name = prefix + ".".join(parts)


def _step_spec(node: _Node) -> StepSpec:
    inputs = {k: _binding(v) for k, v in node.inputs.items()}
    if node.map_over is None:
        return StepSpec(
            name=node.name,
            executable=node.executable,
            scope=_scope_name(node),
            inputs=inputs,
            source=node.source,
        )
    return StepSpec(
        name=node.name,
        map=MapSpec(
            over=node.map_over,
            params=node.map_params,
            outputs=[NamedBinding(name=n, source=_binding(v)) for n, v in node.map_outputs],
        ),
        scope=_scope_name(node),
        inputs=inputs,
        source=node.source,
    )


def _scope_name(node: _Node) -> str | None:
    return node.scope.name if node.scope is not None else None


def _ref(value: Any) -> Ref:
    if isinstance(value, Handle):
        if value.node is None:
            return Ref(input=value.port)
        return Ref(step=value.node.name, output=value.port)
    return Ref(value=value)


def _binding(value: Any) -> Binding:
    if isinstance(value, list):
        return Binding(items=[_ref(v) for v in value])
    ref = _ref(value)
    return Binding(input=ref.input, step=ref.step, output=ref.output, value=ref.value)


@overload
def pipeline(fn: Callable[P, R], /) -> PipelineFunction: ...
@overload
def pipeline(
    outputs: tuple[str, ...] | list[str] | None = None, /, **kwargs: Any
) -> Callable[[Callable[P, R]], PipelineFunction]: ...


def pipeline(*args: Any, **kwargs: Any) -> Any:
    """Declare a pipeline: ``@pipeline(outputs=('a', 'b'))``, ``@pipeline(('a', 'b'))`` or bare ``@pipeline``."""
    if len(args) == 1 and callable(args[0]) and not kwargs:
        return PipelineFunction(args[0], ())
    outputs = kwargs.pop("outputs", args[0] if args else ())
    triggers = kwargs.pop("triggers", ())
    if kwargs or len(args) > 1:
        raise DslError(f"@pipeline takes only outputs=... and triggers=..., got {sorted(kwargs) or args}")
    if isinstance(outputs, str):
        outputs = (outputs,)
    names = tuple(outputs or ())
    if isinstance(triggers, Trigger) or not all(isinstance(t, Trigger) for t in triggers):
        raise DslError("@pipeline(triggers=...) takes a list of sgs.dsl.Trigger")

    def decorate(fn: Callable[..., Any]) -> PipelineFunction:
        return PipelineFunction(fn, names, triggers)

    return decorate


def parallel(*, iterable: str) -> Callable[[Callable[P, R]], ParallelFunction]:
    """Declare a function run once per item of its ``iterable`` argument, a list produced at run time."""

    def decorate(fn: Callable[P, R]) -> ParallelFunction:
        return ParallelFunction(fn, iterable)

    return decorate

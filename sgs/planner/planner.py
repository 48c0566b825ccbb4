"""The planner: a Run's task graph, expanded as map lists become known, and every scheduling decision.

No I/O, no clock, no globals: time comes in as ``now``, file contents (list outputs, dynamic resources) come in
as values the executor read. The local executor and the operator drive the same planner, so they decide the
same things. Bookkeeping is incremental (dependency counters, a priority heap with lazy deletion) so a
100k-task Run plans in well under a second or two.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from sgs.model.pipeline import Binding, ExecutableSpec, PipelineSpec, Ref, Resources, RetryPolicy, StepSpec
from sgs.naming import task_id
from sgs.planner.policy import (
    Capacity,
    FitnessWeights,
    apply_dynamic,
    fitness,
    resource_share,
    retry_delay,
    with_memory_factor,
)

Value = str | list[Any]


class TaskState(StrEnum):
    WAITING = "Waiting"
    READY = "Ready"
    RUNNING = "Running"
    RETRYING = "Retrying"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SKIPPED = "Skipped"


class RunPhase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


ACTIVE = frozenset({TaskState.READY, TaskState.RUNNING, TaskState.RETRYING})
STARTED = frozenset({TaskState.RUNNING, TaskState.RETRYING, TaskState.SUCCEEDED, TaskState.FAILED})


class PlannerError(Exception):
    """A call that does not fit the run's state (e.g. finishing a task that is not running)."""


@dataclass(frozen=True)
class PlannerConfig:
    capacity: Capacity = field(default_factory=lambda: Capacity(cores=64, ram=256.0, gpus=8))
    weights: FitnessWeights = field(default_factory=FitnessWeights)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    priority: float = 0.0


class TaskRecord(BaseModel):
    """What survives a restart: enough to rebuild the planner exactly (see ``Planner.restore``)."""

    id: str
    state: TaskState
    attempt: int = 0
    outputs: dict[str, str] = Field(default_factory=dict)
    lists: dict[str, list[str]] = Field(default_factory=dict)
    memory_factor: float = 1.0
    not_before: float = 0.0
    overrides: dict[str, Any] | None = None
    failure: str | None = None
    sequence: int = 0


@dataclass(frozen=True, eq=False)
class StepInfo:
    """Static facts about a step, computed once per pipeline."""

    spec: StepSpec
    name: str
    scope: StepInfo | None
    executable: ExecutableSpec | None
    depth: int
    deps: tuple[tuple[str, int], ...]  # producer step, levels up the map nesting
    body: list[StepInfo] = field(default_factory=list)
    list_ports: set[str] = field(default_factory=set)
    output_names: frozenset[str] = frozenset()


@dataclass(eq=False, slots=True)
class _Node:
    info: StepInfo
    indices: tuple[int, ...]
    parent: MapInstance | None
    waiting: int = 0
    dependents: list[_Node] = field(default_factory=list)


@dataclass(eq=False, slots=True)
class Task(_Node):
    """One Executable applied to concrete inputs; the unit the executor runs (a Job, a process)."""

    id: str = ""
    seq: int = 0
    state: TaskState = TaskState.WAITING
    attempt: int = 0
    memory_factor: float = 1.0
    not_before: float = 0.0
    ready_since: float = 0.0
    overrides: dict[str, Any] | None = None
    outputs: dict[str, str] | None = None
    lists: dict[str, list[str]] | None = None
    failure: str | None = None
    finished_seq: int = 0

    @property
    def executable(self) -> ExecutableSpec:
        assert self.info.executable is not None
        return self.info.executable

    @property
    def resources(self) -> Resources:
        """Resources for the current attempt: dynamic overrides applied, memory raised after OOM kills."""
        base = self.info.executable.resources  # type: ignore[union-attr]
        if self.overrides is None and self.memory_factor == 1.0:
            return base
        if self.overrides is not None:
            base = apply_dynamic(base, self.overrides)
        return with_memory_factor(base, self.memory_factor)


@dataclass(eq=False, slots=True)
class MapInstance(_Node):
    """A ``@parallel`` call at given outer indices: expands into body tasks once its list is known."""

    items: list[Any] | None = None
    remaining: int = 0
    done: bool = False
    skipped: bool = False


class Planner:
    def __init__(
        self,
        spec: PipelineSpec,
        run: str,
        inputs: Mapping[str, Value],
        config: PlannerConfig | None = None,
        on_ready: Callable[[Task], None] | None = None,
    ) -> None:
        """``on_ready`` is told of every task that becomes Ready (an executor prepares its directories ahead)."""
        missing = [p.name for p in spec.inputs if not p.optional and p.name not in inputs]
        if missing:
            raise PlannerError(f"run {run}: pipeline inputs not bound: {missing}")
        self.spec = spec
        self.run = run
        self.inputs = dict(inputs)
        self.config = config or PlannerConfig()
        self.on_ready = on_ready
        self.steps = _step_infos(spec)
        self.tasks: dict[str, Task] = {}
        self._nodes: dict[tuple[str, tuple[int, ...]], _Node] = {}
        self._heap: list[tuple[float, int, Task]] = []
        self._retrying: list[tuple[float, int, Task]] = []
        self._dynamic: dict[str, Task] = {}
        self._seq = itertools.count()
        self._finish_seq = itertools.count(1)
        self.counts: dict[TaskState, int] = dict.fromkeys(TaskState, 0)
        self._now = 0.0
        self._base_scores: dict[StepInfo, float] = {}
        self._instantiate_scope(None, (), None)

    # ----------------------------------------------------------------------------------- graph expansion

    def _instantiate_scope(self, scope: StepInfo | None, indices: tuple[int, ...], parent: MapInstance | None) -> None:
        body = self._top_steps() if scope is None else scope.body
        suffix = task_id("", indices)
        created: list[_Node] = []
        tasks, nodes, seq = self.tasks, self._nodes, self._seq
        for info in body:
            node: _Node
            if info.executable is not None:
                tid = info.name + suffix
                node = tasks[tid] = Task(info, indices, parent, id=tid, seq=next(seq))
            else:
                node = MapInstance(info, indices, parent)
            nodes[(info.name, indices)] = node
            created.append(node)
        self.counts[TaskState.WAITING] += sum(1 for n in created if isinstance(n, Task))
        if parent is not None:
            parent.remaining += len(created)
        for node in created:
            self._wire(node)
        for node in created:
            if node.waiting == 0:
                self._on_inputs_ready(node)

    def _top_steps(self) -> list[StepInfo]:
        return [s for s in self.steps.values() if s.scope is None]

    def _wire(self, node: _Node) -> None:
        for producer_step, up in node.info.deps:
            outer = node.indices[: len(node.indices) - up]
            producer = self._nodes[(producer_step, outer)]
            if not _is_complete(producer):
                producer.dependents.append(node)
                node.waiting += 1

    def _on_inputs_ready(self, node: _Node) -> None:
        if isinstance(node, Task):
            if node.state is TaskState.WAITING:
                self._make_ready(node)
        elif isinstance(node, MapInstance) and node.items is None:
            self._expand(node)

    def _expand(self, inst: MapInstance) -> None:
        assert inst.info.spec.map is not None
        over = inst.info.spec.inputs[inst.info.spec.map.over]
        items = self._list_value(over, inst.info.scope, inst.indices)
        inst.items = items
        if not items:
            self._map_done(inst)
            return
        for j in range(len(items)):
            self._instantiate_scope(inst.info, (*inst.indices, j), inst)

    def _make_ready(self, task: Task) -> None:
        if task.overrides is None and task.info.executable.resources.dynamic is not None:  # type: ignore[union-attr]
            self._dynamic[task.id] = task
            self._set_state(task, TaskState.READY)
            return
        task.ready_since = self._now
        self._set_state(task, TaskState.READY)
        self._push(task)

    def _push(self, task: Task) -> None:
        heapq.heappush(self._heap, (-self._static_score(task), task.seq, task))
        if self.on_ready is not None:
            self.on_ready(task)

    def _static_score(self, task: Task) -> float:
        """The fitness at time 0; waiting adds the same slope to every task, so heap order never goes stale."""
        weights = self.config.weights
        if task.overrides is None and task.memory_factor == 1.0:
            base = self._base_scores.get(task.info)
            if base is None:
                base = self._base_scores[task.info] = self._base_score(task.resources)
        else:
            base = self._base_score(task.resources)
        retried = weights.retry if task.attempt > 0 else 0.0
        return base + retried - weights.wait_per_hour * task.ready_since / 3600.0

    def _base_score(self, resources: Resources) -> float:
        """The part of the fitness fixed for a given request: its share of capacity and the Run's priority."""
        return fitness(
            retried=False,
            waiting_hours=0.0,
            share=resource_share(resources, self.config.capacity),
            priority=self.config.priority,
            weights=self.config.weights,
        )

    def score(self, task: Task, now: float) -> float:
        return self._static_score(task) + self.config.weights.wait_per_hour * now / 3600.0

    # ----------------------------------------------------------------------------------- values

    def _list_value(self, binding: Binding, scope: StepInfo | None, indices: tuple[int, ...]) -> list[Any]:
        value = self._binding_value(binding, scope, indices, as_list=True)
        if not isinstance(value, list):
            raise PlannerError(f"run {self.run}: {binding} must be a list to fan out over")
        return value

    def _binding_value(
        self, binding: Binding, scope: StepInfo | None, indices: tuple[int, ...], as_list: bool = False
    ) -> Value:
        if binding.items is not None:
            return [self._ref_value(r, scope, indices, False) for r in binding.items]
        return self._ref_value(binding, scope, indices, as_list)

    def _ref_value(self, ref: Ref, scope: StepInfo | None, indices: tuple[int, ...], as_list: bool) -> Value:
        if ref.value is not None:
            return ref.value
        if ref.step is not None:
            assert ref.output is not None
            return self._output_value(self._nodes[(ref.step, indices)], ref.output, as_list)
        assert ref.input is not None
        if scope is None:
            return self.inputs[ref.input]
        assert scope.spec.map is not None
        outer = indices[:-1]
        if ref.input == scope.spec.map.over:
            inst = self._nodes[(scope.name, outer)]
            assert isinstance(inst, MapInstance) and inst.items is not None
            return inst.items[indices[-1]]  # type: ignore[no-any-return]
        return self._binding_value(scope.spec.inputs[ref.input], scope.scope, outer, as_list)

    def _output_value(self, node: _Node, port: str, as_list: bool) -> Value:
        if isinstance(node, Task):
            if node.outputs is None:
                raise PlannerError(f"{node.id} has not produced {port} yet")
            if as_list:
                if node.lists is None or port not in node.lists:
                    raise PlannerError(f"{node.id}.{port} is fanned out over but its list was not read")
                return node.lists[port]
            return node.outputs[port]
        assert isinstance(node, MapInstance) and node.items is not None and node.info.spec.map is not None
        out = next(o for o in node.info.spec.map.outputs if o.name == port)
        return [self._binding_value(out.source, node.info, (*node.indices, j)) for j in range(len(node.items))]

    def task_inputs(self, tid: str) -> dict[str, Value]:
        """Concrete inputs of a ready or running task: paths, literals, or (nested) lists of paths."""
        task = self.tasks[tid]
        return {
            name: self._binding_value(b, task.info.scope, task.indices) for name, b in task.info.spec.inputs.items()
        }

    def outputs(self) -> dict[str, Value]:
        """The pipeline's outputs, once the Run has succeeded."""
        return {o.name: self._binding_value(o.source, None, ()) for o in self.spec.outputs}

    def list_ports(self, tid: str) -> set[str]:
        """Output ports of this task that something fans out over: the executor must read them as lists."""
        return self.tasks[tid].info.list_ports

    # ----------------------------------------------------------------------------------- state changes

    def _set_state(self, task: Task, state: TaskState) -> None:
        counts = self.counts
        counts[task.state] -= 1
        counts[state] += 1
        task.state = state

    def pending_dynamic(self) -> list[tuple[Task, Value]]:
        """Ready tasks whose resources depend on an upstream file, with that file's value, for the executor."""
        result = []
        for task in self._dynamic.values():
            dynamic = task.executable.resources.dynamic
            assert dynamic is not None
            result.append((task, self.task_inputs(task.id)[dynamic.input]))
        return result

    def resolve_dynamic(self, tid: str, overrides: Mapping[str, Any]) -> None:
        """The task's resources are known: it becomes Ready. Bad values raise and leave the task waiting, so
        the caller can still ``reject_dynamic`` it."""
        task = self._dynamic[tid]
        apply_dynamic(task.executable.resources, overrides)  # rejects bad keys before we keep them
        del self._dynamic[tid]
        task.overrides = dict(overrides)
        task.ready_since = self._now
        self._push(task)

    def reject_dynamic(self, tid: str, reason: str) -> None:
        """Dynamic resources could not be read: the task fails for good (a retry would read the same file)."""
        task = self._dynamic.pop(tid)
        self._set_state(task, TaskState.RUNNING)
        self.fail(tid, self._now, reason, permanent=True)

    def take(self, now: float, free: Capacity | None = None, limit: int | None = None) -> list[Task]:
        """Ready tasks to launch now, best fitness first, that fit in ``free``; they become Running.

        A task that does not fit is passed over (a smaller one may fill the gap), looking a bounded number of
        entries ahead so a large queue costs little per call.
        """
        self._now = now
        self._release_due_retries(now)
        chosen: list[Task] = []
        passed_over: list[tuple[float, int, Task]] = []
        unbounded = free is None
        cores, ram, gpus = (0, 0.0, 0) if free is None else (free.cores, free.ram, free.gpus)
        heap = self._heap
        while heap and (limit is None or len(chosen) < limit) and len(passed_over) < 64:
            entry = heapq.heappop(heap)
            task = entry[2]
            if task.state is not TaskState.READY:
                continue  # lazily deleted
            if not unbounded:
                need = task.resources
                if need.cores > cores or need.ram > ram or need.gpus > gpus:
                    passed_over.append(entry)
                    if cores < 1:
                        break
                    continue
                cores, ram, gpus = cores - need.cores, ram - need.ram, gpus - need.gpus
            self._set_state(task, TaskState.RUNNING)
            chosen.append(task)
        for entry in passed_over:
            heapq.heappush(self._heap, entry)
        return chosen

    def ready(self, now: float) -> list[Task]:
        """Every task that could start now, best first (for display and for executors that batch)."""
        self._release_due_retries(now)
        live = [e for e in self._heap if e[2].state is TaskState.READY]
        return [e[2] for e in sorted(live)]

    def _release_due_retries(self, now: float) -> None:
        while self._retrying and self._retrying[0][0] <= now:
            _, _, task = heapq.heappop(self._retrying)
            if task.state is TaskState.RETRYING:
                task.ready_since = now
                self._set_state(task, TaskState.READY)
                self._push(task)

    def next_retry_at(self) -> float | None:
        live = [e[0] for e in self._retrying if e[2].state is TaskState.RETRYING]
        return min(live) if live else None

    def succeed(self, tid: str, outputs: Mapping[str, str], lists: Mapping[str, list[str]] | None = None) -> None:
        task = self._running(tid)
        info = task.info
        if outputs.keys() != info.output_names:
            raise PlannerError(f"{tid}: outputs {sorted(outputs)} do not match {sorted(info.output_names)}")
        if info.list_ports and not info.list_ports <= (lists or {}).keys():
            raise PlannerError(f"{tid}: list outputs {sorted(info.list_ports)} were not read")
        task.outputs = dict(outputs)
        task.lists = {k: list(v) for k, v in (lists or {}).items()}
        task.failure = None
        task.finished_seq = next(self._finish_seq)
        self._set_state(task, TaskState.SUCCEEDED)
        self._complete(task)

    def _complete(self, node: _Node) -> None:
        for dependent in node.dependents:
            dependent.waiting -= 1
            if dependent.waiting == 0:
                self._on_inputs_ready(dependent)
        parent = node.parent
        if parent is not None:
            parent.remaining -= 1
            if parent.remaining == 0:
                self._map_done(parent)

    def _map_done(self, inst: MapInstance) -> None:
        inst.done = True
        self._complete(inst)

    def fail(self, tid: str, now: float, reason: str, oom: bool = False, permanent: bool = False) -> TaskState:
        """Record a failed attempt: retry later (memory raised after an OOM kill), or fail for good.

        ``permanent`` is for failures no retry can fix (a command that does not exist, a request larger than
        the executor). Returns the task's new state, Retrying or Failed.
        """
        task = self._running(tid)
        self._now = now
        policy = task.executable.retry or self.config.retry
        task.failure = reason
        if task.attempt < policy.max and not permanent:
            task.attempt += 1
            if oom:
                task.memory_factor *= policy.memory_multiplier
            task.not_before = now + retry_delay(policy, task.attempt, f"{self.run}/{tid}")
            self._set_state(task, TaskState.RETRYING)
            heapq.heappush(self._retrying, (task.not_before, task.seq, task))
            return TaskState.RETRYING
        task.finished_seq = next(self._finish_seq)
        self._set_state(task, TaskState.FAILED)
        self._skip_downstream(task)
        return TaskState.FAILED

    def requeue(self, tid: str) -> None:
        """A running task whose execution was lost (executor restart) runs again with the same attempt."""
        task = self._running(tid)
        self._set_state(task, TaskState.READY)
        self._push(task)

    def _running(self, tid: str) -> Task:
        task = self.tasks.get(tid)
        if task is None:
            raise PlannerError(f"run {self.run}: no task {tid!r}")
        if task.state is not TaskState.RUNNING:
            raise PlannerError(f"{tid} is {task.state.value}, not Running")
        return task

    def _skip_downstream(self, failed: Task) -> None:
        stack: list[_Node] = [*failed.dependents]
        parent = failed.parent
        while parent is not None:  # an enclosing map can no longer finish
            stack.extend(parent.dependents)
            parent = parent.parent
        while stack:
            node = stack.pop()
            if isinstance(node, Task):
                if node.state is not TaskState.WAITING:
                    continue
                self._set_state(node, TaskState.SKIPPED)
            elif isinstance(node, MapInstance):
                if node.skipped:
                    continue
                node.skipped = True
            stack.extend(node.dependents)

    def retry_failed(self) -> list[str]:
        """Give every failed task a new attempt and un-skip what waits on it; successes stay as they are."""
        revived = []
        for task in self.tasks.values():
            if task.state is TaskState.FAILED:
                task.attempt += 1
                task.failure = None
                task.ready_since = self._now
                self._set_state(task, TaskState.READY)
                self._push(task)
                revived.append(task.id)
            elif task.state is TaskState.SKIPPED:
                self._set_state(task, TaskState.WAITING)
        for node in self._nodes.values():
            if isinstance(node, MapInstance):
                node.skipped = False
        return revived

    def set_priority(self, priority: float) -> None:
        """Change the Run's priority: every queued task is re-ranked."""
        self.config = PlannerConfig(
            capacity=self.config.capacity,
            weights=self.config.weights,
            retry=self.config.retry,
            priority=priority,
        )
        self._base_scores.clear()
        live = [e[2] for e in self._heap if e[2].state is TaskState.READY]
        self._heap = [(-self._static_score(t), t.seq, t) for t in live]
        heapq.heapify(self._heap)

    # ----------------------------------------------------------------------------------- summary

    @property
    def phase(self) -> RunPhase:
        if any(self.counts[s] for s in ACTIVE):
            started = any(self.counts[s] for s in STARTED)
            return RunPhase.RUNNING if started else RunPhase.PENDING
        if self.counts[TaskState.FAILED] or self.counts[TaskState.SKIPPED] or self.counts[TaskState.WAITING]:
            return RunPhase.FAILED
        return RunPhase.SUCCEEDED

    @property
    def finished(self) -> bool:
        return self.phase in (RunPhase.SUCCEEDED, RunPhase.FAILED)

    def summary(self) -> dict[str, int]:
        counts = {state.value: self.counts[state] for state in TaskState}
        counts["Total"] = len(self.tasks)
        return counts

    # ----------------------------------------------------------------------------------- persistence

    def record(self, tid: str) -> TaskRecord:
        task = self.tasks[tid]
        return TaskRecord(
            id=task.id,
            state=task.state,
            attempt=task.attempt,
            outputs=task.outputs or {},
            lists=task.lists or {},
            memory_factor=task.memory_factor,
            not_before=task.not_before,
            overrides=task.overrides,
            failure=task.failure,
            sequence=task.finished_seq,
        )

    def restore(self, records: Iterable[TaskRecord]) -> list[Task]:
        """Rebuild from saved records: replay finished tasks in the order they finished, then the rest.

        Returns the tasks recorded as Running: the caller re-adopts them (a Job that still exists) or requeues
        them (a local process that died with the executor).
        """
        by_id = {r.id: r for r in records}
        finished = sorted(
            (r for r in by_id.values() if r.state in (TaskState.SUCCEEDED, TaskState.FAILED)),
            key=lambda r: r.sequence,
        )
        for rec in finished:
            task = self._restorable(rec)
            task.attempt = rec.attempt
            task.memory_factor = rec.memory_factor
            task.overrides = rec.overrides
            self._set_state(task, TaskState.RUNNING)
            if rec.state is TaskState.SUCCEEDED:
                self.succeed(task.id, rec.outputs, rec.lists)
            else:
                self._set_state(task, TaskState.FAILED)
                task.failure = rec.failure
                task.finished_seq = next(self._finish_seq)
                self._skip_downstream(task)
        running: list[Task] = []
        for rec in by_id.values():
            if rec.state in (TaskState.RUNNING, TaskState.RETRYING) and rec.id in self.tasks:
                task = self.tasks[rec.id]
                if task.state is not TaskState.READY:
                    continue
                task.attempt = rec.attempt
                task.memory_factor = rec.memory_factor
                task.overrides = rec.overrides
                task.failure = rec.failure
                self._dynamic.pop(task.id, None)
                if rec.state is TaskState.RUNNING:
                    self._set_state(task, TaskState.RUNNING)
                    running.append(task)
                else:
                    task.not_before = rec.not_before
                    self._set_state(task, TaskState.RETRYING)
                    heapq.heappush(self._retrying, (task.not_before, task.seq, task))
        return running

    def _restorable(self, rec: TaskRecord) -> Task:
        task = self.tasks.get(rec.id)
        if task is None or task.state is not TaskState.READY:
            raise PlannerError(f"record of {rec.id} does not fit the graph (task missing or not ready)")
        self._dynamic.pop(task.id, None)
        return task


def _is_complete(node: _Node) -> bool:
    if isinstance(node, Task):
        return node.state is TaskState.SUCCEEDED
    return isinstance(node, MapInstance) and node.done


def _step_infos(spec: PipelineSpec) -> dict[str, StepInfo]:
    """Static step facts in dependency order: scopes, producer paths, bodies and list-producing ports."""
    by_name = {s.name: s for s in spec.steps}
    order = _topological(spec)
    infos: dict[str, StepInfo] = {}
    for name in order:
        step = by_name[name]
        scope = infos[step.scope] if step.scope is not None else None
        info = StepInfo(
            spec=step,
            name=step.name,
            scope=scope,
            executable=(exe := spec.executable(step.executable) if step.executable else None),
            output_names=frozenset(o.name for o in exe.outputs) if exe else frozenset(),
            depth=0 if scope is None else scope.depth + 1,
            deps=tuple(sorted(_producer_paths(_awaited_bindings(step), scope))),
        )
        infos[name] = info
        if scope is not None:
            scope.body.append(info)
    for info in infos.values():
        if info.spec.map is not None:
            _mark_list_ports(info.spec.inputs[info.spec.map.over], info.scope, infos)
    return infos


def _awaited_bindings(step: StepSpec) -> list[Binding]:
    """A task waits for all its inputs; a map only for the list it fans out over (each item then waits for
    the other parameters it actually reads)."""
    if step.map is not None:
        return [step.inputs[step.map.over]]
    return list(step.inputs.values())


def _producer_paths(bindings: Iterable[Binding], scope: StepInfo | None) -> set[tuple[str, int]]:
    """(producer step, levels up) for every step output a set of bindings reads, through map parameters."""
    paths: set[tuple[str, int]] = set()
    for binding in bindings:
        for ref in binding.refs():
            if ref.step is not None:
                paths.add((ref.step, 0))
            elif ref.input is not None and scope is not None:
                assert scope.spec.map is not None
                if ref.input == scope.spec.map.over:
                    continue  # the item is known when the map expands
                outer = _producer_paths([scope.spec.inputs[ref.input]], scope.scope)
                paths.update((step, up + 1) for step, up in outer)
    return paths


def _mark_list_ports(binding: Binding, scope: StepInfo | None, infos: dict[str, StepInfo]) -> None:
    for ref in binding.refs():
        if ref.step is not None and ref.output is not None:
            producer = infos[ref.step]
            if producer.executable is not None:
                producer.list_ports.add(ref.output)
        elif (
            ref.input is not None
            and scope is not None
            and scope.spec.map is not None
            and ref.input != scope.spec.map.over
        ):
            _mark_list_ports(scope.spec.inputs[ref.input], scope.scope, infos)


def _topological(spec: PipelineSpec) -> list[str]:
    """Steps ordered so producers come before consumers and a map before its body (Kahn's algorithm)."""
    names = [s.name for s in spec.steps]
    deps: dict[str, set[str]] = {s.name: set() for s in spec.steps}
    for s in spec.steps:
        for b in s.inputs.values():
            deps[s.name].update(r.step for r in b.refs() if r.step is not None)
        if s.scope is not None:
            deps[s.name].add(s.scope)
    order: list[str] = []
    done: set[str] = set()
    remaining = list(names)
    while remaining:
        progressed = [n for n in remaining if deps[n] <= done]
        if not progressed:
            raise PlannerError(f"cycle among steps {remaining}")
        for n in progressed:
            order.append(n)
            done.add(n)
        remaining = [n for n in remaining if n not in done]
    return order

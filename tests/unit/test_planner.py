"""The planner's decisions: readiness, fan-out/fan-in, retries, OOM memory, dynamic resources, priorities,
restore after a crash. Property tests drive random pipelines through random completion orders."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sgs.model.pipeline import (
    Binding,
    DynamicResources,
    ExecutableSpec,
    MapSpec,
    NamedBinding,
    OutputSpec,
    PipelineSpec,
    PortSpec,
    Resources,
    RetryPolicy,
    StepSpec,
)
from sgs.naming import object_name, parse_task_id, task_id
from sgs.planner import Capacity, Planner, PlannerError, RunPhase, TaskState, apply_dynamic, retry_delay


def exe(name: str, inputs: list[str], outputs: list[str] | None = None, **resources: Any) -> ExecutableSpec:
    return ExecutableSpec(
        name=name,
        command=name,
        inputs=[PortSpec(name=i) for i in inputs],
        outputs=[OutputSpec(name=o) for o in outputs or ["y"]],
        resources=Resources(**resources),
    )


def map_pipeline(width_input: str = "data") -> PipelineSpec:
    """split → map(a → b) → combine, the Euclid parallel_split shape."""
    return PipelineSpec(
        inputs=[PortSpec(name=width_input), PortSpec(name="cal")],
        outputs=[NamedBinding(name="r", source=Binding(step="combine", output="y"))],
        executables=[exe("split", ["x"]), exe("a", ["x", "c"]), exe("b", ["x"]), exe("combine", ["x"])],
        steps=[
            StepSpec(name="split", executable="split", inputs={"x": Binding(input=width_input)}),
            StepSpec(
                name="m",
                map=MapSpec(
                    over="it",
                    params=["it", "cal"],
                    outputs=[NamedBinding(name="y", source=Binding(step="m.b", output="y"))],
                ),
                inputs={"it": Binding(step="split", output="y"), "cal": Binding(input="cal")},
            ),
            StepSpec(
                name="m.a",
                executable="a",
                scope="m",
                inputs={"x": Binding(input="it"), "c": Binding(input="cal")},
            ),
            StepSpec(name="m.b", executable="b", scope="m", inputs={"x": Binding(step="m.a", output="y")}),
            StepSpec(name="combine", executable="combine", inputs={"x": Binding(step="m", output="y")}),
        ],
    )


def finish(planner: Planner, tid: str, items: int = 3) -> None:
    lists = {p: [f"{tid}-item{i}" for i in range(items)] for p in planner.list_ports(tid)}
    outputs = {o: f"/out/{tid}/{o}" for o in planner.tasks[tid].info.output_names}
    planner.succeed(tid, outputs, lists)


def run_all(planner: Planner, now: float = 0.0) -> None:
    while not planner.finished:
        taken = planner.take(now)
        assert taken, "planner stalled"
        for task in taken:
            finish(planner, task.id)


def test_fan_out_over_the_list_then_fan_in_over_every_item() -> None:
    planner = Planner(map_pipeline(), "r", {"data": "d", "cal": "c"})
    assert [t.id for t in planner.take(0)] == ["split"]
    finish(planner, "split", items=3)
    assert sorted(t.id for t in planner.take(0)) == ["m.a[0]", "m.a[1]", "m.a[2]"]
    assert planner.task_inputs("m.a[1]") == {"x": "split-item1", "c": "c"}
    for i in range(3):
        finish(planner, f"m.a[{i}]")
    for task in planner.take(0):
        if task.id != "m.b[2]":
            finish(planner, task.id)
    assert planner.take(0) == []  # combine waits for the last item
    finish(planner, "m.b[2]")
    assert [t.id for t in planner.take(0)] == ["combine"]
    assert planner.task_inputs("combine")["x"] == [f"/out/m.b[{i}]/y" for i in range(3)]
    finish(planner, "combine")
    assert planner.phase is RunPhase.SUCCEEDED
    assert planner.outputs() == {"r": "/out/combine/y"}


def test_empty_list_completes_the_map_at_once() -> None:
    planner = Planner(map_pipeline(), "r", {"data": "d", "cal": "c"})
    planner.take(0)
    finish(planner, "split", items=0)
    assert [t.id for t in planner.take(0)] == ["combine"]
    assert planner.task_inputs("combine") == {"x": []}


def test_list_outputs_must_be_read() -> None:
    planner = Planner(map_pipeline(), "r", {"data": "d", "cal": "c"})
    planner.take(0)
    with pytest.raises(PlannerError, match="list outputs"):
        planner.succeed("split", {"y": "/out/split"})


def test_retry_with_exponential_backoff_then_permanent_failure_skips_downstream() -> None:
    spec = map_pipeline()
    planner = Planner(spec, "r", {"data": "d", "cal": "c"})
    planner.take(0)
    assert planner.fail("split", 100.0, "boom") is TaskState.RETRYING
    assert planner.take(100.0) == []
    first = planner.tasks["split"].not_before
    assert 100 + 9 <= first <= 100 + 11  # 10 s ± 10 % jitter
    assert [t.id for t in planner.take(first)] == ["split"]
    assert planner.fail("split", 200.0, "boom") is TaskState.RETRYING
    assert 200 + 18 <= planner.tasks["split"].not_before <= 200 + 22
    planner.take(planner.tasks["split"].not_before)
    assert planner.fail("split", 300.0, "boom") is TaskState.FAILED
    assert planner.phase is RunPhase.FAILED
    assert planner.tasks["combine"].state is TaskState.SKIPPED


def test_retry_delays_are_deterministic_per_task_and_attempt() -> None:
    policy = RetryPolicy(backoff=5, jitter=0.5)
    assert retry_delay(policy, 1, "run/t") == retry_delay(policy, 1, "run/t")
    assert retry_delay(policy, 1, "run/t") != retry_delay(policy, 1, "run/u")
    assert retry_delay(RetryPolicy(backoff=5, backoff_factor=2, max_backoff=12, jitter=0), 5, "x") == 12


def test_oom_retry_raises_memory_by_the_multiplier() -> None:
    spec = map_pipeline()
    spec.executables[0].retry = RetryPolicy(max=2, backoff=0, jitter=0, memory_multiplier=2.0)
    planner = Planner(spec, "r", {"data": "d", "cal": "c"})
    planner.take(0)
    assert planner.tasks["split"].resources.ram == 1.0
    planner.fail("split", 1.0, "OOMKilled", oom=True)
    (task,) = planner.take(1.0)
    assert task.resources.ram == 2.0 and task.attempt == 1
    planner.fail("split", 2.0, "exit 1")
    (task,) = planner.take(2.0)
    assert task.resources.ram == 2.0  # only OOM kills raise memory


def test_dynamic_resources_come_from_the_upstream_file() -> None:
    spec = PipelineSpec(
        inputs=[PortSpec(name="d")],
        outputs=[NamedBinding(name="r", source=Binding(step="big", output="y"))],
        executables=[
            exe("estimate", ["x"]),
            ExecutableSpec(
                name="heavy",
                command="heavy",
                inputs=[PortSpec(name="x"), PortSpec(name="res")],
                outputs=[OutputSpec(name="y")],
                resources=Resources(cores=1, dynamic=DynamicResources(input="res")),
            ),
        ],
        steps=[
            StepSpec(name="est", executable="estimate", inputs={"x": Binding(input="d")}),
            StepSpec(
                name="big",
                executable="heavy",
                inputs={"x": Binding(input="d"), "res": Binding(step="est", output="y")},
            ),
        ],
    )
    planner = Planner(spec, "r", {"d": "d"})
    planner.take(0)
    finish(planner, "est")
    assert planner.take(0) == []
    ((task, value),) = planner.pending_dynamic()
    assert value == "/out/est/y"
    with pytest.raises(ValueError, match="unknown keys"):
        planner.resolve_dynamic(task.id, {"colors": 3})
    assert [t.id for t, _ in planner.pending_dynamic()] == [task.id], "a refused file must leave the task waiting"
    planner.resolve_dynamic(task.id, {"cores": 8, "ram": 30})
    (task,) = planner.take(0)
    assert (task.resources.cores, task.resources.ram) == (8, 30)
    with pytest.raises(ValueError, match="unknown keys"):
        apply_dynamic(Resources(), {"colors": 3})


def test_capacity_limits_what_starts_and_small_tasks_fill_gaps() -> None:
    spec = PipelineSpec(
        inputs=[PortSpec(name="d")],
        outputs=[NamedBinding(name="r", source=Binding(step="big", output="y"))],
        executables=[exe("big", ["x"], cores=4), exe("small", ["x"], cores=1)],
        steps=[
            StepSpec(name="big", executable="big", inputs={"x": Binding(input="d")}),
            StepSpec(name="big2", executable="big", inputs={"x": Binding(input="d")}),
            StepSpec(name="small", executable="small", inputs={"x": Binding(input="d")}),
        ],
    )
    planner = Planner(spec, "r", {"d": "d"})
    taken = planner.take(0, Capacity(cores=5, ram=100))
    assert sorted(t.id for t in taken) == ["big", "small"]  # bigger first (starving mode), small fills in
    assert planner.take(0, Capacity(cores=3, ram=100)) == []


def test_retries_go_first_and_waiting_raises_fitness() -> None:
    spec = PipelineSpec(
        inputs=[PortSpec(name="d")],
        outputs=[NamedBinding(name="r", source=Binding(step="a", output="y"))],
        executables=[exe("e", ["x"])],
        steps=[StepSpec(name=n, executable="e", inputs={"x": Binding(input="d")}) for n in ("a", "b", "c")],
    )
    spec.executables[0].retry = RetryPolicy(backoff=0, jitter=0)
    planner = Planner(spec, "r", {"d": "d"})
    (first,) = planner.take(0, limit=1)
    planner.fail(first.id, 1.0, "x")
    ready = planner.ready(1.0)
    assert ready[0].id == first.id and ready[0].attempt == 1
    assert planner.score(ready[0], 1.0) > planner.score(ready[1], 1.0)


def test_priority_change_reranks_queued_tasks() -> None:
    planner = Planner(map_pipeline(), "r", {"data": "d", "cal": "c"})
    before = planner.score(planner.ready(0)[0], 0)
    planner.set_priority(50)
    assert planner.score(planner.ready(0)[0], 0) == before + 50


def test_restore_replays_records_and_returns_running_tasks() -> None:
    spec = map_pipeline()
    planner = Planner(spec, "r", {"data": "d", "cal": "c"})
    planner.take(0)
    finish(planner, "split")
    running = planner.take(0)
    finish(planner, running[0].id)
    records = [planner.record(t) for t in planner.tasks]
    again = Planner(spec, "r", {"data": "d", "cal": "c"})
    lost = again.restore(records)
    assert sorted(t.id for t in lost) == sorted(t.id for t in running[1:])
    assert again.summary() == planner.summary()
    for task in lost:
        again.requeue(task.id)
    run_all(again)
    assert again.phase is RunPhase.SUCCEEDED


def test_retry_failed_reruns_only_failures() -> None:
    spec = map_pipeline()
    spec.executables[1].retry = RetryPolicy(max=0)
    planner = Planner(spec, "r", {"data": "d", "cal": "c"})
    planner.take(0)
    finish(planner, "split")
    for task in planner.take(0):
        if task.id == "m.a[1]":
            planner.fail(task.id, 0, "bad pixel")
        else:
            finish(planner, task.id)
    run_all_possible(planner)
    assert planner.phase is RunPhase.FAILED
    succeeded_before = planner.counts[TaskState.SUCCEEDED]
    assert planner.retry_failed() == ["m.a[1]"]
    assert planner.tasks["m.a[1]"].attempt == 1
    run_all(planner)
    assert phase_of(planner) is RunPhase.SUCCEEDED
    assert planner.counts[TaskState.SUCCEEDED] == succeeded_before + 3  # m.a[1], m.b[1], combine


def phase_of(planner: Planner) -> RunPhase:
    return planner.phase


def run_all_possible(planner: Planner) -> None:
    while taken := planner.take(0):
        for task in taken:
            finish(planner, task.id)


def test_task_names_are_deterministic_dns_labels() -> None:
    assert task_id("m.a", (3,)) == "m.a[3]"
    assert parse_task_id("m.a[3,4]") == ("m.a", (3, 4))
    assert object_name("run1", "m.a[3]", 0) == "run1-m-a-3-0"
    long = object_name("a-very-long-run-name-for-the-survey", "calibrateDither_1.badPixMasking[12345]", 2)
    assert len(long) <= 63 and long.endswith("-2")
    assert long == object_name("a-very-long-run-name-for-the-survey", "calibrateDither_1.badPixMasking[12345]", 2)
    assert long != object_name("a-very-long-run-name-for-the-survey", "calibrateDither_1.badPixMasking[12346]", 2)


# --------------------------------------------------------------------------- property tests


@st.composite
def random_pipelines(draw: st.DrawFn) -> PipelineSpec:
    """A random DAG of top-level steps, some of which are maps over an upstream list with a chained body."""
    n = draw(st.integers(1, 6))
    executables = [exe("e1", ["x"]), exe("e2", ["x", "z"])]
    steps: list[StepSpec] = []
    values: list[Binding] = [Binding(input="d")]
    for i in range(n):
        if draw(st.booleans()) and i > 0:
            source = draw(st.sampled_from(values[1:]))
            depth = draw(st.integers(1, 3))
            name = f"m{i}"
            body = []
            for j in range(depth):
                prev = Binding(input="it") if j == 0 else Binding(step=f"{name}.s{j - 1}", output="y")
                extra = draw(st.sampled_from([Binding(input="it"), Binding(input="k"), prev]))
                body.append(StepSpec(name=f"{name}.s{j}", executable="e2", scope=name, inputs={"x": prev, "z": extra}))
            steps.append(
                StepSpec(
                    name=name,
                    map=MapSpec(
                        over="it",
                        params=["it", "k"],
                        outputs=[NamedBinding(name="y", source=Binding(step=f"{name}.s{depth - 1}", output="y"))],
                    ),
                    inputs={"it": source, "k": draw(st.sampled_from(values))},
                )
            )
            steps.extend(body)
            values.append(Binding(step=name, output="y"))
        else:
            picks = draw(st.lists(st.sampled_from(values), min_size=1, max_size=2))
            if len(picks) == 1:
                steps.append(StepSpec(name=f"t{i}", executable="e1", inputs={"x": picks[0]}))
            else:
                steps.append(StepSpec(name=f"t{i}", executable="e2", inputs={"x": picks[0], "z": picks[1]}))
            values.append(Binding(step=f"t{i}", output="y"))
    return PipelineSpec(
        inputs=[PortSpec(name="d")],
        outputs=[NamedBinding(name="r", source=values[-1])],
        executables=executables,
        steps=steps,
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=random_pipelines(), data=st.data())
def test_random_pipelines_respect_data_flow(spec: PipelineSpec, data: st.DataObject) -> None:
    planner = Planner(spec, "prop", {"d": "input"})
    produced: set[str] = {"input"}
    succeeded: list[str] = []
    items = data.draw(st.integers(0, 4), label="items per list")
    running: list[str] = []
    steps = 0
    while not planner.finished:
        steps += 1
        assert steps < 10_000
        for task in planner.take(float(steps), limit=data.draw(st.integers(1, 3))):
            for value in _flatten(planner.task_inputs(task.id)):
                assert value in produced, f"{task.id} started before its input {value} existed"
            running.append(task.id)
        assert running, "nothing runs but the run is not finished"
        tid = running.pop(data.draw(st.integers(0, len(running) - 1)))
        task = planner.tasks[tid]
        outputs = {o: f"{tid}.{o}" for o in task.info.output_names}
        lists = {p: [f"{tid}.{p}#{i}" for i in range(items)] for p in planner.list_ports(tid)}
        planner.succeed(tid, outputs, lists)
        assert tid not in succeeded, f"{tid} succeeded twice"
        succeeded.append(tid)
        produced.update(outputs.values())
        produced.update(v for vs in lists.values() for v in vs)
    assert planner.phase is RunPhase.SUCCEEDED
    for value in _flatten(planner.outputs()):
        assert value in produced
    _assert_fan_in_complete(planner, spec, items)


def _assert_fan_in_complete(planner: Planner, spec: PipelineSpec, items: int) -> None:
    """A task reading a map's output received one value per item of the list the map fanned out over."""
    maps = {s.name for s in spec.steps if s.map is not None}
    for step in spec.steps:
        if step.scope is not None or step.executable is None:
            continue
        inputs = planner.task_inputs(step.name)
        for port, binding in step.inputs.items():
            if binding.step in maps:
                assert len(inputs[port]) == items, f"{step.name}.{port} got {inputs[port]}"


def _flatten(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [x for v in value.values() for x in _flatten(v)]
    return [x for v in value for x in _flatten(v)]

"""kill -9 of the operator at each dangerous moment, then a restart: no task runs twice, none is lost, the Run
completes. The named crash points (SGS_OPERATOR_CRASH_AT) make the operator SIGKILL itself exactly there; a
test kills it from outside at an arbitrary moment while tasks run; a Run whose Pipeline is edited keeps the
spec it started with across a restart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
from operator_kit import KEEP_FINISHED_JOBS, SITE, Cluster, OperatorProcess, task_pipeline, wait_for
from sgs_bridge.launch import BridgeProcess

from sgs.model.pipeline import PipelineSpec

pytest_plugins = ["operator_kit"]  # the operator fixtures (a conftest here would clash with mypy)
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def operator_settings() -> dict[str, str]:
    return KEEP_FINISHED_JOBS  # which Jobs exist at the end shows that none was created twice


SIGKILL_STATUS = -9
STEPS: dict[str, tuple[str, float, str | None]] = {
    "a": ("ok", 0.25, None),
    **{f"b{i}": ("sleep:0.3", 0.25, "a") for i in range(5)},
    "c": ("ok", 0.25, "b0"),
}


@pytest.fixture
def restartable(operator: OperatorProcess) -> Any:
    """The module's operator, running again after the test whatever the test did to it."""
    yield operator
    if operator.proc is None or operator.proc.poll() is not None:
        operator.start()


def start_crashing(operator: OperatorProcess, cluster: Cluster, crash_at: str, name: str) -> None:
    operator.stop()
    operator.start(crash_at=crash_at)
    cluster.apply(cluster.site(max_parallel=20))
    cluster.apply(task_pipeline(name, STEPS))
    cluster.apply(cluster.run(name, pipeline=name, inputs={}, retry={"max": 0}))


def assert_each_task_ran_once(cluster: Cluster, run: str) -> None:
    status = cluster.wait_phase(run, {"Succeeded", "Failed"}, timeout_s=180)
    assert status["phase"] == "Succeeded", cluster.attempt_rows(run)
    assert status["tasks"]["succeeded"] == len(STEPS)
    run_dir = cluster.store / cluster.namespace / run
    executions = {step: len((run_dir / step / "out.runs").read_text().splitlines()) for step in STEPS}
    assert executions == dict.fromkeys(STEPS, 1)
    jobs = sorted(j["metadata"]["name"] for j in cluster.jobs(run))
    assert jobs == sorted(f"{run}-{step}-0" for step in STEPS)
    assert [(a["task"], a["attempt"], a["reason"]) for a in cluster.attempt_rows(run)] == [
        (step, 0, "Completed") for step in sorted(STEPS)
    ]


@pytest.mark.parametrize(
    "crash_at",
    [
        "after-record-before-job:1",  # the first task recorded Running, its Job never created
        "after-record-before-job:2",  # the fan-out recorded, none of its five Jobs created
        "after-job-before-status:2",  # Jobs created, the status not written
        "after-finish-before-record:2",  # a finished Job taken by the planner, the record not written
        "before-status-patch:3",  # a status computed and lost
    ],
)
def test_a_kill_at_a_crash_point_loses_nothing_and_repeats_nothing(
    restartable: OperatorProcess, cluster: Cluster, bridge: BridgeProcess, crash_at: str
) -> None:
    run = "crash-" + crash_at.split(":")[0].replace("-", "")[:20] + crash_at.split(":")[1]
    start_crashing(restartable, cluster, crash_at, run)

    assert restartable.wait_exit(timeout_s=120) == SIGKILL_STATUS, Path(restartable.log).read_text()[-3000:]
    restartable.start()

    assert_each_task_ran_once(cluster, run)


def test_a_kill_from_outside_while_tasks_run(
    restartable: OperatorProcess, cluster: Cluster, bridge: BridgeProcess
) -> None:
    cluster.apply(cluster.site(max_parallel=20))
    cluster.apply(task_pipeline("outside", STEPS))
    cluster.apply(cluster.run("outside", pipeline="outside", inputs={}, retry={"max": 0}))
    wait_for(lambda: len(cluster.jobs("outside")) >= 3, "the fan-out's Jobs")

    restartable.kill9()
    restartable.start()

    assert_each_task_ran_once(cluster, "outside")
    assert cluster.get("runs", "outside")["status"]["site"] == SITE


def two_steps(name: str, second: str) -> dict[str, Any]:
    return task_pipeline(name, {"a": ("sleep:8", 0.25, None), "b": (second, 0.25, "a")})


def run_condition(cluster: Cluster, run: str, kind: str) -> dict[str, Any] | None:
    return next((c for c in cluster.run_status(run).get("conditions") or [] if c["type"] == kind), None)


def test_a_run_keeps_the_pipeline_it_started_with_through_an_edit_and_a_restart(
    restartable: OperatorProcess, cluster: Cluster, bridge: BridgeProcess
) -> None:
    original, edited = two_steps("pinned", "ok"), two_steps("pinned", "fail")
    started_with = PipelineSpec.model_validate(original["spec"]).digest()
    now = PipelineSpec.model_validate(edited["spec"]).digest()
    cluster.apply(cluster.site(max_parallel=20))
    cluster.apply(original)
    cluster.apply(cluster.run("pinned", pipeline="pinned", inputs={}, retry={"max": 0}))
    wait_for(lambda: cluster.jobs("pinned"), "the first task's Job")
    assert wait_for(lambda: run_condition(cluster, "pinned", "PipelineChanged"), "the condition")["status"] == "False"

    cluster.apply(edited)  # while `a` runs: `b` (not started yet) would now fail
    changed = wait_for(
        lambda: (c := run_condition(cluster, "pinned", "PipelineChanged")) and c["status"] == "True" and c,
        "the Run to say its Pipeline changed",
    )
    restartable.kill9()
    restartable.start()  # the new operator finds the spec the Run started with in the task table, not the edit

    status = cluster.wait_phase("pinned", {"Succeeded", "Failed"}, timeout_s=120)
    assert changed["reason"] == "PipelineEdited"
    assert f"sha256 {started_with} → {now}" in changed["message"]
    assert status["phase"] == "Succeeded", cluster.attempt_rows("pinned")
    assert status["pipelineDigest"] == started_with
    assert (cluster.store / cluster.namespace / "pinned" / "b" / "out.txt").read_text().endswith("ok done\n")
    assert run_condition(cluster, "pinned", "PipelineChanged")["status"] == "True"  # type: ignore[index]
    uid = cluster.get("runs", "pinned")["metadata"]["uid"]
    with psycopg.connect(cluster.dsn) as conn:
        row = conn.execute("SELECT pipeline_digest, pipeline_spec FROM sgs_run WHERE uid = %s", (uid,)).fetchone()
    assert row is not None and row[0] == started_with
    assert PipelineSpec.model_validate(row[1]).digest() == started_with

    cluster.apply(cluster.run("after-edit", pipeline="pinned", inputs={}, retry={"max": 0}))
    later = cluster.wait_phase("after-edit", {"Succeeded", "Failed"}, timeout_s=120)
    assert later["phase"] == "Failed" and later["failedTasks"][0]["task"] == "b"  # new Runs take the edit
    assert later["pipelineDigest"] == now

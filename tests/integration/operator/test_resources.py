"""Resources decided at run time and limits enforced by the control plane, through real Jobs and the bridge:
dynamic resources read from an upstream task's JSON output; a walltime exceeded (DeadlineExceeded)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from operator_kit import FAST_RETRY, Cluster

pytest_plugins = ["operator_kit"]  # the operator fixtures (a conftest here would clash with mypy)
pytestmark = pytest.mark.integration


def executable(name: str, resources: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "command": "optest_task",
        "inputs": [{"name": "mode"}, {"name": "input", "optional": True}],
        "outputs": [{"name": "out", "suffix": ".json"}],
        "resources": resources,
    }


def sized_pipeline(name: str, sizes: str) -> dict[str, Any]:
    """`sizer` writes `sizes` as its output; `sized` takes its resources from that file (``dynamic``)."""
    return {
        "apiVersion": "sgs.io/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": name},
        "spec": {
            "executables": [
                executable("sizer", {"cores": 1, "ram": 0.25, "walltime": 0.05}),
                executable("sized", {"cores": 1, "ram": 0.25, "walltime": 0.05, "dynamic": {"input": "input"}}),
            ],
            "steps": [
                {"name": "sizer", "executable": "sizer", "inputs": {"mode": {"value": f"write:{sizes}"}}},
                {
                    "name": "sized",
                    "executable": "sized",
                    "inputs": {"mode": {"value": "ok"}, "input": {"step": "sizer", "output": "out"}},
                },
            ],
        },
    }


def container_resources(cluster: Cluster, run: str, task: str) -> dict[str, Any]:
    job = next(j for j in cluster.jobs(run) if j["metadata"]["labels"]["sgs.io/task"] == task)
    resources: dict[str, Any] = job["spec"]["template"]["spec"]["containers"][0]["resources"]
    return resources


def test_dynamic_resources_from_the_upstream_output_size_the_job(served: Cluster) -> None:
    served.apply(sized_pipeline("sized", json.dumps({"cores": 2, "ram": 0.75, "walltime": 0.1})))
    served.apply(served.run("sized", pipeline="sized", inputs={}))

    status = served.wait_phase("sized", {"Succeeded", "Failed"}, timeout_s=120)

    assert status["phase"] == "Succeeded", served.task_rows("sized")
    assert container_resources(served, "sized", "sizer")["limits"] == {"cpu": "1", "memory": "256Mi"}
    sized = container_resources(served, "sized", "sized")
    assert sized["requests"] == sized["limits"] == {"cpu": "2", "memory": "768Mi"}
    job = next(j for j in served.jobs("sized") if j["metadata"]["labels"]["sgs.io/task"] == "sized")
    assert job["spec"]["activeDeadlineSeconds"] == 360  # walltime 0.1 h from the file, not the declared 0.05 h
    row = next(r for r in served.task_rows("sized") if r["task"] == "sized")
    assert (row["requested"]["cores"], row["requested"]["ram"], row["requested"]["walltime"]) == (2, 0.75, 0.1)


def test_unreadable_dynamic_resources_fail_the_task_with_the_reason(served: Cluster) -> None:
    served.apply(sized_pipeline("missized", json.dumps({"colours": 3})))
    served.apply(served.run("missized", pipeline="missized", inputs={}, retry=FAST_RETRY))

    status = served.wait_phase("missized", {"Succeeded", "Failed"}, timeout_s=120)

    assert status["phase"] == "Failed"
    [failed] = status["failedTasks"]
    assert failed["task"] == "sized"
    assert "dynamic resources" in failed["message"] and "colours" in failed["message"]
    assert [j["metadata"]["labels"]["sgs.io/task"] for j in served.jobs("missized")] == ["sizer"]  # none for it


def test_a_task_past_its_walltime_fails_with_deadline_exceeded_and_is_retried(served: Cluster) -> None:
    walltime_h = 2 / 3600  # activeDeadlineSeconds 2: the job controller ends the pod, the bridge kills it
    pipeline = {
        "apiVersion": "sgs.io/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": "slow"},
        "spec": {
            "executables": [executable("slow", {"cores": 1, "ram": 0.25, "walltime": walltime_h})],
            "steps": [{"name": "slow", "executable": "slow", "inputs": {"mode": {"value": "sleep:60"}}}],
        },
    }
    served.apply(pipeline)
    served.apply(served.run("slow", pipeline="slow", inputs={}, retry=FAST_RETRY))

    status = served.wait_phase("slow", {"Succeeded", "Failed"}, timeout_s=120)

    assert status["phase"] == "Failed"
    [failed] = status["failedTasks"]
    assert (failed["task"], failed["attempt"], failed["reason"]) == ("slow", 1, "DeadlineExceeded")
    attempts = [(a["attempt"], a["reason"]) for a in served.attempt_rows("slow")]
    assert attempts == [(0, "DeadlineExceeded"), (1, "DeadlineExceeded")]
    jobs = served.jobs("slow")
    assert sorted(j["spec"]["activeDeadlineSeconds"] for j in jobs) == [2, 2]
    assert all(
        any(c["type"] == "Failed" and c.get("reason") == "DeadlineExceeded" for c in j["status"]["conditions"])
        for j in jobs
    )
    # Each attempt really started (the task program counts its runs) and was killed before writing its output.
    [runs] = list(served.store.rglob("*.runs"))
    assert len(runs.read_text().splitlines()) == 2
    assert not list(served.store.rglob("*.json"))

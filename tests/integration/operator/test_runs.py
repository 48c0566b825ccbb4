"""Runs to the end through real Jobs, pods and the bridge's process provider: the example pipeline succeeds;
failures are retried then reported; an OOM kill is retried with more memory; retry-failed re-runs only what
failed; profiling lands in the task records."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from operator_kit import FAST_RETRY, KEEP_FINISHED_JOBS, Cluster, OperatorProcess, task_pipeline, wait_for

pytest_plugins = ["operator_kit"]  # the operator fixtures (a conftest here would clash with mypy)
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def operator_settings() -> dict[str, str]:
    return KEEP_FINISHED_JOBS  # the tests count and read the Jobs of finished Runs


def test_the_site_reports_its_bridge_node_and_storage(served: Cluster) -> None:
    status = served.wait_site_phase("site-a", {"Ready"})

    assert status["nodesReady"] >= 1
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["ComputeReady"]["status"] == "True"
    assert conditions["StorageReachable"]["status"] == "True"


def test_the_example_pipeline_runs_to_succeeded(
    served: Cluster, example_pipeline: dict[str, Any], operator: OperatorProcess
) -> None:
    served.apply(example_pipeline)
    served.apply(served.run("example"))

    status = served.wait_phase("example", {"Succeeded", "Failed"}, timeout_s=240)

    assert status["phase"] == "Succeeded", status
    assert status["tasks"]["succeeded"] == status["tasks"]["total"] == 10  # split + 4 × (dark, flat) + combine
    assert status["progress"] == "10/10"
    assert status["completionTime"] >= status["startTime"]
    row = served.kubectl("get", "runs", "example").stdout.splitlines()[1].split()
    assert row[:5] == ["example", "parallel-split", "site-a", "Succeeded", "10/10"]
    run_dir = served.store / served.namespace / "example"
    assert (run_dir / "ialtest_combine_images" / "combined.json").is_file()
    assert len(list((run_dir / "ialtest_split_images" / "split").glob("*.json"))) == 4
    jobs = served.jobs("example")
    assert len(jobs) == 10
    assert all(j["status"].get("succeeded") == 1 for j in jobs)
    rows = served.task_rows("example")
    assert {r["state"] for r in rows} == {"Succeeded"}
    dark = next(r for r in rows if r["task"].startswith("correct.ialtest_correct_dark"))
    assert dark["requested"]["cores"] == 2
    assert dark["usage"]["wall_s"] > 0 and dark["usage"]["max_rss_mb"] > 0
    assert dark["usage"]["cpu_efficiency"] > 0 and dark["usage"]["memory_used_ratio"] > 0
    metrics = httpx.get(f"http://127.0.0.1:{operator.metrics_port}/metrics", timeout=10).text
    samples = dict(line.rsplit(" ", 1) for line in metrics.splitlines() if line and not line.startswith("#"))
    assert float(samples['sgs_task_cpu_efficiency_ratio_count{executable="ialtest_correct_dark"}']) == 4
    assert float(samples['sgs_task_memory_used_ratio_count{executable="ialtest_combine_images"}']) == 1


def test_a_failing_task_is_retried_then_fails_the_run(served: Cluster) -> None:
    served.apply(task_pipeline("failing", {"first": ("ok", 0.25, None), "second": ("fail", 0.25, "first")}))
    served.apply(served.run("failing", pipeline="failing", inputs={}, retry=FAST_RETRY))

    status = served.wait_phase("failing", {"Succeeded", "Failed"}, timeout_s=120)

    assert status["phase"] == "Failed"
    assert status["tasks"].items() >= {"succeeded": 1, "failed": 1, "total": 2}.items()
    [failed] = status["failedTasks"]
    assert failed["task"] == "second" and failed["attempt"] == 1 and failed["reason"] == "Error"
    assert "exit code 3" in failed["message"]
    attempts = [(a["task"], a["attempt"], a["reason"]) for a in served.attempt_rows("failing")]
    assert attempts == [("first", 0, "Completed"), ("second", 0, "Error"), ("second", 1, "Error")]
    complete = next(c for c in status["conditions"] if c["type"] == "Complete")
    assert complete["status"] == "False" and complete["reason"] == "Failed"


def test_an_oom_killed_task_is_retried_with_more_memory(served: Cluster) -> None:
    served.apply(task_pipeline("hungry", {"hog": ("oom:200", 0.15, None)}))
    served.apply(served.run("hungry", pipeline="hungry", inputs={}, retry={**FAST_RETRY, "memoryMultiplier": 2}))

    status = served.wait_phase("hungry", {"Succeeded", "Failed"}, timeout_s=120)

    assert status["phase"] == "Succeeded", served.attempt_rows("hungry")
    attempts = served.attempt_rows("hungry")
    assert [(a["attempt"], a["reason"]) for a in attempts] == [(0, "OOMKilled"), (1, "Completed")]
    limits = {
        j["metadata"]["labels"]["sgs.io/attempt"]: j["spec"]["template"]["spec"]["containers"][0]["resources"][
            "limits"
        ]["memory"]
        for j in served.jobs("hungry")
    }
    assert limits == {"0": "154Mi", "1": "308Mi"}


def test_retry_failed_reruns_only_the_failed_tasks(served: Cluster) -> None:
    marker = served.store / "allow-b"
    steps = {
        "a": ("ok", 0.25, None),
        "b": (f"fail-unless:{marker}", 0.25, "a"),
        "c": ("ok", 0.25, "b"),
        "d": ("ok", 0.25, None),
    }
    served.apply(task_pipeline("flaky", steps))
    served.apply(served.run("flaky", pipeline="flaky", inputs={}, retry={"max": 0}))
    first = served.wait_phase("flaky", {"Succeeded", "Failed"}, timeout_s=120)
    assert first["phase"] == "Failed"
    assert first["tasks"].items() >= {"succeeded": 2, "failed": 1, "skipped": 1}.items()

    Path(marker).write_text("yes")
    served.sgs("run", "retry-failed", "flaky", "-n", served.namespace)

    wait_for(lambda: served.run_status("flaky").get("phase") != "Failed", "the Run to leave Failed")
    final = served.wait_phase("flaky", {"Succeeded", "Failed"}, timeout_s=120)
    assert final["phase"] == "Succeeded"
    assert final["failedTasks"] == []
    attempts = [(a["task"], a["attempt"], a["reason"]) for a in served.attempt_rows("flaky")]
    assert attempts == [
        ("a", 0, "Completed"),
        ("b", 0, "Error"),
        ("b", 1, "Completed"),
        ("c", 0, "Completed"),
        ("d", 0, "Completed"),
    ]
    assert served.get("runs", "flaky")["spec"]["retryFailed"] == 1

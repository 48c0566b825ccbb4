"""Finished Jobs under the default settings: deleted once their outcome is in the task table (etcd stays small
for 100k-task Runs); a failed one is kept for people to inspect, then deleted by the cluster's TTL controller."""

from __future__ import annotations

import json
from typing import Any

import pytest
from operator_kit import Cluster, task_pipeline, wait_for

pytest_plugins = ["operator_kit"]  # the operator fixtures (a conftest here would clash with mypy)
pytestmark = pytest.mark.integration

FAILED_TTL_S = 15  # long enough to look at it on a loaded machine, short enough to see it go


@pytest.fixture(scope="module")
def operator_settings() -> dict[str, str]:
    return {"SGS_OPERATOR_FAILED_JOB_TTL_S": str(FAILED_TTL_S)}  # finished_jobs left at its default


def pods(cluster: Cluster, job: str) -> list[dict[str, Any]]:
    found = cluster.kubectl("get", "pods", "-l", f"batch.kubernetes.io/job-name={job}", "-o", "json").stdout
    items: list[dict[str, Any]] = json.loads(found)["items"]
    return items


def test_succeeded_jobs_go_once_recorded_and_failed_ones_after_their_ttl(served: Cluster) -> None:
    served.apply(task_pipeline("tidy", {"good": ("ok", 0.25, None), "bad": ("fail", 0.25, "good")}))
    served.apply(served.run("tidy", pipeline="tidy", inputs={}, retry={"max": 0}))

    status = served.wait_phase("tidy", {"Succeeded", "Failed"}, timeout_s=120)

    assert status["phase"] == "Failed"
    assert [(a["task"], a["reason"]) for a in served.attempt_rows("tidy")] == [("bad", "Error"), ("good", "Completed")]
    names = {a["task"]: a["job"] for a in served.attempt_rows("tidy")}
    wait_for(lambda: not pods(served, names["good"]), "the succeeded Job's pod to be deleted")
    [kept] = served.jobs("tidy")  # the failed one, with its pod, for people to look at
    assert kept["metadata"]["name"] == names["bad"]
    assert kept["spec"]["ttlSecondsAfterFinished"] == FAILED_TTL_S
    assert [p["status"]["phase"] for p in pods(served, names["bad"])] == ["Failed"]

    wait_for(lambda: not served.jobs("tidy"), "the TTL controller to delete the failed Job", timeout_s=60)
    assert [r["state"] for r in served.task_rows("tidy")] == ["Failed", "Succeeded"]  # the records stay

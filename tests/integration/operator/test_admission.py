"""Pipelines and Runs at the door: the validating webhook refuses what the CRD schema cannot, naming the field;
valid Pipelines become Ready; a Run on a missing or invalid Pipeline says why it does not start."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from operator_kit import Cluster, wait_for

pytest_plugins = ["operator_kit"]  # the operator fixtures (a conftest here would clash with mypy)

pytestmark = pytest.mark.integration


def test_example_pipeline_becomes_ready(cluster: Cluster, example_pipeline: dict[str, Any]) -> None:
    cluster.apply(example_pipeline)

    status = wait_for(
        lambda: (
            cluster.get("pipelines", "parallel-split").get("status", {}).get("phase") == "Ready"
            and cluster.get("pipelines", "parallel-split")["status"]
        ),
        "the Pipeline to be Ready",
    )

    assert status["tasksPerRun"] == 4  # split, correct_dark, correct_flat, combine
    table = cluster.kubectl("get", "pipelines").stdout
    assert "READY" in table.upper() and "parallel-split" in table


def test_kubectl_apply_refuses_a_broken_graph_naming_the_field(
    cluster: Cluster, example_pipeline: dict[str, Any]
) -> None:
    broken = copy.deepcopy(example_pipeline)
    broken["metadata"]["name"] = "broken"
    combine = next(s for s in broken["spec"]["steps"] if s["name"] == "ialtest_combine_images")
    combine["inputs"]["inputlist"] = {"step": "no_such_step", "output": "x"}

    result = cluster.apply(broken, check=False)

    assert result.returncode != 0
    assert "spec.steps[4].inputs.inputlist" in result.stderr
    assert "unknown step 'no_such_step'" in result.stderr
    assert cluster.kubectl("get", "pipelines", "broken", check=False).returncode != 0  # nothing half-written


def test_kubectl_apply_refuses_a_run_input_with_two_sources(cluster: Cluster) -> None:
    run = cluster.run("two-sources")
    run["spec"]["inputs"]["images"] = {"uri": "/data/a.json", "uris": ["/data/b.json"]}

    result = cluster.apply(run, check=False)

    assert result.returncode != 0
    assert "spec.inputs.images" in result.stderr
    assert "exactly one of uri, uris or query" in result.stderr


def test_run_of_a_missing_pipeline_waits_with_a_condition(cluster: Cluster) -> None:
    cluster.apply(cluster.site())
    cluster.apply(cluster.run("orphan", pipeline="not-there"))

    status = cluster.wait_phase("orphan", {"Pending"})
    condition = wait_for(
        lambda: next(
            (c for c in cluster.run_status("orphan").get("conditions", []) if c["type"] == "PipelineReady"), None
        ),
        "the PipelineReady condition",
    )

    assert status["phase"] == "Pending"
    assert condition["status"] == "False"
    assert condition["reason"] == "PipelineNotFound"
    assert "not-there" in condition["message"]
    assert cluster.jobs("orphan") == []

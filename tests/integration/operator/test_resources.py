"""Resources decided at run time and limits enforced by the control plane, through real Jobs and the bridge:
dynamic resources read from an upstream task's JSON output or by an installed function (in the sandbox); files
the operator reads for a Run stay under its Site's roots; a walltime exceeded (DeadlineExceeded)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from operator_kit import EXAMPLE, FAST_RETRY, KEEP_FINISHED_JOBS, Cluster

pytest_plugins = ["operator_kit"]  # the operator fixtures (a conftest here would clash with mypy)
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def operator_settings() -> dict[str, str]:
    return KEEP_FINISHED_JOBS  # the tests read the resources of Jobs that succeeded


def executable(name: str, resources: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "command": "optest_task",
        "inputs": [{"name": "mode"}, {"name": "input", "optional": True}],
        "outputs": [{"name": "out", "suffix": ".json"}],
        "resources": resources,
    }


def sized_pipeline(name: str, sizes: str, function: str | None = None, mode: str = "write") -> dict[str, Any]:
    """`sizer` writes `sizes` as its output (``mode`` write, fits or link); `sized` takes its resources from
    that file (``dynamic``, through ``function`` if given)."""
    dynamic = {"input": "input"} | ({"function": function} if function else {})
    return {
        "apiVersion": "sgs.io/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": name},
        "spec": {
            "executables": [
                executable("sizer", {"cores": 1, "ram": 0.25, "walltime": 0.05}),
                executable("sized", {"cores": 1, "ram": 0.25, "walltime": 0.05, "dynamic": dynamic}),
            ],
            "steps": [
                {"name": "sizer", "executable": "sizer", "inputs": {"mode": {"value": f"{mode}:{sizes}"}}},
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


def test_an_installed_dynamic_function_sizes_the_job_from_the_upstream_product(served: Cluster) -> None:
    """fits-header (an entry point sgs installs) reads HIERARCH SGS cards, in the operator's sandbox."""
    sizes = json.dumps({"cores": 2, "ram": 0.75, "walltime": 0.1})
    served.apply(sized_pipeline("fits-sized", sizes, function="fits-header", mode="fits"))
    served.apply(served.run("fits-sized", pipeline="fits-sized", inputs={}))

    status = served.wait_phase("fits-sized", {"Succeeded", "Failed"}, timeout_s=120)

    assert status["phase"] == "Succeeded", served.task_rows("fits-sized")
    sized = container_resources(served, "fits-sized", "sized")
    assert sized["requests"] == sized["limits"] == {"cpu": "2", "memory": "768Mi"}
    row = next(r for r in served.task_rows("fits-sized") if r["task"] == "sized")
    assert (row["requested"]["cores"], row["requested"]["ram"], row["requested"]["walltime"]) == (2, 0.75, 0.1)


def test_dynamic_resources_behind_a_symlink_out_of_the_roots_are_not_read(served: Cluster) -> None:
    served.apply(sized_pipeline("linked", "/etc/passwd", mode="link"))
    served.apply(served.run("linked", pipeline="linked", inputs={}, retry=FAST_RETRY))

    status = served.wait_phase("linked", {"Succeeded", "Failed"}, timeout_s=120)

    assert status["phase"] == "Failed"
    [failed] = status["failedTasks"]
    assert failed["task"] == "sized"
    assert "(resolves to /etc/passwd) is outside Site site-a's storage roots" in failed["message"]
    assert [j["metadata"]["labels"]["sgs.io/task"] for j in served.jobs("linked")] == ["sizer"]


def listing_pipeline(name: str, listed: list[str]) -> dict[str, Any]:
    """`lister` writes `listed` as a list output; `reader` runs once per path in it."""
    return {
        "apiVersion": "sgs.io/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": name},
        "spec": {
            "executables": [
                executable("lister", {"cores": 1, "ram": 0.25, "walltime": 0.05}),
                executable("reader", {"cores": 1, "ram": 0.25, "walltime": 0.05}),
            ],
            "steps": [
                {
                    "name": "lister",
                    "executable": "lister",
                    "inputs": {"mode": {"value": f"write:{json.dumps(listed)}"}},
                },
                {
                    "name": "each",
                    "map": {
                        "over": "item",
                        "params": ["item"],
                        "outputs": [{"name": "out", "from": {"step": "each.reader", "output": "out"}}],
                    },
                    "inputs": {"item": {"step": "lister", "output": "out"}},
                },
                {
                    "name": "each.reader",
                    "executable": "reader",
                    "scope": "each",
                    "inputs": {"mode": {"value": "ok"}, "input": {"input": "item"}},
                },
            ],
        },
    }


def test_a_list_output_naming_a_path_outside_the_roots_fails_the_task_that_wrote_it(served: Cluster) -> None:
    served.apply(listing_pipeline("leaky", ["/etc/hostname"]))
    served.apply(served.run("leaky", pipeline="leaky", inputs={}, retry=FAST_RETRY))

    status = served.wait_phase("leaky", {"Succeeded", "Failed"}, timeout_s=120)

    assert status["phase"] == "Failed"
    [failed] = status["failedTasks"]
    assert (failed["task"], failed["reason"]) == ("lister", "Error")
    assert "list output out[0]: /etc/hostname is outside Site site-a's storage roots" in failed["message"]
    assert {j["metadata"]["labels"]["sgs.io/task"] for j in served.jobs("leaky")} == {"lister"}


def test_a_list_output_naming_reference_files_mounts_their_directory_read_only(served: Cluster) -> None:
    served.apply(listing_pipeline("refs", [str(EXAMPLE / "inputs" / "images.json")]))
    served.apply(served.run("refs", pipeline="refs", inputs={}))

    status = served.wait_phase("refs", {"Succeeded", "Failed"}, timeout_s=120)

    assert status["phase"] == "Succeeded", served.task_rows("refs")
    reader = next(j for j in served.jobs("refs") if j["metadata"]["labels"]["sgs.io/task"].startswith("each"))
    pod = reader["spec"]["template"]["spec"]
    host = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    seen = {
        host[m["name"]]: m.get("readOnly", False) for m in pod["containers"][0]["volumeMounts"] if m["name"] in host
    }
    assert seen == {str(EXAMPLE / "inputs"): True, str(served.store / served.namespace / "refs"): False}


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

"""A Run becomes Jobs: their shape (the bridge contract, host directories under the Site's roots only), the
records written before them, the compact status, suspend/resume and priorities across Runs sharing a Site.
Pods need no node here: nothing has to finish."""

from __future__ import annotations

from typing import Any

import pytest
from operator_kit import EXAMPLE, Cluster, wait_for

pytest_plugins = ["operator_kit"]  # the operator fixtures (a conftest here would clash with mypy)
pytestmark = pytest.mark.integration

# A Site no node serves: its pods stay Pending, so running tasks stay running for as long as a test looks.
UNSERVED = {"sgs.io/test": "no-such-node"}


def start_run(cluster: Cluster, pipeline: dict[str, Any], name: str, **spec: Any) -> None:
    cluster.apply(pipeline)
    cluster.apply(cluster.site(node_selector=UNSERVED))
    cluster.apply(cluster.run(name, **spec))


def test_the_first_task_becomes_a_job_that_honours_the_bridge_contract(
    cluster: Cluster, example_pipeline: dict[str, Any]
) -> None:
    start_run(cluster, example_pipeline, "shape", priority=7)

    job = wait_for(lambda: next(iter(cluster.jobs("shape")), None), "the split task's Job")
    run = cluster.get("runs", "shape")

    assert job["metadata"]["name"] == "shape-ialtest-split-images-0"
    assert (
        job["metadata"]["labels"].items()
        >= {
            "sgs.io/run": "shape",
            "sgs.io/task": "ialtest-split-images",
            "sgs.io/attempt": "0",
            "sgs.io/site": "site-a",
        }.items()
    )
    owner = job["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "Run",
        "shape",
        run["metadata"]["uid"],
        True,
    )
    spec = job["spec"]
    assert spec["backoffLimit"] == 0
    assert spec["activeDeadlineSeconds"] == 360  # walltime 0.1 h
    pod = spec["template"]["spec"]
    assert pod["nodeSelector"] == {"sgs.io/test": "no-such-node", "sgs.io/site": "site-a"}
    assert {"key": "virtual-kubelet.io/provider", "operator": "Exists"} in pod["tolerations"]
    assert pod["priorityClassName"] == "sgs-priority-7"
    assert cluster.kube.kubectl("get", "priorityclass", "sgs-priority-7").returncode == 0
    container = pod["containers"][0]
    assert container["command"] == ["ialtest_split_images"]
    out = cluster.store / cluster.namespace / "shape" / "ialtest_split_images" / "images_splitted.json"
    assert container["args"] == [f"--images={EXAMPLE / 'inputs' / 'images.json'}", f"--images_splitted={out}"]
    assert container["resources"]["limits"] == {"cpu": "1", "memory": "512Mi"}
    assert container["resources"]["requests"] == container["resources"]["limits"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["TMPDIR"] == "/sgs/tmp"
    assert env["SGS_TASK_ID"] == "ialtest_split_images"
    assert env["SGS_OUTPUT_IMAGES_SPLITTED"] == str(out)
    assert env["TRACEPARENT"].startswith("00-") and len(env["TRACEPARENT"]) == 55
    assert {"name": "tmp", "mountPath": "/sgs/tmp"} in container["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {}} in pod["volumes"]


def host_mounts(job: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(host path, hostPath type, read-only) of every host directory the Job's container sees."""
    pod = job["spec"]["template"]["spec"]
    volumes = {v["name"]: v["hostPath"] for v in pod["volumes"] if "hostPath" in v}
    mounts = pod["containers"][0]["volumeMounts"]
    found = []
    for mount in mounts:
        if mount["name"] in volumes:
            host = volumes[mount["name"]]
            assert mount["mountPath"] == host["path"]  # at its own path: argv paths need no rewriting
            found.append((host["path"], host["type"], mount.get("readOnly", False)))
    return found


def test_a_job_mounts_its_inputs_read_only_and_only_its_runs_directory_read_write(
    cluster: Cluster, example_pipeline: dict[str, Any]
) -> None:
    prefix = cluster.store / "campaign"
    start_run(cluster, example_pipeline, "mounts", outputPrefix=str(prefix))

    job = wait_for(lambda: next(iter(cluster.jobs("mounts")), None), "the split task's Job")

    assert host_mounts(job) == [
        (str(EXAMPLE / "inputs"), "Directory", True),  # the Site's reference root: the inputs' directory
        (str(prefix / cluster.namespace / "mounts"), "Directory", False),  # the Run's own outputs
    ]


def test_the_task_is_recorded_running_and_the_status_is_compact(
    cluster: Cluster, example_pipeline: dict[str, Any]
) -> None:
    start_run(cluster, example_pipeline, "records")

    status = wait_for(
        lambda: (s := cluster.run_status("records")).get("phase") == "Running" and s, "the Run to be Running"
    )
    rows = cluster.task_rows("records")

    assert [(r["task"], r["state"], r["attempt"], r["job"]) for r in rows] == [
        ("ialtest_split_images", "Running", 0, "records-ialtest-split-images-0")
    ]
    assert rows[0]["requested"]["ram"] == 0.5
    # Until the split's list is read, the map is unexpanded: split + combine are the known tasks.
    assert status["tasks"] == {"total": 2, "waiting": 1, "running": 1} | {
        k: 0 for k in ("ready", "retrying", "succeeded", "failed", "skipped")
    }
    assert status["progress"] == "0/2"
    assert status["site"] == "site-a"
    assert status["taskTable"].startswith("postgresql://") and status["taskTable"].endswith(
        cluster.get("runs", "records")["metadata"]["uid"]
    )
    assert "password" not in status["taskTable"]
    header = cluster.kubectl("get", "runs").stdout.splitlines()[0].split()
    assert header == ["NAME", "PIPELINE", "SITE", "PHASE", "DONE", "AGE"]
    row = cluster.kubectl("get", "runs", "records").stdout.splitlines()[1].split()
    assert row[:5] == ["records", "parallel-split", "site-a", "Running", "0/2"]


def test_a_suspended_run_starts_nothing_until_resumed(cluster: Cluster, example_pipeline: dict[str, Any]) -> None:
    start_run(cluster, example_pipeline, "paused", suspend=True)

    cluster.wait_phase("paused", {"Suspended"})
    assert cluster.jobs("paused") == []

    cluster.kubectl("patch", "runs", "paused", "--type=merge", "-p", '{"spec": {"suspend": false}}')

    wait_for(lambda: cluster.jobs("paused"), "a Job once resumed")
    assert cluster.wait_phase("paused", {"Running"})["tasks"]["running"] == 1


def test_site_slots_go_to_the_highest_priority_run(cluster: Cluster, example_pipeline: dict[str, Any]) -> None:
    cluster.apply(example_pipeline)
    cluster.apply(cluster.site(max_parallel=1, node_selector=UNSERVED))
    cluster.apply(cluster.run("blocker"))
    wait_for(lambda: cluster.jobs("blocker"), "the blocker's Job to hold the Site's only slot")
    cluster.apply(cluster.run("low", priority=0))
    cluster.apply(cluster.run("high", priority=50))
    wait_for(
        lambda: all(cluster.run_status(r).get("tasks", {}).get("ready") == 1 for r in ("low", "high")),
        "both Runs to queue a ready task",
    )

    # `sgs run priority` turns the order around before any slot frees.
    cluster.sgs("run", "priority", "low", "100", "-n", cluster.namespace)
    wait_for(lambda: cluster.get("runs", "low")["spec"]["priority"] == 100, "the patched priority")
    cluster.kubectl("patch", "sites", "site-a", "--type=merge", "-p", '{"spec": {"compute": {"maxParallel": 2}}}')

    wait_for(lambda: cluster.jobs("low"), "the freed slot to go to the now higher Run")
    assert cluster.jobs("high") == []

    cluster.kubectl("patch", "sites", "site-a", "--type=merge", "-p", '{"spec": {"compute": {"maxParallel": 3}}}')
    wait_for(lambda: cluster.jobs("high"), "the next slot to go to the other Run (low has nothing ready)")

"""The bridge's pure translations: Kubernetes quantities, pods into tasks, Slurm's words into pod states."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sgs_bridge.podspec import PodSpecError, pod_priority, task_from_pod
from sgs_bridge.providers.slurm_states import exit_code_of, job_state, parse_fields
from sgs_bridge.quantity import QuantityError, parse_quantity
from sgs_bridge.state import Phase


@pytest.mark.parametrize(
    ("text", "value"),
    [("500m", Decimal("0.5")), ("2", Decimal(2)), ("1Gi", Decimal(2**30)), ("100M", Decimal(10**8))],
)
def test_quantities(text: str, value: Decimal) -> None:
    assert parse_quantity(text) == value


def test_bad_quantity_names_the_text() -> None:
    with pytest.raises(QuantityError, match="'lots'"):
        parse_quantity("lots")


def pod(**container: Any) -> dict[str, Any]:
    return {
        "metadata": {"uid": "u-1", "name": "p", "namespace": "ns"},
        "spec": {
            "activeDeadlineSeconds": 600,
            "volumes": [{"name": "tmpdir", "emptyDir": {"sizeLimit": "100Mi"}}],
            "containers": [
                {
                    "name": "task",
                    "volumeMounts": [{"name": "tmpdir", "mountPath": "/sgs/tmp"}],
                    "resources": {"limits": {"cpu": "2", "memory": "1Gi", "nvidia.com/gpu": "1"}},
                    **container,
                }
            ],
        },
    }


def test_pod_becomes_a_task_with_volumes_as_host_directories(tmp_path: Path) -> None:
    spec = task_from_pod(
        pod(command=["work"], args=["/sgs/tmp/x"], env=[{"name": "TMPDIR", "value": "/sgs/tmp"}]),
        tmp_path,
    )
    scratch = str(tmp_path / "u-1")
    assert spec.argv[0] == "work" and spec.argv[1] == f"{scratch}/volumes/tmpdir/x"
    assert spec.env["TMPDIR"].startswith(scratch) and spec.env["TMPDIR"] != "/sgs/tmp"
    assert (spec.cpus, spec.memory_bytes, spec.gpus, spec.walltime_s) == (2, 2**30, 1, 600)
    assert spec.tmp_bytes == 100 * 2**20


def test_the_nodes_own_path_is_kept_and_what_the_pod_declares_is_mapped(tmp_path: Path) -> None:
    """A node whose venv lies under /tmp runs a pod with a /tmp volume: its PATH still finds the venv."""
    manifest = pod(command=["sgs"], env=[{"name": "CACHE", "value": "/tmp/cache"}])
    manifest["spec"]["volumes"].append({"name": "tmp", "emptyDir": {}})
    manifest["spec"]["containers"][0]["volumeMounts"].append({"name": "tmp", "mountPath": "/tmp"})
    base = {"PATH": "/tmp/clone/.venv/bin:/usr/bin", "HOME": "/tmp/home"}

    spec = task_from_pod(manifest, tmp_path, base_env=base)

    assert (spec.env["PATH"], spec.env["HOME"]) == (base["PATH"], base["HOME"])
    assert spec.env["CACHE"] == f"{tmp_path / 'u-1'}/volumes/tmp/cache"


def test_a_path_the_pod_declares_is_mapped_even_for_a_node_variable(tmp_path: Path) -> None:
    manifest = pod(command=["work"], env=[{"name": "HOME", "value": "/tmp/home"}])
    manifest["spec"]["volumes"].append({"name": "tmp", "emptyDir": {}})
    manifest["spec"]["containers"][0]["volumeMounts"].append({"name": "tmp", "mountPath": "/tmp"})

    spec = task_from_pod(manifest, tmp_path, base_env={"HOME": "/root"})

    assert spec.env["HOME"] == f"{tmp_path / 'u-1'}/volumes/tmp/home"


def test_pod_without_command_is_refused_naming_the_field(tmp_path: Path) -> None:
    with pytest.raises(PodSpecError, match=r"spec\.containers\[0\]\.command"):
        task_from_pod(pod(), tmp_path)


def fields(line: str) -> dict[str, str]:
    return parse_fields(line)


def test_pending_reason_is_named() -> None:
    state = job_state("7", fields("JobId=7 JobState=PENDING Reason=Resources"), "")
    assert state.phase is Phase.PENDING and state.reason == "SlurmResources"
    assert "Reason=Resources" in state.message and "waiting for resources" in state.message


def test_over_memory_kill_is_oomkilled_with_slurms_words() -> None:
    line = "JobId=8 JobState=FAILED Reason=JobLaunchFailure ExitCode=0:9"
    tail = "slurmstepd: error: Step 8.batch exceeded memory limit (2147483648 > 1073741824), being killed"
    state = job_state("8", fields(line), tail)
    assert (state.phase, state.reason) == (Phase.FAILED, "OOMKilled")
    assert "JobLaunchFailure" in state.message and "exceeded the limit of 1024 MiB" in state.message


def test_timeout_and_completion_and_exit_codes() -> None:
    timeout = job_state("9", fields("JobId=9 JobState=TIMEOUT Reason=TimeLimit ExitCode=0:15 TimeLimit=00:01:00"), "")
    assert timeout.reason == "DeadlineExceeded"
    done = job_state("10", fields("JobId=10 JobState=COMPLETED Reason=None ExitCode=0:0"), "")
    assert (done.phase, done.exit_code) == (Phase.SUCCEEDED, 0)
    assert exit_code_of("3:0") == 3 and exit_code_of("0:9") == 137


@pytest.mark.parametrize(
    ("annotation", "spec_priority", "expected"),
    [
        ("500", 0, 500),  # the operator's: the Run's priority now
        ("-20", 7, -20),
        (None, 7, 7),  # no annotation: the PriorityClass's value
        ("high", 7, 7),  # not a number: ignored, never a crash
        ("99999999999", 7, 7),  # beyond what a priority can be: ignored
        ("1e3", 7, 7),
    ],
)
def test_a_pods_priority_is_the_operators_annotation_when_it_holds_one(
    tmp_path: Path, annotation: str | None, spec_priority: int, expected: int
) -> None:
    manifest = pod(command=["true"])
    manifest["spec"]["priority"] = spec_priority
    if annotation is not None:
        manifest["metadata"]["annotations"] = {"sgs.io/priority": annotation}

    assert pod_priority(manifest) == expected
    assert task_from_pod(manifest, tmp_path).priority == expected

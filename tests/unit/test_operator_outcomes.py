"""What a finished Job and its pod tell the planner: a node's refusal keeps its reason and is not retried."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from sgs_operator.observe import NODE_REFUSALS, JobSeen, Outcome, outcome, pod_entry, release_verified

from sgs.model.run import RunSpec


def _failed_pod(reason: str, message: str) -> dict[str, object]:
    terminated = {"exitCode": 1, "reason": reason, "message": message}
    return {"phase": "Failed", "reason": reason, "containerStatuses": [{"state": {"terminated": terminated}}]}


@pytest.mark.parametrize("reason", sorted(NODE_REFUSALS))
def test_a_pod_the_node_refused_keeps_the_nodes_reason_and_message(reason: str) -> None:
    pod = pod_entry("p", {}, {"job-name": "j"}, _failed_pod(reason, "process: it cannot run here"))
    seen = outcome(JobSeen("j", "t", 0, "Failed", "BackoffLimitExceeded", ""), pod)
    assert (seen.reason, seen.message) == (reason, "process: it cannot run here")


def test_a_program_that_fails_is_an_error_with_its_exit_code() -> None:
    pod = pod_entry("p", {}, {"job-name": "j"}, _failed_pod("Error", "boom"))
    seen = outcome(JobSeen("j", "t", 0, "Failed", "BackoffLimitExceeded", ""), pod)
    assert (seen.reason, seen.message) == ("Error", "exit code 1: boom")


def test_a_pinned_release_is_verified_by_the_digest_the_node_ran() -> None:
    digest = "sha256:" + "ab" * 32
    ran = Outcome("Completed", 0, "", None, digest)
    assert release_verified(ran, f"ghcr.io/sgs/nir@{digest}") is ran
    other = release_verified(Outcome("Completed", 0, "", None, "sha256:" + "cd" * 32), f"nir@{digest}")
    assert other.reason == "ReleaseNotVerified" and "its node ran image sha256:cdcd" in other.message
    assert release_verified(Outcome("Completed", 0, "", None), f"nir@{digest}").reason == "ReleaseNotVerified"


@pytest.mark.parametrize(
    "release", ["nir:0.1.0", "nir@sha256:abc", "../nir@sha256:" + "a" * 64, "NIR@sha256:" + "a" * 64]
)
def test_a_release_must_name_an_image_by_digest(release: str) -> None:
    with pytest.raises(ValidationError, match="release"):
        RunSpec(pipeline="p", release=release)

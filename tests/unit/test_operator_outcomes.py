"""What a finished Job and its pod tell the planner: a node's refusal keeps its reason and is not retried."""

from __future__ import annotations

import pytest
from sgs_operator.observe import NODE_REFUSALS, JobSeen, outcome, pod_entry


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

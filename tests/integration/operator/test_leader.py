"""Two operator replicas against the real API server: only the Lease holder acts; kill -9 the leader mid-Run and
the standby takes over within the lease time, and nothing runs twice (no Job created twice, no task recorded or
executed twice)."""

from __future__ import annotations

import datetime
import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from operator_kit import KEEP_FINISHED_JOBS, Cluster, OperatorProcess, task_pipeline, wait_for
from sgs_bridge.launch import BridgeProcess

from sgs.testing.kube import KubePart

pytest_plugins = ["operator_kit"]  # the operator fixtures (a conftest here would clash with mypy)
pytestmark = pytest.mark.integration

LEASE_S, RENEW_DEADLINE_S, RETRY_S = 4.0, 3.0, 0.5
STANDBY_MESSAGE = "sgs operator standing by"
READY_MESSAGE = "sgs operator ready"
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO leading as ", re.MULTILINE)
STEPS: dict[str, tuple[str, float, str | None]] = {
    "a": ("sleep:1", 0.25, None),
    "b": ("sleep:1", 0.25, "a"),
    **{f"c{i}": ("sleep:1.5", 0.25, "b") for i in range(4)},
    "d": ("ok", 0.25, "c0"),
}


def replica(kube: KubePart, dsn: str, workdir: Path, name: str, lease: str) -> OperatorProcess:
    env = {
        "SGS_OPERATOR_LEASE_NAME": lease,
        "SGS_OPERATOR_LEADER_IDENTITY": name,
        "SGS_OPERATOR_WEBHOOK_NAME": f"{lease}.sgs.io",  # one Deployment: one webhook configuration
        "SGS_OPERATOR_LEASE_DURATION_S": str(LEASE_S),
        "SGS_OPERATOR_LEASE_RENEW_DEADLINE_S": str(RENEW_DEADLINE_S),
        "SGS_OPERATOR_LEASE_RETRY_S": str(RETRY_S),
        **KEEP_FINISHED_JOBS,  # who created each Job, and that none was created twice, is read from the Jobs
    }
    return OperatorProcess(kube, dsn, workdir / name, env=env)


@pytest.fixture(scope="module")
def replicas(
    kube: KubePart, operator_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[OperatorProcess, OperatorProcess]]:
    workdir = tmp_path_factory.mktemp("replicas")
    lease = f"sgs-operator-{uuid.uuid4().hex[:6]}"
    first, second = (replica(kube, operator_dsn, workdir, name, lease) for name in ("replica-a", "replica-b"))
    for proc in (first, second):
        proc.workdir.mkdir()
    first.start()
    second.start(message=STANDBY_MESSAGE)
    yield first, second
    for proc in (first, second):
        proc.stop()
    first.delete_webhook()


@pytest.fixture(scope="module")
def operator(replicas: tuple[OperatorProcess, OperatorProcess]) -> OperatorProcess:
    return replicas[0]


def led_at(proc: OperatorProcess) -> datetime.datetime | None:
    """When the replica logged that it leads (its own clock: the same machine's as the test's)."""
    found = LOG_TIME.search(proc.log.read_text(errors="replace"))
    return datetime.datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S,%f") if found else None


def jobs_with_managers(cluster: Cluster, run: str) -> list[dict[str, Any]]:
    listing = cluster.kubectl("get", "jobs", "-l", f"sgs.io/run={run}", "--show-managed-fields", "-o", "json").stdout
    items: list[dict[str, Any]] = json.loads(listing)["items"]
    return items


def creator(job: dict[str, Any]) -> str:
    """The replica that created a Job: the manager of its creating (first) managedFields entry."""
    return str(job["metadata"]["managedFields"][0]["manager"]).removeprefix("sgs-operator.")


def test_only_the_leader_acts_and_the_standby_takes_over_when_it_is_killed(
    replicas: tuple[OperatorProcess, OperatorProcess], served: Cluster, bridge: BridgeProcess
) -> None:
    leader, standby = replicas
    served.apply(task_pipeline("relay", STEPS))
    served.apply(served.run("relay", pipeline="relay", inputs={}, retry={"max": 0}))
    uids: dict[str, set[str]] = {}

    def jobs_seen() -> list[dict[str, Any]]:
        jobs = served.jobs("relay")
        for job in jobs:
            uids.setdefault(job["metadata"]["name"], set()).add(job["metadata"]["uid"])
        return jobs

    wait_for(lambda: any(j["metadata"]["name"] == "relay-b-0" for j in jobs_seen()), "step b's Job", timeout_s=90)
    assert READY_MESSAGE not in standby.log.read_text(), "the standby started acting while the leader held the Lease"
    assert not any(creator(job) == "replica-b" for job in jobs_with_managers(served, "relay"))
    leader.kill9()
    killed = datetime.datetime.now()
    took_over_at = wait_for(lambda: led_at(standby), "the standby to take the Lease", timeout_s=30)
    status = served.wait_phase("relay", {"Succeeded", "Failed"}, timeout_s=180)
    jobs_seen()

    # The standby waits out the lease from the last renewal it saw (at most a retry period before the kill),
    # polling every retry period (+20 % jitter); a second more for a loaded machine.
    took_over = (took_over_at - killed).total_seconds()
    assert took_over <= LEASE_S + 2 * RETRY_S * 1.2 + 1.0, (
        f"took over {took_over:.1f} s after the kill (lease {LEASE_S} s)"
    )
    assert status["phase"] == "Succeeded", served.attempt_rows("relay")
    assert {name: len(seen) for name, seen in uids.items()} == {f"relay-{s}-0": 1 for s in STEPS}  # no Job made twice
    creators = {job["metadata"]["name"]: creator(job) for job in jobs_with_managers(served, "relay")}
    assert creators["relay-a-0"] == "replica-a" and creators["relay-d-0"] == "replica-b", creators
    assert set(creators.values()) == {"replica-a", "replica-b"}
    run_dir = served.store / served.namespace / "relay"
    assert {s: len((run_dir / s / "out.runs").read_text().splitlines()) for s in STEPS} == dict.fromkeys(STEPS, 1)
    assert [(a["task"], a["attempt"]) for a in served.attempt_rows("relay")] == [(s, 0) for s in sorted(STEPS)]
    name = leader.extra_env["SGS_OPERATOR_LEASE_NAME"]
    lease = json.loads(served.kube.kubectl("-n", "default", "get", "lease", name, "-o", "json").stdout)
    assert lease["spec"]["holderIdentity"] == "replica-b" and lease["spec"]["leaseTransitions"] >= 1

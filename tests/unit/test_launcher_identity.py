"""Process identities on real processes: a task's leftovers are killed, a process that reuses a number is not."""

from __future__ import annotations

import dataclasses
import os
import subprocess
from collections.abc import Iterator

import pytest

from sgs.launcher.identity import MARKER_ENV, ProcessIdentity, identify, kill_leftover, new_marker


@pytest.fixture
def task() -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A task-like process: a session of its own, a marker in its environment, and a child."""
    marker = new_marker()
    env = {**os.environ, MARKER_ENV: marker}
    process = subprocess.Popen(["sh", "-c", "sleep 60 & wait"], env=env, start_new_session=True)
    yield process, marker
    if process.poll() is None:
        os.killpg(process.pid, 9)
    process.wait()


def test_a_live_task_and_its_group_are_killed(task: tuple[subprocess.Popen[bytes], str]) -> None:
    process, marker = task
    assert kill_leftover(identify(process.pid, marker)) >= 1
    assert process.wait(5) == -9


def test_a_process_with_another_start_time_is_spared(task: tuple[subprocess.Popen[bytes], str]) -> None:
    process, _ = task
    recorded = identify(process.pid, new_marker())  # the number matches, the process is someone else's
    impostor = dataclasses.replace(recorded, start_ticks=recorded.start_ticks - 1)
    assert kill_leftover(impostor) == 0
    assert process.poll() is None


def test_nothing_is_killed_for_another_boot_or_without_an_identity(task: tuple[subprocess.Popen[bytes], str]) -> None:
    process, marker = task
    assert kill_leftover(dataclasses.replace(identify(process.pid, marker), boot_id="another-boot")) == 0
    assert kill_leftover(None) == 0
    assert kill_leftover(ProcessIdentity.from_dict({"pid": process.pid})) == 0  # a record without an identity
    assert process.poll() is None


def test_a_marked_process_outside_the_group_is_killed_once_its_leader_is_gone() -> None:
    marker = new_marker()
    env = {**os.environ, MARKER_ENV: marker}
    leader = subprocess.Popen(["true"], env=env, start_new_session=True)
    leader.wait()
    escaped = subprocess.Popen(["sleep", "60"], env=env, start_new_session=True)  # left the task's group
    try:
        assert kill_leftover(identify(leader.pid, marker)) == 1
        assert escaped.wait(5) == -9
    finally:
        escaped.kill()
        escaped.wait()


def test_identity_round_trips_through_a_record() -> None:
    identity = identify(os.getpid(), new_marker())
    assert identity.start_ticks > 0 and identity.boot_id
    assert ProcessIdentity.from_dict(identity.as_dict()) == identity

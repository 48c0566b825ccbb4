"""The process provider's node agent on real processes: runs a pod's task once, cancels it, refuses strangers."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sgs_bridge.agent import SOCKET_FILE, AgentClient, AgentError
from sgs_bridge.files import read_json

from sgs.testing import wait_until


def pod(root: Path, uid: str, script: str) -> Path:
    pod_dir = root / uid
    pod_dir.mkdir(parents=True)
    task = {"argv": ["sh", "-c", script], "env": dict(os.environ), "cwd": str(pod_dir), "log": str(pod_dir / "log")}
    (pod_dir / "task.json").write_text(json.dumps(task))
    return pod_dir


@pytest.fixture
def client(tmp_path: Path) -> Iterator[AgentClient]:
    agent = AgentClient(tmp_path, sys.executable, idle_exit_s=1.0)
    yield agent
    for process in agent._agents:
        process.kill()
        process.wait()


def test_a_task_runs_once_and_its_outcome_is_recorded(tmp_path: Path, client: AgentClient) -> None:
    pod_dir = pod(tmp_path, "uid-1", "echo hello; sleep 0.5")
    assert client.request("run", "uid-1")["state"] == "started"
    assert client.request("run", "uid-1")["state"] == "running"
    wait_until(lambda: (pod_dir / "outcome.json").exists(), what="the outcome", timeout_s=20)
    assert client.request("run", "uid-1")["state"] == "done"  # a pod runs at most once
    outcome, state = read_json(pod_dir / "outcome.json"), read_json(pod_dir / "state.json")
    assert outcome is not None and state is not None
    assert (outcome["reason"], outcome["exit_code"]) == ("Completed", 0)
    assert isinstance(state["process"], dict) and state["process"]["pid"] == state["pid"]
    assert (pod_dir / "log").read_text() == "hello\n"


def test_cancel_kills_the_task(tmp_path: Path, client: AgentClient) -> None:
    pod_dir = pod(tmp_path, "uid-2", "sleep 60")
    client.request("run", "uid-2")
    assert client.request("cancel", "uid-2", why="test")["state"] == "cancelling"
    wait_until(lambda: (pod_dir / "outcome.json").exists(), what="the outcome", timeout_s=20)
    outcome = read_json(pod_dir / "outcome.json")
    assert outcome is not None and (outcome["reason"], outcome["message"]) == ("Killed", "test")


def test_a_path_for_a_pod_uid_is_refused(tmp_path: Path, client: AgentClient) -> None:
    pod(tmp_path, "uid-3", "true")
    for uid in ("../uid-3", "/etc", "a/b", ""):
        with pytest.raises(AgentError, match="not a pod uid"):
            client.request("run", uid)


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to become another user")
def test_another_user_cannot_talk_to_the_agent() -> None:
    root = Path(tempfile.mkdtemp(prefix="sgs-agent-"))  # every directory up to it is open to all: only the
    root.chmod(0o755)  # socket's own mode can stop a stranger
    client = AgentClient(root, sys.executable, idle_exit_s=1.0)
    try:
        pod(root, "uid-4", "true")
        client.request("cancel", "uid-4")  # the agent is up
        child = os.fork()
        if child == 0:  # pragma: no cover - the forked child reports through its exit status
            code = 3
            try:
                os.setuid(65534)
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stranger:
                    stranger.connect(str(root / SOCKET_FILE))
                code = 1
            except PermissionError:
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0, "a process of another user connected to the agent"
    finally:
        for process in client._agents:
            process.kill()
            process.wait()
        shutil.rmtree(root, ignore_errors=True)


def test_the_agent_exits_when_idle(tmp_path: Path, client: AgentClient) -> None:
    pod(tmp_path, "uid-5", "true")
    client.request("run", "uid-5")
    (agent,) = client._agents
    agent.wait(timeout=20)
    assert not (tmp_path / SOCKET_FILE).exists()
    pod(tmp_path, "uid-6", "true")
    assert client.request("run", "uid-6")["state"] == "started"  # a new agent was started for it


def test_a_task_that_ends_while_it_is_observed_keeps_its_own_outcome(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The observer reads the outcome, then the lock. A task that ends between the two (its outcome written, its
    lock freed) once read as "the node's agent stopped" and lost its exit code. The window is microseconds wide:
    the patch only holds the lock probe until the task has ended, to land in it every time."""
    from sgs_bridge.providers import process

    provider = process.ProcessProvider(tmp_path / "pods", agent_idle_exit_s=1.0)
    pod_dir = pod(provider.pods_root, "uid-race", "sleep 0.3; exit 3")
    (pod_dir / "lock").touch()
    try:
        assert provider.agent.request("run", "uid-race")["state"] == "started"
        real_probe = process._lock_held

        def probe_after_the_end(path: Path) -> bool:
            wait_until(lambda: (pod_dir / "outcome.json").exists(), what="the task's end", timeout_s=20)
            wait_until(lambda: not real_probe(path), what="the freed lock", timeout_s=20)
            return real_probe(path)

        monkeypatch.setattr(process, "_lock_held", probe_after_the_end)
        state = provider._plain_state("uid-race")
    finally:
        for agent in provider.agent._agents:
            agent.kill()
            agent.wait()
    assert (state.exit_code, state.reason) == (3, "Error"), state.message
    recorded = read_json(pod_dir / "outcome.json")
    assert recorded is not None and recorded["exit_code"] == 3 and "agent stopped" not in str(recorded["message"])

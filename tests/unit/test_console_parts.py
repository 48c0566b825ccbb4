"""The console's pure parts: the graph drawn per step whatever the fan-out, sign-in redirects kept on the
console, production refusing a weak session key, and sealed sessions that cannot be forged."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError
from sgs_console import graph
from sgs_console.auth import Session, Sessions, same_csrf
from sgs_console.settings import ConsoleSettings
from sgs_console.signin import safe_next

from sgs.kube import ClusterConfig

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def example_spec() -> dict[str, Any]:
    script = REPO / "examples" / "parallel_split" / "parallel_split.py"
    out = subprocess.run(
        [sys.executable, "-m", "sgs.cli.main", "compile", f"{script}:parallel_split"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    spec: dict[str, Any] = yaml.safe_load(out)["spec"]
    return spec


def test_the_graph_resolves_producers_through_the_map(example_spec: dict[str, Any]) -> None:
    nodes, frames = graph.build(example_spec)

    assert set(nodes) == {
        "ialtest_split_images",
        "correct.ialtest_correct_dark",
        "correct.ialtest_correct_flat",
        "ialtest_combine_images",
    }
    assert nodes["correct.ialtest_correct_dark"].inputs == {"ialtest_split_images"}
    assert nodes["correct.ialtest_correct_flat"].inputs == {"correct.ialtest_correct_dark"}
    assert nodes["ialtest_combine_images"].inputs == {"correct.ialtest_correct_dark", "correct.ialtest_correct_flat"}
    assert frames["correct"].members == ["correct.ialtest_correct_dark", "correct.ialtest_correct_flat"]
    assert [nodes[n].layer for n in nodes] == [0, 1, 2, 3]


def test_ten_thousand_tasks_of_a_map_are_one_box_with_counts(example_spec: dict[str, Any]) -> None:
    counts = {
        "correct.ialtest_correct_dark": {"Succeeded": 9000, "Running": 800, "Failed": 200},
        "correct.ialtest_correct_flat": {"Waiting": 10_000},
    }

    drawn = str(graph.svg(example_spec, counts, link="/tasks?step="))

    assert drawn.count('<g class="node">') == 4
    assert "10000 tasks: 9000 succeeded · 800 running · 200 failed" in drawn
    assert 'href="/tasks?step=correct.ialtest_correct_dark"' in drawn


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/", "/\\evil.example", "runs", ""])
def test_sign_in_never_redirects_off_the_console(target: str) -> None:
    assert safe_next(target) == "/runs"


def test_sign_in_keeps_a_console_path() -> None:
    assert safe_next("/runs/ns/r1?after=x") == "/runs/ns/r1?after=x"


@pytest.mark.parametrize("key", [None, "changeme", "short-but-random-9f3", "x" * 40])
def test_production_refuses_a_missing_or_weak_session_key(key: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SGS_CONSOLE_ENVIRONMENT", raising=False)
    with pytest.raises(ValidationError, match="session_key"):
        ConsoleSettings(session_key=key)


def test_production_takes_a_strong_session_key() -> None:
    settings = ConsoleSettings(session_key="q8Jt3vN0xw2LZpRk7sYb1fHc9mUe4aGd")
    assert settings.cookies_secure


def test_a_sealed_session_opens_and_a_forged_one_does_not() -> None:
    sessions = Sessions(
        ClusterConfig(server="https://127.0.0.1:6443", source="test"), "k" * 8 + "ey-of-test-2Zx9", 3600
    )
    session = Session(token="t0ken", user="alice", csrf="c" * 32, expires=4e9)
    sealed = sessions.seal(session)

    assert sessions.open(sealed) == session
    assert "t0ken" not in sealed  # encrypted, not merely signed
    assert sessions.open(sealed[:-4] + "AAAA") is None
    assert sessions.open("not-a-session") is None
    other = Sessions(ClusterConfig(server="https://127.0.0.1:6443", source="test"), "another-key-entirely-9", 3600)
    assert other.open(sealed) is None
    assert same_csrf(session, "c" * 32) and not same_csrf(session, "c" * 31 + "d") and not same_csrf(session, None)


def test_conditions_that_are_true_when_abnormal_are_not_drawn_as_failures() -> None:
    from sgs_console.filters import condition_class

    assert condition_class({"type": "PipelineChanged", "status": "False"}) == "ok"
    assert condition_class({"type": "Suspended", "status": "True"}) == "warn"
    assert condition_class({"type": "Complete", "status": "True"}) == "ok"
    assert condition_class({"type": "SiteReady", "status": "False"}) == "bad"
    assert condition_class({"type": "SiteReady", "status": "Unknown"}) == "unknown"

"""`sgs dev serve UNIT`, what Tilt supervises: one unit of the dev stack in the foreground, recorded in the stack's
state while it runs, stopped and forgotten on SIGTERM, and a copy left by a SIGKILLed serve stopped by the next
one, which keeps the service's port (its clients were given that address). Real PostgreSQL, NATS and archive."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sgs.dev.stack import load_state
from sgs.testing import wait_until
from sgs.testing._process import ProcessRecord

pytestmark = pytest.mark.integration


def sgs_dev(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "sgs.cli.main", "dev", *args]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)


def start_serve(unit: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "sgs.cli.main", "dev", "serve", unit],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def archive_processes() -> list[ProcessRecord]:
    unit = load_state().get("archive")
    return [] if unit is None else [record for record in unit.processes if record.is_alive()]


def ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def stack_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    env = {**os.environ, "SGS_CACHE": str(tmp_path / "cache")}
    monkeypatch.setenv("SGS_CACHE", env["SGS_CACHE"])  # load_state() here reads this test's stack
    started = sgs_dev("up", "--parts", "pg,nats", env=env)
    assert started.returncode == 0, started.stdout + started.stderr
    yield env
    sgs_dev("down", "--purge", env=env)


def test_serve_records_the_unit_and_forgets_it_on_sigterm(stack_env: dict[str, str], tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    serve = start_serve("archive", stack_env, log)
    wait_until(lambda: sgs_dev("status", "archive", env=stack_env).returncode == 0, what="archive served", timeout_s=90)
    url = str(load_state()["archive"].info["url"])
    assert ready(url)
    assert f"Uvicorn running on {url}" in log.read_text()  # the unit's own log, followed on stdout
    assert f"SGS_ARCHIVE_URL='{url}'" in sgs_dev("env", env=stack_env).stdout

    serve.send_signal(signal.SIGTERM)
    assert serve.wait(timeout=30) == 0
    assert "archive" not in load_state()
    assert not ready(url)
    refused = sgs_dev("status", "archive", env=stack_env)
    assert refused.returncode == 1 and "not running: archive" in refused.stdout


def test_a_copy_left_by_a_killed_serve_is_replaced_on_the_same_port(stack_env: dict[str, str], tmp_path: Path) -> None:
    first = start_serve("archive", stack_env, tmp_path / "first.log")
    wait_until(lambda: bool(archive_processes()), what="archive served", timeout_s=90)
    orphan = archive_processes()
    url = str(load_state()["archive"].info["url"])
    first.kill()  # as Tilt does after its grace period: the archive itself runs on, known only to the state file
    first.wait(timeout=10)
    assert ready(url)

    second = start_serve("archive", stack_env, tmp_path / "second.log")
    try:
        wait_until(
            lambda: bool(archive_processes()) and archive_processes() != orphan,
            what="the second serve's archive",
            timeout_s=90,
        )
        assert str(load_state()["archive"].info["url"]) == url
        assert ready(url)
        assert "stopped the copy that was running" in (tmp_path / "second.log").read_text()
        assert not any(record.is_alive() for record in orphan)
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=30) == 0


def test_serve_names_the_units_it_knows(tmp_path: Path) -> None:
    refused = sgs_dev("serve", "archiv", env={**os.environ, "SGS_CACHE": str(tmp_path / "cache")})
    assert refused.returncode == 1
    said = " ".join(refused.stdout.split())  # rich wraps the line at the terminal's width
    assert "FAILED: unknown unit 'archiv'; choose from archive, transfer, operator, bridge-site-a" in said

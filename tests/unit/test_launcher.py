"""The launcher on real processes: outcomes, limits on the whole process group, exact usage, idle work."""

from __future__ import annotations

import os
import time
from pathlib import Path

import psutil
import pytest

from sgs.launcher.identity import MARKER_ENV
from sgs.launcher.launcher import Finished, Launcher, LaunchSpec
from sgs.testing import wait_until


def spec(tmp_path: Path, script: str, **limits: float) -> LaunchSpec:
    return LaunchSpec(
        argv=["sh", "-c", script],
        cwd=tmp_path,
        env=dict(os.environ),
        log=tmp_path / "out.log",
        error_log=tmp_path / "err.log",
        ram_limit_bytes=int(limits["ram"]) if "ram" in limits else None,
        walltime_s=limits.get("walltime"),
    )


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_all(launcher: Launcher[str], timeout_s: float = 30.0) -> dict[str, Finished[str]]:
    done: dict[str, Finished[str]] = {}
    deadline = time.monotonic() + timeout_s
    while launcher.running:
        assert time.monotonic() < deadline, f"still running: {list(launcher.running)}"
        done.update((f.key, f) for f in launcher.wait(1.0))
    return done


def test_outcomes_logs_and_the_marker(tmp_path: Path) -> None:
    launcher: Launcher[str] = Launcher()
    launcher.start("ok", spec(tmp_path, f'echo "${MARKER_ENV}" > marker; echo out'))
    launcher.start("bad", spec(tmp_path, "echo first >&2; echo the reason >&2; exit 3"))
    done = wait_all(launcher)
    assert done["ok"].outcome.reason == "Completed" and done["ok"].outcome.exit_code == 0
    assert (tmp_path / "marker").read_text().strip() == done["ok"].child.identity.marker
    bad = done["bad"].outcome
    assert (bad.reason, bad.exit_code, bad.message) == ("Error", 3, "exit code 3: the reason")
    assert (tmp_path / "out.log").read_text() == "out\n"


def test_a_command_that_cannot_start_raises(tmp_path: Path) -> None:
    launcher: Launcher[str] = Launcher()
    with pytest.raises(FileNotFoundError):
        launcher.start("ghost", LaunchSpec(["no-such-program-sgs"], tmp_path, dict(os.environ), tmp_path / "log"))
    assert not launcher.running


def test_walltime_kills_the_whole_process_group(tmp_path: Path) -> None:
    launcher: Launcher[str] = Launcher()
    launcher.start("slow", spec(tmp_path, "sleep 30 & echo $! > child; wait", walltime=0.5))
    start = time.monotonic()
    (finished,) = wait_all(launcher).values()
    assert finished.outcome.reason == "DeadlineExceeded"
    assert "exceeded the limit of 0.5 s" in finished.outcome.message
    assert time.monotonic() - start < 5
    child = int((tmp_path / "child").read_text())
    wait_until(lambda: gone(child), what="the task's child killed", timeout_s=5)


def test_memory_over_the_limit_is_oomkilled(tmp_path: Path) -> None:
    launcher: Launcher[str] = Launcher()
    hog = "python3 -c 'import time; x = bytearray(300 * 2**20); time.sleep(30)'"
    launcher.start("hog", spec(tmp_path, hog, ram=100 * 2**20))
    (finished,) = wait_all(launcher).values()
    assert finished.outcome.reason == "OOMKilled"
    assert finished.outcome.usage.max_rss_mb > 100


def test_usage_is_exact_for_a_short_task(tmp_path: Path) -> None:
    """CPU and I/O of a task (and the children it reaped) come from the kernel at exit, not from samples."""
    launcher: Launcher[str] = Launcher()
    busy = "head -c 20000000 /dev/zero > /dev/null; i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done"
    launcher.start("busy", spec(tmp_path, busy))
    (finished,) = wait_all(launcher).values()
    usage = finished.outcome.usage
    assert usage.read_mb >= 19 and usage.write_mb >= 19  # head's copy, reaped by sh
    assert usage.cpu_s > 0.05
    assert usage.wall_s >= usage.cpu_s * 0.5


def test_kill_reports_why(tmp_path: Path) -> None:
    launcher: Launcher[str] = Launcher()
    launcher.start("victim", spec(tmp_path, "sleep 30"))
    launcher.kill("victim", "cancelled by the test")
    (finished,) = wait_all(launcher).values()
    assert (finished.outcome.reason, finished.outcome.message) == ("Killed", "cancelled by the test")


def test_idle_work_runs_while_waiting_and_an_exit_still_comes_first(tmp_path: Path) -> None:
    launcher: Launcher[str] = Launcher()
    launcher.start("quick", spec(tmp_path, "sleep 0.3"))
    steps: list[float] = []

    def idle() -> bool:
        if len(steps) >= 5:
            return False
        steps.append(time.monotonic())
        return True

    assert launcher.wait(0.05, idle=idle) == []  # nothing ended yet; the idle work was done meanwhile
    assert len(steps) == 5
    finished = launcher.wait(10.0, idle=idle)
    assert [f.key for f in finished] == ["quick"]


def test_wait_times_out_and_polls(tmp_path: Path) -> None:
    launcher: Launcher[str] = Launcher()
    launcher.start("long", spec(tmp_path, "sleep 30"))
    start = time.monotonic()
    assert launcher.wait(0.2) == []
    assert 0.15 <= time.monotonic() - start < 5
    assert launcher.wait(0) == []
    launcher.close()
    assert not launcher.running

"""The sandbox dynamic-resources functions run in: real subprocesses, real namespaces and limits. A function
sees no environment of its caller, no network, a temporary directory, bounded memory and time; whatever it does,
the caller gets an answer per file and keeps going."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from sgs.dynamic.registry import DynamicFunction, DynamicFunctions
from sgs.dynamic.sandbox import SandboxLimits, evaluate

HERE = Path(__file__).resolve().parent
FAST = SandboxLimits(timeout_s=3.0, startup_s=30.0, memory_bytes=1 << 30)


def function(name: str) -> DynamicFunction:
    return DynamicFunction(name, f"sandbox_functions:{name}", str(HERE))


def one_error(name: str, path: Path) -> str:
    evaluation = evaluate(function(name), [str(path)], FAST)
    [result] = evaluation.results
    assert result.resources is None and result.error is not None
    return result.error


@pytest.fixture
def number(tmp_path: Path) -> Path:
    path = tmp_path / "sizes.txt"
    path.write_text("3")
    return path


def namespaces_allowed() -> bool:
    unshare = shutil.which("unshare")
    return unshare is not None and subprocess.run([unshare, "-n", "true"], capture_output=True).returncode == 0


def test_a_function_gets_its_file_and_answers_with_resources(number: Path) -> None:
    evaluation = evaluate(function("size_from_text"), [str(number)], FAST)

    assert [(r.path, r.resources) for r in evaluation.results] == [(str(number), {"cores": 3})]


def test_the_callers_environment_and_directory_stay_out(
    number: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KUBECONFIG", "/root/.kube/config")
    monkeypatch.setenv("SGS_OPERATOR_DSN", "postgresql://sgs:secret@db/sgs")
    monkeypatch.chdir(tmp_path)

    error = one_error("report_environment", number)

    env = error.split("env=")[1].split(" cwd=")[0]
    assert env == "['HOME', 'LC_ALL', 'MKL_NUM_THREADS', 'OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'TMPDIR']"
    cwd = Path(error.split("cwd=")[1].split(" uid=")[0])
    assert cwd.name.startswith("sgs-dynamic-") and cwd != tmp_path
    assert not cwd.exists()  # removed after the call


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    server = socket.create_server(("127.0.0.1", 0))
    yield server
    server.close()


def test_the_network_is_out_of_reach(listener: socket.socket, tmp_path: Path) -> None:
    if not namespaces_allowed():
        pytest.skip("this kernel/container refuses network namespaces: the sandbox reports network 'shared'")
    port = tmp_path / "port.txt"
    port.write_text(str(listener.getsockname()[1]))

    evaluation = evaluate(function("connect_home"), [str(port)], FAST)

    assert evaluation.isolation["network"] == "isolated"
    [result] = evaluation.results
    assert result.error is not None and "connect_home" in result.error
    assert "Network is unreachable" in result.error or "Connection refused" in result.error


def test_a_function_that_hangs_is_stopped_and_later_files_wait_for_another_batch(number: Path) -> None:
    second = number.with_name("second.txt")
    second.write_text("1")

    evaluation = evaluate(function("hang"), [str(number), str(second)], FAST)

    [result] = evaluation.results  # the second file was not reached: the caller asks again later
    assert result.path == str(number)
    assert result.error is not None and "no answer within 3 s (stopped)" in result.error


def test_memory_beyond_the_limit_is_refused_to_the_function(number: Path) -> None:
    assert "MemoryError" in one_error("hog", number)


def test_a_crashing_function_is_reported_with_its_exit_status(number: Path) -> None:
    assert "exited with status 7" in one_error("die", number)


def test_an_answer_that_is_not_a_mapping_is_refused(number: Path) -> None:
    assert "returned list, not a mapping" in one_error("not_a_mapping", number)


def test_files_that_are_not_regular_files_are_not_handed_over(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)  # opening it for reading would block forever

    evaluation = evaluate(function("size_from_text"), [str(fifo), str(tmp_path / "missing")], FAST)

    errors = {r.path: r.error for r in evaluation.results}
    assert errors == {
        str(fifo): f"{fifo} is not a regular file",
        str(tmp_path / "missing"): f"cannot open {tmp_path / 'missing'}: No such file or directory",
    }


def test_only_installed_entry_points_are_known_and_the_administrator_can_narrow_them() -> None:
    installed = DynamicFunctions.discover("the operator")
    narrowed = DynamicFunctions.discover("the operator", allowed=[])

    assert installed.get("fits-header").target == "sgs.dynamic.builtin:fits_header"
    assert installed.problem("sandbox_functions:hang") is not None
    assert narrowed.problem("fits-header") == (
        "'fits-header' is installed but not allowed by the operator's administrator (allowed: none)"
    )

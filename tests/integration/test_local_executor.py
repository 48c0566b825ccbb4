"""The local executor on real subprocesses: the example pipeline, limits, retries, TMPDIR, crash and resume."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from sgs.dsl import ComputingResources, Executable, Input, Output, RetryPolicy, pipeline
from sgs.local import run_local
from sgs.planner import RunPhase
from sgs.testing import wait_until

ROOT = Path(__file__).parent.parent.parent
EXAMPLE = ROOT / "examples" / "parallel_split"
SGS = [sys.executable, "-m", "sgs.cli.main"]


def program(bin_dir: Path, name: str, body: str) -> None:
    """A small Python program on PATH taking ``--name=value`` arguments into ``args``."""
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / name
    path.write_text(
        f"#!{sys.executable}\n"
        "import sys, os, time, json\n"
        "args = dict(a[2:].split('=', 1) for a in sys.argv[1:])\n" + textwrap.dedent(body)
    )
    path.chmod(0o755)


def local_command(reference: str, workdir: Path, run_id: str, bin_dir: Path, *inputs: str) -> list[str]:
    """`sgs run --local` as a subprocess (so a test can kill -9 it), programs from ``bin_dir``."""
    given = [arg for pair in inputs for arg in ("--input", pair)]
    options = ["--workdir", str(workdir), "--run-id", run_id, "--no-progress", "--path", str(bin_dir)]
    return [*SGS, "run", "--local", reference, *given, *options]


def example_inputs() -> dict[str, str]:
    return {
        n: str(EXAMPLE / "inputs" / f"{n}.json") for n in ("images", "master_dark", "master_flat", "control_params")
    }


def test_example_pipeline_runs_and_status_shows_the_task_table(tmp_path: Path) -> None:
    args = [f"--input={k}={v}" for k, v in example_inputs().items()]
    done = subprocess.run(
        [
            *SGS,
            "run",
            "--local",
            f"{EXAMPLE / 'parallel_split.py'}:parallel_split",
            *args,
            "--workdir",
            str(tmp_path / "w"),
            "--run-id",
            "ps1",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Run ps1: Succeeded" in done.stdout
    combined = json.loads((tmp_path / "w/tasks/ialtest_combine_images/combined.json").read_text())
    quality = json.loads((tmp_path / "w/tasks/ialtest_combine_images/quality.json").read_text())
    assert combined["n_images"] == 4 and quality["n_images"] == 4
    status = subprocess.run([*SGS, "status", str(tmp_path / "w")], capture_output=True, text=True, check=True)
    rows = [line for line in status.stdout.splitlines() if "Succeeded" in line]
    for task in ("ialtest_split_images", "correct.ialtest_correct_dark[3]", "ialtest_combine_images"):
        assert any(task in row for row in rows), status.stdout
    assert len(rows) == 1 + 10  # the run line, split, 4 dark + 4 flat corrections, combine


def test_memory_limit_kills_and_the_retry_gets_more_memory(tmp_path: Path) -> None:
    program(
        tmp_path / "bin",
        "hog",
        """
        block = bytearray(int(args['megabytes']) * 2**20)
        for i in range(0, len(block), 4096): block[i] = 1
        time.sleep(1.5)
        open(args['out'], 'w').write('ok')
    """,
    )
    hog = Executable(
        command="hog",
        inputs=[Input("megabytes")],
        outputs=[Output("out")],
        resources=ComputingResources(cores=1, ram=0.1, walltime=0.1),
        retry=RetryPolicy(max=1, backoff=0, jitter=0, memory_multiplier=4.0),
    )

    @pipeline(outputs=("out",))
    def p(megabytes):  # type: ignore[no-untyped-def]
        return hog(megabytes=megabytes)

    result = run_local(p, {"megabytes": "200"}, tmp_path / "w", progress=False, extra_path=[tmp_path / "bin"])
    assert result.succeeded
    db = sqlite3.connect(tmp_path / "w" / "run.sqlite")
    attempts = db.execute("SELECT attempt, state, message FROM attempt ORDER BY attempt").fetchall()
    assert attempts[0][1] == "OOMKilled" and "exceeded the limit of 102 MiB" in attempts[0][2]
    assert attempts[1][1] == "Completed"
    requested = json.loads(db.execute("SELECT requested FROM task").fetchone()[0])
    assert requested["ram"] == pytest.approx(0.4)
    usage = json.loads(db.execute("SELECT usage FROM task").fetchone()[0])
    assert usage["max_rss_mb"] >= 200


def test_walltime_is_enforced(tmp_path: Path) -> None:
    program(tmp_path / "bin", "slow", "time.sleep(30)\n")
    slow = Executable(
        command="slow",
        inputs=[Input("x")],
        outputs=[Output("y")],
        resources=ComputingResources(walltime=1.0 / 3600),
        retry=RetryPolicy(max=0),
    )

    @pipeline(outputs=("y",))
    def p(x):  # type: ignore[no-untyped-def]
        return slow(x=x)

    start = time.monotonic()
    result = run_local(p, {"x": "1"}, tmp_path / "w", progress=False, extra_path=[tmp_path / "bin"])
    assert result.phase is RunPhase.FAILED
    assert time.monotonic() - start < 15
    db = sqlite3.connect(tmp_path / "w" / "run.sqlite")
    assert "DeadlineExceeded: walltime" in db.execute("SELECT message FROM task").fetchone()[0]


def test_tmpdir_is_private_and_removed_and_cores_are_honoured(tmp_path: Path) -> None:
    program(
        tmp_path / "bin",
        "scratch",
        """
        tmp = os.environ['TMPDIR']
        open(os.path.join(tmp, 'big.tmp'), 'w').write('x' * 1000)
        start = time.time(); time.sleep(0.8)
        json.dump({'tmp': tmp, 'start': start, 'end': time.time()}, open(args['out'], 'w'))
    """,
    )
    scratch = Executable(
        command="scratch",
        inputs=[Input("x")],
        outputs=[Output("out")],
        resources=ComputingResources(cores=2, tmpdir=1.0),
    )

    @pipeline(outputs=("a", "b"))
    def p(x):  # type: ignore[no-untyped-def]
        return scratch(x=x), scratch(x=x)

    result = run_local(p, {"x": "1"}, tmp_path / "w", cores=2, progress=False, extra_path=[tmp_path / "bin"])
    assert result.succeeded
    a, b = (json.loads(Path(str(result.outputs[k])).read_text()) for k in ("a", "b"))
    assert a["tmp"] != b["tmp"] and not Path(a["tmp"]).exists() and not Path(b["tmp"]).exists()
    assert a["end"] <= b["start"] or b["end"] <= a["start"], "two 2-core tasks overlapped on 2 cores"


def test_missing_command_fails_clearly_without_retries(tmp_path: Path) -> None:
    ghost = Executable(command="no-such-program-sgs", inputs=[Input("x")], outputs=[Output("y")])

    @pipeline(outputs=("y",))
    def p(x):  # type: ignore[no-untyped-def]
        return ghost(x=x)

    result = run_local(p, {"x": "1"}, tmp_path / "w", progress=False)
    assert result.phase is RunPhase.FAILED
    db = sqlite3.connect(tmp_path / "w" / "run.sqlite")
    (message,) = db.execute("SELECT message FROM task").fetchone()
    assert "cannot start 'no-such-program-sgs'" in message


def test_kill_9_mid_run_then_resume_redoes_no_finished_task(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    journal = tmp_path / "journal.txt"
    program(
        bin_dir,
        "step",
        f"""
        open({str(journal)!r}, 'a').write(os.environ['SGS_TASK_ID'] + '\\n')
        time.sleep(0.6)
        x = args['x']
        open(args['out'], 'w').write(open(x).read() if os.path.exists(x) else x)
    """,
    )
    (tmp_path / "chain.py").write_text(
        textwrap.dedent("""
        from sgs.dsl import ComputingResources, Executable, Input, Output, pipeline
        step = Executable(command="step", inputs=[Input("x")], outputs=[Output("out")],
                          resources=ComputingResources(cores=1))

        @pipeline(outputs=("out",))
        def chain(x):
            for _ in range(6):
                x = step(x=x)
            return x
    """)
    )
    command = local_command(f"{tmp_path / 'chain.py'}:chain", tmp_path / "w", "crash1", bin_dir, "x=seed")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if _succeeded(tmp_path / "w") >= 2:
            break
        time.sleep(0.1)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    finished_before = _succeeded_ids(tmp_path / "w")
    assert len(finished_before) >= 2
    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert second.returncode == 0, second.stderr
    runs = journal.read_text().split()
    for tid in finished_before:
        assert runs.count(tid) == 1, f"{tid} ran again after the restart: {runs}"
    assert sorted(set(runs)) == sorted(f"step_{i}" for i in range(1, 7))
    assert (tmp_path / "w/tasks/step_6/out").read_text() == "seed"


def _succeeded_ids(workdir: Path) -> list[str]:
    path = workdir / "run.sqlite"
    if not path.exists():
        return []
    try:
        db = sqlite3.connect(path)
        return [r[0] for r in db.execute("SELECT id FROM task WHERE state = 'Succeeded'")]
    except sqlite3.Error:
        return []


def _succeeded(workdir: Path) -> int:
    return len(_succeeded_ids(workdir))


def test_resume_refuses_a_different_pipeline(tmp_path: Path) -> None:
    program(tmp_path / "bin", "ok", "open(args['y'], 'w').write('1')\n")
    one = Executable(command="ok", inputs=[Input("x")], outputs=[Output("y")])
    two = Executable(command="ok", inputs=[Input("x")], outputs=[Output("y")], resources=ComputingResources(cores=2))

    @pipeline(outputs=("y",))
    def p1(x):  # type: ignore[no-untyped-def]
        return one(x=x)

    @pipeline(outputs=("y",))
    def p2(x):  # type: ignore[no-untyped-def]
        return two(x=x)

    assert run_local(p1, {"x": "1"}, tmp_path / "w", progress=False, extra_path=[tmp_path / "bin"]).succeeded
    from sgs.local import LocalRunError

    with pytest.raises(LocalRunError, match="different pipeline"):
        run_local(p2, {"x": "1"}, tmp_path / "w", progress=False, extra_path=[tmp_path / "bin"])


def test_dynamic_resources_from_an_upstream_json_file(tmp_path: Path) -> None:
    program(tmp_path / "bin", "estimate", "json.dump({'cores': 2, 'ram': 0.25}, open(args['res'], 'w'))\n")
    program(tmp_path / "bin", "work", "open(args['y'], 'w').write(os.environ['OMP_NUM_THREADS'])\n")
    estimate = Executable(command="estimate", inputs=[Input("x")], outputs=[Output("res", suffix=".json")])
    heavy = Executable(
        command="work",
        inputs=[Input("x"), Input("res")],
        outputs=[Output("y")],
        resources=ComputingResources(cores=1, ram=4.0, dynamic="res"),
    )

    @pipeline(outputs=("y",))
    def p(x):  # type: ignore[no-untyped-def]
        return heavy(x=x, res=estimate(x=x))

    result = run_local(p, {"x": "1"}, tmp_path / "w", cores=2, progress=False, extra_path=[tmp_path / "bin"])
    assert result.succeeded
    assert Path(str(result.outputs["y"])).read_text() == "2"
    db = sqlite3.connect(tmp_path / "w" / "run.sqlite")
    requested = json.loads(db.execute("SELECT requested FROM task WHERE id = 'heavy'").fetchone()[0])
    assert (requested["cores"], requested["ram"]) == (2, 0.25)


def test_dynamic_resources_from_an_installed_function_run_in_the_sandbox(tmp_path: Path) -> None:
    """The local executor runs the same entry points the same way as the operator (sandboxed), by name."""
    from astropy.io import fits

    from sgs.dynamic.builtin import fits_header

    program(
        tmp_path / "bin",
        "estimate",
        "from astropy.io import fits\n"
        "header = fits.Header([('HIERARCH SGS CORES', 2), ('HIERARCH SGS RAM', 0.25)])\n"
        "fits.PrimaryHDU(header=header).writeto(args['res'])\n",
    )
    program(tmp_path / "bin", "work", "open(args['y'], 'w').write(os.environ['OMP_NUM_THREADS'])\n")
    estimate = Executable(command="estimate", inputs=[Input("x")], outputs=[Output("res", suffix=".fits")])
    heavy = Executable(
        command="work",
        inputs=[Input("x"), Input("res")],
        outputs=[Output("y")],
        resources=ComputingResources(cores=1, ram=4.0, dynamic=("res", fits_header)),  # the installed function
    )

    @pipeline(outputs=("y",))
    def p(x):  # type: ignore[no-untyped-def]
        return heavy(x=x, res=estimate(x=x))

    assert p.spec().executable("heavy").resources.dynamic.function == "fits-header"  # type: ignore[union-attr]
    result = run_local(p, {"x": "1"}, tmp_path / "w", cores=2, progress=False, extra_path=[tmp_path / "bin"])
    assert result.succeeded
    assert Path(str(result.outputs["y"])).read_text() == "2"
    assert fits.getheader(tmp_path / "w" / "tasks" / "estimate" / "res.fits")["SGS CORES"] == 2


def test_a_function_that_is_not_installed_is_refused_before_anything_runs(tmp_path: Path) -> None:
    from sgs.local import LocalRunError

    heavy = Executable(
        command="true",
        inputs=[Input("x")],
        outputs=[Output("y")],
        resources=ComputingResources(dynamic=("x", "no-such-sizes")),
    )

    @pipeline(outputs=("y",))
    def p(x):  # type: ignore[no-untyped-def]
        return heavy(x=x)

    refused = re.escape("spec.executables[0].resources.dynamic.function: 'no-such-sizes' is not")
    with pytest.raises(LocalRunError, match=refused):
        run_local(p, {"x": "1"}, tmp_path / "w", progress=False)
    assert not (tmp_path / "w" / "tasks").exists()


def test_a_request_larger_than_the_machine_fails_with_the_reason(tmp_path: Path) -> None:
    gpu = Executable(command="true", inputs=[Input("x")], outputs=[Output("y")], resources=ComputingResources(gpus=1))

    @pipeline(outputs=("y",))
    def p(x):  # type: ignore[no-untyped-def]
        return gpu(x=x)

    result = run_local(p, {"x": "1"}, tmp_path / "w", gpus=0, progress=False)
    assert result.phase is RunPhase.FAILED
    db = sqlite3.connect(tmp_path / "w" / "run.sqlite")
    assert "needs 1 cores, 1 GiB, 1 GPUs; this executor offers" in db.execute("SELECT message FROM task").fetchone()[0]


ONE_STEP = """
from sgs.dsl import ComputingResources, Executable, Input, Output, RetryPolicy, pipeline
step = Executable(command="step", inputs=[Input("x")], outputs=[Output("out")],
                  resources=ComputingResources(cores=1), retry=RetryPolicy(max=1, backoff={backoff}, jitter=0))

@pipeline(outputs=("out",))
def one(x):
    return step(x=x)
"""


def one_step_command(tmp_path: Path, run_id: str, backoff: float = 0.0) -> list[str]:
    (tmp_path / "one.py").write_text(ONE_STEP.format(backoff=backoff))
    return local_command(f"{tmp_path / 'one.py'}:one", tmp_path / "w", run_id, tmp_path / "bin", "x=seed")


@contextlib.contextmanager
def orphans_reparented_here() -> Iterator[None]:
    """Become the child subreaper: orphans of our descendants become our children, and we reap them.

    This container's PID 1 does not reap orphans, so a task leader whose executor was killed would linger as a
    zombie (still holding its PID and group) instead of vanishing as it does under systemd; reaping it here gives
    the tests a normal host's behaviour.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    set_child_subreaper = 36
    libc.prctl(set_child_subreaper, 1, 0, 0, 0)
    try:
        yield
    finally:
        libc.prctl(set_child_subreaper, 0, 0, 0, 0)
        reap_orphans()


def reap_orphans() -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


def running_pid(workdir: Path) -> int | None:
    try:
        row = sqlite3.connect(workdir / "run.sqlite").execute("SELECT pid FROM task WHERE state = 'Running'").fetchone()
    except sqlite3.Error:
        return None
    return int(row[0]) if row and row[0] else None


def kill_9(process: subprocess.Popen[bytes]) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.wait()


def reaped(pid: int) -> bool:
    reap_orphans()
    return gone(pid)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_resume_spares_a_process_that_reuses_a_lost_tasks_pid(tmp_path: Path) -> None:
    """kill -9 the executor while a task runs; the task ends unwatched and its PID goes to an unrelated process
    (the record is pointed at that process, as the kernel would recycle the number). The resumed run must not
    kill it (the old check spared only processes older than the task), and must run the task again."""
    gate = tmp_path / "hold"
    gate.touch()
    program(
        tmp_path / "bin",
        "step",
        f"""
        while os.path.exists({str(gate)!r}): time.sleep(0.05)
        open(args['out'], 'w').write('done')
    """,
    )
    command = one_step_command(tmp_path, "recycled")
    with orphans_reparented_here():
        first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: running_pid(tmp_path / "w") is not None, what="the task running", timeout_s=60)
        kill_9(first)
        task_pid = running_pid(tmp_path / "w")
        assert task_pid is not None
        os.killpg(task_pid, signal.SIGKILL)  # the task ends while no executor watches it
        wait_until(lambda: reaped(task_pid), what="the task reaped", timeout_s=10)
        decoy = subprocess.Popen(["sleep", "120"], start_new_session=True)  # leads a group of its own, like a task
        try:
            db = sqlite3.connect(tmp_path / "w" / "run.sqlite")
            with db:
                db.execute(
                    "UPDATE task SET pid = ?, process = json_set(process, '$.pid', ?) WHERE state = 'Running'",
                    (decoy.pid, decoy.pid),
                )
            gate.unlink()
            second = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
            assert second.returncode == 0, second.stderr
            assert decoy.poll() is None, "the resumed run killed a process that only reuses the lost task's PID"
        finally:
            decoy.kill()
            decoy.wait()
    assert (tmp_path / "w/tasks/step/out").read_text() == "done"


def test_resume_kills_the_children_a_lost_task_left_running(tmp_path: Path) -> None:
    """kill -9 the executor while a task runs a child; then the task's leader dies and the child runs on in its
    process group. The resumed run kills that child (it carries the task's marker) before running the task again."""
    gate = tmp_path / "hold"
    gate.touch()
    child_file = tmp_path / "child.pid"
    program(
        tmp_path / "bin",
        "step",
        f"""
        import subprocess
        if os.path.exists({str(gate)!r}):
            child = subprocess.Popen(['sleep', '300'])
            open({str(child_file)!r}, 'w').write(str(child.pid))
            time.sleep(300)
        open(args['out'], 'w').write('done')
    """,
    )
    command = one_step_command(tmp_path, "orphans")
    with orphans_reparented_here():
        first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: child_file.exists() and child_file.read_text() != "", what="the child", timeout_s=60)
        kill_9(first)
        task_pid, child_pid = running_pid(tmp_path / "w"), int(child_file.read_text())
        assert task_pid is not None
        os.kill(task_pid, signal.SIGKILL)  # only the leader: its child runs on
        wait_until(lambda: reaped(task_pid), what="the leader reaped", timeout_s=10)
        assert not gone(child_pid)
        gate.unlink()
        second = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        assert second.returncode == 0, second.stderr
        assert gone(child_pid), "the lost task's child still runs after the resume"
    message = sqlite3.connect(tmp_path / "w" / "run.sqlite").execute("SELECT message FROM attempt").fetchall()
    assert (tmp_path / "w/tasks/step/out").read_text() == "done", message


def test_retry_times_are_persisted_as_wall_clock(tmp_path: Path) -> None:
    """A retry's due time survives a restart and a reboot only as wall-clock time (a monotonic clock restarts
    from zero at boot)."""
    marker = tmp_path / "failed-once"
    program(
        tmp_path / "bin",
        "step",
        f"""
        if not os.path.exists({str(marker)!r}):
            open({str(marker)!r}, 'w').write('')
            sys.exit(1)
        open(args['out'], 'w').write('done')
    """,
    )
    begin = time.time()
    done = subprocess.run(one_step_command(tmp_path, "wall", backoff=0.5), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    (record,) = sqlite3.connect(tmp_path / "w" / "run.sqlite").execute("SELECT record FROM task").fetchone()
    not_before = json.loads(record)["not_before"]
    assert begin + 0.5 <= not_before <= time.time(), f"not_before={not_before} is not a wall-clock time"


def test_a_retry_due_while_the_executor_was_down_runs_at_once_on_resume(tmp_path: Path) -> None:
    """kill -9 the executor while a failed task waits ten minutes for its retry; the record is then aged by them
    (its due time, a wall-clock instant, now lies in the past, as a restart after a long stop or a reboot finds it).
    The resumed run retries it straight away."""
    marker = tmp_path / "failed-once"
    program(
        tmp_path / "bin",
        "step",
        f"""
        if not os.path.exists({str(marker)!r}):
            open({str(marker)!r}, 'w').write('')
            sys.exit(1)
        open(args['out'], 'w').write('done')
    """,
    )
    command = one_step_command(tmp_path, "aged", backoff=600)
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db_path = tmp_path / "w" / "run.sqlite"

    def retrying() -> bool:
        try:
            return bool(sqlite3.connect(db_path).execute("SELECT 1 FROM task WHERE state = 'Retrying'").fetchone())
        except sqlite3.Error:
            return False

    wait_until(retrying, what="the task waiting for its retry", timeout_s=60)
    kill_9(first)
    db = sqlite3.connect(db_path)
    (record,) = db.execute("SELECT record FROM task").fetchone()
    aged = json.loads(record)
    assert aged["not_before"] > time.time() + 500
    aged["not_before"] = time.time() - 1
    with db:
        db.execute("UPDATE task SET record = ?", (json.dumps(aged),))
    start = time.monotonic()
    second = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    assert second.returncode == 0, second.stderr
    assert time.monotonic() - start < 20
    assert (tmp_path / "w/tasks/step/out").read_text() == "done"


def test_a_reused_tmpdir_is_empty_for_the_next_task(tmp_path: Path) -> None:
    """TMPDIRs are emptied and handed to later tasks (no mkdir + rmdir per task): none sees another's files."""
    program(
        tmp_path / "bin",
        "litter",
        """
        tmp = os.environ['TMPDIR']
        found = sorted(os.listdir(tmp))
        os.makedirs(os.path.join(tmp, 'sub', 'deeper'))
        open(os.path.join(tmp, 'sub', 'deeper', 'left.tmp'), 'w').write('x')
        open(os.path.join(tmp, 'left.tmp'), 'w').write('x')
        json.dump({'tmp': tmp, 'found': found}, open(args['out'], 'w'))
    """,
    )
    litter = Executable(command="litter", inputs=[Input("x")], outputs=[Output("out")])

    names = [f"o{i}" for i in range(8)]

    @pipeline(outputs=tuple(names))
    def p(x):  # type: ignore[no-untyped-def]
        products = []
        for _ in names:
            products.append(litter(x=x))
        return tuple(products)

    result = run_local(p, {"x": "1"}, tmp_path / "w", cores=1, progress=False, extra_path=[tmp_path / "bin"])
    assert result.succeeded
    seen = [json.loads(Path(str(result.outputs[k])).read_text()) for k in names]
    assert all(s["found"] == [] for s in seen), seen
    assert len({s["tmp"] for s in seen}) < len(names), "each task made a TMPDIR of its own: nothing was reused"
    assert not (tmp_path / "w" / "scratch").exists() or not any((tmp_path / "w" / "scratch").iterdir())

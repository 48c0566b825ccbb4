"""The local executor: runs a pipeline's tasks as subprocesses on this machine, driven by the planner.

Work directory layout::

    run.sqlite                 run record (crash-safe state, profiling, lineage)
    tasks/<task>/              one directory per task: its outputs, inputs/*.json lists, logs/
    scratch/<n>/               TMPDIR of a running task; emptied when it ends (and kept, empty, for the next task)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sgs import __version__
from sgs.dynamic.registry import DynamicFunctions
from sgs.dynamic.resolve import apply_answers, resolve_pending
from sgs.launcher.identity import MARKER_ENV, ProcessIdentity, kill_leftover
from sgs.launcher.launcher import Child, Finished, Launcher, LaunchSpec
from sgs.launcher.usage import Outcome
from sgs.local.process import command_argv
from sgs.local.record import RunRecord
from sgs.model.pipeline import Pipeline, PipelineSpec
from sgs.naming import task_dir_name
from sgs.planner import Capacity, Planner, PlannerConfig, RunPhase, Task, TaskState, Value

ProgressHook = Callable[[Planner], None]
# Ready tasks whose directories are made ahead of their launch: a few launches' worth, so TMPDIRs emptied by
# ended tasks are reused rather than a thousand made at once for a wide fan-out.
PREPARE_AHEAD = 4


class LocalRunError(Exception):
    """The run cannot start or resume as asked (bad inputs, a different pipeline under the same run id)."""


@dataclass
class LocalRunResult:
    run_id: str
    workdir: Path
    phase: RunPhase
    outputs: dict[str, Value]
    counts: dict[str, int]
    tasks: dict[str, str] = field(default_factory=dict)

    @property
    def succeeded(self) -> bool:
        return self.phase is RunPhase.SUCCEEDED


def default_run_id(pipeline_name: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d_%H%M%S_%f")
    return f"RUN_{stamp}_{pipeline_name}"


def machine_capacity(cores: int | None, memory_gib: float | None, gpus: int) -> Capacity:
    total_ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30  # psutil costs ~0.1 s to import
    return Capacity(cores=cores or os.cpu_count() or 1, ram=memory_gib or total_ram, gpus=gpus)


class LocalExecutor:
    def __init__(
        self,
        pipeline: Pipeline,
        inputs: Mapping[str, Value],
        workdir: Path,
        run_id: str | None = None,
        capacity: Capacity | None = None,
        extra_path: list[Path] | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.workdir = workdir.resolve()
        self.capacity = capacity or machine_capacity(None, None, 0)
        self.extra_path = [p.resolve() for p in extra_path or []]
        self.record = RunRecord(self.workdir)
        # The user's own machine and account: every installed entry point may run (still by name, sandboxed,
        # so a function behaves here as it will under the operator).
        self.functions = DynamicFunctions.discover("this machine")
        problems = self.functions.pipeline_problems(pipeline.spec)
        if problems:
            raise LocalRunError("; ".join(f"spec.{problem}" for problem in problems))
        self.inputs = {k: _absolute(v) for k, v in inputs.items()}
        self.run_id = self._open_run(run_id)
        # Directories of tasks that became ready are made while the launcher waits, so a launch only launches.
        self._unprepared: deque[Task] = deque()
        self._prepared: dict[str, Path] = {}  # task id -> the TMPDIR made for it
        self._scratch_to_empty: deque[Path] = deque()
        self._free_scratch: list[Path] = []  # empty TMPDIRs: a new task takes one instead of a mkdir + rmdir
        self._scratch_made = 0
        self.planner = Planner(
            pipeline.spec,
            self.run_id,
            self.inputs,
            PlannerConfig(capacity=self.capacity),
            on_ready=self._unprepared.append,
        )
        self.launcher: Launcher[str] = Launcher()
        self._base_env = self._base_environment()
        shutil.rmtree(self.workdir / "scratch", ignore_errors=True)  # TMPDIRs of a stopped executor's tasks
        for area in ("tasks", "scratch"):
            (self.workdir / area).mkdir(exist_ok=True)
        self._resume()

    # ------------------------------------------------------------------ set-up and resume

    def _open_run(self, run_id: str | None) -> str:
        text = self.pipeline.spec.model_dump_json(by_alias=True, exclude_none=True)
        digest = self.pipeline.spec.digest()
        existing = self.record.run()
        if existing is not None:
            if run_id is not None and existing.id != run_id:
                raise LocalRunError(f"{self.workdir} already holds run {existing.id}, not {run_id}")
            if existing.pipeline_digest != digest:
                raise LocalRunError(f"run {existing.id} was started with a different pipeline; use a new workdir")
            if existing.inputs != self.inputs:
                raise LocalRunError(f"run {existing.id} was started with other inputs: {existing.inputs}")
            return existing.id
        new_id = run_id or default_run_id(self.pipeline.metadata.name)
        self.record.create_run(new_id, text, digest, self.pipeline.spec.source, self.inputs, time.time())
        return new_id

    def _resume(self) -> None:
        rows = list(self.record.tasks())
        killed = {
            row.id: kill_leftover(ProcessIdentity.from_dict(row.process))
            for row in rows
            if row.state == TaskState.RUNNING.value
        }
        lost = self.planner.restore(row.record for row in rows)
        for task in lost:
            self.planner.requeue(task.id)
            leftovers = f" (killed {n} process(es) it left running)" if (n := killed.get(task.id)) else ""
            self._save(task, message=f"requeued: the executor that ran it stopped{leftovers}", process=None)

    # ------------------------------------------------------------------ main loop

    def run(self, on_progress: ProgressHook | None = None) -> LocalRunResult:
        """Launch, wait for an exit, launch into the freed slots, then record what ended; until the run ends.

        A slot is refilled straight after its task is reaped, from tasks already ready; the ended task's
        bookkeeping (outputs, records, TMPDIR removal, lineage) runs while the new task does.
        """
        self.record.set_run_status("Running", None)
        try:
            with self.record.transaction():
                self._launch_ready()
            while not self.planner.finished:
                finished = self.launcher.wait(self._wait_timeout(), idle=self._idle)
                with self.record.transaction():
                    self._launch_ready()
                    for done in finished:
                        self._finish(self.planner.tasks[done.key], done)
                    self._resolve_dynamic_resources()
                    self._launch_ready()
                if on_progress is not None:
                    on_progress(self.planner)
        except BaseException:
            self.launcher.close()
            raise
        finally:
            shutil.rmtree(self.workdir / "scratch", ignore_errors=True)
        phase = self.planner.phase
        self.record.set_run_status(phase.value, time.time(), _run_message(self.planner))
        if on_progress is not None:
            on_progress(self.planner)
        return LocalRunResult(
            run_id=self.run_id,
            workdir=self.workdir,
            phase=phase,
            outputs=self.planner.outputs() if phase is RunPhase.SUCCEEDED else {},
            counts=self.planner.summary(),
            tasks={t.id: t.state.value for t in self.planner.tasks.values()},
        )

    def _wait_timeout(self) -> float | None:
        """Until the next retry is due (None: only an exit can change anything)."""
        due = self.planner.next_retry_at()
        if due is None:
            return None if self.launcher.running else 0.05
        return max(0.0, due - time.time())

    def _launch_ready(self) -> None:
        started = [
            child for task in self.planner.take(time.time(), self._free_capacity()) if (child := self._launch(task))
        ]
        for child in started:
            self._record_start(self.planner.tasks[child.key], child)
        if not self.launcher.running:
            self._fail_unplaceable()

    def _free_capacity(self) -> Capacity:
        free = self.capacity
        for tid in self.launcher.running:
            free = free.minus(self.planner.tasks[tid].resources)
        return free

    def _fail_unplaceable(self) -> None:
        """Nothing runs, yet ready tasks wait: those asking more than this machine has fail, clearly."""
        for task in self.planner.take(time.time(), None):
            need = task.resources
            if self.capacity.fits(need):
                self.planner.requeue(task.id)
                continue
            message = (
                f"needs {need.cores} cores, {need.ram:g} GiB, {need.gpus} GPUs; this executor offers "
                f"{self.capacity.cores} cores, {self.capacity.ram:.1f} GiB, {self.capacity.gpus} GPUs"
            )
            self.planner.fail(task.id, time.time(), message, permanent=True)
            self._save(task, message=message)

    def _idle(self) -> bool:
        """One step of deferred work (a TMPDIR emptied, a ready task's directories made); False when none is left."""
        if self._scratch_to_empty:
            scratch = self._scratch_to_empty.popleft()
            if _empty_directory(scratch):
                self._free_scratch.append(scratch)
            return True
        while self._unprepared and len(self._prepared) < PREPARE_AHEAD:
            task = self._unprepared.popleft()
            if task.state is TaskState.READY and task.id not in self._prepared:
                self._prepare(task)
                return True
        return False

    def _outdir(self, task: Task) -> Path:
        return self.workdir / "tasks" / task_dir_name(task.id)

    def _prepare(self, task: Task) -> None:
        outdir = self._outdir(task)
        for directory in (outdir, outdir / "logs"):  # the parent, tasks/, is made once
            directory.mkdir(exist_ok=True)
        if self._free_scratch:
            scratch = self._free_scratch.pop()
        else:
            scratch = self.workdir / "scratch" / str(self._scratch_made)
            self._scratch_made += 1
            scratch.mkdir()
        self._prepared[task.id] = scratch

    def _launch(self, task: Task) -> Child[str] | None:
        """Start the task's process: its directories are usually made already, its arguments and environment now."""
        if task.id not in self._prepared:
            self._prepare(task)
        scratch = self._prepared.pop(task.id)  # a retry is prepared again, with an empty TMPDIR
        outdir = self._outdir(task)
        logs = outdir / "logs"
        argv = command_argv(task.executable.command, self._arguments(task, outdir))
        suffix = f".{task.attempt}" if task.attempt else ""
        spec = LaunchSpec(
            argv=argv,
            cwd=outdir,
            env=self._environment(task, scratch),
            log=logs / f"stdout{suffix}.log",
            error_log=logs / f"stderr{suffix}.log",
            ram_limit_bytes=task.resources.ram_bytes,
            walltime_s=task.resources.walltime_seconds,
        )
        try:
            return self.launcher.start(task.id, spec)
        except OSError as err:
            now = time.time()
            message = f"cannot start {argv[0]!r}: {err.strerror or err}"
            self.planner.fail(task.id, now, message, permanent=True)
            self._save(task, message=message, started=now, ended=now)
            return None

    def _record_start(self, task: Task, child: Child[str]) -> None:
        self._save(
            task,
            pid=child.pid,
            process=child.identity.as_dict(),
            started=child.started_at,
            ended=None,
            exit_code=None,
            message=None,
            command=" ".join(child.spec.argv),
            requested=task.resources.model_dump(exclude={"dynamic"}),
            outdir=str(child.spec.cwd),
        )
        self.record.save_attempt(task.id, task.attempt, TaskState.RUNNING.value, started=child.started_at)

    def _arguments(self, task: Task, outdir: Path) -> list[str]:
        args = []
        inputs = self.planner.task_inputs(task.id)
        for port in task.executable.inputs:
            if port.name in inputs:
                args.append(f"--{port.name}={_materialise(inputs[port.name], outdir, port.name)}")
        for out in task.executable.outputs:
            args.append(f"--{out.name}={outdir / (out.name + out.suffix)}")
        return args

    def _base_environment(self) -> dict[str, str]:
        env = dict(os.environ)
        # The programs of pipelines installed beside sgs (console scripts) live next to this interpreter.
        scripts = str(Path(sys.executable).parent)
        env["PATH"] = os.pathsep.join([*(str(p) for p in self.extra_path), scripts, env.get("PATH", "")])
        return env

    def _environment(self, task: Task, scratch: Path) -> dict[str, str]:
        env = dict(self._base_env)
        env["TMPDIR"] = str(scratch)
        env["SGS_RUN_ID"] = self.run_id
        env["SGS_TASK_ID"] = task.id
        env["SGS_ATTEMPT"] = str(task.attempt)
        env["OMP_NUM_THREADS"] = str(task.resources.cores)
        return env

    def _finish(self, task: Task, done: Finished[str]) -> None:
        ended = time.time()
        spec, outcome = done.child.spec, done.outcome
        self._scratch_to_empty.append(Path(spec.env["TMPDIR"]))
        usage = outcome.usage.as_dict()
        attempt = task.attempt
        if outcome.succeeded:
            outcome = self._collect_outputs(task, spec.cwd, outcome)
        if outcome.succeeded:
            message = None
        else:
            message = f"{outcome.reason}: {outcome.message}"
            self.planner.fail(task.id, time.time(), message, oom=outcome.reason == "OOMKilled")
        self.record.save_attempt(
            task.id,
            attempt,
            outcome.reason,
            ended=ended,
            exit_code=outcome.exit_code,
            message=message,
            usage=usage,
        )
        self._save(
            task,
            ended=ended,
            exit_code=outcome.exit_code,
            message=message,
            usage=usage,
            lineage=self._lineage(task, spec) if outcome.succeeded else None,
        )

    def _collect_outputs(self, task: Task, outdir: Path, outcome: Outcome) -> Outcome:
        outputs = {o.name: str(outdir / (o.name + o.suffix)) for o in task.executable.outputs}
        missing = [name for name, path in outputs.items() if not Path(path).exists()]
        if missing:
            return Outcome(outcome.exit_code, outcome.usage, "Error", f"exited 0 but did not write {missing}")
        lists: dict[str, list[str]] = {}
        for port in self.planner.list_ports(task.id):
            try:
                lists[port] = _read_list(Path(outputs[port]))
            except ValueError as err:
                return Outcome(outcome.exit_code, outcome.usage, "Error", str(err))
        self.planner.succeed(task.id, outputs, lists)
        return outcome

    def _lineage(self, task: Task, spec: LaunchSpec) -> dict[str, Any]:
        """Per output: the exact input files it derives from, the executable, command line, environment."""
        inputs = self.planner.task_inputs(task.id)
        env_digest = hashlib.sha256(
            json.dumps({k: v for k, v in spec.env.items() if k not in _VOLATILE_ENV}, sort_keys=True).encode()
        ).hexdigest()
        outputs = {}
        for out in task.executable.outputs:
            names = out.lineage if out.lineage is not None else [p.name for p in task.executable.inputs]
            used = sorted({v for n in names if n in inputs for v in _flatten(inputs[n])})
            outputs[out.name] = {"path": str(spec.cwd / (out.name + out.suffix)), "inputs": used}
        return {
            "run": self.run_id,
            "task": task.id,
            "attempt": task.attempt,
            "executable": task.executable.name,
            "image": task.executable.image,
            "command": " ".join(spec.argv),
            "environment_sha256": env_digest,
            "sgs_version": __version__,
            "outputs": outputs,
        }

    def _resolve_dynamic_resources(self) -> None:
        pending = self.planner.pending_dynamic()
        if pending:
            answers = resolve_pending(pending, self.functions)
            for task, message in apply_answers(self.planner, pending, answers):
                self._save(task, message=message)

    def _save(self, task: Task, **columns: Any) -> None:
        self.record.save_task(self.planner.record(task.id), **columns)

    def close(self) -> None:
        self.record.close()


_VOLATILE_ENV = {"TMPDIR", "SGS_RUN_ID", "SGS_TASK_ID", "SGS_ATTEMPT", MARKER_ENV, "OLDPWD", "PWD", "SHLVL", "_"}


def _empty_directory(path: Path) -> bool:
    """Remove what a task left in its TMPDIR; True when the directory is there, empty, to be used again."""
    try:
        left = list(path.iterdir())
    except OSError:
        return False
    for entry in left:  # most tasks leave nothing: no system call beyond the listing
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                entry.unlink()
    return True


def _run_message(planner: Planner) -> str | None:
    failed = [t for t in planner.tasks.values() if t.state is TaskState.FAILED]
    if not failed:
        return None
    first = failed[0]
    return f"{len(failed)} task(s) failed; first: {first.id}: {first.failure}"


def _absolute(value: Value) -> Value:
    if isinstance(value, list):
        return [_absolute(v) for v in value]
    path = Path(value)
    return str(path.resolve()) if path.exists() else value


def _materialise(value: Value, outdir: Path, name: str) -> str:
    """Scalars go on the command line as they are; lists are written to a JSON file whose path is passed."""
    if isinstance(value, str):
        return value
    target = outdir / "inputs" / f"{name}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(value, indent=1))
    return str(target)


def _read_list(path: Path) -> list[str]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"list output {path.name} is not a JSON list: {err}") from err
    if not isinstance(data, list) or not all(isinstance(x, str) for x in data):
        raise ValueError(f"list output {path.name} must be a JSON array of paths")
    return [x if Path(x).is_absolute() else str((path.parent / x).resolve()) for x in data]


def _flatten(value: Value) -> list[str]:
    if isinstance(value, str):
        return [value]
    return [x for v in value for x in _flatten(v)]


def run_local(
    pipeline: Pipeline | PipelineSpec | Any,
    inputs: Mapping[str, Value | Path],
    workdir: Path,
    run_id: str | None = None,
    cores: int | None = None,
    memory_gib: float | None = None,
    gpus: int = 0,
    progress: bool = True,
    extra_path: list[Path] | None = None,
) -> LocalRunResult:
    """Run a pipeline (a @pipeline function, a Pipeline, or a spec) locally; resume if ``workdir`` has a run."""
    from sgs.local.progress import RunProgress

    resolved = as_pipeline(pipeline)
    executor = LocalExecutor(
        resolved,
        {k: _as_value(v) for k, v in inputs.items()},
        workdir,
        run_id=run_id,
        capacity=machine_capacity(cores, memory_gib, gpus),
        extra_path=extra_path,
    )
    try:
        if not progress:
            return executor.run()
        with RunProgress(executor.run_id) as bar:
            return executor.run(bar.update)
    finally:
        executor.close()


def _as_value(value: Value | Path) -> Value:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list):
        return [_as_value(v) for v in value]
    return value


def as_pipeline(obj: Any) -> Pipeline:
    from sgs.dsl.load import k8s_name
    from sgs.dsl.trace import PipelineFunction
    from sgs.model.base import ObjectMeta

    if isinstance(obj, Pipeline):
        return obj
    if isinstance(obj, PipelineSpec):
        return Pipeline(metadata=ObjectMeta(name="pipeline"), spec=obj)
    if isinstance(obj, PipelineFunction):
        return Pipeline(metadata=ObjectMeta(name=k8s_name(obj.name)), spec=obj.spec())
    raise TypeError(f"not a pipeline: {obj!r}")

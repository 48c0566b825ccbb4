"""The Slurm provider: each pod is one batch job (sbatch), watched with `scontrol show job`, cancelled with
scancel, looked up in `sacct -c` once the controller has forgotten it.

The job runs `python -m sgs_bridge.runner` (the same runner as the process provider, limits left to Slurm)
so that usage is profiled and the exit code recorded beside the log. Every job carries the pod UID in its
comment; a marker file written before sbatch and the job id written after it make submission idempotent
across a bridge crash at any point.

With a container runtime (``container_runtime="crun"``) the job's task is ``crun run`` of the pod's bundle,
written at submission by the same ``sgs_bridge.container.ContainerMode`` as the process provider's (image
resolved only in the image stores, refused before any sbatch); Slurm still enforces time and memory, crun the
image, the mounts and the container's cgroup limits where the node has cgroups.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from sgs_bridge import container as oci
from sgs_bridge.podspec import TaskSpec
from sgs_bridge.providers.base import (
    BackendUnavailableError,
    Capacity,
    SubmitRefusedError,
    prepare_pod_dir,
    read_json,
    tail_text,
    write_json_atomically,
)
from sgs_bridge.providers.slurm_states import (
    COMMENT_PREFIX,
    exit_code_of,
    job_state,
    parse_node_capacity,
    parse_show_job,
)
from sgs_bridge.runner import OUTCOME_FILE, TASK_FILE
from sgs_bridge.state import JobState, Phase

JOB_ID_FILE = "slurm_job_id"
SUBMITTING_FILE = "slurm_submitting"
SCRIPT_FILE = "job.sh"
COMMAND_TIMEOUT_S = 30.0
INHERITED_PREFIXES = ["SLURM_", "CUDA_", "GPU_", "ROCR_", "OMP_NUM_THREADS"]
UNREACHABLE_WORDS = (
    "Unable to contact slurm controller",
    "Socket timed out",
    "Connection refused",
    "Could not establish a configuration source",
    "Zero Bytes were transmitted",
    "Communication connection failure",
)


class SlurmProvider:
    name = "slurm"

    def __init__(
        self,
        pods_root: Path,
        *,
        partition: str | None = None,
        gpu_partition: str | None = None,
        extra_args: Sequence[str] = (),
        apptainer: str | None = None,
        python: str = sys.executable,
        env: Mapping[str, str] | None = None,
        container_runtime: str = "none",
        image_stores: Sequence[Path] = (),
        crun: str = "crun",
        umoci: str = "umoci",
    ) -> None:
        if container_runtime not in oci.CONTAINER_RUNTIMES:
            raise ValueError(f"container runtime: must be one of {oci.CONTAINER_RUNTIMES}, got {container_runtime!r}")
        if container_runtime != "none" and apptainer:
            raise ValueError("container runtime: not with apptainer")
        self.pods_root = pods_root
        self.partition = partition
        self.gpu_partition = gpu_partition
        self.extra_args = list(extra_args)
        self.apptainer = apptainer
        self.python = python
        self.env = dict(env if env is not None else os.environ)
        self.container_runtime = container_runtime
        self.container_mode = (
            oci.ContainerMode(image_stores, pods_root.parent, crun=crun, umoci=umoci)
            if container_runtime != "none"
            else None
        )
        pods_root.mkdir(parents=True, exist_ok=True)

    @property
    def containers(self) -> bool:
        return self.container_mode is not None

    # --- commands ------------------------------------------------------------------------------

    async def run_command(self, *argv: str) -> tuple[int, str, str]:
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as error:
            raise BackendUnavailableError(f"{argv[0]}: {error}") from error
        try:
            out, err = await asyncio.wait_for(process.communicate(), COMMAND_TIMEOUT_S)
        except TimeoutError as error:
            process.kill()
            await process.wait()
            raise BackendUnavailableError(f"{argv[0]} did not answer in {COMMAND_TIMEOUT_S:.0f} s") from error
        return process.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")

    async def checked_command(self, *argv: str) -> str:
        code, out, err = await self.run_command(*argv)
        if code != 0:
            raise BackendUnavailableError(f"{' '.join(argv[:3])}: {err.strip() or out.strip()}")
        return out

    # --- the node ------------------------------------------------------------------------------

    async def capacity(self) -> Capacity:
        text = await self.checked_command("scontrol", "show", "node", "-o")
        cpus, memory_mb, gpus, tmp_mb = parse_node_capacity(text)
        return Capacity(cpus=cpus, memory_bytes=memory_mb * 2**20, gpus=gpus, ephemeral_storage_bytes=tmp_mb * 2**20)

    # --- submission ----------------------------------------------------------------------------

    def sbatch_options(self, spec: TaskSpec) -> list[str]:
        """The sbatch options for a pod: what the tests assert in `scontrol show job`."""
        options = [
            f"--job-name={spec.namespace}.{spec.name}",
            f"--comment={COMMENT_PREFIX}{spec.uid}",
            f"--output={spec.log_path}",
            f"--chdir={spec.working_dir}",
            "--ntasks=1",
            f"--cpus-per-task={max(1, math.ceil(spec.cpus))}",
            # A pod runs at most once; retries are the Job controller's decision, not Slurm's.
            "--no-requeue",
        ]
        if spec.memory_bytes:
            options.append(f"--mem={math.ceil(spec.memory_bytes / 2**20)}M")
        if spec.walltime_s:
            options.append(f"--time={math.ceil(spec.walltime_s / 60)}")
        if spec.gpus:
            options.append(f"--gres=gpu:{spec.gpus}")
        if spec.tmp_bytes:
            options.append(f"--tmp={math.ceil(spec.tmp_bytes / 2**20)}M")
        partition = spec.partition or (self.gpu_partition if spec.gpus else None) or self.partition
        if partition:
            options.append(f"--partition={partition}")
        return [*options, *self.extra_args]

    async def submit(self, spec: TaskSpec) -> str:
        pod_dir = spec.pod_dir
        known = _read_text(pod_dir / JOB_ID_FILE)
        if known:
            return known
        if (pod_dir / SUBMITTING_FILE).exists():
            # A bridge died around sbatch: the job may exist; its comment names the pod.
            found = await self._find_by_comment(spec.uid)
            if found:
                (pod_dir / JOB_ID_FILE).write_text(found)
                return found
        await asyncio.to_thread(self._prepare, spec)
        (pod_dir / SUBMITTING_FILE).touch()
        code, out, err = await self.run_command(
            "sbatch", "--parsable", *self.sbatch_options(spec), str(pod_dir / SCRIPT_FILE)
        )
        if code != 0:
            message = sbatch_error(err or out)
            if any(word in message for word in UNREACHABLE_WORDS):
                raise BackendUnavailableError(message)
            raise SubmitRefusedError(message)
        job_id = out.strip().split(";")[0]
        (pod_dir / JOB_ID_FILE).write_text(job_id)
        return job_id

    def _prepare(self, spec: TaskSpec) -> None:
        container = self.container_mode.bundle(spec) if self.container_mode is not None else None
        prepare_pod_dir(spec)
        argv = spec.argv
        if self.apptainer:
            image = spec.env.get("SGS_IMAGE", "")
            if image:
                argv = [self.apptainer, "exec", "--bind", str(spec.pod_dir), image, *argv]
        task: dict[str, object] = {
            "argv": argv,
            "env": spec.env,
            "cwd": str(spec.working_dir),
            "log": str(spec.log_path),
            "enforce": False,  # Slurm enforces memory and time itself
            "inherit_env_prefixes": INHERITED_PREFIXES,
        }
        if container is not None and self.container_mode is not None:
            task = self.container_mode.task(spec, task, container)  # the runner removes the container at the end
        write_json_atomically(spec.pod_dir / TASK_FILE, task)
        script = (
            "#!/bin/bash\n"
            f"# sgs bridge: pod {spec.namespace}/{spec.name} (uid {spec.uid})\n"
            f"exec {shlex.quote(self.python)} -m sgs_bridge.runner {shlex.quote(str(spec.pod_dir))}\n"
        )
        path = spec.pod_dir / SCRIPT_FILE
        path.write_text(script)
        path.chmod(0o755)

    async def _find_by_comment(self, uid: str) -> str | None:
        text = await self.checked_command("scontrol", "show", "job", "-o")
        for job_id, fields in parse_show_job(text).items():
            if fields.get("Comment") == f"{COMMENT_PREFIX}{uid}":
                return job_id
        return None

    # --- observation ---------------------------------------------------------------------------

    async def observe(self, jobs: Mapping[str, str]) -> dict[str, JobState]:
        text = await self.checked_command("scontrol", "show", "job", "-o")
        listing = {} if "No jobs in the system" in text else parse_show_job(text)
        states = {}
        for uid, job_id in jobs.items():
            fields = listing.get(job_id)
            if fields is None:
                states[uid] = await self._forgotten(uid, job_id)
            else:
                states[uid] = self._state(uid, job_id, fields)
        return states

    def _state(self, uid: str, job_id: str, fields: Mapping[str, str]) -> JobState:
        pod_dir = self.pods_root / uid
        terminal = fields.get("JobState", "") not in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING")
        log_tail = tail_text(_log_of(pod_dir), 16 * 1024) if terminal else ""
        state = job_state(job_id, fields, log_tail)
        if state.phase.terminal:
            state = _with_runner_usage(state, read_json(pod_dir / OUTCOME_FILE))
        image_id = self.container_mode.image_id(pod_dir / TASK_FILE) if self.container_mode else ""
        return dataclasses.replace(state, extra={**state.extra, "imageID": image_id}) if image_id else state

    async def _forgotten(self, uid: str, job_id: str) -> JobState:
        """A job the controller no longer lists (MinJobAge passed): ask the job completion log."""
        code, out, _ = await self.run_command("sacct", "-c", "-n", "-P", "-j", job_id, "-o", "JobID,State,ExitCode")
        for line in out.splitlines() if code == 0 else []:
            parts = line.split("|")
            if len(parts) >= 3 and parts[0] == job_id:
                fields = {"JobState": parts[1].split()[0], "ExitCode": parts[2], "Reason": "None"}
                return self._state(uid, job_id, fields)
        outcome = read_json(self.pods_root / uid / OUTCOME_FILE)
        if outcome is not None:
            code_value = outcome.get("exit_code")
            exit_code = int(code_value) if isinstance(code_value, int) else 1
            fields = {"JobState": "COMPLETED" if exit_code == 0 else "FAILED", "ExitCode": f"{exit_code}:0"}
            return self._state(uid, job_id, fields)
        return JobState(Phase.UNKNOWN, job_id, message="not in scontrol nor sacct -c")

    async def cancel(self, job_id: str, uid: str) -> None:
        code, out, err = await self.run_command("scancel", job_id)
        if code != 0 and "Invalid job id" not in err and "already completing or completed" not in err:
            raise BackendUnavailableError(f"scancel {job_id}: {err.strip() or out.strip()}")

    def log_path(self, uid: str, container: str) -> Path:
        return self.pods_root / uid / f"{container}.log"

    def job_of(self, uid: str) -> str | None:
        return _read_text(self.pods_root / uid / JOB_ID_FILE) or None

    async def close(self) -> None:
        return None


def _with_runner_usage(state: JobState, outcome: dict[str, object] | None) -> JobState:
    """Prefer the runner's profile (CPU time, peak RSS, I/O) where it lived to write one."""
    if outcome is None or not isinstance(outcome.get("usage"), dict):
        return state
    usage = dict(outcome["usage"])  # type: ignore[call-overload]
    if state.usage:
        usage.update({key: value for key, value in state.usage.items() if key not in usage})
    return JobState(
        state.phase,
        state.job_id,
        state.reason,
        state.message,
        state.exit_code,
        state.started_at,
        state.finished_at,
        usage,
        state.backend_state,
    )


def _log_of(pod_dir: Path) -> Path:
    task = read_json(pod_dir / TASK_FILE) or {}
    return Path(str(task.get("log", pod_dir / "main.log")))


def _read_text(path: Path) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return ""


def sbatch_error(text: str) -> str:
    lines = [line.removeprefix("sbatch: error: ").strip() for line in text.splitlines() if line.strip()]
    return "; ".join(lines) or "sbatch failed without a message"


__all__ = ["SlurmProvider", "exit_code_of", "sbatch_error"]

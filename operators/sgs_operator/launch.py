"""What a Run's task becomes at its Site, as pure functions of the plan: the planner's configuration from the
Site's capacity, the Site as a Job sees it (selector, toleration, mounts), and the Job of a task's attempt.

At an S3 Site without a shared directory (``sgs_operator.objects``) the Job runs the command under
``sgs task exec`` with a manifest of the task's objects in ``SGS_TASK_MANIFEST``: an environment value rather
than a ConfigMap, so a task is still one API object (a ConfigMap per attempt would double the writes of a
fan-out and outlive its Job), and it reaches every provider (the bridge's process and Slurm providers pass
the environment; a kubelet does). A variable is limited (Linux: 128 KiB per string), so the manifest is compact
JSON and a task whose manifest exceeds ``MANIFEST_LIMIT`` fails with that reason instead of a pod that
cannot start (a list input of some 500 objects or more)."""

from __future__ import annotations

from typing import Any

from sgs.local.process import command_argv
from sgs.model.run import RunSpec
from sgs.model.site import SiteSpec
from sgs.planner import Capacity, Planner, PlannerConfig, Task, Value
from sgs.planner.policy import DEFAULT_RETRY
from sgs.task import (
    ACCESS_KEY_ENV,
    MANIFEST_ENV,
    SCRATCH_REFERENCE,
    SECRET_KEY_ENV,
    TaskInput,
    TaskList,
    TaskManifest,
    TaskOutput,
)
from sgs_operator.jobs import RunRef, SitePlacement, TaskAttempt, build_job
from sgs_operator.objects import BucketRunStorage, TaskStorage
from sgs_operator.storage import Mounts, StorageError

MANIFEST_LIMIT = 96 * 1024  # bytes of SGS_TASK_MANIFEST: under Linux's 128 KiB per variable, with room to spare

RAM_PER_CORE_GIB = 4.0  # Sites declare cores only; the fitness score needs a memory capacity too


def planner_config(spec: RunSpec, site: SiteSpec) -> PlannerConfig:
    cores = max(site.capacity.cores, 1)
    capacity = Capacity(cores=cores, ram=cores * RAM_PER_CORE_GIB, gpus=site.capacity.gpus)
    return PlannerConfig(capacity=capacity, retry=spec.retry or DEFAULT_RETRY, priority=float(spec.priority))


def site_placement(name: str, site: SiteSpec, mounts: Mounts) -> SitePlacement:
    """The Site as a Job sees it: the Run's directory read-write, what the tasks read read-only."""
    return SitePlacement(
        name=name,
        node_selector=dict(site.compute.node_selector),
        toleration=site.compute.toleration,
        mounts=mounts.host_mounts(),
    )


def task_job(
    run: RunRef,
    site: SitePlacement,
    storage: TaskStorage,
    planner: Planner,
    task: Task,
    image: str,
    tmpdir: str,
    wrapper: list[str] | None = None,
) -> dict[str, Any]:
    """The Job of a task's current attempt: argv and env name its inputs and outputs (list inputs are written
    to a file in the task's directory first; at an S3 Site, the wrapper downloads and writes them)."""
    if isinstance(storage, BucketRunStorage):
        return build_job(run, site, object_task(run, storage, planner, task, image, wrapper or []), tmpdir)
    outputs = storage.outputs(task.id, task.executable)
    inputs = planner.task_inputs(task.id)
    args: list[str] = []
    env = {
        "SGS_RUN": run.name,
        "SGS_RUN_UID": run.uid,
        "SGS_TASK_ID": task.id,
        "SGS_ATTEMPT": str(task.attempt),
        "SGS_OUTPUT_DIR": storage.task_path(task.id),
    }
    for port in task.executable.inputs:
        if port.name in inputs:
            value = storage.materialise(task.id, port.name, inputs[port.name])
            args.append(f"--{port.name}={value}")
            env[f"SGS_INPUT_{port.name.upper()}"] = value
    for out in task.executable.outputs:
        args.append(f"--{out.name}={outputs[out.name]}")
        env[f"SGS_OUTPUT_{out.name.upper()}"] = outputs[out.name]
    attempt = TaskAttempt(
        tid=task.id,
        attempt=task.attempt,
        argv=command_argv(task.executable.command, args),
        resources=task.resources,
        image=image,
        env=env,
    )
    return build_job(run, site, attempt, tmpdir)


def _run_env(run: RunRef, task: Task) -> dict[str, str]:
    return {"SGS_RUN": run.name, "SGS_RUN_UID": run.uid, "SGS_TASK_ID": task.id, "SGS_ATTEMPT": str(task.attempt)}


def object_task(
    run: RunRef, storage: BucketRunStorage, planner: Planner, task: Task, image: str, wrapper: list[str]
) -> TaskAttempt:
    """A task at an S3 Site: its command under the wrapper, every object it reads or writes named in the manifest
    and seen by the command as a file of its scratch directory (``$(SGS_SCRATCH)/in/...``, ``.../out/...``)."""
    manifest = ObjectManifest(storage)
    inputs = planner.task_inputs(task.id)
    args: list[str] = []
    env = {**_run_env(run, task), "SGS_OUTPUT_DIR": f"{SCRATCH_REFERENCE}/out"}
    for port in task.executable.inputs:
        if port.name in inputs:
            value = manifest.input(port.name, inputs[port.name])
            args.append(f"--{port.name}={value}")
            env[f"SGS_INPUT_{port.name.upper()}"] = value
    lists = planner.list_ports(task.id)
    for out, key in zip(task.executable.outputs, storage.output_keys(task.id, task.executable).values(), strict=True):
        local = manifest.output(out.name, out.suffix, key, out.name in lists)
        args.append(f"--{out.name}={local}")
        env[f"SGS_OUTPUT_{out.name.upper()}"] = local
    env[MANIFEST_ENV] = manifest.json(task.id)
    credentials = storage.bucket.credentials
    secret_env = (
        {
            ACCESS_KEY_ENV: (credentials.name, credentials.access_key_key),
            SECRET_KEY_ENV: (credentials.name, credentials.secret_key_key),
        }
        if credentials is not None
        else {}
    )
    return TaskAttempt(
        tid=task.id,
        attempt=task.attempt,
        argv=[*wrapper, "--", *command_argv(task.executable.command, args)],
        resources=task.resources,
        image=image,
        env=env,
        secret_env=secret_env,
    )


class ObjectManifest:
    """The manifest of one task attempt, built port by port; each method returns what the command is given."""

    def __init__(self, storage: BucketRunStorage) -> None:
        self.storage = storage
        self.inputs: list[TaskInput] = []
        self.lists: list[TaskList] = []
        self.outputs: list[TaskOutput] = []

    def input(self, port: str, value: Value) -> str:
        """An object becomes a downloaded file, a list of objects a JSON file of theirs; anything else (a plain
        value, a file under the Site's read-only roots) is passed as it is."""
        if isinstance(value, str):
            key = self.storage.bucket.key_of(value)
            if key is None:
                return value
            return f"{SCRATCH_REFERENCE}/{self._download(key, f'in/{port}/')}"
        items: list[str | list[str]] = []
        for i, item in enumerate(value):
            if isinstance(item, str):
                items.append(self._download(self._key(item, f"{port}[{i}]"), f"in/{port}/{i:05d}-"))
                continue
            inner: list[str] = []
            for j, part in enumerate(item):
                if not isinstance(part, str):
                    raise StorageError(f"input {port}[{i}][{j}]: lists nested deeper than two are not staged")
                inner.append(self._download(self._key(part, f"{port}[{i}][{j}]"), f"in/{port}/{i:05d}-{j:05d}-"))
            items.append(inner)
        local = f"in/{port}.json"
        self.lists.append(TaskList(local=local, items=items))
        return f"{SCRATCH_REFERENCE}/{local}"

    def _key(self, item: str, where: str) -> str:
        key = self.storage.bucket.key_of(item)
        if key is None:
            raise StorageError(
                f"input {where}: {item!r} is not an object of s3://{self.storage.bucket.bucket}: a list input at an "
                "S3 Site names objects only"
            )
        return key

    def _download(self, key: str, prefix: str) -> str:
        """``key`` into ``<prefix><its name>`` of the scratch directory, checked against the archive's checksums
        when it is an archive input (else those recorded with the object); the local path."""
        local = f"{prefix}{_base(key)}"
        expected = self.storage.inputs.get(key)
        self.inputs.append(TaskInput(key=key, local=local, checksums=expected))
        return local

    def output(self, name: str, suffix: str, key: str, is_list: bool) -> str:
        local = f"out/{name}{suffix}"
        self.outputs.append(TaskOutput(local=local, key=key, list=is_list))
        return f"{SCRATCH_REFERENCE}/{local}"

    def json(self, tid: str) -> str:
        bucket = self.storage.bucket
        manifest = TaskManifest(
            site=bucket.site,
            endpoint=bucket.endpoint,
            bucket=bucket.bucket,
            secure=bucket.secure,
            inputs=self.inputs,
            lists=self.lists,
            outputs=self.outputs,
        )
        text = manifest.model_dump_json(exclude_defaults=True)
        if len(text.encode()) > MANIFEST_LIMIT:
            raise StorageError(
                f"task {tid}: its manifest for sgs task exec is {len(text.encode()):,} bytes, over the "
                f"{MANIFEST_LIMIT:,} an environment variable may hold ({len(self.inputs)} input objects): split "
                "the list input with @parallel, or run it at a Site with a shared storage.path"
            )
        return text


def _base(key: str) -> str:
    return key.rsplit("/", 1)[-1]

"""What a Run's task becomes at its Site, as pure functions of the plan: the planner's configuration from the
Site's capacity, the Site as a Job sees it (selector, toleration, mounts), and the Job of a task's attempt."""

from __future__ import annotations

from typing import Any

from sgs.local.process import command_argv
from sgs.model.run import RunSpec
from sgs.model.site import SiteSpec
from sgs.planner import Capacity, Planner, PlannerConfig, Task
from sgs.planner.policy import DEFAULT_RETRY
from sgs_operator.jobs import RunRef, SitePlacement, TaskAttempt, build_job
from sgs_operator.storage import Mounts, RunStorage

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
    run: RunRef, site: SitePlacement, storage: RunStorage, planner: Planner, task: Task, image: str, tmpdir: str
) -> dict[str, Any]:
    """The Job of a task's current attempt: argv and env name its inputs and outputs (list inputs are written
    to a file in the task's directory first)."""
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

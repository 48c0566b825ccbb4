"""The planner's pending dynamic resources → overrides: the step both executors share."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Sequence
from typing import Any

from sgs.dynamic.registry import DynamicFunctions
from sgs.dynamic.sandbox import SandboxLimits, evaluate
from sgs.planner import Planner, Task, Value

MAX_JSON_BYTES = 64 * 1024  # a resources mapping is a few dozen bytes; a huge file is a mistake or an attack

Answer = dict[str, Any] | str  # overrides, or why there are none


def resolve_pending(
    pending: Sequence[tuple[Task, Value]],
    functions: DynamicFunctions,
    limits: SandboxLimits | None = None,
    readable: Callable[[str], str] | None = None,
    isolation: dict[str, str] | None = None,
) -> dict[str, Answer]:
    """Task id → overrides, or the reason they cannot be had; tasks left out were not reached this time.

    ``readable`` vets each file first (the operator confines it to the Site's roots) and returns the path to
    read; ``isolation`` (if given) receives what the sandbox achieved, for the caller's log.
    """
    answers: dict[str, Answer] = {}
    by_function: dict[str, dict[str, list[str]]] = {}  # function → path → tasks reading it
    for task, value in pending:
        dynamic = task.executable.resources.dynamic
        assert dynamic is not None
        if not isinstance(value, str):
            answers[task.id] = "dynamic resources must come from a single file"
            continue
        try:
            path = readable(value) if readable is not None else value
        except ValueError as err:
            answers[task.id] = str(err)
            continue
        if dynamic.function is None:
            answers[task.id] = read_json_resources(path)
        elif (problem := functions.problem(dynamic.function)) is not None:
            answers[task.id] = problem
        else:
            by_function.setdefault(dynamic.function, {}).setdefault(path, []).append(task.id)
    for name, files in by_function.items():
        evaluation = evaluate(functions.get(name), list(files), limits)
        if isolation is not None:
            isolation.update(evaluation.isolation)
        for result in evaluation.results:
            for tid in files[result.path]:
                answers[tid] = result.resources if result.resources is not None else result.error or "no answer"
    return answers


def apply_answers(
    planner: Planner, pending: Sequence[tuple[Task, Value]], answers: dict[str, Answer]
) -> list[tuple[Task, str]]:
    """Give the planner each answer; returns the tasks refused for good, with the reason (to record)."""
    rejected = []
    for task, value in pending:
        answer = answers.get(task.id)
        if answer is None:
            continue  # not reached this time: a sandbox batch stopped early, or the step's share was used
        try:
            if isinstance(answer, str):
                raise ValueError(answer)
            # A refused mapping leaves the task on the planner's dynamic list, to be rejected here.
            planner.resolve_dynamic(task.id, answer)
        except (ValueError, TypeError) as err:
            message = f"dynamic resources from {value}: {err}"
            planner.reject_dynamic(task.id, message)
            rejected.append((task, message))
    return rejected


def read_json_resources(path: str) -> Answer:
    """The file as a resources mapping (a regular file, bounded in size), or why it is not one."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO must not block us
    except OSError as err:
        return f"cannot read {path}: {err.strerror or err}"
    with os.fdopen(fd, "rb") as stream:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return f"{path} is not a regular file"
        data = stream.read(MAX_JSON_BYTES + 1)
    if len(data) > MAX_JSON_BYTES:
        return f"{path} is larger than {MAX_JSON_BYTES // 1024} KiB: not a resources mapping"
    try:
        result = json.loads(data)
    except ValueError as err:
        return f"{path} is not JSON: {err}"
    if not isinstance(result, dict):
        return "dynamic resources must be a mapping"
    return result

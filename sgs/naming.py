"""Deterministic names: the same Run, task and attempt always give the same Kubernetes object name.

That is what makes a crashed operator safe to restart: creating an object that already exists is a no-op.
"""

from __future__ import annotations

import hashlib
import re

MAX_NAME = 63
_HASH_LEN = 8


def task_id(step: str, indices: tuple[int, ...]) -> str:
    """``correct.ialtest_correct_dark[3]`` for item 3 of a map; the step name alone outside maps."""
    if not indices:
        return step
    return f"{step}[{','.join(str(i) for i in indices)}]"


def parse_task_id(tid: str) -> tuple[str, tuple[int, ...]]:
    if not tid.endswith("]") or "[" not in tid:
        return tid, ()
    step, _, rest = tid[:-1].rpartition("[")
    return step, tuple(int(x) for x in rest.split(","))


def dns_label(text: str) -> str:
    """Lower-case alphanumerics and '-', no leading/trailing '-'."""
    label = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return label or "x"


def short_hash(text: str, length: int = _HASH_LEN) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def object_name(run: str, tid: str, attempt: int, limit: int = MAX_NAME) -> str:
    """``<run>-<task-path>-<attempt>`` as a DNS label; beyond ``limit`` characters, truncated plus a hash.

    Step names are checked at compile time to stay distinct once sanitised, so the readable form is unique.
    """
    raw = f"{run}-{tid}-{attempt}"
    name = dns_label(raw)
    if len(name) <= limit:
        return name
    digest = short_hash(raw)
    keep = limit - len(digest) - len(str(attempt)) - 2
    return f"{name[:keep].rstrip('-')}-{digest}-{attempt}"


def task_dir_name(tid: str) -> str:
    """A file-system friendly directory name for a task's outputs, unique per task id."""
    safe = re.sub(r"[^A-Za-z0-9_.\-]+", "_", tid).strip("._") or "task"
    if safe == tid:
        return safe
    return f"{safe}-{short_hash(tid, 6)}"

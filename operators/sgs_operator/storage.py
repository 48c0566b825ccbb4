"""Where a Run's task outputs live on a POSIX Site, and reading what the planner needs from them.

Paths are deterministic (``<root>/<namespace>/<run>/<task dir>/<output><suffix>``) so a restarted operator
finds the outputs of tasks that finished while it was down. List outputs and dynamic resources are read with
the local executor's readers: both executors hand the planner the same values.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sgs.local.executor import _read_dynamic, _read_list
from sgs.model.pipeline import ExecutableSpec
from sgs.model.run import RunInput
from sgs.model.site import SiteSpec, StorageKind
from sgs.naming import task_dir_name
from sgs.planner import Value


class StorageError(ValueError):
    """The Run cannot use this storage (kind not supported, input not a file path)."""


@dataclass(frozen=True)
class RunStorage:
    root: Path  # <root>/<namespace>/<run>

    @classmethod
    def for_run(cls, site: SiteSpec, output_prefix: str | None, namespace: str, run: str) -> RunStorage:
        if output_prefix is not None:
            base = posix_path(output_prefix, "spec.outputPrefix")
        elif site.storage.kind is StorageKind.POSIX and site.storage.path:
            base = Path(site.storage.path)
        else:
            raise StorageError(
                f"site storage kind {site.storage.kind.value!r}: the operator writes outputs to POSIX storage "
                "only; set spec.outputPrefix to a shared directory"
            )
        return cls(base / namespace / run)

    def task_dir(self, tid: str) -> Path:
        return Path(self.task_path(tid))

    def task_path(self, tid: str) -> str:
        """``task_dir`` as text: a fan-out builds thousands of these, and pathlib's parsing was most of it."""
        return f"{self.root}/{task_dir_name(tid)}"

    def outputs(self, tid: str, executable: ExecutableSpec) -> dict[str, str]:
        directory = self.task_path(tid)
        return {o.name: f"{directory}/{o.name}{o.suffix}" for o in executable.outputs}

    def materialise(self, tid: str, name: str, value: Value) -> str:
        """Scalars go on the command line; lists become a JSON file in the task's directory."""
        if isinstance(value, str):
            return value
        target = self.task_dir(tid) / "inputs" / f"{name}.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(value, indent=1))
        return str(target)

    def prepare(self, tid: str) -> None:
        Path(self.task_path(tid)).mkdir(parents=True, exist_ok=True)


def missing_outputs(outputs: dict[str, str]) -> list[str]:
    return [name for name, path in outputs.items() if not Path(path).exists()]


def read_list(path: str) -> list[str]:
    return _read_list(Path(path))


def read_dynamic(value: Value, function: str | None) -> dict[str, Any]:
    return _read_dynamic(value, function)


def posix_path(uri: str, field: str) -> Path:
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    if "://" in uri or not uri.startswith("/"):
        raise StorageError(f"{field}: {uri!r} is not an absolute path or file:// URI")
    return Path(uri)


def resolve_inputs(inputs: dict[str, RunInput]) -> dict[str, Value]:
    """Run inputs as planner values; archive queries need the archive service, which is not wired yet."""
    values: dict[str, Value] = {}
    for name, given in inputs.items():
        where = f"spec.inputs.{name}"
        if given.uri is not None:
            values[name] = str(posix_path(given.uri, f"{where}.uri"))
        elif given.uris is not None:
            values[name] = [str(posix_path(u, f"{where}.uris[{i}]")) for i, u in enumerate(given.uris)]
        else:
            raise StorageError(f"{where}.query: archive queries are not resolved by the operator yet")
    return values

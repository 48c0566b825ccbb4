"""Where a Run's files are on a POSIX Site, which host directories its tasks may see, and reading its outputs.

A Site declares the host directories its tasks may see (``spec.storage.path``, the storage root, and
``spec.storage.readOnlyPaths``); every path a Run names — its inputs, its ``outputPrefix``, the contents of the
list outputs the operator reads, the files it reads dynamic resources from — must lie under one of them once
``..`` and symlinks are resolved (``Roots.confine``). A Job mounts only such directories: its inputs'
directories read-only, the Run's own output directory read-write (``Mounts``).

Paths are deterministic (``<root>/<namespace>/<run>/<task dir>/<output><suffix>``) so a restarted operator
finds the outputs of tasks that finished while it was down. List outputs are read with the local executor's
reader: both executors hand the planner the same values.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sgs.local.executor import _read_list
from sgs.model.pipeline import ExecutableSpec
from sgs.model.run import RunInput, RunSpec
from sgs.model.site import SiteSpec
from sgs.naming import task_dir_name
from sgs.planner import Planner, Value
from sgs_operator.jobs import HostMount


class StorageError(ValueError):
    """A path the Run may not use (not a file path, not a regular file, ...)."""


class OutsideRootsError(StorageError):
    """A path outside every host directory the Site declares."""


@dataclass(frozen=True)
class Roots:
    """A Site's declared host directories, as the operator sees them (symlinks resolved)."""

    site: str
    writable: str | None  # spec.storage.path
    read_only: tuple[str, ...] = ()

    @classmethod
    def of(cls, name: str, site: SiteSpec) -> Roots:
        writable = os.path.realpath(site.storage.path) if site.storage.path else None
        return cls(name, writable, tuple(os.path.realpath(p) for p in site.storage.read_only_paths))

    def all(self) -> tuple[str, ...]:
        return ((self.writable,) if self.writable else ()) + self.read_only

    def holding(self, resolved: str) -> str | None:
        """The root ``resolved`` lies under (or is), if any."""
        return next((root for root in self.all() if _under(resolved, root)), None)

    def describe(self) -> str:
        parts = ([f"{self.writable} (storage path)"] if self.writable else []) + [
            f"{p} (read-only)" for p in self.read_only
        ]
        return ", ".join(parts) or "none declared"

    def confine(self, path: str, where: str) -> str:
        """``path`` resolved (``..``, symlinks), if it lies under one of the roots; else why not, naming ``where``."""
        resolved = _realpath(path, where)
        if self.holding(resolved) is None:
            raise OutsideRootsError(
                f"{where}: {_shown(path, resolved)} is outside Site {self.site}'s storage roots ({self.describe()})"
            )
        return resolved

    def confine_writable(self, path: str, where: str) -> str:
        resolved = _realpath(path, where)
        if self.writable is None:
            raise OutsideRootsError(
                f"{where}: Site {self.site} declares no storage path (spec.storage.path), the only place a Run "
                "may write"
            )
        if not _under(resolved, self.writable):
            raise OutsideRootsError(
                f"{where}: {_shown(path, resolved)} is outside Site {self.site}'s storage path {self.writable} "
                "(Runs write only under it)"
            )
        return resolved

    def mount_dir(self, resolved: str) -> str | None:
        """The directory to mount so a task sees ``resolved``: its parent, but never above its root."""
        root = self.holding(resolved)
        if root is None:
            return None
        parent = resolved.rsplit("/", 1)[0] or "/"
        return parent if _under(parent, root) else resolved


@dataclass
class Mounts:
    """The host directories a Run's Jobs mount: its own directory read-write, what it reads read-only."""

    run_dir: str | None  # None: the Run's outputs are objects (an S3 Site), no directory is written
    read_only: set[str] = field(default_factory=set)

    def add(self, directories: Iterable[str]) -> bool:
        """Read-only directories to add; True if any was new (the Jobs built next mount them)."""
        before = len(self.read_only)
        run_dir = self.run_dir
        self.read_only.update(d for d in directories if run_dir is None or not _under(d, run_dir))
        return len(self.read_only) != before

    def host_mounts(self) -> tuple[HostMount, ...]:
        """Outermost read-only directories, then the Run's directory (a mount inside a read-only one comes after
        it, so it stays writable)."""
        mounts = [HostMount(p, True) for p in _outermost(self.read_only)]
        if self.run_dir is not None:
            mounts.append(HostMount(self.run_dir, False))
        return tuple(sorted(mounts, key=lambda m: (len(m.path), m.path)))


@dataclass(frozen=True)
class RunStorage:
    root: Path  # <storage path or outputPrefix, resolved>/<namespace>/<run>
    roots: Roots

    @classmethod
    def for_run(cls, name: str, site: SiteSpec, output_prefix: str | None, namespace: str, run: str) -> RunStorage:
        roots = Roots.of(name, site)
        if output_prefix is not None:
            base = roots.confine_writable(str(posix_path(output_prefix, "spec.outputPrefix")), "spec.outputPrefix")
        elif site.storage.path:
            base = roots.confine_writable(site.storage.path, f"Site {name} spec.storage.path")
        else:
            raise StorageError(
                f"Site {name} declares no storage path (spec.storage.path): the operator writes a Run's outputs "
                "only under it"
            )
        return cls(Path(base) / namespace / run, roots)

    @property
    def run_dir(self) -> str | None:
        return str(self.root)

    def missing_outputs(self, outputs: Mapping[str, str]) -> list[str]:
        return missing_outputs(outputs)

    def ensure_root(self) -> None:
        """Make the Run's directory; refuse one that is (or sits behind) a symlink out of place."""
        self.root.mkdir(parents=True, exist_ok=True)
        if os.path.realpath(self.root) != str(self.root):
            raise StorageError(f"{self.root} resolves to {os.path.realpath(self.root)}: refusing to write there")

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
        if not _under(os.path.realpath(target.parent), str(self.root)):
            raise StorageError(f"{target.parent} resolves out of the Run's directory: refusing to write there")
        target.write_text(json.dumps(value, indent=1))
        return str(target)

    def prepare(self, tid: str) -> None:
        Path(self.task_path(tid)).mkdir(parents=True, exist_ok=True)

    def readable(self, path: str, what: str) -> str:
        """A file the operator reads for a Run (a list output, dynamic resources): confined and regular."""
        resolved = self.roots.confine(path, what)
        try:
            mode = Path(resolved).stat().st_mode
        except OSError as err:
            raise StorageError(f"{what}: cannot read {path}: {err.strerror or err}") from err
        if not stat.S_ISREG(mode):
            raise StorageError(f"{what}: {path} is not a regular file")
        return resolved

    def read_lists(self, outputs: Mapping[str, str], ports: Iterable[str]) -> tuple[dict[str, list[str]], set[str]]:
        """A task's list outputs, every path in them confined to the Site's roots, and the directories that
        expose those paths (for the Jobs that read them)."""
        lists: dict[str, list[str]] = {}
        directories: set[str] = set()
        for port in ports:
            what = f"list output {port}"
            lists[port] = _read_list(Path(self.readable(outputs[port], what)))
            for i, item in enumerate(lists[port]):
                directory = self.roots.mount_dir(self.roots.confine(item, f"{what}[{i}]"))
                if directory is not None:
                    directories.add(directory)
        return lists, directories


def input_files(inputs: Mapping[str, Value]) -> Iterator[str]:
    """Every file path among resolved Run inputs (a value is one path or a list of them)."""
    for value in inputs.values():
        yield from value if isinstance(value, list) else [value]


def run_mounts(roots: Roots, run_dir: str | None, inputs: Mapping[str, Value], planner: Planner) -> Mounts:
    """The Run's directory, plus the directories holding its inputs and the paths its list outputs named
    (recorded before a restart). Objects (``s3://`` values at an S3 Site) lie under no root: never mounted."""
    paths = list(input_files(inputs))
    for task in planner.tasks.values():
        for items in (task.lists or {}).values():
            for item in items:
                with contextlib.suppress(StorageError):  # vetted when read; never mount what fails now
                    paths.append(roots.confine(item, "list item"))
    mounts = Mounts(run_dir)
    mounts.add(d for d in map(roots.mount_dir, paths) if d is not None)
    return mounts


def missing_outputs(outputs: Mapping[str, str]) -> list[str]:
    return [name for name, path in outputs.items() if not Path(path).exists()]


def posix_path(uri: str, field: str) -> Path:
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    if "://" in uri or not uri.startswith("/"):
        raise StorageError(f"{field}: {uri!r} is not an absolute path or file:// URI")
    return Path(uri)


def input_paths(inputs: dict[str, RunInput]) -> Iterator[tuple[str, str]]:
    """(field, path) of every file a Run names as input by path (archive inputs: sgs_operator.inputs)."""
    for name, given in inputs.items():
        for where, uri in _uris(name, given):
            yield where, str(posix_path(uri, where))


def resolve_inputs(inputs: dict[str, RunInput], roots: Roots | None = None) -> dict[str, Value]:
    """Run inputs as planner values; with ``roots``, each confined to them (and given resolved)."""
    values: dict[str, Value] = {}
    for name, given in inputs.items():
        if given.from_archive:
            continue  # resolved through the archive at the Run's start
        paths = [roots.confine(p, where) if roots else p for where, p in input_paths({name: given})]
        values[name] = paths[0] if given.uri is not None else paths
    return values


def path_problems(spec: RunSpec, roots: Roots) -> list[str]:
    """Every local path of the Run that this Site refuses, each naming its field (other URIs and archive
    queries are left to the Run's start, which says what it cannot resolve)."""
    return [problem for where, uri in run_paths(spec) if (problem := path_problem(where, uri, roots)) is not None]


def run_paths(spec: RunSpec) -> list[tuple[str, str]]:
    """The Run's input URIs and output prefix, each with its field."""
    named = [(where, uri) for name, given in spec.inputs.items() for where, uri in _uris(name, given)]
    if spec.output_prefix is not None:
        named.append(("spec.outputPrefix", spec.output_prefix))
    return named


def path_problem(where: str, uri: str, roots: Roots) -> str | None:
    """Why this Site refuses one of the Run's paths; None when it takes it (or it is not a local path)."""
    try:
        path = str(posix_path(uri, where))
    except StorageError:
        return None
    try:
        if where == "spec.outputPrefix":
            roots.confine_writable(path, where)
        else:
            roots.confine(path, where)
    except StorageError as err:
        return str(err)
    return None


def _uris(name: str, given: RunInput) -> list[tuple[str, str]]:
    where = f"spec.inputs.{name}"
    if given.uri is not None:
        return [(f"{where}.uri", given.uri)]
    return [(f"{where}.uris[{i}]", uri) for i, uri in enumerate(given.uris or [])]


def _realpath(path: str, where: str) -> str:
    if "\x00" in path or not path.startswith("/"):
        raise StorageError(f"{where}: {path!r} is not an absolute path")
    return os.path.realpath(path)


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _outermost(paths: Iterable[str]) -> list[str]:
    """Drop paths inside another one: one host mount each."""
    chosen: list[str] = []
    for path in sorted(set(paths), key=len):
        if not any(_under(path, c) for c in chosen):
            chosen.append(path)
    return chosen


def _shown(given: str, resolved: str) -> str:
    return given if given == resolved else f"{given} (resolves to {resolved})"

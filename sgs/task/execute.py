"""``sgs task exec``: a task at an S3 Site sees plain files — inputs downloaded into its scratch directory (and
verified) before its command starts, outputs uploaded with their checksums once it succeeded.

The order is what makes it safe to retry. Nothing is uploaded unless the command exited 0, so a failed attempt
leaves nothing under its output keys; each output goes to the deterministic key the operator chose, so a retried
upload (or a retried attempt) replaces the same object instead of adding one; and each upload records size,
adler32 and sha256 as the object's metadata (``x-amz-meta-sgs-*``) and is published only if the bytes sent have
exactly those checksums, so the operator reads them back with one HEAD (``S3Store.stat``), never the bytes.

Exit status: the command's own (killed by a signal: the wrapper ends by the same signal); 65 when an input is
missing or its checksums differ, or an output is missing or lies outside the scratch directory; 69 when the
store stayed unreachable through every try; 78 when the manifest (or the environment) is unusable. Each of the
wrapper's failures is one line on stderr starting ``sgs task exec:``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TypeVar

from sgs.model.checksum import Checksums
from sgs.storage import (
    ChecksumMismatchError,
    ObjectNotFoundError,
    S3Store,
    StorageError,
    StoreUnavailableError,
    checksum_file,
    suffix_of,
)
from sgs.storage.layout import check_key
from sgs.task.manifest import (
    ACCESS_KEY_ENV,
    MANIFEST_ENV,
    SECRET_KEY_ENV,
    ManifestError,
    OutsideScratchError,
    Scratch,
    TaskInput,
    TaskManifest,
    TaskOutput,
)

log = logging.getLogger(__name__)

EXIT_DATA = 65
EXIT_UNAVAILABLE = 69
EXIT_CONFIG = 78
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
HIDDEN_ENV = (MANIFEST_ENV, ACCESS_KEY_ENV, SECRET_KEY_ENV)
"""Never passed to the command: the Site's keys are the wrapper's, not the user code's."""

T = TypeVar("T")
Retrying = Callable[[str, int, BaseException, float], None]
"""Told of each failed try: (what, try number, error, seconds until the next)."""


class TaskDataError(Exception):
    """An input or output the task cannot use (missing, wrong checksums, outside the scratch directory)."""


@dataclass(frozen=True)
class Uploaded:
    key: str
    uri: str
    checksums: Checksums
    tries: int


@dataclass
class TaskResult:
    exit_code: int
    downloaded: list[str] = field(default_factory=list)
    uploaded: list[Uploaded] = field(default_factory=list)
    signal: int | None = None


def retried(what: str, action: Callable[[], T], attempts: int, backoff_s: float, told: Retrying | None) -> T:
    """``action`` tried up to ``attempts`` times, waiting ``backoff_s``, 2×, 4×… between tries.

    Only a store that could not be reached (or answered with an error) is tried again; content with the wrong
    checksums, a missing object or a bad key is an answer, not an outage.
    """
    for number in range(1, attempts + 1):
        try:
            return action()
        except (ChecksumMismatchError, ObjectNotFoundError, ValueError):
            raise
        except StorageError as error:
            if number == attempts:
                raise
            wait = backoff_s * 2 ** (number - 1)
            log.warning("%s failed (try %d of %d), again in %.1f s: %s", what, number, attempts, wait, error)
            if told is not None:
                told(what, number, error, wait)
            time.sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


# ------------------------------------------------------------------------------------------------ stage in


def download(store: S3Store, item: TaskInput, scratch: Scratch, manifest: TaskManifest, told: Retrying | None) -> None:
    """One input into the scratch directory, checked against the manifest's checksums (else those sgs recorded
    with the object; an object without either is checked by size only)."""
    target = scratch.path(item.local, f"inputs {item.key}")
    try:
        actual, expected, size = _fetch(store, item, target, manifest, told)
    except ObjectNotFoundError as err:
        raise TaskDataError(f"input {store.uri(item.key)}: no such object at {store.site}") from err
    if expected is not None and actual != expected:
        target.unlink(missing_ok=True)
        differences = "; ".join(expected.differences(actual))
        raise TaskDataError(f"input {store.uri(item.key)}: checksums do not match ({differences}); not started")
    if actual.size != size:
        target.unlink(missing_ok=True)
        raise TaskDataError(f"input {store.uri(item.key)}: {actual.size} bytes read, the store says {size}")


def _fetch(
    store: S3Store, item: TaskInput, target: Path, manifest: TaskManifest, told: Retrying | None
) -> tuple[Checksums, Checksums | None, int]:
    """(what was read, what it should be, the size it should have)."""
    expected = item.checksums
    if expected is None:
        info = retried(f"stat {item.key}", lambda: store.stat(item.key), manifest.attempts, manifest.backoff_s, told)
        expected, size = info.checksums, info.size
    else:
        size = expected.size

    def fetch() -> Checksums:
        with target.open("wb") as out:
            return store.get(item.key, out)

    return retried(f"download {item.key}", fetch, manifest.attempts, manifest.backoff_s, told), expected, size


def stage_in(store: S3Store, manifest: TaskManifest, scratch: Scratch, told: Retrying | None) -> list[str]:
    for item in manifest.inputs:
        download(store, item, scratch, manifest, told)
    for n, listed in enumerate(manifest.lists):
        paths = [_listed(scratch, item, f"lists[{n}].items") for item in listed.items]
        scratch.path(listed.local, f"lists[{n}].local").write_text(json.dumps(paths, indent=1))
    for n, output in enumerate(manifest.outputs):
        scratch.path(output.local, f"outputs[{n}].local")  # its directory, as a POSIX task finds its own
    return [item.key for item in manifest.inputs]


def _listed(scratch: Scratch, item: str | list[str], where: str) -> str | list[str]:
    if isinstance(item, str):
        return str(scratch.path(item, where))
    return [str(scratch.path(local, where)) for local in item]


# ------------------------------------------------------------------------------------------------ the command


def command_environment(environ: Mapping[str, str], scratch: Scratch) -> dict[str, str]:
    env = {key: scratch.expand(value) for key, value in environ.items() if key not in HIDDEN_ENV}
    env["SGS_SCRATCH"] = str(scratch.root)
    return env


def run_command(argv: Sequence[str], env: Mapping[str, str], cwd: Path | None = None) -> int:
    """The command as a child; the signals a kubelet, Slurm or the bridge send go on to it. Its exit status."""
    child = subprocess.Popen(list(argv), env=dict(env), cwd=cwd)

    def forward(number: int, _frame: FrameType | None) -> None:
        child.send_signal(number)

    # Only the main thread may set handlers (a caller running the wrapper in a thread keeps its own).
    main = threading.current_thread() is threading.main_thread()
    previous = {number: signal.signal(number, forward) for number in FORWARDED} if main else {}
    try:
        while True:
            try:
                return child.wait()
            except InterruptedError:  # pragma: no cover - PEP 475 retries wait() itself
                continue
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


# ------------------------------------------------------------------------------------------------ stage out


def upload_file(store: S3Store, key: str, path: Path, manifest: TaskManifest, told: Retrying | None) -> Uploaded:
    """One file to ``key``, streaming, published only with the checksums read first (recorded as metadata)."""
    sums = checksum_file(path)
    tries = 0

    def put() -> Checksums:
        nonlocal tries
        tries += 1
        with path.open("rb") as source:
            return store.put(key, source, expected=sums)

    try:
        stored = retried(f"upload {key}", put, manifest.attempts, manifest.backoff_s, told)
    except ChecksumMismatchError as err:
        raise TaskDataError(f"output {path}: changed while it was uploaded ({err})") from err
    return Uploaded(key, store.uri(key), stored, tries)


def list_items(path: Path, scratch: Scratch, where: str) -> list[Path]:
    """The files a list output names (absolute, or relative to the list's directory), each in the scratch."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise TaskDataError(f"{where}: {path.name} is not a JSON list: {err}") from err
    if not isinstance(data, list) or not all(isinstance(item, str) for item in data):
        raise TaskDataError(f"{where}: {path.name} must be a JSON array of paths")
    items = [Path(scratch.expand(item)) for item in data]
    return [
        scratch.confine(item if item.is_absolute() else path.parent / item, f"{where}[{i}]")
        for i, item in enumerate(items)
    ]


def upload_list(
    store: S3Store,
    output: TaskOutput,
    path: Path,
    scratch: Scratch,
    inputs: Mapping[Path, str],
    manifest: TaskManifest,
    told: Retrying | None,
) -> list[Uploaded]:
    """Each file a list output names under ``<key>.d/``, then the list itself, naming them by URI (an input the
    command passes on keeps its own object: nothing is uploaded twice)."""
    uploaded: list[Uploaded] = []
    uris: list[str] = []
    for i, item in enumerate(list_items(path, scratch, f"list output {output.local}")):
        if item in inputs:
            uris.append(store.uri(inputs[item]))
            continue
        key = check_key(f"{output.key}.d/{i:05d}{suffix_of(item.name)}")
        done = upload_file(store, key, item, manifest, told)
        uploaded.append(done)
        uris.append(done.uri)
    listing = path.with_name(f"{path.name}.uris")
    listing.write_text(json.dumps(uris, indent=1))
    uploaded.append(upload_file(store, output.key, listing, manifest, told))
    return uploaded


def stage_out(store: S3Store, manifest: TaskManifest, scratch: Scratch, told: Retrying | None) -> list[Uploaded]:
    """Every output checked first (all present, all inside the scratch), then uploaded: a missing one uploads none."""
    found: list[tuple[TaskOutput, Path]] = []
    missing: list[str] = []
    for output in manifest.outputs:
        path = scratch.root / output.local
        if not path.exists() and not path.is_symlink():
            missing.append(output.local)
            continue
        found.append((output, scratch.confine(path, f"output {output.local}")))
    if missing:
        raise TaskDataError(f"the command exited 0 but did not write {', '.join(missing)}")
    inputs = {scratch.confine(scratch.root / i.local, "input"): i.key for i in manifest.inputs}
    uploaded: list[Uploaded] = []
    for output, path in found:
        if output.list:
            uploaded += upload_list(store, output, path, scratch, inputs, manifest, told)
        else:
            uploaded.append(upload_file(store, output.key, path, manifest, told))
    return uploaded


# ------------------------------------------------------------------------------------------------ all of it


def open_store(manifest: TaskManifest, environ: Mapping[str, str]) -> S3Store:
    return S3Store.connect(
        manifest.site,
        manifest.endpoint,
        manifest.bucket,
        environ.get(ACCESS_KEY_ENV) or None,
        environ.get(SECRET_KEY_ENV) or None,
        secure=manifest.secure,
        connections=8,
    )


def execute(
    manifest: TaskManifest,
    argv: Sequence[str],
    environ: Mapping[str, str],
    scratch: Scratch,
    store: S3Store | None = None,
    told: Retrying | None = None,
) -> TaskResult:
    """Download, run, upload; raises TaskDataError or StorageError for what the wrapper itself could not do."""
    if not argv:
        raise ManifestError("no command given after '--'")
    store = store or open_store(manifest, environ)
    result = TaskResult(0, downloaded=stage_in(store, manifest, scratch, told))
    code = run_command([scratch.expand(arg) for arg in argv], command_environment(environ, scratch))
    if code < 0:
        result.signal = -code
        result.exit_code = 128 - code
        return result
    result.exit_code = code
    if code == 0:
        result.uploaded = stage_out(store, manifest, scratch, told)
    return result


def load_manifest(path: Path | None, environ: Mapping[str, str]) -> TaskManifest:
    if path is not None:
        try:
            return TaskManifest.parse(path.read_text(), str(path))
        except OSError as err:
            raise ManifestError(f"--manifest: cannot read {path}: {err.strerror or err}") from err
    text = environ.get(MANIFEST_ENV)
    if not text:
        raise ManifestError(f"{MANIFEST_ENV}: not set (and no --manifest given)")
    return TaskManifest.parse(text, MANIFEST_ENV)


def main(argv: Sequence[str], manifest_path: Path | None = None) -> int:
    """What ``sgs task exec`` does; returns the exit status (a command killed by a signal: the same signal)."""
    logging.basicConfig(level=logging.INFO, format="sgs task exec: %(message)s", stream=sys.stderr)
    environ = dict(os.environ)
    try:
        manifest = load_manifest(manifest_path, environ)
        scratch = Scratch.of_environment(environ)
        result = execute(manifest, argv, environ, scratch)
    except (TaskDataError, OutsideScratchError) as err:
        return _failed(EXIT_DATA, str(err))
    except ManifestError as err:
        return _failed(EXIT_CONFIG, str(err))
    except StoreUnavailableError as err:
        return _failed(EXIT_UNAVAILABLE, f"{err} (after every try)")
    except StorageError as err:
        return _failed(EXIT_UNAVAILABLE, str(err))
    except FileNotFoundError as err:
        return _failed(127, f"{argv[0]}: command not found ({err.strerror})")
    for done in result.uploaded:
        retried_note = f" after {done.tries} tries" if done.tries > 1 else ""
        log.info(
            "uploaded %s (%d bytes, adler32 %s)%s", done.uri, done.checksums.size, done.checksums.adler32, retried_note
        )
    if result.signal is not None:
        if result.signal not in (signal.SIGKILL, signal.SIGSTOP):  # those two have no handler to reset
            signal.signal(result.signal, signal.SIG_DFL)
        os.kill(os.getpid(), result.signal)
    return result.exit_code


def _failed(code: int, message: str) -> int:
    print(f"sgs task exec: {message}", file=sys.stderr, flush=True)
    return code

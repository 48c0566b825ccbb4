"""`sgs task exec` against a real MinIO: inputs downloaded into the scratch directory and verified, the command
run with plain local paths, outputs uploaded (single-part and multipart) with size, adler32 and sha256 recorded as
the objects' metadata; a checksum mismatch refuses to start the command; a failed command uploads nothing; its exit
status and signals pass through; an upload that fails because MinIO is down (stopped for real) is retried and lands
once under the same key."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sgs.model.checksum import Checksums
from sgs.storage import S3Store, checksum_bytes, checksum_file
from sgs.task import SCRATCH_REFERENCE, Scratch, TaskManifest
from sgs.task.execute import execute
from sgs.testing.minio import MinioPart

pytestmark = pytest.mark.integration

WRITER = """
import json, os, sys
from pathlib import Path
args = dict(a.removeprefix('--').split('=', 1) for a in sys.argv[1:])
assert 'SGS_S3_SECRET_KEY' not in os.environ and 'SGS_TASK_MANIFEST' not in os.environ, 'keys leaked'
content = Path(args['image']).read_bytes() + Path(args['dark']).read_bytes()
Path(args['out']).write_bytes(content)
Path(args['big']).write_bytes(os.urandom(int(args['big_mib']) << 20))
out = Path(args['files'])
(out.parent / 'a.fits').write_text('a'); (out.parent / 'b.fits').write_text('b')
out.write_text(json.dumps(['a.fits', str(out.parent / 'b.fits'), args['image']]))
Path(os.environ['SGS_SCRATCH'], 'ran').write_text(os.environ['TMPDIR'])
"""


@pytest.fixture
def minio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MinioPart]:
    """Our own MinIO (not the session's): the outage test stops and restarts it on the same port and data."""
    part = MinioPart("site-t", tmp_path_factory.mktemp("minio"), bucket=f"t-{uuid.uuid4().hex[:8]}")
    part.start()
    yield part
    part.stop()


def store_of(part: MinioPart) -> S3Store:
    return S3Store.connect(part.site, part.endpoint, part.bucket, part.access_key, part.secret_key, secure=False)


def env_of(part: MinioPart, tmp: Path, manifest: dict[str, Any] | None = None) -> dict[str, str]:
    env = {**os.environ, "TMPDIR": str(tmp), "SGS_S3_ACCESS_KEY": part.access_key, "SGS_S3_SECRET_KEY": part.secret_key}
    if manifest is not None:
        env["SGS_TASK_MANIFEST"] = json.dumps(manifest)
    return env


def base_manifest(part: MinioPart, **changes: Any) -> dict[str, Any]:
    return {"site": part.site, "endpoint": part.endpoint, "bucket": part.bucket, "secure": False, **changes}


def wrapper(env: dict[str, str], *command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "sgs.cli.main", "task", "exec", "--", *command]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)


def sums_json(sums: Checksums) -> dict[str, Any]:
    return sums.model_dump(mode="json")


def test_inputs_are_downloaded_the_command_runs_and_outputs_are_uploaded_with_checksums(
    minio: MinioPart, tmp_path: Path
) -> None:
    store = store_of(minio)
    image = store.put_bytes("raw/ab/cd/image.fits", b"image bytes\n")
    store.put_bytes("cal/dark.fits", b"dark bytes\n")  # no checksums in the manifest: those recorded with it
    scratch_ref = SCRATCH_REFERENCE
    manifest = base_manifest(
        minio,
        inputs=[
            {"key": "raw/ab/cd/image.fits", "local": "in/image/0-image.fits", "checksums": sums_json(image)},
            {"key": "cal/dark.fits", "local": "in/dark/0-dark.fits"},
        ],
        outputs=[
            {"local": "out/stack.fits", "key": "ns/run/stack/stack.fits"},
            {"local": "out/big.bin", "key": "ns/run/stack/big.bin"},
            {"local": "out/files.json", "key": "ns/run/stack/files.json", "list": True},
        ],
    )
    result = wrapper(
        env_of(minio, tmp_path, manifest),
        sys.executable,
        "-c",
        WRITER,
        f"--image={scratch_ref}/in/image/0-image.fits",
        f"--dark={scratch_ref}/in/dark/0-dark.fits",
        f"--out={scratch_ref}/out/stack.fits",
        f"--big={scratch_ref}/out/big.bin",
        "--big_mib=17",  # over the 16 MiB part: a multipart upload, its checksums recorded from the start
        f"--files={scratch_ref}/out/files.json",
    )

    assert result.returncode == 0, result.stderr
    scratch = tmp_path / "sgs-task"
    assert (scratch / "ran").read_text() == str(tmp_path)
    stack = store.stat("ns/run/stack/stack.fits")
    assert stack.checksums == checksum_bytes(b"image bytes\ndark bytes\n")
    big = store.stat("ns/run/stack/big.bin")
    assert big.size == 17 << 20 and big.checksums == checksum_file(scratch / "out" / "big.bin")
    listed = json.loads(store.read_bytes("ns/run/stack/files.json"))
    # Files the command wrote are uploaded beside the list; the input it passes on keeps its own object.
    assert listed == [
        store.uri("ns/run/stack/files.json.d/00000.fits"),
        store.uri("ns/run/stack/files.json.d/00001.fits"),
        store.uri("raw/ab/cd/image.fits"),
    ]
    assert store.read_bytes("ns/run/stack/files.json.d/00001.fits") == b"b"
    assert store.stat("ns/run/stack/files.json").checksums is not None
    assert "uploaded s3://" in result.stderr


def test_an_input_with_other_checksums_fails_the_task_before_the_command_runs(minio: MinioPart, tmp_path: Path) -> None:
    store = store_of(minio)
    store.put_bytes("raw/x.fits", b"what is there")
    wanted = checksum_bytes(b"what should be there")
    manifest = base_manifest(
        minio,
        inputs=[{"key": "raw/x.fits", "local": "in/x.fits", "checksums": sums_json(wanted)}],
        outputs=[{"local": "out/y", "key": "ns/run/t/y"}],
    )
    marker = tmp_path / "started"
    result = wrapper(env_of(minio, tmp_path, manifest), "touch", str(marker))

    assert result.returncode == 65
    assert "sgs task exec: input s3://" in result.stderr and "checksums do not match" in result.stderr
    assert "size 20 != 13" in result.stderr
    assert not marker.exists() and not (tmp_path / "sgs-task" / "in" / "x.fits").exists()
    assert not store.exists("ns/run/t/y")


def test_a_missing_input_is_named(minio: MinioPart, tmp_path: Path) -> None:
    manifest = base_manifest(minio, inputs=[{"key": "raw/gone.fits", "local": "in/gone.fits"}])
    result = wrapper(env_of(minio, tmp_path, manifest), "true")
    assert result.returncode == 65 and "raw/gone.fits" in result.stderr


def test_a_failed_command_passes_its_status_through_and_uploads_nothing(minio: MinioPart, tmp_path: Path) -> None:
    manifest = base_manifest(minio, outputs=[{"local": "out/y", "key": "ns/run/t/y"}])
    script = f"echo partial > {SCRATCH_REFERENCE}/out/y; exit 3"

    result = wrapper(env_of(minio, tmp_path, manifest), "sh", "-c", script)

    assert result.returncode == 3
    assert not store_of(minio).exists("ns/run/t/y")


def test_a_command_that_writes_nothing_or_links_out_of_the_scratch_fails(minio: MinioPart, tmp_path: Path) -> None:
    manifest = base_manifest(minio, outputs=[{"local": "out/y", "key": "ns/run/t/y"}])
    missing = wrapper(env_of(minio, tmp_path, manifest), "true")
    assert missing.returncode == 65 and "did not write out/y" in missing.stderr

    linked = wrapper(env_of(minio, tmp_path, manifest), "sh", "-c", f"ln -s /etc/hostname {SCRATCH_REFERENCE}/out/y")
    assert linked.returncode == 65 and "outside the scratch directory" in linked.stderr
    assert not store_of(minio).exists("ns/run/t/y")


def test_an_unusable_manifest_is_refused_naming_the_field(minio: MinioPart, tmp_path: Path) -> None:
    manifest = base_manifest(minio, outputs=[{"local": "../../etc/x", "key": "ns/run/t/y"}])
    result = wrapper(env_of(minio, tmp_path, manifest), "true")
    assert result.returncode == 78 and "outputs.0.local" in result.stderr and "'..'" in result.stderr


def test_signals_are_forwarded_and_a_signal_death_passes_through(minio: MinioPart, tmp_path: Path) -> None:
    manifest = base_manifest(minio)
    seen = tmp_path / "seen"
    script = f"trap 'echo TERM > {seen}; exit 143' TERM; touch {tmp_path}/up; while :; do sleep 0.05; done"
    argv = [sys.executable, "-m", "sgs.task", "exec", "--", "sh", "-c", script]
    proc = subprocess.Popen(argv, env=env_of(minio, tmp_path, manifest))
    deadline = time.monotonic() + 30
    while not (tmp_path / "up").exists():
        assert time.monotonic() < deadline and proc.poll() is None, "the command never started"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 143  # the command's own answer to the forwarded signal
    assert seen.read_text().strip() == "TERM"

    killed = wrapper(env_of(minio, tmp_path, manifest), "sh", "-c", "kill -KILL $$")
    assert killed.returncode == -signal.SIGKILL


def test_an_upload_that_fails_while_minio_is_down_is_retried_onto_the_same_key(
    minio: MinioPart, tmp_path: Path
) -> None:
    store = store_of(minio)
    manifest = TaskManifest.model_validate(
        base_manifest(minio, outputs=[{"local": "out/y.txt", "key": "ns/run/t/y.txt"}], attempts=8, backoff_s=0.5)
    )
    scratch = Scratch(tmp_path / "sgs-task")
    go, ready = tmp_path / "go", tmp_path / "ready"
    script = f"echo product > {SCRATCH_REFERENCE}/out/y.txt; touch {ready}; "
    script += f"while [ ! -e {go} ]; do sleep 0.05; done"
    failures: list[str] = []
    failed = threading.Event()

    def told(what: str, number: int, error: BaseException, wait: float) -> None:
        failures.append(f"{what} #{number}: {error}")
        failed.set()

    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = execute(manifest, ["sh", "-c", script], env_of(minio, tmp_path), scratch, told=told)
        except BaseException as error:  # reported by the assertions below
            outcome["error"] = error

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 30
    while not ready.exists():
        assert time.monotonic() < deadline, "the command never ran"
        time.sleep(0.05)
    minio.stop()  # for real: the upload meets a closed port
    go.touch()
    assert failed.wait(60), "the upload never failed"
    minio.start()
    thread.join(90)

    assert "error" not in outcome, outcome.get("error")
    (uploaded,) = outcome["result"].uploaded
    assert uploaded.tries >= 2 and failures and "upload ns/run/t/y.txt #1" in failures[0]
    assert [o.key for o in store.list("ns/run/t/")] == ["ns/run/t/y.txt"]
    assert store.stat("ns/run/t/y.txt").checksums == checksum_bytes(b"product\n")

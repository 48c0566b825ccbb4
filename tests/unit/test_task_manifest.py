"""The task manifest: every local path stays in the scratch directory (absolute paths, '..', symlinks refused),
keys are store keys, and the wrapper's own variables never reach the command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sgs.task import SCRATCH_REFERENCE, ManifestError, Scratch, TaskManifest
from sgs.task.execute import TaskDataError, command_environment, list_items, stage_in


def manifest(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "site": "sdc-fr",
        "endpoint": "127.0.0.1:9000",
        "bucket": "sgs",
        "inputs": [{"key": "raw/3f/a2/x.fits", "local": "in/images/0-x.fits"}],
        "outputs": [{"local": "out/stack.fits", "key": "ns/run/stack/stack.fits"}],
    }
    return base | changes


def parse(data: dict[str, Any]) -> TaskManifest:
    return TaskManifest.parse(json.dumps(data), "SGS_TASK_MANIFEST")


def test_a_manifest_round_trips() -> None:
    parsed = parse(manifest())
    assert parsed.inputs[0].local == "in/images/0-x.fits" and parsed.outputs[0].key == "ns/run/stack/stack.fits"
    assert TaskManifest.parse(parsed.model_dump_json(), "x") == parsed


@pytest.mark.parametrize(
    ("local", "why"),
    [
        ("/etc/passwd", "is absolute"),
        ("../outside", "'..'"),
        ("in/../../outside", "'..'"),
        ("in//x", "empty parts"),
        ("./x", "'.'"),
        ("in\\x", "backslashes"),
        ("", "must not be empty"),
    ],
)
def test_local_paths_that_could_leave_the_scratch_are_refused_naming_the_field(local: str, why: str) -> None:
    with pytest.raises(ManifestError) as refused:
        parse(manifest(outputs=[{"local": local, "key": "ns/run/t/out.txt"}]))
    assert "outputs.0.local" in str(refused.value) and why in str(refused.value)
    with pytest.raises(ManifestError, match=r"inputs\.0\.local"):
        parse(manifest(inputs=[{"key": "k/x", "local": local}]))


@pytest.mark.parametrize("key", ["/abs/key", "a/../b", "a//b", ".hidden/x", ""])
def test_bad_keys_are_refused(key: str) -> None:
    with pytest.raises(ManifestError, match=r"outputs\.0\.key"):
        parse(manifest(outputs=[{"local": "out/x", "key": key}]))


def test_two_files_at_one_local_path_are_refused() -> None:
    with pytest.raises(ManifestError, match=r"outputs\[0\]\.local: 'in/images/0-x.fits' is also inputs\[0\]"):
        parse(manifest(outputs=[{"local": "in/images/0-x.fits", "key": "ns/r/t/o"}]))


def test_unknown_fields_and_bad_json_are_refused() -> None:
    with pytest.raises(ManifestError, match="typo"):
        parse(manifest(typo=1))
    with pytest.raises(ManifestError, match="SGS_TASK_MANIFEST"):
        TaskManifest.parse("{not json", "SGS_TASK_MANIFEST")


def test_a_symlink_out_of_the_scratch_is_refused(tmp_path: Path) -> None:
    scratch = Scratch(tmp_path / "tmp" / "sgs-task")
    (scratch.root / "out").mkdir()
    (scratch.root / "out" / "stolen").symlink_to("/etc/hostname")
    with pytest.raises(ManifestError, match="outside the scratch directory"):
        scratch.confine(scratch.root / "out" / "stolen", "output out/stolen")
    (scratch.root / "up").symlink_to(tmp_path)  # a directory link: a path through it leaves too
    with pytest.raises(ManifestError, match="outside the scratch directory"):
        scratch.path("up/x", "inputs k")


def test_a_list_output_naming_a_file_outside_the_scratch_is_refused(tmp_path: Path) -> None:
    scratch = Scratch(tmp_path / "sgs-task")
    listing = scratch.path("out/files.json", "outputs")
    (scratch.root / "out" / "a.fits").write_text("a")
    listing.write_text(json.dumps(["a.fits", f"{SCRATCH_REFERENCE}/out/a.fits"]))
    assert list_items(listing, scratch, "list") == [scratch.root / "out" / "a.fits"] * 2
    listing.write_text(json.dumps(["a.fits", "../../../../etc/hostname"]))
    with pytest.raises(ManifestError, match=r"list\[1\].*outside the scratch directory"):
        list_items(listing, scratch, "list")
    listing.write_text('{"not": "a list"}')
    with pytest.raises(TaskDataError, match="must be a JSON array of paths"):
        list_items(listing, scratch, "list")


def test_the_command_sees_the_scratch_but_not_the_sites_keys(tmp_path: Path) -> None:
    scratch = Scratch(tmp_path / "sgs-task")
    environ = {
        "SGS_S3_ACCESS_KEY": "a",
        "SGS_S3_SECRET_KEY": "s",
        "SGS_TASK_MANIFEST": "{}",
        "SGS_OUTPUT_OUT": f"{SCRATCH_REFERENCE}/out/x.txt",
        "PATH": "/bin",
    }
    env = command_environment(environ, scratch)
    assert env == {"SGS_OUTPUT_OUT": f"{scratch.root}/out/x.txt", "PATH": "/bin", "SGS_SCRATCH": str(scratch.root)}


def test_tmpdir_must_be_an_absolute_path() -> None:
    with pytest.raises(ManifestError, match="TMPDIR"):
        Scratch.of_environment({"TMPDIR": "relative"})
    with pytest.raises(ManifestError, match="TMPDIR"):
        Scratch.of_environment({})


def test_a_list_of_lists_is_written_as_nested_paths_each_confined(tmp_path: Path) -> None:
    nested = [["in/a/0-x.fits", "in/a/1-y.fits"], "in/b/0-z.fits"]
    parsed = parse(manifest(inputs=[], outputs=[], lists=[{"local": "in/all.json", "items": nested}]))
    scratch = Scratch(tmp_path / "sgs-task")

    stage_in(None, parsed, scratch, None)  # type: ignore[arg-type]  # no inputs: the store is never used

    root = scratch.root
    written = json.loads((root / "in" / "all.json").read_text())
    assert written == [[str(root / "in/a/0-x.fits"), str(root / "in/a/1-y.fits")], str(root / "in/b/0-z.fits")]
    with pytest.raises(ManifestError, match=r"lists\.0\.items"):
        parse(manifest(lists=[{"local": "in/all.json", "items": [["../../etc/passwd"]]}]))

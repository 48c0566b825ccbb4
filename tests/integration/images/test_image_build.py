"""Two clean daemonless builds of an image give the same manifest digest, and the image runs sgs as 10001.

Affordable on every CI run: the Debian rootfs and the pinned wheels come from the machine's image cache
(~/.cache/sgs/images, made once: one mmdebstrap per cold CI), and only the base image's venv layer, its
assembly and the operator image are built, twice, into two fresh directories.
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from sgs.images import ImageBuilder, default_cache_dir
from sgs.images.build import BuiltImage

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _layers(image: BuiltImage) -> list[Path]:
    index = json.loads((image.layout / "index.json").read_text())
    manifest_digest = index["manifests"][0]["digest"].split(":", 1)[1]
    manifest = json.loads((image.layout / "blobs" / "sha256" / manifest_digest).read_text())
    return [image.layout / "blobs" / "sha256" / layer["digest"].split(":", 1)[1] for layer in manifest["layers"]]


def _names(layer: Path) -> list[str]:
    with gzip.open(layer) as stream, tarfile.open(fileobj=stream) as tar:
        return tar.getnames()


def test_two_clean_builds_give_the_same_manifest_digest_and_the_image_runs(tmp_path: Path) -> None:
    shared = default_cache_dir()
    lines: list[str] = []
    first = ImageBuilder(cache_dir=tmp_path / "a", shared_dir=shared, progress=lines.append).build(["operator"])[0]
    second = ImageBuilder(cache_dir=tmp_path / "b", shared_dir=shared, progress=lines.append).build(["operator"])[0]
    assert not first.reused and not second.reused, "each build starts from an empty cache directory"
    assert first.digest == second.digest, (first, second)
    assert first.tarball.read_bytes() == second.tarball.read_bytes()
    assert any("venv /opt/sgs" in line for line in lines)

    # Unchanged inputs: the cached build, not a new one.
    again = ImageBuilder(cache_dir=tmp_path / "a", shared_dir=shared).build(["operator"])[0]
    assert again.reused and again.digest == first.digest

    debian, venv = (_names(layer) for layer in _layers(first))
    assert not [name for name in venv if name.endswith(".pyc")], "pip --no-compile: no bytecode in the layer"
    assert not [name for name in venv if "/site-packages/pip/" in name or name.endswith("/bin/pip")]
    for tool in ("usr/bin/gcc", "usr/bin/apt-get", "usr/bin/pip3", "usr/bin/make"):
        assert f"./{tool}" not in debian and tool not in debian, f"{tool}: no build tools in the image"

    config_digest = json.loads((first.layout / "blobs" / "sha256" / first.digest.split(":", 1)[1]).read_text())[
        "config"
    ]["digest"]
    config = json.loads((first.layout / "blobs" / "sha256" / config_digest.split(":", 1)[1]).read_text())
    assert config["config"]["User"] == "10001:10001"
    assert config["config"]["Entrypoint"] == ["sgs", "operator"]
    assert config["created"] == "2023-11-14T22:13:20Z"

    # The image runs: its rootfs (umoci unpack), the image's environment, as the chart's user.
    bundle = tmp_path / "bundle"
    subprocess.run(["umoci", "unpack", "--image", f"{first.layout}:{first.tag}", str(bundle)], check=True)
    env = dict(item.split("=", 1) for item in config["config"]["Env"])
    chroot = shutil.which("chroot")
    assert chroot is not None
    run = subprocess.run(
        [chroot, "--userspec=10001:10001", str(bundle / "rootfs"), "sgs", "operator", "--help"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "operator" in run.stdout.lower()
    imports = "import sgs_archive, sgs_transfer, sgs_console, sgs_trigger, sgs_bridge, sgs.nir.steps.stack"
    run = subprocess.run(
        [chroot, "--userspec=10001:10001", str(bundle / "rootfs"), "python3", "-c", imports],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    # ~1 GiB of builds and rootfs: not left in pytest's kept temporary directories.
    for directory in (bundle, tmp_path / "a", tmp_path / "b"):
        shutil.rmtree(directory)

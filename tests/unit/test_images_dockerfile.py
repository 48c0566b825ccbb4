"""images/: every Dockerfile's configuration as the daemonless builder reads it, and the chart's image names."""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

from sgs.images.build import (
    IMAGE_NAMES,
    ImageBuilder,
    ImageBuildError,
    require_tool,
    source_hash,
    write_deterministic_tar,
)
from sgs.images.dockerfile import DockerfileError, read_config

REPO = Path(__file__).resolve().parents[2]
IMAGES = REPO / "images"


def test_every_deployable_image_runs_sgs_as_the_charts_non_root_user() -> None:
    base = read_config(IMAGES / "base" / "Dockerfile", allow_build_steps=True)
    # The chart's pods run as 10001 (charts/sgs/templates/_helpers.tpl) with `command: ["sgs", ...]`.
    assert base.user == "10001:10001"
    assert base.env["PATH"].startswith("/opt/sgs/bin:")
    assert base.env["PYTHONDONTWRITEBYTECODE"] == "1"
    for name in IMAGE_NAMES:
        config = read_config(IMAGES / name / "Dockerfile", allow_build_steps=False)
        command = config.entrypoint or config.cmd
        assert command, name
        assert command[0] == "sgs" or command[0].startswith("sgs-nir-"), (name, command)
        assert config.labels["org.opencontainers.image.title"] == f"sgs-{name}"


def test_the_chart_asks_only_for_images_that_are_built() -> None:
    values = yaml.safe_load((REPO / "charts" / "sgs" / "values.yaml").read_text())
    named = {
        values[part]["image"]["name"] for part in values if isinstance(values[part], dict) and "image" in values[part]
    }
    templates = (REPO / "charts" / "sgs" / "templates" / "bridges.yaml").read_text()
    if '"name" "bridge"' in templates:
        named.add("bridge")
    assert named, "the chart names no image"
    assert named <= set(IMAGE_NAMES), named - set(IMAGE_NAMES)


def test_a_build_step_in_an_images_dockerfile_is_refused(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text('FROM base\nRUN apt-get install -y gcc\nENTRYPOINT ["sgs"]\n')
    with pytest.raises(DockerfileError, match="Dockerfile:2: RUN"):
        read_config(dockerfile, allow_build_steps=False)


def test_the_last_stage_continuations_and_shell_form(tmp_path: Path) -> None:
    text = (
        "FROM a AS build\nENV X=1\nUSER 0\n"
        'FROM b\n# a comment\nENV A=1 \\\n    B="two words"\nEXPOSE 80 53/udp\nWORKDIR /w\nCMD ["x", "y"]\n'
    )
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(text)
    config = read_config(dockerfile, allow_build_steps=True)
    assert config.env == {"A": "1", "B": "two words"}
    assert config.user is None
    assert config.exposed_ports == ["53/udp", "80/tcp"]
    assert (config.workdir, config.cmd) == ("/w", ["x", "y"])
    dockerfile.write_text("FROM b\nENTRYPOINT sgs operator\n")
    with pytest.raises(DockerfileError, match="exec form"):
        read_config(dockerfile, allow_build_steps=False)


def test_layer_tars_are_the_same_bytes_whatever_the_files_times_and_owners(tmp_path: Path) -> None:
    for run in ("a", "b"):
        root = tmp_path / run / "root"
        (root / "opt" / "sgs" / "bin").mkdir(parents=True)
        (root / "opt" / "sgs" / "z.py").write_text("z")
        (root / "opt" / "sgs" / "a.py").write_text("a")
        (root / "opt" / "sgs" / "bin" / "python").symlink_to("/usr/bin/python3")
        if run == "b":  # other times and another creation order
            subprocess.run(["touch", "-d", "2001-01-01", str(root / "opt" / "sgs" / "a.py")], check=True)
        write_deterministic_tar(root, ["opt/sgs"], tmp_path / run / "layer.tar")
    first, second = ((tmp_path / run / "layer.tar").read_bytes() for run in ("a", "b"))
    assert first == second
    with tarfile.open(tmp_path / "a" / "layer.tar") as tar:
        names = tar.getnames()
        assert names == sorted(names, key=lambda n: n.split("/"))
        assert {member.mtime for member in tar.getmembers()} == {1700000000}


def test_the_source_hash_ignores_bytecode_and_sees_a_changed_module(tmp_path: Path) -> None:
    for part in ("sgs", "operators", "services"):
        (tmp_path / part).mkdir()
    (tmp_path / "pyproject.toml").write_text("[project]\nversion = '1'\n")
    (tmp_path / "README.md").write_text("r")
    (tmp_path / "sgs" / "m.py").write_text("x = 1\n")
    before = source_hash(tmp_path)
    (tmp_path / "sgs" / "__pycache__").mkdir()
    (tmp_path / "sgs" / "__pycache__" / "m.cpython-311.pyc").write_bytes(b"\0")
    assert source_hash(tmp_path) == before
    (tmp_path / "sgs" / "m.py").write_text("x = 2\n")
    assert source_hash(tmp_path) != before


def test_a_missing_tool_names_its_debian_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ImageBuildError, match=r"umoci not found: .*apt-get install umoci"):
        require_tool("umoci")
    with pytest.raises(ImageBuildError, match=r"apt-get install mmdebstrap"):
        require_tool("mmdebstrap")


def test_prune_keeps_the_current_builds_only(tmp_path: Path) -> None:
    builder = ImageBuilder(cache_dir=tmp_path)
    current = tmp_path / "operator" / builder.image_key("operator", builder.base_key())
    stale = [tmp_path / "operator" / "0123456789abcdef", tmp_path / "base" / "fedcba9876543210"]
    for entry in [current, *stale]:
        entry.mkdir(parents=True)
        (entry / "build.json").write_text("{}")
    assert sorted(builder.prune()) == sorted(stale)
    assert current.is_dir() and not any(entry.exists() for entry in stale)

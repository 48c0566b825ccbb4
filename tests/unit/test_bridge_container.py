"""Container mode of the bridge, without a runtime: image references, store lookup, the OCI runtime config."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from sgs_bridge.container import (
    NOBODY,
    ImageRefusedError,
    ImageStores,
    Limits,
    Mount,
    environment,
    image_user,
    parse_reference,
    process_args,
    runtime_config,
)
from sgs_bridge.podspec import PodSpecError, task_from_pod


def _blob(layout: Path, data: bytes) -> tuple[str, int]:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return f"sha256:{digest}", len(data)


def make_layout(layout: Path, tag: str, config: dict[str, object]) -> str:
    """A minimal OCI layout (no layers) whose manifest has ref.name `tag`; returns the manifest digest."""
    config_digest, config_size = _blob(layout, json.dumps({"config": config}).encode())
    manifest = {"schemaVersion": 2, "config": {"digest": config_digest, "size": config_size}, "layers": []}
    digest, size = _blob(layout, json.dumps(manifest).encode())
    annotations = {"org.opencontainers.image.ref.name": tag}
    index = {"schemaVersion": 2, "manifests": [{"digest": digest, "size": size, "annotations": annotations}]}
    (layout / "index.json").write_text(json.dumps(index))
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    return digest


@pytest.mark.parametrize(
    "text",
    ["../etc:1", "nir/../../x:1", "/abs/path:1", "NIR:1", "nir:bad tag", "nir@sha256:12", "a//b", "", "nir:1/.."],
)
def test_references_that_are_not_plain_names_are_not_allowed(text: str) -> None:
    with pytest.raises(ImageRefusedError) as error:
        parse_reference(text)
    assert error.value.reason == "ImageNotAllowed"


def test_reference_parts() -> None:
    assert parse_reference("ghcr.io/sgs/nir:0.1.0").paths == ["ghcr.io/sgs/nir", "nir"]
    assert parse_reference("nir").tag == "latest"
    digest = "sha256:" + "a" * 64
    ref = parse_reference(f"localhost:5000/nir@{digest}")
    assert (ref.name, ref.tag, ref.digest) == ("localhost:5000/nir", None, digest)


def test_stores_resolve_by_tag_or_digest_and_refuse_the_rest(tmp_path: Path) -> None:
    store = tmp_path / "store"
    digest = make_layout(store / "nir" / "key1" / "oci", "0.1.0", {"User": "10001:10001"})  # the image cache's shape
    outside = make_layout(tmp_path / "elsewhere" / "evil", "1", {})
    stores = ImageStores([store])
    image = stores.resolve("ghcr.io/sgs/nir:0.1.0")
    assert (image.digest, image.tag, image.config) == (digest, "0.1.0", {"User": "10001:10001"})
    assert stores.resolve(f"nir@{digest}").digest == digest
    for missing in ("nir:0.2.0", "evil:1", f"nir@{outside}", "other"):
        with pytest.raises(ImageRefusedError) as error:
            stores.resolve(missing)
        assert error.value.reason == "ImageNotFound", missing
    # A link inside the store that leads out of it is not followed.
    (store / "evil").symlink_to(tmp_path / "elsewhere" / "evil")
    with pytest.raises(ImageRefusedError, match="none of this node's image stores"):
        stores.resolve("evil:1")
    with pytest.raises(ImageRefusedError) as error:
        ImageStores([]).resolve("nir:0.1.0")
    assert error.value.reason == "ImageNotAllowed"


def test_a_blob_that_does_not_match_its_digest_is_refused(tmp_path: Path) -> None:
    layout = tmp_path / "store" / "nir"
    digest = make_layout(layout, "1", {})
    (layout / "blobs" / "sha256" / digest.split(":")[1]).write_text("tampered")
    with pytest.raises(ImageRefusedError, match="does not match its digest"):
        ImageStores([tmp_path / "store"]).resolve("nir:1")


def test_process_args_follow_kubernetes_command_and_args_rules() -> None:
    image = {"Entrypoint": ["sgs", "operator"], "Cmd": ["--help"]}
    assert process_args(image, [], []) == ["sgs", "operator", "--help"]
    assert process_args(image, [], ["--version"]) == ["sgs", "operator", "--version"]
    assert process_args(image, ["sh", "-c"], ["echo"]) == ["sh", "-c", "echo"]
    assert process_args(image, ["true"], []) == ["true"]
    assert process_args({}, [], []) == []


def test_image_user_is_never_root() -> None:
    passwd = "root:x:0:0::/root:/bin/sh\nsgs:x:10001:10002::/tmp:/bin/sh\n"
    assert image_user({"User": "10001:10001"}) == (10001, 10001)
    assert image_user({"User": "sgs"}, passwd) == (10001, 10002)
    assert image_user({}) == (NOBODY, NOBODY)
    assert image_user({"User": "root"}, passwd) == (NOBODY, NOBODY)
    assert image_user({"User": "0:0"}) == (NOBODY, NOBODY)


def test_environment_is_the_image_s_under_the_pod_s() -> None:
    env = environment({"Env": ["PATH=/opt/sgs/bin:/usr/bin", "LANG=C.UTF-8"]}, {"LANG": "en_GB.UTF-8", "X": "1"})
    assert env == {"PATH": "/opt/sgs/bin:/usr/bin", "LANG": "en_GB.UTF-8", "X": "1"}
    assert environment({}, {})["PATH"].endswith("/usr/bin:/sbin:/bin")


def test_runtime_config_is_unprivileged_read_only_and_limited(tmp_path: Path) -> None:
    config = runtime_config(
        rootfs=tmp_path / "rootfs",
        args=["sh", "-c", "true"],
        env={"A": "1"},
        cwd="/sgs/work",
        user=(10001, 10001),
        host_user=(0, 0),
        mounts=[Mount("/data/run", tmp_path / "run"), Mount("/data", tmp_path / "data", read_only=True)],
        limits=Limits(memory_bytes=2**30, cpus=1.5),
        hostname="task",
        cgroups_path="sgs/uid",
    )
    process = config["process"]
    assert process["user"] == {"uid": 10001, "gid": 10001}
    assert process["noNewPrivileges"] is True
    assert all(caps == [] for caps in process["capabilities"].values())
    assert process["env"] == ["A=1"]
    assert config["root"] == {"path": str(tmp_path / "rootfs"), "readonly": True}
    binds = [(m["destination"], m["options"][1]) for m in config["mounts"] if m["type"] == "bind"]
    assert [b for b in binds if b[0].startswith("/data")] == [("/data", "ro"), ("/data/run", "rw")]  # outer first
    linux = config["linux"]
    assert {"type": "user"} in linux["namespaces"] and {"type": "network"} not in linux["namespaces"]
    assert linux["uidMappings"] == [{"containerID": 10001, "hostID": 0, "size": 1}]
    assert linux["resources"] == {
        "memory": {"limit": 2**30, "swap": 2**30},
        "cpu": {"quota": 150000, "period": 100000},
    }
    no_cgroups = runtime_config(
        rootfs=tmp_path,
        args=["true"],
        env={},
        cwd="/",
        user=(1, 1),
        host_user=(0, 0),
        mounts=[],
        limits=None,
        hostname="t",
        cgroups_path="x",
    )
    assert "resources" not in no_cgroups["linux"] and "cgroupsPath" not in no_cgroups["linux"]


def _pod(container: dict[str, object]) -> dict[str, object]:
    volume = {"name": "data", "hostPath": {"path": "/srv/data"}}
    return {
        "metadata": {"uid": "u1", "name": "p", "namespace": "ns"},
        "spec": {"containers": [{"name": "main", **container}], "volumes": [volume]},
    }


def test_container_view_keeps_the_pod_s_paths_and_needs_an_image(tmp_path: Path) -> None:
    mounts = [{"name": "data", "mountPath": "/data", "readOnly": True}]
    container = {"image": "nir:1", "args": ["/data/in.fits"], "env": [{"name": "X", "value": "$(Y)"}]}
    spec = task_from_pod(_pod({**container, "volumeMounts": mounts}), tmp_path, container_runtime=True)
    assert spec.call is not None
    assert (spec.call.image, spec.call.command, spec.call.args) == ("nir:1", [], ["/data/in.fits"])
    assert spec.call.env == {"X": "$(Y)"}
    assert spec.volumes[0].read_only and spec.volumes[0].mount_path == "/data"
    with pytest.raises(PodSpecError, match="command"):
        task_from_pod(_pod({"image": "nir:1"}), tmp_path)  # without a runtime, a command is required
    with pytest.raises(PodSpecError, match="image"):
        task_from_pod(_pod({"command": ["true"]}), tmp_path, container_runtime=True)

"""The operator's storage roots: what a Run may name and what its Jobs mount (symlinks and .. resolved)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sgs_operator.jobs import HostMount
from sgs_operator.storage import Mounts, OutsideRootsError, Roots

from sgs.model.site import SiteSpec


@pytest.fixture
def roots(tmp_path: Path) -> Roots:
    (tmp_path / "store").mkdir()
    (tmp_path / "refs").mkdir()
    spec = SiteSpec.model_validate(
        {
            "storage": {"kind": "posix", "path": str(tmp_path / "store"), "readOnlyPaths": [str(tmp_path / "refs")]},
            "capacity": {"cores": 1, "storageTb": 1},
        }
    )
    return Roots.of("site-a", spec)


def test_paths_are_confined_after_resolving_dots_and_symlinks(roots: Roots, tmp_path: Path) -> None:
    (tmp_path / "store" / "alias").symlink_to(tmp_path / "refs")
    (tmp_path / "store" / "out").symlink_to("/etc")

    assert roots.confine(f"{tmp_path}/store/alias/cal.fits", "x") == f"{tmp_path}/refs/cal.fits"
    with pytest.raises(OutsideRootsError, match="resolves to /etc/hostname"):
        roots.confine(f"{tmp_path}/store/out/hostname", "x")
    with pytest.raises(OutsideRootsError, match=r"x: .*/store/\.\./elsewhere .*is outside Site site-a"):
        roots.confine(f"{tmp_path}/store/../elsewhere", "x")
    with pytest.raises(OutsideRootsError, match="is outside"):
        roots.confine(f"{tmp_path}/storeroom/file", "x")  # a sibling sharing the root's name as a prefix
    with pytest.raises(OutsideRootsError, match="storage path"):
        roots.confine_writable(f"{tmp_path}/refs/out", "spec.outputPrefix")


def test_a_mount_never_reaches_above_its_root(roots: Roots, tmp_path: Path) -> None:
    assert roots.mount_dir(f"{tmp_path}/refs/cal/flat.fits") == f"{tmp_path}/refs/cal"
    assert roots.mount_dir(f"{tmp_path}/refs/flat.fits") == f"{tmp_path}/refs"
    assert roots.mount_dir(f"{tmp_path}/refs") == f"{tmp_path}/refs"  # the root itself as input: not its parent
    assert roots.mount_dir("/etc/hostname") is None


def test_the_runs_directory_is_the_only_writable_mount_and_comes_after_a_read_only_parent(tmp_path: Path) -> None:
    run_dir = f"{tmp_path}/store/ns/run"
    mounts = Mounts(run_dir)

    assert mounts.add([f"{tmp_path}/store", f"{tmp_path}/store/raw", f"{run_dir}/split"])
    assert not mounts.add([f"{tmp_path}/store"])

    assert mounts.host_mounts() == (HostMount(f"{tmp_path}/store", True), HostMount(run_dir, False))

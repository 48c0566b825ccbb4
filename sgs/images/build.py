"""Reproducible OCI images of sgs built without a container daemon: mmdebstrap, chroot, umoci.

Three cached steps, each keyed by a hash of its inputs so an unchanged build is reused:

1. the Debian rootfs (`mmdebstrap --variant=essential` with SOURCE_DATE_EPOCH; bit-identical across runs), shared
   by every image and made once per machine;
2. the base image: that rootfs as one layer, plus a layer holding the venv /opt/sgs, made by pip in a chroot of
   the rootfs from pinned wheels (images/requirements.lock, no index, `--no-compile`) and tarred with sorted
   entries, owner 0 and every mtime at SOURCE_DATE_EPOCH; umoci writes both layers and the configuration of
   images/base/Dockerfile with pinned creation times;
3. each image: the base's blobs (hard links) plus the configuration of images/<name>/Dockerfile — a new config
   and manifest only, so all images share their two layers.

Every image is an OCI layout (…/<name>/<key>/oci, tag = the sgs version) and an OCI archive tarball beside it
(`skopeo copy oci-archive:<tarball> …` or `podman load` push or load it).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel

from sgs.images.dockerfile import ImageConfig, read_config

# Every timestamp of every image: files, layers' history, configs. Fixed rather than the commit's time so a
# rebuild of an unchanged tree never differs because a commit touched something outside the image.
SOURCE_DATE_EPOCH = 1700000000
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
# The essential variant has no apt, no compiler and no pip: python3, CA certificates and the C++ runtime that
# manylinux wheels (numpy, scipy) link against are all the images add.
DEBIAN_PACKAGES = ("python3", "ca-certificates", "libstdc++6")
# pip runs from its wheel inside the chroot and is not installed into the image.
PIP_VERSION = "26.3"
# Bump when the build steps change in a way the other inputs do not show.
BUILDER_REVISION = "1"
IMAGE_NAMES = ("operator", "archive", "transfer", "trigger", "bridge", "console", "nir")
VENV = "opt/sgs"
# What the sgs wheel is built from (pyproject.toml's packages.find and readme).
SOURCE_PATHS = ("pyproject.toml", "README.md", "sgs", "operators", "services")
TOOLS = {"mmdebstrap": "mmdebstrap", "umoci": "umoci", "chroot": "coreutils", "tar": "tar"}

Progress = Callable[[str], None]


class ImageBuildError(RuntimeError):
    """A build that cannot proceed, with what to do about it."""


class BuiltImage(BaseModel):
    """One image of the cache: what `sgs images build` and `list` print."""

    name: str
    tag: str
    key: str
    digest: str
    size: int  # manifest + config + compressed layers, bytes
    tarball: Path
    tarball_size: int
    layout: Path
    build_seconds: float
    reused: bool = False


def default_cache_dir() -> Path:
    return Path(os.environ.get("SGS_IMAGES_CACHE") or Path.home() / ".cache" / "sgs" / "images")


def repo_root() -> Path:
    """The checkout whose images/ and sources are built (this package's parent; images/ must be there)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "images" / "base" / "Dockerfile").is_file():
        raise ImageBuildError(f"{root} has no images/base/Dockerfile: build images from an sgs checkout")
    return root


def require_tool(binary: str) -> str:
    found = shutil.which(binary)
    if found is None:
        raise ImageBuildError(f"{binary} not found: install the Debian package with `apt-get install {TOOLS[binary]}`")
    return found


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _key(parts: dict[str, str]) -> str:
    return _sha256(json.dumps(parts, sort_keys=True).encode())[:16]


def _created() -> str:
    return datetime.fromtimestamp(SOURCE_DATE_EPOCH, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _run(command: Sequence[str | Path], *, env: dict[str, str] | None = None) -> None:
    done = subprocess.run([str(part) for part in command], capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip()[-2000:]
        raise ImageBuildError(f"{Path(str(command[0])).name} failed ({done.returncode}): {tail}")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One builder at a time per cache entry (two CI jobs, or a test beside `sgs images build`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _source_files(repo: Path) -> list[Path]:
    files: list[Path] = []
    for name in SOURCE_PATHS:
        top = repo / name
        if top.is_file():
            files.append(top)
            continue
        for path in sorted(top.rglob("*")):
            relative = path.relative_to(repo).parts
            skipped = any(part == "__pycache__" or part.endswith(".egg-info") for part in relative)
            if path.is_file() and not skipped and path.suffix != ".pyc":
                files.append(path)
    return files


def source_hash(repo: Path) -> str:
    digest = hashlib.sha256()
    for path in _source_files(repo):
        digest.update(str(path.relative_to(repo)).encode() + b"\0" + _sha256(path.read_bytes()).encode())
    return digest.hexdigest()


def image_tag(repo: Path) -> str:
    version = tomllib.loads((repo / "pyproject.toml").read_text())["project"]["version"]
    return str(version)


def _normalized(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = SOURCE_DATE_EPOCH
    info.mode &= 0o7755  # never group- or world-writable
    return info


def write_deterministic_tar(root: Path, members: Sequence[str], out: Path) -> None:
    """Tar `members` (paths relative to root, directories recursively) in sorted order with owner 0 and pinned
    mtimes: the same tree gives the same bytes."""
    paths: list[Path] = []
    for member in members:
        top = root / member
        paths.append(top)
        if top.is_dir() and not top.is_symlink():
            paths.extend(sorted(top.rglob("*")))
    with tarfile.open(out, "w", format=tarfile.GNU_FORMAT) as tar:
        for path in sorted(paths, key=lambda p: p.relative_to(root).parts):
            info = _normalized(tar.gettarinfo(str(path), arcname=str(path.relative_to(root))))
            if info.isreg():
                with path.open("rb") as data:
                    tar.addfile(info, data)
            else:
                tar.addfile(info)


def write_lock(repo: Path, out: Path) -> int:
    """Pin sgs's runtime dependencies at the versions of this environment (the tested ones): pip resolves
    pyproject.toml's dependencies with this environment's `pip freeze` as constraints, binary wheels only."""
    with tempfile.TemporaryDirectory() as scratch:
        constraints = Path(scratch, "constraints.txt")
        frozen = subprocess.run(
            [sys.executable, "-m", "pip", "freeze", "--exclude-editable"], capture_output=True, text=True, check=True
        )
        constraints.write_text(frozen.stdout)
        report = Path(scratch, "report.json")
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "-q",
                "--dry-run",
                "--ignore-installed",
                "--only-binary=:all:",
                "--report",
                report,
                "-c",
                constraints,
                repo,
            ]
        )
        installs = json.loads(report.read_text())["install"]
    pins = sorted(
        f"{item['metadata']['name']}=={item['metadata']['version']}"
        for item in installs
        if item["metadata"]["name"] != "sgs"
    )
    header = "# sgs's runtime dependencies in the images, pinned (regenerate: `sgs images lock`).\n"
    out.write_text(header + "\n".join(pins) + "\n")
    return len(pins)


class ImageBuilder:
    """Builds the images of one checkout into `cache_dir`; the rootfs and wheels come from `shared_dir`
    (default: the same), so a test can build into fresh directories yet reuse the machine's Debian rootfs."""

    def __init__(
        self,
        repo: Path | None = None,
        cache_dir: Path | None = None,
        shared_dir: Path | None = None,
        progress: Progress | None = None,
        mirror: str = DEBIAN_MIRROR,
    ) -> None:
        self.repo = repo or repo_root()
        self.cache_dir = cache_dir or default_cache_dir()
        self.shared_dir = shared_dir or self.cache_dir
        self.progress: Progress = progress or (lambda _line: None)
        self.mirror = mirror
        self.tag = image_tag(self.repo)
        self.lock_file = self.repo / "images" / "requirements.lock"

    # ---- keys -----------------------------------------------------------------------------------------------
    def rootfs_key(self) -> str:
        return _key(
            {
                "suite": DEBIAN_SUITE,
                "mirror": self.mirror,
                "packages": ",".join(DEBIAN_PACKAGES),
                "epoch": str(SOURCE_DATE_EPOCH),
            }
        )

    def wheels_key(self) -> str:
        return _key({"lock": _sha256(self.lock_file.read_bytes()), "pip": PIP_VERSION})

    def base_key(self) -> str:
        return _key(
            {
                "builder": BUILDER_REVISION,
                "rootfs": self.rootfs_key(),
                "wheels": self.wheels_key(),
                "source": source_hash(self.repo),
                "tag": self.tag,
                "dockerfile": _sha256((self.repo / "images" / "base" / "Dockerfile").read_bytes()),
            }
        )

    def image_key(self, name: str, base_key: str) -> str:
        return _key({"base": base_key, "dockerfile": _sha256(self.dockerfile(name).read_bytes())})

    def dockerfile(self, name: str) -> Path:
        path = self.repo / "images" / name / "Dockerfile"
        if name not in (*IMAGE_NAMES, "base") or not path.is_file():
            raise ImageBuildError(f"no image {name!r}: one of {', '.join(IMAGE_NAMES)}")
        return path

    # ---- steps ----------------------------------------------------------------------------------------------
    def _step(self, name: str, what: str, work: Callable[[], None]) -> None:
        started = time.monotonic()
        self.progress(f"{name}: {what} …")
        work()
        self.progress(f"{name}: {what} done in {time.monotonic() - started:.1f} s")

    def rootfs(self) -> Path:
        """The Debian rootfs tarball, made once per key (mmdebstrap's output is bit-identical across runs)."""
        entry = self.shared_dir / "rootfs" / self.rootfs_key()
        tarball = entry / "rootfs.tar"
        with _locked(entry.with_suffix(".lock")):
            if tarball.is_file():
                return tarball
            if os.geteuid() != 0:
                raise ImageBuildError("mmdebstrap --mode=root and the chroot build need root")
            mmdebstrap = require_tool("mmdebstrap")
            entry.mkdir(parents=True, exist_ok=True)
            partial = entry / "rootfs.tar.partial"
            env = {**os.environ, "SOURCE_DATE_EPOCH": str(SOURCE_DATE_EPOCH)}
            command: list[str | Path] = [
                mmdebstrap,
                "--quiet",
                "--mode=root",
                "--variant=essential",
                "--format=tar",
                f"--include={','.join(DEBIAN_PACKAGES)}",
                DEBIAN_SUITE,
                partial,
                self.mirror,
            ]
            self._step(
                "rootfs", f"mmdebstrap {DEBIAN_SUITE} ({', '.join(DEBIAN_PACKAGES)})", lambda: _run(command, env=env)
            )
            partial.rename(tarball)
        return tarball

    def wheels(self) -> Path:
        """Every pinned wheel (and pip's own), downloaded once per lock."""
        entry = self.shared_dir / "wheels" / self.wheels_key()
        with _locked(entry.with_suffix(".lock")):
            if (entry / ".complete").is_file():
                return entry
            if sys.version_info[:2] != (3, 11):
                raise ImageBuildError("the wheels are picked for the images' Python 3.11: run sgs with Python 3.11")
            entry.mkdir(parents=True, exist_ok=True)
            command: list[str | Path] = [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "--only-binary=:all:",
                "--dest",
                entry,
                "-r",
                self.lock_file,
                f"pip=={PIP_VERSION}",
            ]
            self._step("wheels", "pip download (images/requirements.lock)", lambda: _run(command))
            (entry / ".complete").touch()
        return entry

    def _sgs_wheel(self, out: Path) -> Path:
        """The sgs wheel, from a copy of exactly the hashed source files (no stray build/ or egg-info)."""
        source = out / "src"
        for path in _source_files(self.repo):
            target = source / path.relative_to(self.repo)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
        env = {**os.environ, "SOURCE_DATE_EPOCH": str(SOURCE_DATE_EPOCH)}
        _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir", out / "dist", source], env=env)
        return next((out / "dist").glob("sgs-*.whl"))

    def _venv_layer(self, scratch: Path, rootfs: Path, wheels: Path) -> Path:
        """/opt/sgs made by pip in a chroot of the rootfs, tarred deterministically."""
        chroot = require_tool("chroot")
        root = scratch / "root"
        root.mkdir()
        _run([require_tool("tar"), "-xf", rootfs, "-C", root, "--numeric-owner"])
        build = root / "build"
        (build / "wheels").mkdir(parents=True)
        for wheel in wheels.glob("*.whl"):
            with contextlib.suppress(OSError):  # another filesystem: copy instead
                os.link(wheel, build / "wheels" / wheel.name)
            if not (build / "wheels" / wheel.name).exists():
                shutil.copy2(wheel, build / "wheels" / wheel.name)
        sgs_wheel = self._sgs_wheel(scratch / "sgs")
        shutil.copy2(sgs_wheel, build / "wheels" / sgs_wheel.name)
        shutil.copy2(self.lock_file, build / "requirements.lock")
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": "/root",
            "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1",
            "SOURCE_DATE_EPOCH": str(SOURCE_DATE_EPOCH),
        }
        _run([chroot, root, "/usr/bin/python3", "-m", "venv", "--without-pip", f"/{VENV}"], env=env)
        _run(
            [
                chroot,
                root,
                f"/{VENV}/bin/python",
                f"/build/wheels/pip-{PIP_VERSION}-py3-none-any.whl/pip",
                "install",
                "--no-index",
                "--find-links",
                "/build/wheels",
                "--no-compile",
                "--no-deps",
                "--no-cache-dir",
                "--disable-pip-version-check",
                "--no-warn-script-location",
                "-r",
                "/build/requirements.lock",
                f"/build/wheels/{sgs_wheel.name}",
            ],
            env=env,
        )
        venv = root / VENV
        # direct_url.json names the build's wheel path and hash: meaningless in the image, and a build input leak.
        for leak in [*venv.rglob("direct_url.json"), *venv.rglob("__pycache__")]:
            shutil.rmtree(leak) if leak.is_dir() else leak.unlink()
        compiled = next(venv.rglob("*.pyc"), None)
        if compiled is not None:
            raise ImageBuildError(f"{compiled} in the venv: .pyc files make the layer non-deterministic")
        layer = scratch / "venv.tar"
        write_deterministic_tar(root, [VENV], layer)
        shutil.rmtree(root)
        return layer

    def _umoci(self, *args: str | Path) -> None:
        _run([require_tool("umoci"), *args])

    def _config_args(self, config: ImageConfig) -> list[str]:
        args: list[str] = []
        for key, value in sorted(config.env.items()):
            args.append(f"--config.env={key}={value}")
        for key, value in sorted(config.labels.items()):
            args.append(f"--config.label={key}={value}")
        args.extend(f"--config.exposedports={port}" for port in config.exposed_ports)
        if config.user is not None:
            args.append(f"--config.user={config.user}")
        if config.workdir is not None:
            args.append(f"--config.workingdir={config.workdir}")
        for field in ("entrypoint", "cmd"):
            values = getattr(config, field)
            if values is not None:
                args.append(f"--clear=config.{field}")
                args.extend(f"--config.{field}={value}" for value in values)
        return args

    def base_layout(self) -> tuple[Path, str, float, bool]:
        """The base image's OCI layout (tag `base`): its path, key, build seconds and whether it was reused."""
        key = self.base_key()
        entry = self.cache_dir / "base" / key
        layout = entry / "oci"
        with _locked(entry.with_suffix(".lock")):
            if (entry / "build.json").is_file():
                return layout, key, float(json.loads((entry / "build.json").read_text())["seconds"]), True
            started = time.monotonic()
            rootfs, wheels = self.rootfs(), self.wheels()
            config = read_config(self.dockerfile("base"), allow_build_steps=True)
            shutil.rmtree(entry, ignore_errors=True)
            entry.mkdir(parents=True)
            scratch = Path(tempfile.mkdtemp(prefix="build-", dir=entry))
            try:
                layer = scratch / "venv.tar"

                def make_venv_layer() -> None:
                    self._venv_layer(scratch, rootfs, wheels)

                self._step("base", "venv /opt/sgs (pip in a chroot, pinned wheels)", make_venv_layer)
                created = _created()
                image = f"{layout}:base"

                def assemble() -> None:
                    self._umoci("init", "--layout", layout)
                    self._umoci("new", "--image", image)
                    self._umoci(
                        "raw",
                        "add-layer",
                        "--image",
                        image,
                        f"--history.created={created}",
                        f"--history.created_by=mmdebstrap --variant=essential {DEBIAN_SUITE}",
                        rootfs,
                    )
                    self._umoci(
                        "raw",
                        "add-layer",
                        "--image",
                        image,
                        f"--history.created={created}",
                        "--history.created_by=pip install --no-compile -r images/requirements.lock sgs",
                        layer,
                    )
                    self._umoci(
                        "config",
                        "--image",
                        image,
                        f"--created={created}",
                        f"--history.created={created}",
                        "--history.created_by=images/base/Dockerfile",
                        "--os=linux",
                        "--architecture=amd64",
                        *self._config_args(config),
                    )
                    self._umoci("gc", "--layout", layout)

                self._step("base", "umoci: layers + config", assemble)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            seconds = time.monotonic() - started
            (entry / "build.json").write_text(json.dumps({"key": key, "seconds": round(seconds, 1)}))
            return layout, key, seconds, False

    def build(self, names: Sequence[str] = IMAGE_NAMES) -> list[BuiltImage]:
        for binary in ("umoci", "chroot", "tar"):
            require_tool(binary)
        for name in names:
            self.dockerfile(name)
        base, base_key, base_seconds, _ = self.base_layout()
        return [self._image(name, base, base_key, base_seconds) for name in names]

    def _image(self, name: str, base: Path, base_key: str, base_seconds: float) -> BuiltImage:
        key = self.image_key(name, base_key)
        entry = self.cache_dir / name / key
        record = entry / "build.json"
        with _locked(entry.with_suffix(".lock")):
            if record.is_file():
                return BuiltImage.model_validate({**json.loads(record.read_text()), "reused": True})
            started = time.monotonic()
            config = read_config(self.dockerfile(name), allow_build_steps=False)
            shutil.rmtree(entry, ignore_errors=True)
            layout = entry / "oci"
            # The blobs are content-addressed and never rewritten: hard links share them with the base.
            shutil.copytree(base, layout, copy_function=_link_blobs)
            created = _created()

            def configure() -> None:
                self._umoci(
                    "config",
                    "--image",
                    f"{layout}:base",
                    f"--tag={self.tag}",
                    f"--created={created}",
                    f"--history.created={created}",
                    f"--history.created_by=images/{name}/Dockerfile",
                    *self._config_args(config),
                )
                self._umoci("rm", "--image", f"{layout}:base")
                self._umoci("gc", "--layout", layout)

            self._step(name, "umoci config", configure)
            tarball = entry / f"{name}-{self.tag}.oci.tar"
            self._step(name, "OCI archive", lambda: write_deterministic_tar(layout, ["."], tarball))
            digest, size = manifest_digest_and_size(layout)
            image = BuiltImage(
                name=name,
                tag=self.tag,
                key=key,
                digest=digest,
                size=size,
                tarball=tarball,
                tarball_size=tarball.stat().st_size,
                layout=layout,
                build_seconds=round(base_seconds + time.monotonic() - started, 1),
            )
            record.write_text(image.model_dump_json(indent=1))
            return image

    def cached(self) -> list[tuple[str, BuiltImage | None]]:
        """Each image with its build for the current inputs, or None when it is not built."""
        base_key = self.base_key()
        found: list[tuple[str, BuiltImage | None]] = []
        for name in IMAGE_NAMES:
            record = self.cache_dir / name / self.image_key(name, base_key) / "build.json"
            image = BuiltImage.model_validate_json(record.read_text()) if record.is_file() else None
            found.append((name, image))
        return found

    def prune(self) -> list[Path]:
        """Remove every cached build that is not the current one (each source change leaves ~0.2 GiB per image
        behind): the images, the base, and rootfs/wheels entries of other keys in this cache directory."""
        base_key = self.base_key()
        current = {"base": base_key, "rootfs": self.rootfs_key(), "wheels": self.wheels_key()}
        current.update({name: self.image_key(name, base_key) for name in IMAGE_NAMES})
        removed: list[Path] = []
        for kind, key in sorted(current.items()):
            directory = self.cache_dir / kind
            if not directory.is_dir():
                continue
            for entry in sorted(directory.iterdir()):
                if entry.is_dir() and entry.name != key:
                    with _locked(entry.with_suffix(".lock")):
                        shutil.rmtree(entry)
                    entry.with_suffix(".lock").unlink(missing_ok=True)
                    removed.append(entry)
        return removed


def _link_blobs(source: str, destination: str) -> None:
    if "/blobs/" in source:
        os.link(source, destination)
    else:
        shutil.copy2(source, destination)


def manifest_digest_and_size(layout: Path) -> tuple[str, int]:
    """The layout's (only) manifest digest and the image's size: manifest, config and layers as stored."""
    index = json.loads((layout / "index.json").read_text())
    descriptor = index["manifests"][0]
    algorithm, hexdigest = descriptor["digest"].split(":", 1)
    manifest = json.loads((layout / "blobs" / algorithm / hexdigest).read_text())
    size = int(descriptor["size"]) + int(manifest["config"]["size"])
    size += sum(int(layer["size"]) for layer in manifest["layers"])
    return str(descriptor["digest"]), size

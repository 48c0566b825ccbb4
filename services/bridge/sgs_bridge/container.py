"""Container mode of the process and Slurm providers: a pod's image, from an administrator's image store, run
by crun (``ContainerMode``: one way to resolve, unpack and write the bundle, used by both).

An image reference resolves only against the OCI layouts under the stores the node was given
(``--image-store DIR``, e.g. the sgs image cache ~/.cache/sgs/images): nothing is pulled. A reference that is
not a plain ``[host/]path/name[:tag][@sha256:…]`` (``..``, absolute paths, odd characters) is refused as
``ImageNotAllowed``; one no store holds is ``ImageNotFound``. The image's rootfs is unpacked once per manifest
digest (``umoci unpack``) and shared read-only by every pod that runs it.

The runtime config (``runtime_config``, pure) gives the process the image's entrypoint/cmd (or the pod's
command/args), the image's environment under the pod's, the image's user (never root: an image without a
non-root user runs as 65534), no capabilities, no new privileges, a read-only root, the pod's volumes as bind
mounts at their mountPaths, and memory and CPU limits through cgroups when the node has them. A user namespace
maps the container's user to the bridge's own uid, so what a task writes to its volumes is owned on the host as
in process mode, while inside it is not root. The host network is shared, as in process mode (a task reaches
its Site's store on the node's addresses).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sgs_bridge.files import read_json, write_json_atomically
from sgs_bridge.podspec import TaskSpec
from sgs_bridge.providers.base import SubmitRefusedError

JSON = dict[str, Any]
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"
NOBODY = 65534
CONTAINER_RUNTIMES = ("none", "crun")
CONTAINER_WORKDIR = "/sgs/work"  # the pod's work directory inside its container (cwd unless the pod or image says)
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REFERENCE = re.compile(
    rf"(?P<name>(?:[A-Za-z0-9.-]+(?::[0-9]+)?/)?{_COMPONENT}(?:/{_COMPONENT})*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[0-9a-f]{64}))?"
)
# cgroup v1 with a cgroup2 hierarchy that has controllers ("hybrid"): crun 1.8 refuses it (even rootless, even with
# --cgroup-manager=disabled), so it runs in a mount namespace of its own without /sys/fs/cgroup/unified and manages
# the v1 hierarchies. As root that namespace is the host's user's: unmount the hierarchy. Rootless, unmounting an
# inherited mount is refused, so a user namespace that maps the user to root hides it under an empty tmpfs (when
# the node, decided where the job runs, is hybrid); crun then maps the container's user to that root, i.e. to the
# user again on the host.
_UNIFIED = Path("/sys/fs/cgroup/unified")
_UNMOUNT_UNIFIED = 'umount /sys/fs/cgroup/unified 2>/dev/null; exec "$0" "$@"'
_HIDE_UNIFIED = (
    "if grep -q . /sys/fs/cgroup/unified/cgroup.controllers 2>/dev/null; "
    'then mount -t tmpfs -o ro sgs-no-cgroup2 /sys/fs/cgroup/unified || exit 125; fi; exec "$0" "$@"'
)


class ImageRefusedError(RuntimeError):
    """The pod's image cannot run here; ``reason`` is the pod's status reason (ImageNotAllowed, ImageNotFound)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Reference:
    name: str  # repository path, e.g. ghcr.io/sgs/nir
    tag: str | None
    digest: str | None

    @property
    def paths(self) -> list[str]:
        """Where a store may hold it: the whole repository path, then its last component (`sgs/nir` → `nir`)."""
        last = self.name.rsplit("/", 1)[-1]
        return [self.name] if last == self.name else [self.name, last]


def parse_reference(text: str) -> Reference:
    match = _REFERENCE.fullmatch(text)
    if match is None or ".." in text.split("/"):
        raise ImageRefusedError("ImageNotAllowed", f"image {text!r} is not a plain [host/]name[:tag][@digest]")
    tag = match.group("tag")
    digest = match.group("digest")
    return Reference(match.group("name"), tag if tag or digest else "latest", digest)


@dataclass(frozen=True)
class ResolvedImage:
    reference: str
    layout: Path
    tag: str  # the layout's ref.name of the manifest (what umoci unpacks)
    digest: str  # sha256:… of the manifest
    config: JSON  # the image configuration's "config" (Env, Entrypoint, Cmd, User, WorkingDir)


class ImageStores:
    """OCI layouts under a few directories: `<store>/<name>/index.json` or, as the sgs image cache keeps them,
    `<store>/<name>/<key>/oci/index.json`. Among several layouts with the tag, the newest one wins."""

    def __init__(self, stores: Sequence[Path]) -> None:
        self.stores = [Path(store).resolve() for store in stores]

    def resolve(self, text: str) -> ResolvedImage:
        reference = parse_reference(text)
        if not self.stores:
            raise ImageRefusedError("ImageNotAllowed", f"image {text!r}: this node has no image store")
        found: list[tuple[float, ResolvedImage]] = []
        for store in self.stores:
            for relative in reference.paths:
                for layout in _layouts(store, store / relative):
                    image = _match(layout, reference, text)
                    if image is not None:
                        found.append(((layout / "index.json").stat().st_mtime, image))
        if not found:
            stores = ", ".join(str(store) for store in self.stores)
            message = f"image {text!r} is in none of this node's image stores ({stores})"
            raise ImageRefusedError("ImageNotFound", message)
        return max(found, key=lambda item: (item[0], str(item[1].layout)))[1]


def _layouts(store: Path, directory: Path) -> Iterator[Path]:
    candidates = [directory, *sorted(directory.glob("*/oci"))] if directory.is_dir() else []
    for candidate in candidates:
        real = candidate.resolve()
        if real.is_relative_to(store) and (real / "index.json").is_file():  # no way out of the store by a link
            yield real


def _match(layout: Path, reference: Reference, text: str) -> ResolvedImage | None:
    try:
        index = json.loads((layout / "index.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    for descriptor in index.get("manifests") or []:
        tag = (descriptor.get("annotations") or {}).get(REF_NAME_ANNOTATION)
        digest = str(descriptor.get("digest", ""))
        if not tag or not digest.startswith("sha256:"):
            continue
        if reference.digest is not None and digest != reference.digest:
            continue
        if reference.digest is None and tag != reference.tag:
            continue
        manifest = _blob(layout, digest)
        config = json.loads(_blob(layout, json.loads(manifest)["config"]["digest"]))
        return ResolvedImage(text, layout, tag, digest, config.get("config") or {})
    return None


def _blob(layout: Path, digest: str) -> bytes:
    algorithm, hexdigest = digest.split(":", 1)
    if algorithm != "sha256" or not re.fullmatch(r"[0-9a-f]{64}", hexdigest):
        raise ImageRefusedError("ImageNotFound", f"{layout}: unsupported digest {digest!r}")
    data = (layout / "blobs" / "sha256" / hexdigest).read_bytes()
    if hashlib.sha256(data).hexdigest() != hexdigest:
        raise ImageRefusedError("ImageNotFound", f"{layout}: blob {digest} does not match its digest")
    return data


def unpacked_rootfs(image: ResolvedImage, cache: Path, umoci: str = "umoci", *, rootless: bool = False) -> Path:
    """The image's root filesystem, unpacked once per manifest digest under ``cache`` (blocking); ``rootless``
    (not root: umoci cannot chown) owns every file by the user."""
    entry = cache / image.digest.split(":", 1)[1]
    rootfs = entry / "rootfs"
    if rootfs.is_dir():
        return rootfs
    cache.mkdir(parents=True, exist_ok=True)
    with _locked(cache / f"{entry.name}.lock"):
        if rootfs.is_dir():
            return rootfs
        scratch = Path(tempfile.mkdtemp(prefix="unpack-", dir=cache))
        try:
            bundle = scratch / "bundle"
            run = subprocess.run(
                [
                    umoci,
                    "unpack",
                    *(["--rootless"] if rootless else []),
                    "--image",
                    f"{image.layout}:{image.tag}",
                    str(bundle),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if run.returncode != 0:
                raise ImageRefusedError("ImageUnpackFailed", f"umoci unpack {image.reference}: {run.stderr.strip()}")
            entry.mkdir(exist_ok=True)
            (bundle / "rootfs").rename(rootfs)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return rootfs


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


# ------------------------------------------------------------------------------------------------ runtime config


@dataclass(frozen=True)
class Mount:
    destination: str
    source: Path
    read_only: bool = False


@dataclass(frozen=True)
class Limits:
    memory_bytes: int | None
    cpus: float | None


def process_args(image_config: Mapping[str, Any], command: Sequence[str], args: Sequence[str]) -> list[str]:
    """Kubernetes' rule: command replaces the entrypoint (and drops cmd); args replace cmd."""
    entrypoint = list(image_config.get("Entrypoint") or [])
    cmd = list(image_config.get("Cmd") or [])
    if command:
        return [*command, *args]
    return [*entrypoint, *(args or cmd)]


def image_user(image_config: Mapping[str, Any], passwd: str = "", group: str = "") -> tuple[int, int]:
    """The image's USER as numbers (names looked up in its /etc/passwd and /etc/group); root → 65534."""
    text = str(image_config.get("User") or "")
    user, _, grp = text.partition(":")
    uid = _lookup(user, passwd, 2) if user else 0
    gid = _lookup(grp, group, 2) if grp else _primary_gid(user, passwd, uid)
    if uid == 0:
        return NOBODY, NOBODY
    return uid, gid


def _lookup(name: str, table: str, column: int) -> int:
    if name.isdigit():
        return int(name)
    for line in table.splitlines():
        fields = line.split(":")
        if len(fields) > column and fields[0] == name and fields[column].isdigit():
            return int(fields[column])
    return NOBODY


def _primary_gid(user: str, passwd: str, uid: int) -> int:
    for line in passwd.splitlines():
        fields = line.split(":")
        if len(fields) > 3 and (fields[0] == user or fields[2] == str(uid)) and fields[3].isdigit():
            return int(fields[3])
    return uid


def environment(image_config: Mapping[str, Any], pod_env: Mapping[str, str]) -> dict[str, str]:
    env = dict(item.split("=", 1) for item in image_config.get("Env") or [] if "=" in item)
    env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    return {**env, **pod_env}


def runtime_config(
    *,
    rootfs: Path,
    args: Sequence[str],
    env: Mapping[str, str],
    cwd: str,
    user: tuple[int, int],
    host_user: tuple[int, int],
    mounts: Sequence[Mount],
    limits: Limits | None,
    hostname: str,
    cgroups_path: str,
) -> JSON:
    """The OCI runtime config (config.json) of one pod's container (pure)."""
    uid, gid = user
    no_caps: JSON = {kind: [] for kind in ("bounding", "effective", "inheritable", "permitted", "ambient")}
    linux: JSON = {
        "namespaces": [{"type": kind} for kind in ("pid", "ipc", "uts", "mount", "user")],
        "uidMappings": [{"containerID": uid, "hostID": host_user[0], "size": 1}],
        "gidMappings": [{"containerID": gid, "hostID": host_user[1], "size": 1}],
        "maskedPaths": [
            "/proc/acpi",
            "/proc/asound",
            "/proc/kcore",
            "/proc/keys",
            "/proc/latency_stats",
            "/proc/timer_list",
            "/proc/timer_stats",
            "/proc/sched_debug",
            "/proc/scsi",
            "/sys/firmware",
        ],
        "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
    }
    if limits is not None:
        resources: JSON = {}
        if limits.memory_bytes:
            resources["memory"] = {"limit": limits.memory_bytes, "swap": limits.memory_bytes}
        if limits.cpus:
            period = 100_000
            resources["cpu"] = {"quota": max(1000, round(limits.cpus * period)), "period": period}
        linux["resources"] = resources
        linux["cgroupsPath"] = cgroups_path
    base_mounts: list[JSON] = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"],
        },
        {
            "destination": "/dev/shm",
            "type": "tmpfs",
            "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        },
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {
            "destination": "/tmp",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "nodev", "mode=1777", "size=262144k"],
        },
    ]
    for name in ("resolv.conf", "hosts"):
        if Path("/etc", name).is_file():
            base_mounts.append(
                {"destination": f"/etc/{name}", "type": "bind", "source": f"/etc/{name}", "options": ["rbind", "ro"]}
            )
    binds = [
        {
            "destination": mount.destination,
            "type": "bind",
            "source": str(mount.source),
            "options": ["rbind", "ro" if mount.read_only else "rw", "nosuid", "nodev"],
        }
        for mount in sorted(mounts, key=lambda m: (len(m.destination), m.destination))
    ]
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": uid, "gid": gid},
            "args": list(args),
            "env": [f"{key}={value}" for key, value in env.items()],
            "cwd": cwd,
            "capabilities": no_caps,
            "noNewPrivileges": True,
        },
        "root": {"path": str(rootfs), "readonly": True},
        "hostname": hostname,
        "mounts": base_mounts + binds,
        "linux": linux,
    }


def hybrid_cgroups(unified: Path = _UNIFIED) -> bool:
    """cgroup v1 beside a cgroup2 hierarchy with controllers, which crun refuses to work with."""
    try:
        return bool((unified / "cgroup.controllers").read_text().split())
    except OSError:
        return False


def cgroups_available() -> bool:
    """Memory and CPU limits can be set: cgroup2 with both controllers, or v1 memory and cpu hierarchies."""
    root = Path("/sys/fs/cgroup")
    with contextlib.suppress(OSError):
        if "memory" in (root / "cgroup.controllers").read_text().split():
            return os.access(root, os.W_OK)
    return all(os.access(root / kind, os.W_OK) for kind in ("memory", "cpu"))


def crun_prefix(*, hybrid: bool, rootless: bool = False) -> list[str]:
    """What crun runs under (run and delete alike): a user and mount namespace rootless, a mount one if hybrid."""
    if rootless:
        userns = ["unshare", "--user", "--map-root-user", "--mount", "--propagation", "private"]
        return [*userns, "sh", "-c", _HIDE_UNIFIED]
    if hybrid:
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", _UNMOUNT_UNIFIED]
    return []


def crun_argv(
    crun: str, state_root: Path, bundle: Path, container_id: str, *, hybrid: bool, rootless: bool = False
) -> list[str]:
    run = [crun, "--root", str(state_root), "run", "--bundle", str(bundle), container_id]
    return [*crun_prefix(hybrid=hybrid, rootless=rootless), *run]


def add_job_environment(bundle: Path, variables: Mapping[str, str]) -> None:
    """Give the container the job's own variables (SLURM_JOB_ID…), known only where the job runs, under the
    image's and the pod's (which win, as they do over the node's variables without a container)."""
    path = bundle / "config.json"
    config = json.loads(path.read_text())
    env = list(config["process"]["env"])
    present = {item.split("=", 1)[0] for item in env}
    env += [f"{key}={value}" for key, value in sorted(variables.items()) if key not in present]
    config["process"]["env"] = env
    write_json_atomically(path, config)


def remove_container(container: Mapping[str, Any]) -> None:
    """Force-delete a pod's container (what is left once crun itself was killed: its processes live on)."""
    crun, root, container_id = container.get("crun"), container.get("root"), container.get("id")
    if not (crun and root and container_id):
        return
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(
            [
                *map(str, container.get("prefix") or []),
                str(crun),
                "--root",
                str(root),
                "delete",
                "--force",
                str(container_id),
            ],
            capture_output=True,
            timeout=30,
            check=False,
        )


class ContainerMode:
    """What a provider needs to run pods in their images: the stores, crun, the rootfs cache and crun's state.

    ``bundle`` resolves the pod's image, unpacks its rootfs once per digest and writes ``bundle/config.json`` in
    the pod's directory; ``task`` turns the pod's task.json into ``crun run`` of that bundle. The process provider
    hands the task to its agent, the Slurm provider to the runner inside the sbatch job: the same files either way.
    ``state_dir`` holds ``rootfs/`` and ``crun/``; under Slurm it must be visible where the job runs (beside the
    pods' directories, which already have to be).
    """

    def __init__(self, stores: Sequence[Path], state_dir: Path, *, crun: str = "crun", umoci: str = "umoci") -> None:
        self.images = ImageStores(stores)
        self.crun = shutil.which(crun) or crun
        self.umoci = shutil.which(umoci) or umoci
        self.rootfs_cache = state_dir / "rootfs"
        self.crun_root = state_dir / "crun"
        self.hybrid_cgroups = hybrid_cgroups()
        # Not root: crun runs in a user namespace where the user is root (crun_argv), so that is the host side of
        # the container's user mapping; cgroups are root's (no limits but the node's, e.g. Slurm's).
        self.rootless = os.geteuid() != 0
        self.cgroups = cgroups_available() and not self.rootless
        self._image_ids: dict[Path, str] = {}

    def bundle(self, spec: TaskSpec) -> JSON:
        """Resolve, unpack and write the pod's bundle (blocking); a refusal is a SubmitRefusedError with its reason."""
        call = spec.call
        if call is None:
            raise SubmitRefusedError("the pod was read without its container view", reason="InvalidPodSpec")
        try:
            image = self.images.resolve(call.image)
            rootfs = unpacked_rootfs(image, self.rootfs_cache, self.umoci, rootless=self.rootless)
        except ImageRefusedError as error:
            raise SubmitRefusedError(str(error), reason=error.reason) from error
        args = process_args(image.config, call.command, call.args)
        if not args:
            raise SubmitRefusedError(f"image {call.image}: no command, entrypoint or cmd", reason="InvalidPodSpec")
        user = image_user(image.config, _read(rootfs / "etc/passwd"), _read(rootfs / "etc/group"))
        work = Mount(CONTAINER_WORKDIR, spec.working_dir)
        mounts = [work, *(Mount(v.mount_path, v.host_dir, v.read_only) for v in spec.volumes)]
        cwd = call.working_dir or str(image.config.get("WorkingDir") or "") or CONTAINER_WORKDIR
        limits = Limits(spec.memory_bytes, spec.cpus) if self.cgroups else None
        config = runtime_config(
            rootfs=rootfs,
            args=args,
            env=environment(image.config, call.env),
            cwd=cwd,
            user=user,
            host_user=(0, 0) if self.rootless else (os.geteuid(), os.getegid()),
            mounts=mounts,
            limits=limits,
            hostname=spec.name[:63] or spec.uid,
            cgroups_path=f"sgs/{spec.uid}",
        )
        bundle = spec.pod_dir / "bundle"
        bundle.mkdir(parents=True, exist_ok=True)
        write_json_atomically(bundle / "config.json", config)
        return {"bundle": str(bundle), "image": call.image, "image_id": image.digest, "cgroups": limits is not None}

    def task(self, spec: TaskSpec, task: JSON, container: JSON) -> JSON:
        """The pod's task.json with ``crun run`` of its bundle as the task (and what removes its container)."""
        bundle = Path(container["bundle"])
        argv = crun_argv(
            self.crun, self.crun_root, bundle, spec.uid, hybrid=self.hybrid_cgroups, rootless=self.rootless
        )
        return {
            **task,
            "argv": argv,
            "env": {"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            "cwd": str(bundle),
            "container": {
                "crun": self.crun,
                "root": str(self.crun_root),
                "id": spec.uid,
                "prefix": crun_prefix(hybrid=self.hybrid_cgroups, rootless=self.rootless),
                **container,
            },
        }

    def image_id(self, task_file: Path) -> str:
        """The manifest digest a pod's container runs (``imageID`` in its status), from its task.json."""
        if task_file not in self._image_ids:
            container = (read_json(task_file) or {}).get("container")
            if not isinstance(container, dict):
                return ""
            self._image_ids[task_file] = str(container.get("image_id") or "")
        return self._image_ids[task_file]


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""

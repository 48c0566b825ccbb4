"""A Pod as a backend task: argv, environment, working directory, resources, volumes as host directories.

Pure translation (no I/O): ConfigMaps and Secrets the pod references are passed in already fetched. There
is no container runtime, so every volume becomes a directory under the pod's host directory, and any
argument, env value or working directory that starts with a volume's mountPath is rewritten to point there.
Bad input raises PodSpecError naming the field and the reason.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

from sgs_bridge.quantity import QuantityError, parse_quantity

JSON = dict[str, Any]
GPU_RESOURCE = "nvidia.com/gpu"
WALLTIME_ANNOTATION = "sgs.io/walltime-seconds"
PARTITION_ANNOTATION = "sgs.io/slurm-partition"
ATTEMPT_LABEL = "sgs.io/attempt"  # the operator's: 0 for a task's first attempt, then 1, 2... for its retries
# The operator's: the pod's Run's priority now (spec.priority is fixed when the pod is made; this follows the Run).
PRIORITY_ANNOTATION = "sgs.io/priority"
PRIORITY_BOUND = 1_000_000_000  # PriorityClass values are at most 1e9 for user classes: beyond, not a priority
BASE_ENV_KEYS = ("PATH", "HOME", "LANG", "LC_ALL", "USER", "LOGNAME", "SHELL")
_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


class PodSpecError(ValueError):
    """The pod cannot run on this node; `.field` is the JSON path of the offending field."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class VolumeFiles:
    """One volume materialised on the host: its directory and the files to write into it."""

    name: str
    mount_path: str
    host_dir: Path
    files: Mapping[str, bytes] = field(default_factory=dict)
    file_mode: int = 0o644
    size_limit_bytes: int | None = None
    read_only: bool = False


@dataclass(frozen=True)
class ContainerCall:
    """The container as its image sees it (for a container runtime): paths as the pod wrote them, the pod's own
    environment only (not the node's), command and args with $(VAR) expanded."""

    image: str
    command: list[str]
    args: list[str]
    env: dict[str, str]
    working_dir: str | None


@dataclass(frozen=True)
class TaskSpec:
    """Everything a provider needs to run a pod's first container."""

    uid: str
    namespace: str
    name: str
    container: str
    pod_dir: Path
    argv: list[str]
    env: dict[str, str]
    working_dir: Path
    cpus: float
    memory_bytes: int | None
    gpus: int
    walltime_s: int | None
    tmp_bytes: int | None
    volumes: list[VolumeFiles]
    partition: str | None = None
    attempt: int = 0  # > 0: a retry (a pilot runs it first)
    priority: int = 0  # spec.priority, from the pod's PriorityClass
    call: ContainerCall | None = None  # set for a node with a container runtime

    @property
    def retry(self) -> bool:
        return self.attempt > 0

    @property
    def log_path(self) -> Path:
        return self.pod_dir / f"{self.container}.log"

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def referenced_objects(pod: JSON) -> tuple[set[str], set[str]]:
    """Names of the ConfigMaps and Secrets the pod's volumes and first container's env read."""
    configmaps: set[str] = set()
    secrets: set[str] = set()
    for volume in pod.get("spec", {}).get("volumes") or []:
        if "configMap" in volume:
            configmaps.add(volume["configMap"].get("name", ""))
        if "secret" in volume:
            secrets.add(volume["secret"].get("secretName", ""))
        for source in (volume.get("projected") or {}).get("sources") or []:
            if "configMap" in source:
                configmaps.add(source["configMap"].get("name", ""))
            if "secret" in source:
                secrets.add(source["secret"].get("name", ""))
    containers = pod.get("spec", {}).get("containers") or [{}]
    for item in containers[0].get("env") or []:
        ref = item.get("valueFrom") or {}
        if "configMapKeyRef" in ref:
            configmaps.add(ref["configMapKeyRef"].get("name", ""))
        if "secretKeyRef" in ref:
            secrets.add(ref["secretKeyRef"].get("name", ""))
    for source in containers[0].get("envFrom") or []:
        if "configMapRef" in source:
            configmaps.add(source["configMapRef"].get("name", ""))
        if "secretRef" in source:
            secrets.add(source["secretRef"].get("name", ""))
    return configmaps - {""}, secrets - {""}


def task_from_pod(
    pod: JSON,
    pods_root: Path,
    *,
    configmaps: Mapping[str, Mapping[str, str]] | None = None,
    secrets: Mapping[str, Mapping[str, str]] | None = None,
    base_env: Mapping[str, str] | None = None,
    container_runtime: bool = False,
) -> TaskSpec:
    """Translate a pod (as the API returns it) into a TaskSpec; raises PodSpecError on what cannot run.

    ``container_runtime``: the node runs the pod's image, so a command is optional (the image's entrypoint) and
    ``call`` holds the container's own view of it."""
    metadata = pod.get("metadata", {})
    spec = pod.get("spec", {})
    uid = metadata.get("uid") or ""
    if not uid:
        raise PodSpecError("metadata.uid", "missing (the pod must come from the API server)")
    containers = spec.get("containers") or []
    if not containers:
        raise PodSpecError("spec.containers", "at least one container is required")
    container = containers[0]
    where = "spec.containers[0]"
    pod_dir = pods_root / uid
    sources = _Sources(configmaps or {}, secrets or {})
    volumes = _volumes(spec, container, pod_dir, sources, metadata)
    mounts = _mount_map(volumes)
    env = _environment(container, where, sources, metadata, spec, base_env or {})
    call = _call(container, where, sources, metadata, spec) if container_runtime else None
    argv = call.args if call is not None and not call.command else _argv(container, where, env)
    resources = _Resources.of(container, where)
    # The node's own variables (its PATH, HOME) name host paths, not the container's: a host venv under /tmp
    # must not be moved into the pod's /tmp volume. What the pod declares is the container's, and is mapped.
    node_own = {key for key in BASE_ENV_KEYS if key in (base_env or {}) and env.get(key) == (base_env or {})[key]}
    rewritten_env = {key: value if key in node_own else _rewrite(value, mounts) for key, value in env.items()}
    working_dir = _working_dir(container, where, mounts, pod_dir)
    return TaskSpec(
        uid=uid,
        namespace=metadata.get("namespace", "default"),
        name=metadata.get("name", ""),
        container=container.get("name", "main"),
        pod_dir=pod_dir,
        argv=[_rewrite(arg, mounts) for arg in argv],
        env=rewritten_env,
        working_dir=working_dir,
        cpus=resources.cpus,
        memory_bytes=resources.memory_bytes,
        gpus=resources.gpus,
        walltime_s=_walltime(spec, metadata.get("annotations") or {}),
        tmp_bytes=_tmp_bytes(volumes, rewritten_env),
        volumes=volumes,
        partition=(metadata.get("annotations") or {}).get(PARTITION_ANNOTATION),
        attempt=_attempt(metadata.get("labels") or {}),
        priority=pod_priority(pod),
        call=call,
    )


def _call(container: JSON, where: str, sources: _Sources, metadata: JSON, spec: JSON) -> ContainerCall:
    image = str(container.get("image") or "")
    if not image:
        raise PodSpecError(f"{where}.image", "required: this node runs the container's image")
    env = _environment(container, where, sources, metadata, spec, {})
    working_dir = container.get("workingDir")
    if working_dir is not None and not str(working_dir).startswith("/"):
        raise PodSpecError(f"{where}.workingDir", "must be an absolute path")
    return ContainerCall(
        image=image,
        command=[_expand(str(item), env) for item in container.get("command") or []],
        args=[_expand(str(item), env) for item in container.get("args") or []],
        env=env,
        working_dir=str(working_dir) if working_dir else None,
    )


def pod_priority(pod: JSON) -> int:
    """The operator's priority annotation when it holds a priority, else spec.priority (from the PriorityClass)."""
    text = str((pod.get("metadata", {}).get("annotations") or {}).get(PRIORITY_ANNOTATION, ""))
    if re.fullmatch(r"-?[0-9]{1,10}", text) and abs(int(text)) <= PRIORITY_BOUND:
        return int(text)
    priority = pod.get("spec", {}).get("priority")
    return priority if isinstance(priority, int) else 0


def _attempt(labels: Mapping[str, str]) -> int:
    text = str(labels.get(ATTEMPT_LABEL, "0"))
    return int(text) if text.isdigit() else 0


@dataclass(frozen=True)
class _Sources:
    configmaps: Mapping[str, Mapping[str, str]]
    secrets: Mapping[str, Mapping[str, str]]

    def configmap(self, name: str, where: str, *, optional: bool) -> Mapping[str, str]:
        if name not in self.configmaps and not optional:
            raise PodSpecError(where, f"ConfigMap {name!r} not found")
        return self.configmaps.get(name, {})

    def secret(self, name: str, where: str, *, optional: bool) -> Mapping[str, bytes]:
        if name not in self.secrets and not optional:
            raise PodSpecError(where, f"Secret {name!r} not found")
        return {key: base64.b64decode(value) for key, value in self.secrets.get(name, {}).items()}


@dataclass(frozen=True)
class _Resources:
    cpus: float
    memory_bytes: int | None
    gpus: int

    @classmethod
    def of(cls, container: JSON, where: str) -> _Resources:
        resources = container.get("resources") or {}
        requests = resources.get("requests") or {}
        limits = resources.get("limits") or {}
        cpu = _quantity(requests.get("cpu", limits.get("cpu")), f"{where}.resources.requests.cpu")
        # The limit is what gets enforced, so it is what the backend must grant.
        memory = _quantity(limits.get("memory", requests.get("memory")), f"{where}.resources.limits.memory")
        gpus = _quantity(limits.get(GPU_RESOURCE, requests.get(GPU_RESOURCE)), f"{where}.resources.limits.gpu")
        if gpus is not None and gpus != int(gpus):
            raise PodSpecError(f"{where}.resources.limits.{GPU_RESOURCE}", f"must be a whole number, got {gpus}")
        return cls(
            cpus=float(cpu) if cpu is not None else 1.0,
            memory_bytes=math.ceil(memory) if memory is not None else None,
            gpus=int(gpus or 0),
        )


def _quantity(value: Any, where: str) -> float | None:
    if value is None:
        return None
    try:
        number = float(parse_quantity(value))
    except QuantityError as error:
        raise PodSpecError(where, str(error)) from error
    if number < 0:
        raise PodSpecError(where, f"must not be negative, got {value}")
    return number


def _argv(container: JSON, where: str, env: Mapping[str, str]) -> list[str]:
    command = list(container.get("command") or [])
    args = list(container.get("args") or [])
    if not command:
        raise PodSpecError(
            f"{where}.command", "required: without a container runtime there is no image entrypoint to fall back on"
        )
    return [_expand(str(item), env) for item in [*command, *args]]


def _expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' $(VAR) references in command and args; $$ escapes, unknown names stay as written."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _VAR_REF.sub(replace, text)


def _environment(
    container: JSON,
    where: str,
    sources: _Sources,
    metadata: JSON,
    spec: JSON,
    base_env: Mapping[str, str],
) -> dict[str, str]:
    env = {key: base_env[key] for key in BASE_ENV_KEYS if key in base_env}
    for index, source in enumerate(container.get("envFrom") or []):
        env.update(_env_from(source, f"{where}.envFrom[{index}]", sources))
    for index, item in enumerate(container.get("env") or []):
        item_where = f"{where}.env[{index}]"
        name = item.get("name")
        if not name:
            raise PodSpecError(f"{item_where}.name", "required")
        if "valueFrom" in item:
            value = _env_value_from(item["valueFrom"], f"{item_where}.valueFrom", sources, metadata, spec)
            if value is not None:
                env[name] = value
        else:
            env[name] = _expand(str(item.get("value", "")), env)
    return env


def _env_from(source: JSON, where: str, sources: _Sources) -> dict[str, str]:
    prefix = source.get("prefix", "")
    if "configMapRef" in source:
        ref = source["configMapRef"]
        data = sources.configmap(ref.get("name", ""), f"{where}.configMapRef", optional=bool(ref.get("optional")))
        return {prefix + key: value for key, value in data.items()}
    if "secretRef" in source:
        ref = source["secretRef"]
        secret = sources.secret(ref.get("name", ""), f"{where}.secretRef", optional=bool(ref.get("optional")))
        return {prefix + key: value.decode(errors="replace") for key, value in secret.items()}
    raise PodSpecError(where, "needs configMapRef or secretRef")


def _env_value_from(ref: JSON, where: str, sources: _Sources, metadata: JSON, spec: JSON) -> str | None:
    if "fieldRef" in ref:
        return _field_value(ref["fieldRef"].get("fieldPath", ""), f"{where}.fieldRef.fieldPath", metadata, spec)
    if "configMapKeyRef" in ref:
        key_ref = ref["configMapKeyRef"]
        optional = bool(key_ref.get("optional"))
        data = sources.configmap(key_ref.get("name", ""), f"{where}.configMapKeyRef", optional=optional)
        if key_ref.get("key") not in data and not optional:
            raise PodSpecError(f"{where}.configMapKeyRef.key", f"key {key_ref.get('key')!r} not in the ConfigMap")
        return data.get(key_ref.get("key", ""))
    if "secretKeyRef" in ref:
        key_ref = ref["secretKeyRef"]
        optional = bool(key_ref.get("optional"))
        secret = sources.secret(key_ref.get("name", ""), f"{where}.secretKeyRef", optional=optional)
        if key_ref.get("key") not in secret and not optional:
            raise PodSpecError(f"{where}.secretKeyRef.key", f"key {key_ref.get('key')!r} not in the Secret")
        value = secret.get(key_ref.get("key", ""))
        return value.decode(errors="replace") if value is not None else None
    if "resourceFieldRef" in ref:
        return None  # resolved by nobody here; the task reads its limits from the backend's own variables
    raise PodSpecError(where, "needs fieldRef, configMapKeyRef or secretKeyRef")


def _field_value(path: str, where: str, metadata: JSON, spec: JSON) -> str:
    fields = {
        "metadata.name": metadata.get("name", ""),
        "metadata.namespace": metadata.get("namespace", ""),
        "metadata.uid": metadata.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.hostIP": "127.0.0.1",
        "status.podIP": "127.0.0.1",
    }
    match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if match:
        return str((metadata.get(match.group(1)) or {}).get(match.group(2), ""))
    if path not in fields:
        raise PodSpecError(where, f"unsupported field path {path!r}")
    return str(fields[path])


def _volumes(spec: JSON, container: JSON, pod_dir: Path, sources: _Sources, metadata: JSON) -> list[VolumeFiles]:
    mounts = {m.get("name"): m for m in container.get("volumeMounts") or []}
    volumes = []
    for index, volume in enumerate(spec.get("volumes") or []):
        name = volume.get("name", "")
        mount = mounts.get(name)
        if mount is None:
            continue  # not mounted by the container we run
        where = f"spec.volumes[{index}]"
        mount_path = str(PurePosixPath(mount.get("mountPath", "")))
        if not mount_path.startswith("/"):
            raise PodSpecError(f"spec.containers[0].volumeMounts[{name}].mountPath", "must be an absolute path")
        made = _volume(volume, where, mount_path, pod_dir / "volumes" / name, sources, metadata)
        volumes.append(replace(made, read_only=bool(mount.get("readOnly"))))
    return volumes


def _volume(
    volume: JSON, where: str, mount_path: str, host_dir: Path, sources: _Sources, metadata: JSON
) -> VolumeFiles:
    name = volume["name"]
    if "emptyDir" in volume:
        size = (volume["emptyDir"] or {}).get("sizeLimit")
        size_bytes = _quantity(size, f"{where}.emptyDir.sizeLimit")
        return VolumeFiles(name, mount_path, host_dir, size_limit_bytes=math.ceil(size_bytes) if size_bytes else None)
    if "hostPath" in volume:
        return VolumeFiles(name, mount_path, Path(volume["hostPath"].get("path", "/")))
    if "configMap" in volume:
        ref = volume["configMap"]
        data = sources.configmap(ref.get("name", ""), f"{where}.configMap", optional=bool(ref.get("optional")))
        files = _items({k: v.encode() for k, v in data.items()}, ref.get("items"), f"{where}.configMap.items")
        return VolumeFiles(name, mount_path, host_dir, files, _mode(ref, 0o644))
    if "secret" in volume:
        ref = volume["secret"]
        secret = sources.secret(ref.get("secretName", ""), f"{where}.secret", optional=bool(ref.get("optional")))
        return VolumeFiles(name, mount_path, host_dir, _items(secret, ref.get("items"), f"{where}.secret.items"), 0o600)
    if "projected" in volume:
        return VolumeFiles(name, mount_path, host_dir, _projected(volume["projected"], where, sources, metadata))
    if "downwardAPI" in volume:
        return VolumeFiles(name, mount_path, host_dir, _downward(volume["downwardAPI"], where, metadata))
    kinds = sorted(set(volume) - {"name"})
    raise PodSpecError(
        where, f"volume type {kinds} is not supported (emptyDir, hostPath, configMap, secret, projected)"
    )


def _projected(projected: JSON, where: str, sources: _Sources, metadata: JSON) -> dict[str, bytes]:
    # Best effort: the service-account volume every pod gets is projected, and tasks on this node do not
    # talk to the API server; its token is skipped and a missing source leaves its files out.
    files: dict[str, bytes] = {}
    for index, source in enumerate(projected.get("sources") or []):
        source_where = f"{where}.projected.sources[{index}]"
        if "configMap" in source:
            ref = source["configMap"]
            data = sources.configmap(ref.get("name", ""), source_where, optional=True)
            if data:
                files.update(_items({k: v.encode() for k, v in data.items()}, ref.get("items"), source_where))
        elif "secret" in source:
            ref = source["secret"]
            secret = sources.secret(ref.get("name", ""), source_where, optional=True)
            files.update(_items(secret, ref.get("items"), source_where))
        elif "downwardAPI" in source:
            files.update(_downward(source["downwardAPI"], source_where, metadata))
    return files


def _downward(downward: JSON, where: str, metadata: JSON) -> dict[str, bytes]:
    files = {}
    for index, item in enumerate(downward.get("items") or []):
        path = item.get("fieldRef", {}).get("fieldPath", "")
        if path:
            files[item.get("path", f"item{index}")] = _field_value(
                path, f"{where}.items[{index}]", metadata, {}
            ).encode()
    return files


def _items(data: Mapping[str, bytes], items: list[JSON] | None, where: str) -> dict[str, bytes]:
    if not items:
        return dict(data)
    selected = {}
    for index, item in enumerate(items):
        key = item.get("key", "")
        if key not in data:
            raise PodSpecError(f"{where}[{index}].key", f"key {key!r} not found")
        relative = PurePosixPath(str(item.get("path") or key))
        if relative.is_absolute() or ".." in relative.parts:
            raise PodSpecError(f"{where}[{index}].path", "must be relative without '..'")
        selected[str(relative)] = data[key]
    return selected


def _mode(ref: JSON, default: int) -> int:
    mode = ref.get("defaultMode")
    return int(mode) if isinstance(mode, int) else default


def _mount_map(volumes: list[VolumeFiles]) -> list[tuple[str, str]]:
    # Longest mount path first, so /data/out wins over /data.
    pairs = [(volume.mount_path, str(volume.host_dir)) for volume in volumes]
    return sorted(pairs, key=lambda pair: len(pair[0]), reverse=True)


def _rewrite(value: str, mounts: list[tuple[str, str]]) -> str:
    for mount_path, host_dir in mounts:
        if value == mount_path:
            return host_dir
        if mount_path == "/":
            continue
        if value.startswith(mount_path + "/"):
            return host_dir + value[len(mount_path) :]
    return value


def _working_dir(container: JSON, where: str, mounts: list[tuple[str, str]], pod_dir: Path) -> Path:
    working_dir = container.get("workingDir")
    if not working_dir:
        return pod_dir / "work"
    if not str(working_dir).startswith("/"):
        raise PodSpecError(f"{where}.workingDir", "must be an absolute path")
    return Path(_rewrite(str(working_dir), mounts))


def _walltime(spec: JSON, annotations: Mapping[str, str]) -> int | None:
    limits = []
    deadline = spec.get("activeDeadlineSeconds")
    if deadline is not None:
        if not isinstance(deadline, int) or deadline <= 0:
            raise PodSpecError("spec.activeDeadlineSeconds", f"must be a positive integer, got {deadline!r}")
        limits.append(deadline)
    if WALLTIME_ANNOTATION in annotations:
        text = annotations[WALLTIME_ANNOTATION]
        try:
            seconds = math.ceil(float(text))
        except ValueError as error:
            field = f"metadata.annotations[{WALLTIME_ANNOTATION}]"
            raise PodSpecError(field, f"must be a number of seconds, got {text!r}") from error
        if seconds <= 0:
            raise PodSpecError(f"metadata.annotations[{WALLTIME_ANNOTATION}]", "must be positive")
        limits.append(seconds)
    return min(limits) if limits else None


def _tmp_bytes(volumes: list[VolumeFiles], env: Mapping[str, str]) -> int | None:
    """The scratch size to ask the backend for: the sizeLimit of the emptyDir TMPDIR points into, else of any."""
    sized = [volume for volume in volumes if volume.size_limit_bytes]
    tmpdir = env.get("TMPDIR", "")
    for volume in sized:
        if tmpdir == str(volume.host_dir) or tmpdir.startswith(f"{volume.host_dir}/"):
            return volume.size_limit_bytes
    return sum(volume.size_limit_bytes or 0 for volume in sized) or None

"""The dev stack: start parts detached, remember them in a state file, find them again to stop them.

State lives under `~/.cache/sgs/dev/` (`state.json`, `env`, one work directory per part), so `sgs dev
down/status/env` work from any shell. Data directories survive `down` unless purged.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import psycopg

from sgs.dev.observability import register_targets
from sgs.testing._process import ProcessRecord
from sgs.testing.base import Part
from sgs.testing.binaries import cache_root

PART_NAMES = (
    "pg",
    "nats",
    "minio",
    "kube",
    "remote",
    "slurm",
    "prometheus",
    "jaeger",
    "archive",
    "transfer",
    "sgs",
)
# The archive and the transfer service start in waves after the parts they use (saved in the state file, where
# they find them), and are restarted when one of those parts was.
SERVICE_WAVES = {"archive": 1, "transfer": 2}
SERVICE_NEEDS = {"archive": ("pg", "nats"), "transfer": ("pg", "nats", "minio", "archive")}
DEV_SITES = ("site-a", "site-b", "site-c")
SGS_PART = "sgs"  # the operator and the bridges: started once the parts they use are up, stopped first
SGS_NEEDS = ("pg", "kube")
SLURM_SITE = "site-c"  # served by the Slurm provider when the Slurm part runs
REMOTE_PART = "remote"  # a second control plane: the cluster Site REMOTE_SITE, with its own operator and bridge
REMOTE_SITE = "site-r"


def dev_dir() -> Path:
    return cache_root() / "dev"


def state_file() -> Path:
    return dev_dir() / "state.json"


def env_file() -> Path:
    return dev_dir() / "env"


@contextmanager
def state_lock() -> Iterator[None]:
    """Exclusive use of the state file: `sgs dev serve` processes (one per unit, started together by Tilt) and
    `up`/`down` each read, change and rewrite it, and a write between another's read and write would be lost."""
    dev_dir().mkdir(parents=True, exist_ok=True)
    with (dev_dir() / "state.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def parse_parts(spec: str) -> list[str]:
    """`pg,nats` → ["pg", "nats"] in start order; unknown names are an error naming them."""
    wanted = [name.strip() for name in spec.split(",") if name.strip()]
    unknown = sorted(set(wanted) - set(PART_NAMES))
    if unknown:
        raise ValueError(f"--parts: unknown part(s) {', '.join(unknown)}; choose from {', '.join(PART_NAMES)}")
    if not wanted:
        raise ValueError(f"--parts: empty; choose from {', '.join(PART_NAMES)}")
    return [name for name in PART_NAMES if name in wanted]


@dataclass
class PartState:
    """What the state file remembers of one running part."""

    part: str
    kind: str
    workdir: str
    info: dict[str, Any]
    exports: dict[str, str]
    processes: list[ProcessRecord] = field(default_factory=list)
    ready_s: float = 0.0

    def alive(self) -> list[bool]:
        return [record.is_alive() for record in self.processes]

    def memory_bytes(self) -> int:
        """Resident memory of the part's processes and their children (e.g. postgres backends)."""
        total = 0
        for record in self.processes:
            if not record.is_alive():
                continue
            try:
                root = psutil.Process(record.pid)
                total += sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
            except psutil.NoSuchProcess:
                continue
        return total

    def to_json(self) -> dict[str, Any]:
        return {
            "part": self.part,
            "kind": self.kind,
            "workdir": self.workdir,
            "info": self.info,
            "exports": self.exports,
            "ready_s": self.ready_s,
            "processes": [record.__dict__ for record in self.processes],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PartState:
        records = [ProcessRecord(**record) for record in data.get("processes", [])]
        return cls(
            part=data["part"],
            kind=data["kind"],
            workdir=data["workdir"],
            info=data.get("info", {}),
            exports=data.get("exports", {}),
            processes=records,
            ready_s=float(data.get("ready_s", 0.0)),
        )


def load_state() -> dict[str, PartState]:
    """Running parts by unit name (`pg`, `minio-site-a`, ...); empty when nothing was started."""
    path = state_file()
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    return {name: PartState.from_json(entry) for name, entry in data.get("units", {}).items()}


def save_state(units: dict[str, PartState]) -> None:
    dev_dir().mkdir(parents=True, exist_ok=True)
    payload = {"units": {name: unit.to_json() for name, unit in units.items()}}
    tmp = state_file().with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    tmp.replace(state_file())  # atomic: a crash never leaves a half-written state file
    write_env_file(units)


def write_env_file(units: dict[str, PartState]) -> None:
    exports = {key: value for unit in units.values() for key, value in unit.exports.items()}
    sites = [str(unit.info["site"]) for unit in units.values() if unit.part == "minio"]
    if sites:
        exports["SGS_S3_SITES"] = ",".join(sites)
    if "SGS_ARCHIVE_DSN" in exports:
        exports |= archive_exports()
    lines = [f"export {key}={_shell_quote(value)}" for key, value in exports.items()]
    if "KUBECONFIG" in exports:
        lines.append(_kubectl_path_line())
    env_file().write_text("\n".join(lines) + ("\n" if lines else ""))


def archive_exports() -> dict[str, str]:
    """What `sgs archive serve` and the archive CLI need on the dev stack: development (the service refuses
    placeholder secrets in production, its default) and one admin token per stack, kept across restarts."""
    path = dev_dir() / "archive-admin-token"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(32))
    token = path.read_text().strip()
    return {"SGS_ARCHIVE_ENVIRONMENT": "development", "SGS_ARCHIVE_ADMIN_TOKEN": token, "SGS_ARCHIVE_TOKEN": token}


def _kubectl_path_line() -> str:
    """The pinned kubectl first on PATH, so the README's `kubectl ...` lines need no kubectl installed."""
    from sgs.testing.binaries import kubectl_path

    found = kubectl_path()
    directory = str(found.parent) if found is not None else ""
    return f'export PATH={_shell_quote(directory)}:"$PATH"' if directory else "# kubectl: not built (sgs dev build)"


def _shell_quote(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


def units_of(part: str) -> list[tuple[str, Part]]:
    """The units a part name stands for, each with its persistent work directory."""
    from sgs.testing.kube import KubePart
    from sgs.testing.minio import MinioPart
    from sgs.testing.nats import NatsPart
    from sgs.testing.postgres import PostgresPart
    from sgs.testing.slurm import SlurmPart

    base = dev_dir()
    if part == "pg":
        return [("pg", PostgresPart(base / "pg"))]
    if part == "nats":
        return [("nats", NatsPart(base / "nats"))]
    if part == "minio":
        return [(f"minio-{site}", MinioPart(site, base / f"minio-{site}")) for site in DEV_SITES]
    if part == "kube":
        return [("kube", KubePart(base / "kube"))]
    if part == REMOTE_PART:
        from sgs.dev.components import RemoteKubePart

        return [("kube-remote", RemoteKubePart(base / "kube-remote"))]
    if part == "slurm":
        return [("slurm", SlurmPart(base / "slurm"))]
    if part == "prometheus":
        from sgs.dev.observability import prometheus_unit

        return [("prometheus", prometheus_unit(base / "prometheus", base))]
    if part == "jaeger":
        from sgs.testing.jaeger import JaegerPart

        return [("jaeger", JaegerPart(base / "jaeger"))]
    if part in SERVICE_WAVES:
        from sgs.dev.services import ArchiveServicePart, TransferServicePart

        service = ArchiveServicePart if part == "archive" else TransferServicePart
        return [(part, service(base / part))]
    raise ValueError(f"--parts: unknown part {part!r}")


Report = Callable[[str, str], None]  # (unit, message)


def sgs_units(state: dict[str, PartState]) -> list[tuple[str, Part]]:
    """The operator and one bridge node per dev Site, wired to the running PostgreSQL and control plane; the
    trigger service too when the archive runs."""
    from sgs.dev.components import (
        BridgePart,
        ConsolePart,
        OperatorPart,
        TriggerPart,
        operator_dsn,
        prepare_site_dirs,
        register_raw_type,
        remote_allowed,
        remote_units,
    )

    running = {unit.part: unit for unit in state.values()}
    missing = [part for part in SGS_NEEDS if part not in running]
    if missing:
        raise ValueError(f"--parts: sgs needs {', '.join(missing)} (running, or named in --parts)")
    env = {**os.environ, **{key: value for unit in state.values() for key, value in unit.exports.items()}}
    if "archive" in running:  # the stack's admin token: the operator writes placements with it
        env |= archive_exports()
        register_raw_type(str(running["archive"].exports["SGS_ARCHIVE_URL"]), env["SGS_ARCHIVE_ADMIN_TOKEN"])
    remote = running.get(REMOTE_PART)
    prepare_site_dirs((*DEV_SITES, REMOTE_SITE) if remote is not None else DEV_SITES)
    base = dev_dir()
    metrics_port = running["prometheus"].info.get("operator_metrics_port") if "prometheus" in running else None
    dsn = operator_dsn(str(running["pg"].info["dsn"]))
    central_env = env | (remote_allowed(remote.info) if remote is not None else {})
    units: list[tuple[str, Part]] = [("operator", OperatorPart(base / "operator", central_env, dsn, metrics_port))]
    for site in DEV_SITES:
        provider = "slurm" if site == SLURM_SITE and "slurm" in running else "process"
        units.append((f"bridge-{site}", BridgePart(base / f"bridge-{site}", env, site, provider)))
    if remote is not None:
        units += remote_units(base, env, remote.info, str(running["pg"].info["dsn"]))
    units.append(("console", ConsolePart(base / "console", env, dsn)))
    if "archive" in running and "nats" in running:  # the trigger service reads the archive's events
        nats_url, archive_url = running["nats"].exports["NATS_URL"], running["archive"].exports["SGS_ARCHIVE_URL"]
        token = archive_exports()["SGS_ARCHIVE_ADMIN_TOKEN"]
        units.append(("trigger", TriggerPart(base / "trigger", env, nats_url, archive_url, token)))
    return units


def up(parts: Iterable[str], report: Report) -> dict[str, PartState]:
    """Start the parts not already running, all at once, then the sgs components on them; returns the
    whole stack's state."""
    with state_lock():
        return _up(parts, report)


def _up(parts: Iterable[str], report: Report) -> dict[str, PartState]:
    state: dict[str, PartState] = {}
    for name, recorded in load_state().items():
        if all(recorded.alive()):
            state[name] = recorded
        else:
            # Half a part (say, an apiserver whose etcd died) would hold ports and data: restart it whole.
            for record in reversed(recorded.processes):
                record.stop()
    chosen = list(parts)
    before = set(state)
    failures = _start_all([p for p in chosen if p != SGS_PART and p not in SERVICE_WAVES], units_of, state, report)
    failures += _start_services(chosen, before, state, report)
    if any(state[name].part in (*SGS_NEEDS, REMOTE_PART) for name in set(state) - before):
        _stop_sgs_units(state, report)  # they hold the old API server's address and database connections
    if SGS_PART in chosen:  # a part it does not need (say, Jaeger) failing does not stop it
        try:
            components = sgs_units(state)
        except (ValueError, OSError, psycopg.Error) as err:
            failures.append(f"{SGS_PART}: {err}")
            report(SGS_PART, f"FAILED: {err}")
        else:
            failures += _start_all([SGS_PART], lambda _: components, state, report)
            if REMOTE_PART in {unit.part for unit in state.values()} and not failures:
                failures += _apply_remote_site(state, report)
    register_targets(state)
    save_state(state)
    if failures:
        raise RuntimeError("some parts did not start:\n" + "\n".join(failures))
    return state


def _start_services(chosen: list[str], before: set[str], state: dict[str, PartState], report: Report) -> list[str]:
    failures: list[str] = []
    for wave in sorted(set(SERVICE_WAVES.values())):
        restarted = {state[name].part for name in set(state) - before}
        for service in [s for s, w in SERVICE_WAVES.items() if w == wave and s in state]:
            if restarted & set(SERVICE_NEEDS[service]):  # it holds the old ports of the parts it uses
                for record in reversed(state.pop(service).processes):
                    record.stop()
                report(service, "stopped: a part it uses was restarted")
        save_state(state)
        wanted = [s for s, w in SERVICE_WAVES.items() if w == wave and s in chosen]
        failures += _start_all(wanted, units_of, state, report)
    return failures


def _apply_remote_site(state: dict[str, PartState], report: Report) -> list[str]:
    """The cluster Site on the central control plane (its kubeconfig Secret) and the Site that runs its Runs on
    the remote one, in namespace default: what `kubectl apply` of a Run with `site: site-r` needs."""
    from sgs.dev.components import apply_remote_site

    try:
        apply_remote_site(state["kube"].info, state["kube-remote"].info, REMOTE_SITE)
    except (OSError, subprocess.CalledProcessError, KeyError) as err:
        report(REMOTE_PART, f"FAILED: {err}")
        return [f"{REMOTE_PART}: the cluster Site {REMOTE_SITE}: {err}"]
    report(REMOTE_PART, f"cluster Site {REMOTE_SITE} applied (namespace default, both control planes)")
    return []


def _stop_sgs_units(state: dict[str, PartState], report: Report) -> None:
    for name in [name for name, unit in state.items() if unit.part == SGS_PART]:
        for record in reversed(state.pop(name).processes):
            record.stop()
        report(name, "stopped: a part it uses was restarted")


def _start_all(
    parts: list[str], units: Callable[[str], list[tuple[str, Part]]], state: dict[str, PartState], report: Report
) -> list[str]:
    """Start the units of ``parts`` not in ``state`` in parallel, adding them to it; the failures, one a line."""
    pending: list[tuple[str, str, Part]] = []
    for part in parts:
        for unit_name, unit in units(part):
            if unit_name in state:
                report(unit_name, "already running")
            else:
                pending.append((part, unit_name, unit))
    failures: list[str] = []
    with ThreadPoolExecutor(max_workers=max(1, len(pending))) as pool:
        futures = {unit_name: pool.submit(start_unit, part, unit_name, unit) for part, unit_name, unit in pending}
        for unit_name, future in futures.items():
            try:
                state[unit_name] = future.result()
                report(unit_name, f"ready in {state[unit_name].ready_s:.1f} s")
            except Exception as err:
                failures.append(f"{unit_name}: {err}")
                report(unit_name, f"FAILED: {err}")
    return failures


def start_unit(part: str, unit_name: str, unit: Part) -> PartState:
    started = time.monotonic()
    unit.start()
    return PartState(
        part=part,
        kind=type(unit).__name__,
        workdir=str(unit.workdir),
        info=unit.info(),
        exports=unit.exports(),
        processes=unit.records(),
        ready_s=time.monotonic() - started,
    )


def down(parts: Iterable[str] | None, *, purge: bool, report: Report) -> None:
    """Stop the named parts (all if None), last started first; `purge` also deletes their data."""
    with state_lock():
        _down(parts, purge=purge, report=report)


def _down(parts: Iterable[str] | None, *, purge: bool, report: Report) -> None:
    state = load_state()
    chosen = set(parts) if parts is not None else set(PART_NAMES)
    # The sgs components first, whatever order they were started in: they are clients of every other part.
    order = sorted(reversed(list(state)), key=lambda name: state[name].part != SGS_PART)
    for unit_name in order:
        unit = state[unit_name]
        if unit.part not in chosen:
            continue
        if unit.part == "slurm":
            _drain_slurm(unit)
        stop_unit(unit_name, unit, state)
        if purge:
            shutil.rmtree(unit.workdir, ignore_errors=True)
        del state[unit_name]
        report(unit_name, "stopped" + (" and purged" if purge else ""))
    save_state(state)


OPERATOR_UNITS = ("operator", "operator-remote")  # each holds a webhook configuration on its own control plane


def stop_unit(unit_name: str, unit: PartState, state: dict[str, PartState]) -> None:
    """Stop one unit's processes, last started first — an operator's webhook configuration removed before."""
    if unit_name in OPERATOR_UNITS:
        remove_webhook(unit, state)
    for record in reversed(unit.processes):
        record.stop()


def remove_webhook(unit: PartState, state: dict[str, PartState]) -> None:
    # The webhook is failurePolicy Fail and outlives the operator: left behind, it would refuse every Run and
    # Pipeline applied while the operator is down (say, to run one from a source tree instead).
    from sgs.testing.binaries import kubectl_path

    kube = state.get("kube-remote" if unit.info.get("cluster") == "remote" else "kube")  # the operator's own
    kubectl = kubectl_path()
    if kube is None or not all(kube.alive()) or kubectl is None:
        return
    argv = [str(kubectl), "delete", "validatingwebhookconfiguration", str(unit.info["webhook"]), "--ignore-not-found"]
    env = {**os.environ, "KUBECONFIG": str(kube.info["kubeconfig"])}
    subprocess.run(argv, env=env, capture_output=True, check=False, timeout=30)


def _drain_slurm(unit: PartState) -> None:
    # Jobs still running when slurmd dies leave orphaned slurmstepd processes behind.
    if not any(unit.alive()):
        return
    env = {**os.environ, **unit.exports}
    subprocess.run(["scancel", "--full", f"--user={os.getuid()}"], env=env, capture_output=True, check=False)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        queue = subprocess.run(["squeue", "-h", "-o", "%i"], env=env, capture_output=True, text=True, check=False)
        if queue.returncode != 0 or not queue.stdout.strip():
            return
        time.sleep(0.2)

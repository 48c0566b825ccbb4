"""The dev stack: start parts detached, remember them in a state file, find them again to stop them.

State lives under `~/.cache/sgs/dev/` (`state.json`, `env`, one work directory per part), so `sgs dev
down/status/env` work from any shell. Data directories survive `down` unless purged.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from sgs.dev.observability import register_targets
from sgs.testing._process import ProcessRecord
from sgs.testing.base import Part
from sgs.testing.binaries import cache_root

PART_NAMES = ("pg", "nats", "minio", "kube", "slurm", "prometheus", "jaeger", "archive", "transfer")
# Services start once the parts they use are up (and saved in the state file, where they find them).
WAVES = {"archive": 1, "transfer": 2}
DEV_SITES = ("site-a", "site-b", "site-c")


def dev_dir() -> Path:
    return cache_root() / "dev"


def state_file() -> Path:
    return dev_dir() / "state.json"


def env_file() -> Path:
    return dev_dir() / "env"


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
    if part == "slurm":
        return [("slurm", SlurmPart(base / "slurm"))]
    if part == "prometheus":
        from sgs.dev.observability import prometheus_unit

        return [("prometheus", prometheus_unit(base / "prometheus", base))]
    if part == "jaeger":
        from sgs.testing.jaeger import JaegerPart

        return [("jaeger", JaegerPart(base / "jaeger"))]
    if part in ("archive", "transfer"):
        from sgs.dev.services import ArchiveServicePart, TransferServicePart

        service = ArchiveServicePart if part == "archive" else TransferServicePart
        return [(part, service(base / part))]
    raise ValueError(f"--parts: unknown part {part!r}")


Report = Callable[[str, str], None]  # (unit, message)


def up(parts: Iterable[str], report: Report) -> dict[str, PartState]:
    """Start the parts not already running, all at once; returns the whole stack's state."""
    state: dict[str, PartState] = {}
    for name, recorded in load_state().items():
        if all(recorded.alive()):
            state[name] = recorded
        else:
            # Half a part (say, an apiserver whose etcd died) would hold ports and data: restart it whole.
            for record in reversed(recorded.processes):
                record.stop()
    pending: list[tuple[str, str, Part]] = []
    for part in parts:
        for unit_name, unit in units_of(part):
            if unit_name in state:
                report(unit_name, "already running")
            else:
                pending.append((part, unit_name, unit))
    failures: list[str] = []
    for wave in sorted({WAVES.get(part, 0) for part, _, _ in pending}):
        _start_wave([p for p in pending if WAVES.get(p[0], 0) == wave], state, failures, report)
        save_state(state)
    register_targets(state)
    save_state(state)
    if failures:
        raise RuntimeError("some parts did not start:\n" + "\n".join(failures))
    return state


def _start_wave(
    pending: list[tuple[str, str, Part]], state: dict[str, PartState], failures: list[str], report: Report
) -> None:
    with ThreadPoolExecutor(max_workers=max(1, len(pending))) as pool:
        futures = {unit_name: pool.submit(_start_unit, part, unit_name, unit) for part, unit_name, unit in pending}
        for unit_name, future in futures.items():
            try:
                state[unit_name] = future.result()
                report(unit_name, f"ready in {state[unit_name].ready_s:.1f} s")
            except Exception as err:
                failures.append(f"{unit_name}: {err}")
                report(unit_name, f"FAILED: {err}")


def _start_unit(part: str, unit_name: str, unit: Part) -> PartState:
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
    state = load_state()
    chosen = set(parts) if parts is not None else set(PART_NAMES)
    for unit_name in reversed(list(state)):
        unit = state[unit_name]
        if unit.part not in chosen:
            continue
        if unit.part == "slurm":
            _drain_slurm(unit)
        for record in reversed(unit.processes):
            record.stop()
        if purge:
            shutil.rmtree(unit.workdir, ignore_errors=True)
        del state[unit_name]
        report(unit_name, "stopped" + (" and purged" if purge else ""))
    save_state(state)


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

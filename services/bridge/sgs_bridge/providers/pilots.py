"""Pilot mode of the Slurm provider: pods run as payloads inside a few big Slurm jobs (pilots).

Short tasks wait in a shared batch queue far longer than they run, so the bridge reserves allocations sized
from the administrator's templates (``pipelinerunner.pilots.<template>.*``, see ``pilot_config``) and runs
many payloads inside each (seed 002; PanDA pilots, HTCondor glideins and Parsl's HTEX blocks do the same). A
pilot is submitted only while payloads wait that no pilot will take, and is never smaller than the biggest
of them; a payload bigger than every template is refused at once (``NoPilotFits``), not left Pending.

Inside a pilot, ``sgs_bridge.pilot_agent`` connects back to this provider's TCP endpoint and proves which
pilot it is with that pilot's own token (a file of mode 0600 beside its script). The provider keeps the
accounts (each pilot's free cores and memory, its remaining walltime), chooses payloads by the fitness score
(``pilot_schedule``), and tells the agent to run them; the agent writes each payload's ``state.json`` and
``outcome.json`` in its pod directory, as the node agent does, and reports them over the connection so a
freed slot is refilled at once. A pilot that ends while payloads run (scancel, walltime, memory, node
failure) fails exactly those, with reason ``PilotLost``; the pod's status names the pilot that ran it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import math
import os
import secrets
import shlex
import socket
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sgs_bridge.pilot_agent import CLAIM_FILE, PILOT_LOST
from sgs_bridge.pilot_config import PilotSettings, PilotTemplate
from sgs_bridge.pilot_schedule import (
    Payload,
    PilotRoom,
    TemplateCount,
    choose,
    fits,
    fitting_templates,
    pilots_to_submit,
)
from sgs_bridge.podspec import TaskSpec
from sgs_bridge.providers.base import (
    BackendUnavailableError,
    Capacity,
    SubmitRefusedError,
    moment,
    outcome_state,
    prepare_pod_dir,
    read_json,
    tail_text,
    write_json_atomically,
)
from sgs_bridge.providers.slurm import SlurmProvider, sbatch_error
from sgs_bridge.providers.slurm_states import parse_show_job
from sgs_bridge.runner import OUTCOME_FILE, STATE_FILE, TASK_FILE
from sgs_bridge.state import JobState, Phase

log = logging.getLogger("sgs_bridge.pilots")
PAYLOAD_FILE = "payload.json"
PILOT_COMMENT_PREFIX = "sgs-pilot:"
HELLO_TIMEOUT_S = 10.0
MAINTAIN_EVERY_S = 1.0
SLURM_CHECK_EVERY_S = 2.0
PRUNE_EVERY_S = 30.0
PILOT_RETRY_S = 30.0
# A payload that has waited this long shows why in its pod status (before that, a status write per pod is
# not worth it: most start within a second).
SHOW_WAIT_AFTER_S = 10.0
ENDED_SLURM_STATES = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED")


@dataclass
class _Pilot:
    name: str
    template_name: str
    template: PilotTemplate
    token: str
    directory: Path
    submitted_at: float
    job_id: str = ""
    writer: asyncio.StreamWriter | None = None
    connected_at: float | None = None
    ends_at: float = math.inf  # monotonic
    starving: bool = False
    draining: bool = False
    running: set[str] = field(default_factory=set)
    used_cpus: float = 0.0
    used_memory: int = 0
    idle_since: float = 0.0
    slurm_state: str = ""  # while queued: Slurm's JobState and Reason, for the waiting pods' message

    @property
    def label(self) -> str:
        return f"pilot {self.name} (Slurm job {self.job_id or '?'}, template {self.template_name})"

    def room(self, now: float) -> PilotRoom:
        return PilotRoom(
            cpus=self.template.cpu_cores,
            memory_bytes=self.template.memory_bytes,
            free_cpus=self.template.cpu_cores - self.used_cpus,
            free_memory_bytes=self.template.memory_bytes - self.used_memory,
            remaining_s=self.ends_at - now,
            starving=self.starving,
        )


@dataclass
class _Record:
    """A payload this provider knows: waiting (pilot None), running in a pilot, or ended (outcome set)."""

    payload: Payload
    pilot: str | None = None
    pilot_label: str = ""
    started_at: float | None = None  # epoch seconds, from the agent
    outcome: dict[str, Any] | None = None


class PilotProvider:
    """A Provider (see providers.base) whose pods are payloads in pilot jobs on Slurm."""

    name = "slurm"

    def __init__(
        self,
        pods_root: Path,
        settings: PilotSettings,
        slurm: SlurmProvider,
        *,
        pilots_root: Path,
        address: str = "127.0.0.1",
        port: int = 0,
        python: str = sys.executable,
    ) -> None:
        self.pods_root = pods_root
        self.pilots_root = pilots_root
        self.settings = settings
        self.slurm = slurm
        self.address = address
        self.port = port
        self.python = python
        self.records: dict[str, _Record] = {}
        self.waiting: dict[str, Payload] = {}
        self.pilots: dict[str, _Pilot] = {}
        self.refused_agents = 0
        self.wake: Callable[[], None] = lambda: None  # the bridge's sweep, when a payload starts or ends
        self._connections = 0
        self._pilot_errors: dict[str, str] = {}
        self._pilot_failed_at: dict[str, float] = {}
        self._orphans: dict[str, tuple[str, str]] = {}  # uid -> (pilot's Slurm job, label): running, pilot unknown
        self._server: asyncio.Server | None = None
        self._maintainer: asyncio.Task[None] | None = None
        self._kick = asyncio.Event()
        self._last_slurm_check = 0.0
        self._last_prune = 0.0
        pods_root.mkdir(parents=True, exist_ok=True)
        pilots_root.mkdir(parents=True, exist_ok=True)

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the endpoint the pilots' agents connect to, and start keeping the pilot pool."""
        self._server = await asyncio.start_server(self._serve_agent, self.address, self.port, limit=2**20)
        self.port = self._server.sockets[0].getsockname()[1]
        self._maintainer = asyncio.create_task(self._maintain_forever(), name="pilot-pool")
        log.info("pilot endpoint on %s:%d; templates %s", self.address, self.port, ", ".join(self.settings.enabled))

    async def close(self) -> None:
        """Stop serving; running pilots drain (their agents see the connection close) and payloads finish."""
        if self._maintainer is not None:
            self._maintainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._maintainer
        for pilot in self.pilots.values():
            if pilot.writer is not None:
                pilot.writer.close()
        if self._server is not None:
            self._server.close()

    async def capacity(self) -> Capacity:
        return await self.slurm.capacity()

    # --- pods in, states out -------------------------------------------------------------------------

    async def submit(self, spec: TaskSpec) -> str:
        if spec.uid in self.records:
            return spec.uid
        payload = self._payload_of(spec)
        if (spec.pod_dir / STATE_FILE).exists() or (spec.pod_dir / OUTCOME_FILE).exists():
            self.records[spec.uid] = _Record(payload)  # it ran already (before a restart): observe reads its files
            return spec.uid
        await asyncio.to_thread(self._prepare, spec, payload)
        self._enqueue(payload)
        return spec.uid

    def _payload_of(self, spec: TaskSpec) -> Payload:
        if spec.gpus:
            raise SubmitRefusedError("pilot mode runs no GPU payloads on this node", reason="NoPilotFits")
        payload = Payload(
            uid=spec.uid,
            cpus=spec.cpus,
            memory_bytes=spec.memory_bytes or 0,
            walltime_s=float(spec.walltime_s or self.settings.policy.default_payload_walltime_s),
            queued_at=time.monotonic(),
            retry=spec.retry,
            priority=spec.priority,
        )
        if not fitting_templates(payload, self.settings.templates, self.settings.policy.margin_s):
            raise SubmitRefusedError(self._too_big(payload), reason="NoPilotFits")
        return payload

    def _too_big(self, payload: Payload) -> str:
        offers = "; ".join(
            f"{name}: {t.cpu_cores} cores, {t.rss_mb} MiB, {t.walltime_min} min"
            + (" (disabled)" if t.max_instances == 0 else "")
            for name, t in sorted(self.settings.templates.items())
        )
        return (
            f"no pilot template fits this payload ({payload.cpus:g} cores, {payload.memory_bytes // 2**20} MiB, "
            f"{payload.walltime_s:.0f} s + a {self.settings.policy.margin_s:.0f} s margin); templates: {offers}"
        )

    def _prepare(self, spec: TaskSpec, payload: Payload) -> None:
        prepare_pod_dir(spec)
        env = dict(spec.env)
        if "TMPDIR" not in env:
            # Every payload its own scratch: pilots share a node, and /tmp with every payload in them.
            private = spec.pod_dir / "tmp"
            private.mkdir(mode=0o700, exist_ok=True)
            env["TMPDIR"] = str(private)
        task = {
            "argv": spec.argv,
            "env": env,
            "cwd": str(spec.working_dir),
            "log": str(spec.log_path),
            "ram_limit_bytes": spec.memory_bytes,
            "walltime_s": spec.walltime_s,
            "enforce": True,  # Slurm sees only the pilot: the agent holds each payload to its own limits
            "inherit_env_prefixes": ["SLURM_"],
        }
        write_json_atomically(spec.pod_dir / TASK_FILE, task)
        summary = {"cpus": payload.cpus, "memory_bytes": payload.memory_bytes, "walltime_s": payload.walltime_s}
        write_json_atomically(
            spec.pod_dir / PAYLOAD_FILE, {**summary, "retry": payload.retry, "priority": payload.priority}
        )

    def reprioritize(self, uid: str, priority: int) -> None:
        """The pod's Run changed priority (`sgs run priority`): a payload still waiting is ranked by the new one
        from the next choice on, and keeps it over a bridge restart (its payload file says it)."""
        payload = self.waiting.get(uid)
        if payload is None or payload.priority == priority:
            return
        payload = replace(payload, priority=priority)
        self.waiting[uid] = payload
        self.records[uid].payload = payload
        summary_path = self.pods_root / uid / PAYLOAD_FILE
        summary = read_json(summary_path)
        if summary is not None:
            write_json_atomically(summary_path, {**summary, "priority": priority})
        log.info("payload %s re-ranked: priority %d", uid, priority)
        self._dispatch()

    def _enqueue(self, payload: Payload) -> None:
        self.records[payload.uid] = _Record(payload)
        self.waiting[payload.uid] = payload
        self._dispatch()
        if payload.uid in self.waiting:
            self._kick.set()  # no pilot took it: maybe one must be submitted

    async def observe(self, jobs: Mapping[str, str]) -> dict[str, JobState]:
        return {uid: self._state(uid) for uid in jobs}

    def _state(self, uid: str) -> JobState:
        record = self.records.get(uid)
        if record is None:
            return self._state_from_disk(uid)
        if record.outcome is not None:
            state = outcome_state(uid, record.outcome, moment(record.started_at))
            return _naming_pilot(state, record.pilot_label)
        if record.started_at is not None:
            return JobState(
                Phase.RUNNING,
                uid,
                message=f"on {record.pilot_label}",
                started_at=moment(record.started_at),
                backend_state="RUNNING",
            )
        if record.pilot is None and time.monotonic() - record.payload.queued_at > SHOW_WAIT_AFTER_S:
            return JobState(Phase.PENDING, uid, reason="PilotPending", message=self._why_waiting(record.payload))
        return JobState(Phase.PENDING, uid, reason="PilotPending", backend_state="WAITING")

    def _state_from_disk(self, uid: str) -> JobState:
        """A payload this bridge has not seen since it started: its files say how far it got."""
        pod_dir = self.pods_root / uid
        outcome = read_json(pod_dir / OUTCOME_FILE)
        state = read_json(pod_dir / STATE_FILE) or {}
        pilot = f"pilot {state.get('pilot')} (Slurm job {state.get('pilot_job')})" if state else ""
        if outcome is not None:
            return _naming_pilot(outcome_state(uid, outcome, moment(state.get("started_at"))), pilot)
        if state:
            # Started by a pilot of an earlier bridge: it is watched through Slurm until its outcome comes.
            self._orphans[uid] = (str(state.get("pilot_job", "")), pilot)
            return JobState(Phase.RUNNING, uid, message=f"on {pilot}", started_at=moment(state.get("started_at")))
        summary = read_json(pod_dir / PAYLOAD_FILE)
        if summary is not None and not (pod_dir / CLAIM_FILE).exists():
            self._enqueue(_payload_from_summary(uid, summary))  # it waited when a previous bridge stopped
            return JobState(Phase.PENDING, uid, reason="PilotPending", backend_state="WAITING")
        return JobState(Phase.UNKNOWN, uid, message="not a payload of this bridge's pilots")

    def _why_waiting(self, payload: Payload) -> str:
        names = [name for name, _ in fitting_templates(payload, self.settings.templates, self.settings.policy.margin_s)]
        errors = [f"{name}: {self._pilot_errors[name]}" for name in names if name in self._pilot_errors]
        if errors:
            return "waiting for a pilot; submitting one failed: " + "; ".join(errors)
        queued = [p for p in self.pilots.values() if p.connected_at is None and p.template_name in names]
        states = "; ".join(f"{p.label}: {p.slurm_state or 'submitted'}" for p in queued[:3])
        return f"waiting for a pilot (templates that fit: {', '.join(names)}; queued in Slurm: {states or 'none'})"

    async def cancel(self, job_id: str, uid: str) -> None:
        record = self.records.get(uid)
        if record is None or record.outcome is not None:
            return
        if uid in self.waiting:
            del self.waiting[uid]
            self._end(uid, {"exit_code": 137, "reason": "Error", "message": "cancelled before it started"})
            return
        pilot = self.pilots.get(record.pilot or "")
        if pilot is not None:
            self._send(pilot, {"op": "cancel", "uid": uid, "why": "cancelled (pod deleted)"})

    def log_path(self, uid: str, container: str) -> Path:
        return self.pods_root / uid / f"{container}.log"

    def job_of(self, uid: str) -> str | None:
        return uid if (self.pods_root / uid / PAYLOAD_FILE).exists() else None

    # --- matching payloads to pilots -------------------------------------------------------------

    def _dispatch(self) -> None:
        """Start what fits in every connected pilot now, in fitness order."""
        if not self.waiting:
            return
        now = time.monotonic()
        for pilot in self.pilots.values():
            if pilot.writer is None or pilot.draining:
                continue
            weights, margin = self.settings.weights, self.settings.policy.margin_s
            for payload in choose(self.waiting.values(), pilot.room(now), weights, margin, now):
                self._assign(payload, pilot)
            if not self.waiting:
                return

    def _assign(self, payload: Payload, pilot: _Pilot) -> None:
        del self.waiting[payload.uid]
        record = self.records[payload.uid]
        record.pilot = pilot.name
        record.pilot_label = pilot.label
        pilot.running.add(payload.uid)
        pilot.used_cpus += payload.cpus
        pilot.used_memory += payload.memory_bytes
        self._send(pilot, {"op": "run", "uid": payload.uid})

    def _release(self, pilot: _Pilot, uid: str) -> None:
        if uid not in pilot.running:
            return
        pilot.running.discard(uid)
        payload = self.records[uid].payload
        pilot.used_cpus = max(0.0, pilot.used_cpus - payload.cpus)
        pilot.used_memory = max(0, pilot.used_memory - payload.memory_bytes)
        if not pilot.running:
            pilot.idle_since = time.monotonic()

    def _end(self, uid: str, outcome: dict[str, Any]) -> None:
        record = self.records[uid]
        record.outcome = outcome
        self.wake()

    def _send(self, pilot: _Pilot, message: dict[str, Any]) -> None:
        if pilot.writer is not None and not pilot.writer.is_closing():
            pilot.writer.write(json.dumps(message).encode() + b"\n")

    # --- the agents' connections -----------------------------------------------------------------

    async def _serve_agent(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        _keep_alive(writer.get_extra_info("socket"))
        try:
            pilot = await self._introduce(reader, writer)
        except (ValueError, TimeoutError, OSError, asyncio.IncompleteReadError) as error:
            self.refused_agents += 1
            log.warning("refused a pilot agent from %s: %s", peer, error)
            with contextlib.suppress(OSError):
                writer.write(json.dumps({"ok": False, "error": f"refused: {error}"}).encode() + b"\n")
                await writer.drain()
            writer.close()
            return
        try:
            while line := await reader.readline():
                self._on_message(pilot, json.loads(line))
        except (OSError, ValueError) as error:
            log.warning("%s: connection broken: %s", pilot.label, error)
        finally:
            writer.close()
            self._pilot_ended(pilot, "its agent's connection closed")

    async def _introduce(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> _Pilot:
        """Read the agent's hello; the pilot it names must exist, be unconnected, and have that token."""
        hello = json.loads(await asyncio.wait_for(reader.readline(), HELLO_TIMEOUT_S) or b"{}")
        if not isinstance(hello, dict) or hello.get("op") != "hello":
            raise ValueError("expected a hello")
        pilot = self.pilots.get(str(hello.get("pilot", "")))
        token = str(hello.get("token", ""))
        if pilot is None or not hmac.compare_digest(token.encode(), pilot.token.encode()):
            raise ValueError(f"unknown pilot or wrong token for pilot {str(hello.get('pilot', ''))[:64]!r}")
        if pilot.writer is not None:
            raise ValueError(f"{pilot.label} is already connected")
        now = time.monotonic()
        remaining = hello.get("remaining_s")
        if isinstance(remaining, int | float):
            pilot.ends_at = now + float(remaining)
        else:  # without Slurm's own end time, count from submission: the job cannot have begun before
            pilot.ends_at = pilot.submitted_at + pilot.template.walltime_s
        pilot.job_id = pilot.job_id or str(hello.get("job_id", ""))
        pilot.connected_at = pilot.idle_since = now
        pilot.starving = self._next_is_starving()
        pilot.writer = writer
        writer.write(json.dumps({"ok": True}).encode() + b"\n")
        log.info("%s connected%s", pilot.label, " (starving mode)" if pilot.starving else "")
        self._dispatch()
        return pilot

    def _next_is_starving(self) -> bool:
        """Every pilot connected after a share s of the others runs starving: s = 0.5 makes every second one."""
        index = self._connections
        self._connections += 1
        share = self.settings.policy.starving_share
        return math.floor((index + 1) * share) > math.floor(index * share)

    def _on_message(self, pilot: _Pilot, message: dict[str, Any]) -> None:
        uid = str(message.get("uid", ""))
        record = self.records.get(uid)
        if record is None or record.pilot != pilot.name:
            log.warning("%s reported on a payload it was not given: %s", pilot.label, message)
            return
        op = message.get("op")
        if op == "started":
            started = message.get("started_at")
            record.started_at = float(started) if isinstance(started, int | float) else time.time()
            self.wake()
        elif op == "finished":
            self._release(pilot, uid)
            self._end(uid, dict(message.get("outcome") or {}))
            self._dispatch()
        elif op == "refused":
            self._release(pilot, uid)
            self._end(uid, {"exit_code": 1, "reason": "Error", "message": f"{pilot.label}: {message.get('why')}"})
            self._dispatch()

    def _pilot_ended(self, pilot: _Pilot, why: str) -> None:
        """The pilot is gone: what still ran in it failed (PilotLost, once), and its room is no more."""
        self.pilots.pop(pilot.name, None)
        lost = [uid for uid in pilot.running if self.records[uid].outcome is None]
        for uid in lost:
            outcome = _lost_outcome(self.pods_root / uid, f"{PILOT_LOST}: {pilot.label} ended ({why})")
            self._release(pilot, uid)
            self._end(uid, outcome)
        level = logging.WARNING if lost else logging.INFO
        log.log(level, "%s ended (%s); %d running payload(s) lost", pilot.label, why, len(lost))
        self._kick.set()

    # --- keeping the pool ------------------------------------------------------------------------

    async def _maintain_forever(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), MAINTAIN_EVERY_S)
            self._kick.clear()
            try:
                await self._maintain()
            except BackendUnavailableError as error:
                log.warning("pilot pool: Slurm unavailable: %s", error)
            except Exception:  # the pool must outlive one bad pass; the next one repairs from what it observes
                log.exception("pilot pool: pass failed")

    async def _maintain(self) -> None:
        now = time.monotonic()
        self._recycle(now)
        if now - self._last_slurm_check >= SLURM_CHECK_EVERY_S and (self.pilots or self._orphans):
            self._last_slurm_check = now
            await self._check_slurm()
        for template_name in self._plan():
            await self._submit_pilot(template_name)
        if now - self._last_prune >= PRUNE_EVERY_S:
            self._last_prune = now
            self._forget_removed()

    def _forget_removed(self) -> None:
        """Ended payloads whose pod directory the bridge has removed (the pod is gone): nothing asks for them."""
        for uid in [uid for uid, record in self.records.items() if record.outcome is not None]:
            if not (self.pods_root / uid).exists():
                del self.records[uid]

    def _recycle(self, now: float) -> None:
        """Drain pilots near their walltime's end, and pilots idle while nothing waits."""
        policy = self.settings.policy
        for pilot in self.pilots.values():
            if pilot.writer is None or pilot.draining:
                continue
            near_end = pilot.ends_at - now < policy.margin_s + 1.0
            room = pilot.room(now)
            wanted = any(
                fits(p, room.cpus, room.memory_bytes, room.remaining_s - policy.margin_s) for p in self.waiting.values()
            )
            idle = not pilot.running and not wanted and now - pilot.idle_since >= policy.idle_s
            if near_end or idle:
                pilot.draining = True
                log.info("%s: draining (%s)", pilot.label, "walltime nearly over" if near_end else "idle")
                self._send(pilot, {"op": "drain"})
        self._dispatch()

    def _plan(self) -> list[str]:
        counts: dict[str, TemplateCount] = {}
        for pilot in self.pilots.values():
            count = counts.get(pilot.template_name, TemplateCount(0, 0))
            queued = count.queued + (1 if pilot.connected_at is None else 0)
            counts[pilot.template_name] = TemplateCount(queued, count.total + 1)
        policy = self.settings.policy
        now = time.monotonic()
        # A template whose last pilot Slurm refused (or lost before it connected) rests a while: no sbatch storm,
        # and its demand goes to the next template that fits, if any.
        usable = {
            name: template
            for name, template in self.settings.templates.items()
            if now - self._pilot_failed_at.get(name, -math.inf) >= PILOT_RETRY_S
        }
        return pilots_to_submit(
            list(self.waiting.values()), usable, counts, policy.margin_s, policy.max_submit_per_pass
        )

    async def _submit_pilot(self, template_name: str) -> None:
        template = self.settings.templates[template_name]
        name = f"{template_name}-{secrets.token_hex(4)}"
        pilot = _Pilot(
            name, template_name, template, secrets.token_urlsafe(32), self.pilots_root / name, time.monotonic()
        )
        await asyncio.to_thread(self._write_pilot_files, pilot)
        self.pilots[name] = pilot
        code, out, err = await self.slurm.run_command(
            "sbatch", "--parsable", *self._sbatch_options(pilot), str(pilot.directory / "pilot.sh")
        )
        if code != 0:
            del self.pilots[name]
            self._pilot_errors[template_name] = sbatch_error(err or out)
            self._pilot_failed_at[template_name] = time.monotonic()
            log.warning("sbatch of a %s pilot failed: %s", template_name, self._pilot_errors[template_name])
            return
        self._pilot_errors.pop(template_name, None)
        pilot.job_id = out.strip().split(";")[0]
        log.info("%s submitted for %d waiting payload(s)", pilot.label, len(self.waiting))

    def _sbatch_options(self, pilot: _Pilot) -> list[str]:
        template = pilot.template
        options = [
            f"--job-name=sgs-pilot.{pilot.template_name}",
            f"--comment={PILOT_COMMENT_PREFIX}{pilot.name}",
            f"--output={pilot.directory / 'pilot.log'}",
            f"--chdir={pilot.directory}",
            "--ntasks=1",
            f"--cpus-per-task={template.cpu_cores}",
            f"--mem={template.rss_mb}M",
            f"--time={template.walltime_min}",
            "--no-requeue",  # a lost pilot's payloads are failed and retried as pods, never rerun by Slurm
        ]
        partition = template.partition or self.slurm.partition
        if partition:
            options.append(f"--partition={partition}")
        return [*options, *self.slurm.extra_args]

    def _write_pilot_files(self, pilot: _Pilot) -> None:
        pilot.directory.mkdir(parents=True, exist_ok=True)
        token_file = pilot.directory / "token"
        descriptor = os.open(token_file, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(pilot.token)
        agent = [
            self.python,
            "-m",
            "sgs_bridge.pilot_agent",
            f"--bridge={self.address}:{self.port}",
            f"--pilot={pilot.name}",
            f"--token-file={token_file}",
            f"--pods-root={self.pods_root}",
        ]
        script = f"#!/bin/bash\n# sgs bridge: {pilot.label}\nexec {shlex.join(agent)}\n"
        path = pilot.directory / "pilot.sh"
        path.write_text(script)
        path.chmod(0o700)

    def _lose_orphans(self, listing: Mapping[str, Mapping[str, str]]) -> None:
        """Payloads an earlier bridge's pilot ran: lost once Slurm has ended that pilot without their outcome."""
        for uid, (job_id, label) in list(self._orphans.items()):
            pod_dir = self.pods_root / uid
            if (pod_dir / OUTCOME_FILE).exists() or not pod_dir.exists():
                del self._orphans[uid]
            elif _ended(listing, job_id):
                _lost_outcome(pod_dir, f"{PILOT_LOST}: {label} ended while the bridge was away")
                del self._orphans[uid]
                self.wake()

    async def _check_slurm(self) -> None:
        """Pilots Slurm has ended: lost if they were serving, dropped if they never connected."""
        text = await self.slurm.checked_command("scontrol", "show", "job", "-o")
        listing = {} if "No jobs in the system" in text else parse_show_job(text)
        self._lose_orphans(listing)
        for pilot in list(self.pilots.values()):
            if not _ended(listing, pilot.job_id):
                fields = listing.get(pilot.job_id, {})
                pilot.slurm_state = f"{fields.get('JobState', '?')} (Reason={fields.get('Reason', 'None')})"
                continue
            state = listing.get(pilot.job_id, {}).get("JobState", "")
            if pilot.writer is not None:
                pilot.writer.close()  # the connection's end fails what still ran (once)
                continue
            if time.monotonic() - pilot.submitted_at < SLURM_CHECK_EVERY_S * 2:
                continue  # just submitted: the controller may not list it yet
            tail = tail_text(pilot.directory / "pilot.log", 2000).strip().splitlines()
            why = f"Slurm job {pilot.job_id} {state or 'gone'} before its agent connected"
            self._pilot_errors[pilot.template_name] = why + (f": {tail[-1][-300:]}" if tail else "")
            self._pilot_failed_at[pilot.template_name] = time.monotonic()
            log.warning("%s: %s", pilot.label, self._pilot_errors[pilot.template_name])
            self.pilots.pop(pilot.name, None)
            self._kick.set()


def _keep_alive(sock: socket.socket | None) -> None:
    """Probe an idle connection (30 s, then every 10 s, 3 misses): a pilot whose node vanished without closing
    its socket is noticed within about a minute, as Parsl's HTEX heartbeats would (heartbeat_threshold)."""
    if sock is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)


def _ended(listing: Mapping[str, Mapping[str, str]], job_id: str) -> bool:
    fields = listing.get(job_id)
    return fields is None or fields.get("JobState", "") in ENDED_SLURM_STATES


def _payload_from_summary(uid: str, summary: Mapping[str, Any]) -> Payload:
    return Payload(
        uid=uid,
        cpus=float(summary.get("cpus") or 0.0),
        memory_bytes=int(summary.get("memory_bytes") or 0),
        walltime_s=float(summary.get("walltime_s") or 0.0),
        queued_at=time.monotonic(),
        retry=bool(summary.get("retry")),
        priority=int(summary.get("priority") or 0),
    )


def _naming_pilot(state: JobState, pilot_label: str) -> JobState:
    """The state with the pilot that ran it in its message (the seed's Run Server 'Pilot' column)."""
    if not pilot_label or pilot_label in state.message:
        return state
    message = f"{state.message}; ran on {pilot_label}" if state.message else f"ran on {pilot_label}"
    return JobState(
        state.phase,
        state.job_id,
        state.reason,
        message,
        state.exit_code,
        state.started_at,
        state.finished_at,
        state.usage,
        state.backend_state,
    )


def _lost_outcome(pod_dir: Path, message: str) -> dict[str, Any]:
    """Record PilotLost unless the payload's own outcome got there first (then that one stands)."""
    outcome: dict[str, Any] = {"exit_code": 137, "reason": PILOT_LOST, "message": message, "finished_at": time.time()}
    temporary = pod_dir / f".{OUTCOME_FILE}.lost"
    temporary.write_text(json.dumps(outcome))
    try:
        os.link(temporary, pod_dir / OUTCOME_FILE)  # creates it only if absent: the outcome is written once
    except FileExistsError:
        outcome = read_json(pod_dir / OUTCOME_FILE) or outcome
    finally:
        temporary.unlink(missing_ok=True)
    return outcome


__all__ = ["CLAIM_FILE", "PAYLOAD_FILE", "PilotProvider"]

"""Slurm's words as pod states: `scontrol show job -o` lines parsed, JobState/Reason/ExitCode mapped.

Pure functions. Facts of Slurm 22.05 without cgroups (see notes/slurm-single-host.md): an over-memory kill
by OverMemoryKill is `FAILED Reason=JobLaunchFailure ExitCode=0:9` plus a `exceeded memory limit (N > M)`
line in the job's stderr, not OUT_OF_MEMORY; a walltime kill is `TIMEOUT Reason=TimeLimit ExitCode=0:15`.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping

from sgs_bridge.state import JobState, Phase, signal_exit_code

COMMENT_PREFIX = "sgs-pod:"
RUNNING_STATES = {"RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT"}
PENDING_STATES = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "RESV_DEL_HOLD"}
OOM_LINE = re.compile(r"exceeded memory limit \((\d+) > (\d+)\)")
REASON_HELP = {
    "Resources": "waiting for resources (cores, memory or GPUs) to become free",
    "Priority": "higher-priority jobs are queued ahead of it",
    "ReqNodeNotAvail": "the nodes it needs are unavailable (down, drained or reserved)",
    "PartitionTimeLimit": "its time limit exceeds the partition's maximum",
    "PartitionNodeLimit": "it asks for more nodes than the partition allows",
    "QOSMaxCpuPerUserLimit": "the QOS limit on CPUs per user is reached",
    "Dependency": "waiting for a dependency",
    "BeginTime": "its start time has not come",
    "JobHeldUser": "held by the user",
    "JobHeldAdmin": "held by an administrator",
    "None": "queued; the scheduler has not considered it yet",
}


def parse_show_job(text: str) -> dict[str, dict[str, str]]:
    """`scontrol show job -o` output (one job per line) as {job id: {field: value}}."""
    jobs = {}
    for line in text.splitlines():
        fields = parse_fields(line)
        if "JobId" in fields:
            jobs[fields["JobId"]] = fields
    return jobs


def parse_fields(line: str) -> dict[str, str]:
    """`Key=value Key=value ...`, where a value may contain spaces (a token without `=` continues it)."""
    fields: dict[str, str] = {}
    key = ""
    for token in line.split(" "):
        name, sep, value = token.partition("=")
        if sep and name and "=" not in name and not name.startswith("("):
            key = name
            fields[key] = value
        elif key:
            fields[key] += " " + token
    return fields


def parse_time(value: str | None) -> datetime.datetime | None:
    """Slurm's local-time stamps (`2024-05-01T10:00:00`); None for Unknown/None/empty."""
    if not value or value in ("Unknown", "None", "N/A"):
        return None
    try:
        moment = datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        return None
    return moment.astimezone(datetime.UTC)


def job_state(job_id: str, fields: Mapping[str, str], log_tail: str) -> JobState:
    """A pod-level view of one Slurm job; `log_tail` is the end of the job's output (for the OOM line)."""
    state = fields.get("JobState", "")
    reason = fields.get("Reason", "None")
    started = parse_time(fields.get("StartTime"))
    finished = parse_time(fields.get("EndTime"))
    slurm_words = f"Slurm job {job_id}: {state} Reason={reason} ExitCode={fields.get('ExitCode', '')}"
    if state in PENDING_STATES:
        return _pending(job_id, state, reason)
    if state in RUNNING_STATES:
        return JobState(
            Phase.RUNNING,
            job_id,
            message=f"on {fields.get('NodeList', '?')}",
            started_at=started,
            backend_state=state,
        )
    if state == "COMPLETED":
        return JobState(Phase.SUCCEEDED, job_id, "Completed", "", 0, started, finished, None, state)
    return _failed(job_id, state, fields, slurm_words, log_tail, started, finished)


def _pending(job_id: str, state: str, reason: str) -> JobState:
    word = reason.split(",")[0].split("(")[0].strip() or "None"
    help_text = REASON_HELP.get(word, "")
    message = f"Slurm job {job_id} is {state} (Reason={reason})" + (f": {help_text}" if help_text else "")
    pod_reason = "SlurmQueued" if word == "None" else f"Slurm{word}"
    return JobState(Phase.PENDING, job_id, reason=pod_reason, message=message, backend_state=state)


def _failed(
    job_id: str,
    state: str,
    fields: Mapping[str, str],
    slurm_words: str,
    log_tail: str,
    started: datetime.datetime | None,
    finished: datetime.datetime | None,
) -> JobState:
    exit_code = exit_code_of(fields.get("ExitCode", "1:0"))
    oom = OOM_LINE.search(log_tail)
    usage: dict[str, float] | None = None
    if state == "OUT_OF_MEMORY" or oom is not None:
        reason = "OOMKilled"
        message = slurm_words
        if oom is not None:
            used, limit = int(oom.group(1)), int(oom.group(2))  # bytes (Slurm 22.05)
            message += f"; slurmstepd: memory {used // 2**20} MiB exceeded the limit of {limit // 2**20} MiB"
            usage = {"max_rss_mb": round(used / 2**20, 1)}
        exit_code = signal_exit_code(9)
    elif state in ("TIMEOUT", "DEADLINE"):
        reason = "DeadlineExceeded"
        message = f"{slurm_words}; time limit {fields.get('TimeLimit', '?')} reached"
    else:
        reason = "Error"
        message = slurm_words
    if usage is None:
        usage = {}
    if started and finished:
        usage["wall_s"] = round((finished - started).total_seconds(), 3)
    return JobState(Phase.FAILED, job_id, reason, message, exit_code or 1, started, finished, usage or None, state)


def exit_code_of(text: str) -> int:
    """Slurm's `code:signal` as one exit code (128+signal when killed by a signal)."""
    code, _, signal = text.partition(":")
    try:
        if signal and int(signal) > 0:
            return signal_exit_code(int(signal))
        return int(code)
    except ValueError:
        return 1


def parse_node_capacity(text: str) -> tuple[int, int, int, int]:
    """Sum of CPUs, memory (MiB), GPUs and tmp disk (MiB) over `scontrol show node -o` lines."""
    cpus = memory = gpus = tmp = 0
    for line in text.splitlines():
        fields = parse_fields(line)
        if "NodeName" not in fields:
            continue
        cpus += _int(fields.get("CPUTot"))
        memory += _int(fields.get("RealMemory"))
        tmp += _int(fields.get("TmpDisk"))
        gpus += gres_gpus(fields.get("Gres", ""))
    return cpus, memory, gpus, tmp


def gres_gpus(gres: str) -> int:
    """GPUs in a Gres string such as `gpu:2`, `gpu:a100:4(S:0-1)`, `gpu:1,mps:100`."""
    total = 0
    for item in gres.split(","):
        parts = item.split("(")[0].split(":")
        if parts[0] == "gpu" and len(parts) >= 2:
            total += _int(parts[-1])
    return total


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0

"""Small formatting helpers for the templates (ages, durations, sizes, used vs requested)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment


def parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


def age(value: Any, now: datetime | None = None) -> str:
    when = parse_time(value)
    if when is None:
        return ""
    return seconds((now or datetime.now(UTC)) - when)


def seconds(value: Any) -> str:
    """3.2s, 4m05s, 2h10m, 3d4h."""
    total = value.total_seconds() if hasattr(value, "total_seconds") else value
    if total is None:
        return ""
    total = float(total)
    if total < 60:
        return f"{total:.1f}s" if total < 10 else f"{total:.0f}s"
    minutes, secs = divmod(int(total), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours}h"


def duration(row: dict[str, Any]) -> str:
    started, ended = parse_time(row.get("started")), parse_time(row.get("ended"))
    if started is None:
        return ""
    return seconds((ended or datetime.now(UTC)) - started) + ("" if ended else " …")


def number(value: Any, digits: int = 0) -> str:
    if value is None or value == "":
        return ""
    try:
        return f"{float(value):,.{digits}f}"
    except (TypeError, ValueError):
        return str(value)


def used_vs_requested(row: dict[str, Any]) -> dict[str, str]:
    """CPU, RSS, VMS and IO as the Pipeline Run Server shows them: used / requested."""
    usage, requested = row.get("usage") or {}, row.get("requested") or {}
    cores = requested.get("cores")
    ram_mb = float(requested["ram"]) * 1024 if requested.get("ram") is not None else None
    wall, cpu = usage.get("wall_s"), usage.get("cpu_s")
    cpu_pct = 100 * float(cpu) / float(wall) if wall and cpu is not None and float(wall) > 0 else None
    vms_req = float(requested["vms"]) * 1024 if requested.get("vms") else None
    return {
        "cpu": f"{number(cpu_pct)} % of {cores} cores" if cpu_pct is not None else (f"— of {cores}" if cores else ""),
        "rss": f"{number(usage.get('max_rss_mb'))} / {number(ram_mb)} MB"
        if ram_mb
        else number(usage.get("max_rss_mb")),
        "vms": f"{number(usage.get('max_vms_mb'))}" + (f" / {number(vms_req)} MB" if vms_req else " MB")
        if usage.get("max_vms_mb") is not None
        else "",
        "io": f"{number(usage.get('read_mb'), 1)} / {number(usage.get('write_mb'), 1)} MB"
        if usage.get("read_mb") is not None
        else "",
    }


# Conditions that are True when something is out of the ordinary (Kubernetes calls these "abnormal-true"):
# a Run whose Pipeline is unchanged or that is not suspended is fine, and must not be drawn as a failure.
ABNORMAL_TRUE = frozenset({"PipelineChanged", "Suspended", "StagingInputs", "Degraded", "Stalled"})


def condition_class(condition: dict[str, Any]) -> str:
    status = str(condition.get("status"))
    if condition.get("type") in ABNORMAL_TRUE:
        return {"True": "warn", "False": "ok"}.get(status, "unknown")
    return {"True": "ok", "False": "bad"}.get(status, "unknown")


def install(env: Environment) -> None:
    env.filters.update(age=age, seconds=seconds, duration=duration, number=number, usage=used_vs_requested)
    env.filters["condition_class"] = condition_class
    env.globals["now"] = lambda: datetime.now(UTC)

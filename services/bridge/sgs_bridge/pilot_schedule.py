"""Which payloads a pilot runs next, and which pilots to submit: pure functions (no I/O, no clock).

The payload order is the seed's fitness score (Euclid Pipeline Runner, seed 002): the payload's share of the
pilot's CPU, RAM and remaining walltime, plus how long it has waited, each with an administrator's weight; a
retry goes first, and the pod's priority breaks ties. A pilot in *starving mode* serves the biggest payload
first and holds its free room for it until it fits (so big payloads are not starved by a stream of small
ones), then fills what is left with the smallest. No payload is started that could not finish inside the
pilot's remaining walltime less a margin.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from sgs_bridge.pilot_config import FitnessWeights, PilotTemplate

CPU_EPSILON = 1e-9


@dataclass(frozen=True)
class Payload:
    """A waiting payload as the scheduler sees it (walltime already defaulted)."""

    uid: str
    cpus: float
    memory_bytes: int
    walltime_s: float
    queued_at: float  # seconds, on the same clock as ``now`` below
    retry: bool = False
    priority: int = 0


@dataclass(frozen=True)
class PilotRoom:
    """One connected pilot: what it has in all, what is free now, how long it has left, its mode."""

    cpus: float
    memory_bytes: int
    free_cpus: float
    free_memory_bytes: int
    remaining_s: float
    starving: bool = False


@dataclass(frozen=True)
class TemplateCount:
    queued: int  # submitted, not yet connected
    total: int  # queued + connected


def fits(payload: Payload, cpus: float, memory_bytes: int, seconds: float) -> bool:
    return payload.cpus <= cpus + CPU_EPSILON and payload.memory_bytes <= memory_bytes and payload.walltime_s <= seconds


def fitness(payload: Payload, room: PilotRoom, weights: FitnessWeights, now: float) -> float:
    """The payload's score in this pilot: higher runs first."""
    waited = max(0.0, now - payload.queued_at)
    score = (
        weights.cpu * payload.cpus / room.cpus
        + weights.ram * payload.memory_bytes / room.memory_bytes
        + weights.walltime * min(1.0, payload.walltime_s / max(room.remaining_s, 1.0))
        + weights.waiting * min(1.0, waited / weights.waiting_norm_s)
        + weights.priority * payload.priority
    )
    return score + (weights.retry if payload.retry else 0.0)


def choose(
    waiting: Iterable[Payload], room: PilotRoom, weights: FitnessWeights, margin_s: float, now: float
) -> list[Payload]:
    """The payloads to start in this pilot now, in start order (each fits what the ones before it left)."""
    usable_s = room.remaining_s - margin_s
    candidates = [p for p in waiting if fits(p, room.cpus, room.memory_bytes, usable_s)]
    if not candidates:
        return []
    if room.starving:
        return _starving(candidates, room, weights, now)
    ranked = sorted(candidates, key=lambda p: (-fitness(p, room, weights, now), p.queued_at, p.uid))
    return _fill(ranked, room.free_cpus, room.free_memory_bytes)


def _starving(candidates: list[Payload], room: PilotRoom, weights: FitnessWeights, now: float) -> list[Payload]:
    retries = sorted((p for p in candidates if p.retry), key=lambda p: (-fitness(p, room, weights, now), p.uid))
    chosen = _fill(retries, room.free_cpus, room.free_memory_bytes)
    free_cpus = room.free_cpus - sum(p.cpus for p in chosen)
    free_memory = room.free_memory_bytes - sum(p.memory_bytes for p in chosen)
    rest = [p for p in candidates if not p.retry]
    if not rest:
        return chosen
    biggest = max(rest, key=lambda p: (_size(p, room), -p.queued_at, p.uid))
    if biggest.cpus > free_cpus + CPU_EPSILON or biggest.memory_bytes > free_memory:
        return chosen  # hold the room for the biggest: it starts as soon as what runs now has freed enough
    chosen.append(biggest)
    smallest_first = sorted((p for p in rest if p is not biggest), key=lambda p: (_size(p, room), p.queued_at))
    return chosen + _fill(smallest_first, free_cpus - biggest.cpus, free_memory - biggest.memory_bytes)


def _size(payload: Payload, room: PilotRoom) -> float:
    return payload.cpus / room.cpus + payload.memory_bytes / room.memory_bytes


def _fill(ranked: Iterable[Payload], free_cpus: float, free_memory: int) -> list[Payload]:
    chosen = []
    for payload in ranked:
        if payload.cpus <= free_cpus + CPU_EPSILON and payload.memory_bytes <= free_memory:
            chosen.append(payload)
            free_cpus -= payload.cpus
            free_memory -= payload.memory_bytes
    return chosen


def fitting_templates(
    payload: Payload, templates: Mapping[str, PilotTemplate], margin_s: float
) -> list[tuple[str, PilotTemplate]]:
    """The enabled templates a pilot of which could run the payload, smallest first."""
    fitting = [
        (name, t)
        for name, t in templates.items()
        if t.max_instances > 0 and fits(payload, t.cpu_cores, t.memory_bytes, t.walltime_s - margin_s)
    ]
    return sorted(fitting, key=lambda item: (item[1].cpu_cores, item[1].rss_mb, item[1].walltime_min, item[0]))


def pilots_to_submit(
    unserved: Sequence[Payload],
    templates: Mapping[str, PilotTemplate],
    counts: Mapping[str, TemplateCount],
    margin_s: float,
    max_per_pass: int,
) -> list[str]:
    """The templates to submit one pilot of each, for payloads no running or queued pilot will take.

    Each payload is counted against the smallest template that fits it and still may grow; a template gets
    as many new pilots as its share of the demand needs (by cores and by memory), less those already queued,
    within its maxQueued and maxInstances.
    """
    demand: dict[str, list[float]] = {}
    room = {name: t.max_instances - counts.get(name, TemplateCount(0, 0)).total for name, t in templates.items()}
    for payload in unserved:
        for name, _ in fitting_templates(payload, templates, margin_s):
            if room[name] > 0:
                cpus_memory = demand.setdefault(name, [0.0, 0.0])
                cpus_memory[0] += payload.cpus
                cpus_memory[1] += payload.memory_bytes
                break
    plan: list[str] = []
    for name, (cpus, memory) in sorted(demand.items()):
        template = templates[name]
        count = counts.get(name, TemplateCount(0, 0))
        needed = max(math.ceil(cpus / template.cpu_cores - CPU_EPSILON), math.ceil(memory / template.memory_bytes))
        new = min(needed - count.queued, template.max_queued - count.queued, room[name])
        plan.extend([name] * max(0, new))
    return plan[:max_per_pass]

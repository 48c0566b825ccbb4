"""Pure scheduling policy: retry delays, memory on OOM retry, dynamic resources, and the fitness score.

The fitness score follows the Euclid Pipeline Runner (seed 002): retries first, then the longest waiting,
then the task's share of the capacity (bigger tasks first, as in the runner's starving mode), with weights an
operator can configure, plus the Run's priority.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sgs.model.pipeline import Resources, RetryPolicy

DEFAULT_RETRY = RetryPolicy()
_OVERRIDABLE = ("cores", "ram", "walltime", "vms", "gpus", "tmpdir")


@dataclass(frozen=True)
class FitnessWeights:
    retry: float = 1000.0
    wait_per_hour: float = 10.0
    resources: float = 5.0
    priority: float = 1.0


@dataclass(frozen=True)
class Capacity:
    """What a Site (or a pilot allocation, or the local machine) offers at once."""

    cores: int
    ram: float  # GiB
    gpus: int = 0

    def fits(self, resources: Resources) -> bool:
        return resources.cores <= self.cores and resources.ram <= self.ram and resources.gpus <= self.gpus

    def minus(self, resources: Resources) -> Capacity:
        return Capacity(self.cores - resources.cores, self.ram - resources.ram, self.gpus - resources.gpus)


def retry_delay(policy: RetryPolicy, attempt: int, seed: str) -> float:
    """Delay before ``attempt`` (1 = first retry): exponential, capped, with jitter seeded by ``seed``.

    The same run, task and attempt always get the same delay, so a restarted scheduler agrees with itself.
    """
    base = min(policy.max_backoff, policy.backoff * policy.backoff_factor ** max(attempt - 1, 0))
    digest = hashlib.sha256(f"{seed}:{attempt}".encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    return max(0.0, base * (1.0 + policy.jitter * (2.0 * rng.random() - 1.0)))


def with_memory_factor(resources: Resources, factor: float) -> Resources:
    if factor == 1.0:
        return resources
    return resources.model_copy(update={"ram": round(resources.ram * factor, 3)})


def apply_dynamic(resources: Resources, overrides: Mapping[str, Any]) -> Resources:
    """Resources with the run-time overrides read from an upstream product; unknown keys are an error."""
    unknown = sorted(set(overrides) - set(_OVERRIDABLE))
    if unknown:
        raise ValueError(f"dynamic resources: unknown keys {unknown} (allowed: {list(_OVERRIDABLE)})")
    merged = resources.model_dump()
    merged.update(overrides)
    merged["dynamic"] = None
    return Resources.model_validate(merged)


def resource_share(resources: Resources, capacity: Capacity) -> float:
    shares = [resources.cores / max(capacity.cores, 1), resources.ram / max(capacity.ram, 1e-9)]
    if capacity.gpus:
        shares.append(resources.gpus / capacity.gpus)
    return max(shares)


def fitness(
    *,
    retried: bool,
    waiting_hours: float,
    share: float,
    priority: float,
    weights: FitnessWeights,
) -> float:
    return (
        weights.retry * (1.0 if retried else 0.0)
        + weights.wait_per_hour * waiting_hours
        + weights.resources * share
        + weights.priority * priority
    )

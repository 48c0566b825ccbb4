"""When a failed transfer is tried again, and when it is STUCK (it still is retried, slowly, and says why)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    base_s: float = 2.0
    max_s: float = 60.0
    fast_attempts: int = 6
    stuck_after_s: float = 300.0


@dataclass(frozen=True)
class RetryDecision:
    delay_s: float
    stuck: bool


def backoff_s(attempt: int, policy: RetryPolicy, jitter: float) -> float:
    """Exponential backoff with equal jitter: half the step fixed, half random (``jitter`` in [0, 1)).

    The fixed half keeps a failing Site from being hammered; the random half keeps many transfers that failed
    together (one Site went down) from coming back together.
    """
    step = min(policy.max_s, policy.base_s * 2.0 ** max(attempt - 1, 0))
    return step / 2 + step / 2 * min(max(jitter, 0.0), 1.0)


def after_failure(attempts: int, failing_for_s: float, policy: RetryPolicy, jitter: float) -> RetryDecision:
    """What to do after the ``attempts``-th failed attempt, the first failure being ``failing_for_s`` ago."""
    stuck = attempts >= policy.fast_attempts or failing_for_s >= policy.stuck_after_s
    delay = policy.max_s if stuck else backoff_s(attempts, policy, jitter)
    return RetryDecision(delay, stuck)

"""Gauges read at scrape time: rules by state (STUCK ones for the alert), open transfers by destination and
state, and how far the event consumer is behind (JetStream's own counters). Counting at scrape time keeps them
true after a restart, and costs one indexed count and one consumer-info request per scrape."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sgs.events import DATASET_REGISTERED, STREAM
from sgs_transfer.deps import TransferState

log = logging.getLogger(__name__)
RULE_STATES = ("OK", "REPLICATING", "STUCK", "SUSPENDED")
OPEN_STATES = ("QUEUED", "ACTIVE", "STUCK")
EVALUATOR = "evaluator"
SCRAPE_BUDGET_S = 2.0
COPY_OUTCOMES = ("done", "retry", "stuck")
REPAIR_KINDS = ("republished", "expired_rules", "evaluations", "bad_copies")
REAPER_OUTCOMES = ("ran", "paused")


async def refresh(state: TransferState) -> None:
    """Bring the scrape-time gauges up to date; a part that does not answer in time keeps its last values."""
    known_series(state)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(_from_database(state), SCRAPE_BUDGET_S)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(_from_consumer(state), SCRAPE_BUDGET_S)


async def _from_database(state: TransferState) -> None:
    try:
        async with state.pool.connection(timeout=SCRAPE_BUDGET_S) as conn:
            rules = await (await conn.execute("SELECT state, count(*) AS n FROM rule GROUP BY state")).fetchall()
            transfers = await (
                await conn.execute(
                    "SELECT destination, state, count(*) AS n FROM transfer WHERE state = ANY(%s) "
                    "GROUP BY destination, state",
                    [list(OPEN_STATES)],
                )
            ).fetchall()
    except Exception as error:  # a scrape must still answer while the database is away
        log.debug("metrics: database counts unavailable: %s", error)
        return
    counted = {str(row["state"]): int(row["n"]) for row in rules}
    for rule_state in RULE_STATES:
        state.metrics.rules.labels(rule_state).set(counted.get(rule_state, 0))
    per_destination: dict[str, dict[str, int]] = {}
    for row in transfers:
        per_destination.setdefault(str(row["destination"]), {})[str(row["state"])] = int(row["n"])
    for destination in set(per_destination) | set(state.sites.names):
        for open_state in OPEN_STATES:
            count = per_destination.get(destination, {}).get(open_state, 0)
            state.metrics.transfers.labels(destination, open_state).set(count)


async def _from_consumer(state: TransferState) -> None:
    evaluator = state.evaluator
    if evaluator is None or not evaluator.connected:
        return
    try:
        info = await evaluator.js.consumer_info(STREAM, evaluator.durable)
    except Exception as error:  # idem: NATS away, or the consumer not made yet
        log.debug("metrics: consumer info unavailable: %s", error)
        return
    state.metrics.consumer_pending.labels(EVALUATOR).set(info.num_pending or 0)
    state.metrics.consumer_ack_pending.labels(EVALUATOR).set(info.num_ack_pending or 0)


def known_series(state: TransferState) -> None:
    """Every series whose labels are known in advance, at 0 until something happens (Prometheus' advice: a
    rate over a series that appears only at its first failure shows nothing, not 0, until then)."""
    metrics = state.metrics
    for destination in state.sites.names:
        metrics.paused.labels(destination)
        metrics.bytes.labels(destination)
        for outcome in COPY_OUTCOMES:
            metrics.copies.labels(destination, outcome)
    metrics.events.labels(DATASET_REGISTERED)
    metrics.redelivered.labels(DATASET_REGISTERED)
    for kind in REPAIR_KINDS:
        metrics.repaired.labels(kind)
    for outcome in REAPER_OUTCOMES:
        metrics.reaper_passes.labels(outcome)

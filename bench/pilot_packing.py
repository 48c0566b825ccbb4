"""Pilot packing: the share of pilot core-hours that payloads use on a mixed workload, with and without
starving mode, and how long the big payloads wait.

A discrete-event replay of the bridge's own scheduler (``sgs_bridge.pilot_schedule.choose``, the function the
Slurm provider calls on every start and end): pilots of one template, a stream of small payloads with big ones
among them, each starting the moment ``choose`` picks it and ending after its run time. No Slurm and no API
server: the figure is the packing policy's, not the transport's (``pilot_throughput.py`` measures that). The
peer is the same replay without starving mode (every pilot in fitness order), and the physical limit is 100 %.
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import statistics
from dataclasses import dataclass, field

from sgs_bridge.pilot_config import FitnessWeights
from sgs_bridge.pilot_schedule import Payload, PilotRoom, choose

GIB = 2**30


@dataclass
class Pilot:
    cpus: float
    memory: int
    ends_at: float
    starving: bool
    used_cpus: float = 0.0
    used_memory: int = 0
    running: dict[str, Payload] = field(default_factory=dict)

    def room(self, now: float) -> PilotRoom:
        return PilotRoom(
            self.cpus,
            self.memory,
            self.cpus - self.used_cpus,
            self.memory - self.used_memory,
            self.ends_at - now,
            self.starving,
        )


def workload(count: int, big_share: float, seed: int) -> list[tuple[float, Payload, float]]:
    """(arrival, payload, run time) for a mixed stream: small 1-core payloads, a share of 6-core ones."""
    rng = random.Random(seed)
    items = []
    arrival = 0.0
    for index in range(count):
        arrival += rng.expovariate(1 / 6.0)  # one every 6 s on average: the pilots are busy, not swamped
        big = rng.random() < big_share
        runtime = rng.uniform(600, 1800) if big else rng.uniform(30, 300)
        cpus, memory = (6.0, 12 * GIB) if big else (1.0, 2 * GIB)
        # The declared walltime is what the pilot must fit; the payload ends earlier, as tasks do.
        items.append((arrival, Payload(f"p{index}", cpus, memory, runtime * 1.5, arrival), runtime))
    return items


def replay(items: list[tuple[float, Payload, float]], pilots: int, starving: bool) -> dict[str, float]:
    weights, margin = FitnessWeights(), 60.0
    pool = [Pilot(8.0, 32 * GIB, 8 * 3600.0, starving and index % 2 == 1) for index in range(pilots)]
    runtime = {payload.uid: seconds for _, payload, seconds in items}
    big = {payload.uid for _, payload, _ in items if payload.cpus > 1}
    events: list[tuple[float, int, str, str]] = [(arrival, 0, "arrive", p.uid) for arrival, p, _ in items]
    heapq.heapify(events)
    by_uid = {payload.uid: payload for _, payload, _ in items}
    waiting: dict[str, Payload] = {}
    started: dict[str, float] = {}
    busy_core_s = 0.0
    now = 0.0
    sequence = 0
    while events:
        now, _, kind, uid = heapq.heappop(events)
        if kind == "arrive":
            waiting[uid] = by_uid[uid]
        else:
            pilot = next(p for p in pool if uid in p.running)
            payload = pilot.running.pop(uid)
            pilot.used_cpus -= payload.cpus
            pilot.used_memory -= payload.memory_bytes
            busy_core_s += payload.cpus * runtime[uid]
        for pilot in pool:
            for payload in choose(waiting.values(), pilot.room(now), weights, margin, now):
                del waiting[payload.uid]
                pilot.running[payload.uid] = payload
                pilot.used_cpus += payload.cpus
                pilot.used_memory += payload.memory_bytes
                started[payload.uid] = now
                sequence += 1
                heapq.heappush(events, (now + runtime[payload.uid], sequence, "end", payload.uid))
    makespan = now
    waits_big = [started[uid] - by_uid[uid].queued_at for uid in big if uid in started]
    waits_small = [started[uid] - by_uid[uid].queued_at for uid in started if uid not in big]
    return {
        "core_hours_used_share": busy_core_s / (pilots * 8.0 * makespan),
        "makespan_h": makespan / 3600,
        "big_wait_mean_s": statistics.mean(waits_big) if waits_big else 0.0,
        "big_wait_max_s": max(waits_big, default=0.0),
        "small_wait_mean_s": statistics.mean(waits_small) if waits_small else 0.0,
        "unstarted": float(len(waiting)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--payloads", type=int, default=1000)
    parser.add_argument("--big-share", type=float, default=0.05, help="share of 6-core payloads")
    parser.add_argument("--pilots", type=int, default=4, help="pilots of 8 cores, 32 GiB, 8 h")
    parser.add_argument("--seed", type=int, default=20)
    args = parser.parse_args()
    items = workload(args.payloads, args.big_share, args.seed)
    results = {mode: replay(items, args.pilots, mode == "starving") for mode in ("fitness", "starving")}
    for mode, figures in results.items():
        print(
            f"pilot_packing[{mode}]: {100 * figures['core_hours_used_share']:.1f} % of pilot core-hours used "
            f"(limit 100 %), makespan {figures['makespan_h']:.2f} h; big payloads wait mean "
            f"{figures['big_wait_mean_s']:.0f} s, max {figures['big_wait_max_s']:.0f} s; small mean "
            f"{figures['small_wait_mean_s']:.0f} s"
        )
    ratio = results["starving"]["big_wait_max_s"] / max(results["fitness"]["big_wait_max_s"], 1.0)
    print(f"pilot_packing: starving mode / fitness only, big payloads' longest wait: {ratio:.2f}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()

"""Per-Site concurrency shared by the Runs of one operator: slots go to the highest-priority demand first.

Every Run reports, each reconcile, how many of its tasks run at a Site and how many are ready; a Run is
granted slots only beyond what Runs of higher priority are waiting for.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Demand:
    priority: int
    running: int
    ready: int


class SiteBoard:
    def __init__(self) -> None:
        self._sites: dict[str, dict[str, Demand]] = {}

    def report(self, site: str, run: str, priority: int, running: int, ready: int) -> None:
        self._sites.setdefault(site, {})[run] = Demand(priority, running, ready)

    def leave(self, site: str, run: str) -> None:
        self._sites.get(site, {}).pop(run, None)

    def running(self, site: str) -> int:
        return sum(d.running for d in self._sites.get(site, {}).values())

    def grant(self, site: str, run: str, limit: int, wanted: int) -> int:
        """How many of ``wanted`` new tasks ``run`` may start at ``site`` (capacity ``limit``) now."""
        runs = self._sites.get(site, {})
        mine = runs.get(run)
        priority = mine.priority if mine is not None else 0
        ahead = sum(d.ready for key, d in runs.items() if key != run and d.priority > priority)
        return max(0, min(wanted, limit - self.running(site) - ahead))

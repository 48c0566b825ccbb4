"""Leader election on a coordination.k8s.io Lease, the way client-go's leaderelection does it.

A candidate takes the Lease when nobody holds it, when it holds it already (a restart of the same replica), or
when the holder's record has not changed for ``duration_s`` *as measured on the candidate's own clock* since the
candidate first saw it (so clock skew between replicas does not matter). Every write carries the
resourceVersion it read, so two candidates racing for the same Lease cannot both win. The leader renews every
``retry_s``; it counts as leading only until ``renew_deadline_s`` after the start of its last successful renewal,
which is shorter than ``duration_s``: a leader cut off from the API server stops acting before anyone else may
take over. A leader that stops cleanly releases the Lease so a standby takes over at once.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import random
import time
from dataclasses import dataclass
from typing import Any

from sgs.kube.client import CONFLICT, JSON, KubeClient, KubeError

MICROTIME = "%Y-%m-%dT%H:%M:%S.%fZ"
log = logging.getLogger("sgs.kube.lease")


class NotLeadingError(RuntimeError):
    """This replica does not hold the Lease (or cannot be sure it still does): it must not act."""


@dataclass(frozen=True)
class LeaseTiming:
    """client-go's defaults: a 15 s lease, renewed every 2 s, given up 10 s after the last renewal."""

    duration_s: float = 15.0
    renew_deadline_s: float = 10.0
    retry_s: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.retry_s < self.renew_deadline_s < self.duration_s:
            raise ValueError("lease timing: need 0 < retry < renew deadline < duration")


class LeaderElector:
    """``await acquire()`` blocks until this replica leads; ``await keep()`` returns when it has lost the Lease;
    ``check()`` raises NotLeadingError once it cannot be sure it still leads (a write guard)."""

    def __init__(self, client: KubeClient, namespace: str, name: str, identity: str, timing: LeaseTiming) -> None:
        self.client = client
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.timing = timing
        self.holder: str | None = None  # the last holder seen
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self._valid_until = float("-inf")

    @property
    def path(self) -> str:
        return f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases/{self.name}"

    def leading(self) -> bool:
        return time.monotonic() < self._valid_until

    def check(self) -> None:
        if not self.leading():
            raise NotLeadingError(f"{self.identity} does not hold Lease {self.namespace}/{self.name}")

    async def acquire(self) -> None:
        announced = None
        while not await self.try_acquire_or_renew():
            if self.holder != announced:
                log.info("Lease %s/%s is held by %s; standing by", self.namespace, self.name, self.holder)
                announced = self.holder
            await asyncio.sleep(self.timing.retry_s * random.uniform(1.0, 1.2))  # jitter: candidates spread out
        log.info("Lease %s/%s acquired by %s", self.namespace, self.name, self.identity)

    async def keep(self) -> None:
        """Renew until the Lease is lost (renewals failing past the deadline, or someone else holding it)."""
        while True:
            await asyncio.sleep(self.timing.retry_s)
            remaining = self._valid_until - time.monotonic()
            try:
                renewed = await asyncio.wait_for(self.try_acquire_or_renew(), timeout=max(remaining, 0.001))
            except (TimeoutError, OSError, KubeError) as error:
                log.warning("Lease %s/%s: renewal failed: %r", self.namespace, self.name, error)
                renewed = False
            if not renewed and not self.leading():
                log.error(
                    "Lease %s/%s lost by %s (holder now %s)", self.namespace, self.name, self.identity, self.holder
                )
                return

    async def release(self) -> None:
        """Give the Lease up (a clean stop): standbys need not wait for it to expire."""
        if not self.leading():
            return
        self._valid_until = float("-inf")  # stop acting before the Lease says so
        lease = await self.client.get_or_none(self.path)
        if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
            return
        spec = {**lease["spec"], "holderIdentity": None, "leaseDurationSeconds": 1, "renewTime": _now()}
        try:
            await self.client.replace(self.path, {**lease, "spec": spec})
        except KubeError as error:
            log.warning("Lease %s/%s: release failed: %s", self.namespace, self.name, error)

    async def try_acquire_or_renew(self) -> bool:
        started = time.monotonic()
        lease = await self.client.get_or_none(self.path)
        if lease is None:
            return await self._write("POST", self._new_lease(), started)
        spec: JSON = lease.get("spec") or {}
        self.holder = spec.get("holderIdentity") or None
        self._observe(spec)
        mine = self.holder == self.identity
        duration = float(spec.get("leaseDurationSeconds") or self.timing.duration_s)
        if self.holder and not mine and time.monotonic() < self._observed_at + duration:
            return False
        transitions = int(spec.get("leaseTransitions") or 0)
        renewed = {
            **spec,
            "holderIdentity": self.identity,
            "leaseDurationSeconds": round(self.timing.duration_s),
            "renewTime": _now(),
            "acquireTime": spec.get("acquireTime") if mine else _now(),
            "leaseTransitions": transitions if mine else transitions + 1,
        }
        # metadata.resourceVersion rides along: a concurrent change makes this write a 409.
        return await self._write("PUT", {**lease, "spec": renewed}, started)

    async def _write(self, method: str, body: JSON, started: float) -> bool:
        try:
            if method == "POST":
                await self.client.create(self.path.rsplit("/", 1)[0], body)
            else:
                await self.client.replace(self.path, body)
        except KubeError as error:
            if error.status == CONFLICT:
                return False  # another candidate wrote first
            raise
        self.holder = self.identity
        self._valid_until = started + self.timing.renew_deadline_s
        return True

    def _observe(self, spec: JSON) -> None:
        record = (spec.get("holderIdentity"), spec.get("renewTime"), spec.get("leaseTransitions"))
        if record != self._observed:
            self._observed, self._observed_at = record, time.monotonic()

    def _new_lease(self) -> JSON:
        now = _now()
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": round(self.timing.duration_s),
                "acquireTime": now,
                "renewTime": now,
                "leaseTransitions": 0,
            },
        }


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime(MICROTIME)

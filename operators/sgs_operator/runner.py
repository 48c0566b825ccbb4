"""Start the operator: in this process (``sgs operator``) or embedded in a thread (tests, dev stack).

Leader election composes with kopf from the outside: kopf's peering is not leader election (operators of the
same priority all freeze; a killed one is noticed only when its peering record ages out, and it needs the
KopfPeering CRDs), so a replica first takes the coordination.k8s.io Lease, and only then starts kopf. Until then
it serves nothing (no handlers, no admission webhook: the API server only ever calls the leader's). While kopf
runs, the Lease is renewed beside it; the operator's own writes are refused once the Lease cannot be vouched for
(the renew deadline), and a replica that loses the Lease stops kopf and exits non-zero — as client-go's
controllers do — so its Deployment restarts it as a standby. A clean stop (SIGTERM) releases the Lease: the
standby takes over at once instead of after the lease duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import urllib.parse
from collections.abc import Mapping
from typing import Any

import kopf

from sgs.kube import ClusterConfig, KubeClient, load
from sgs.kube.lease import LeaderElector, LeaseTiming
from sgs.runtime import quieten_gc
from sgs_operator.kube import home_namespace
from sgs_operator.settings import OperatorSettings

READY_MESSAGE = "sgs operator ready"
STANDBY_MESSAGE = "sgs operator standing by"
LOST_EXIT_CODE = 3
STOP_GRACE_S = 15.0
ADMISSION_WAIT_S = 30.0
log = logging.getLogger("sgs_operator")


class LeadershipLostError(RuntimeError):
    """Another replica holds the Lease now: this one must stop acting."""


def operator_kwargs(
    settings: OperatorSettings, cluster: ClusterConfig | None = None, elector: LeaderElector | None = None
) -> dict[str, object]:
    import sgs_operator.handlers  # noqa: F401  (registers the handlers)

    return {
        "standalone": True,  # no KopfPeering objects: one replica acts, chosen by the Lease (see above)
        "clusterwide": not settings.namespaces,
        "namespaces": settings.namespaces,
        "memo": kopf.Memo(settings=settings, cluster=cluster, elector=elector),
    }


def run(settings: OperatorSettings) -> None:
    """Serve until interrupted (SIGINT/SIGTERM stop it cleanly); logs READY_MESSAGE once serving. Exits with
    LOST_EXIT_CODE if another replica took the Lease."""
    try:
        asyncio.run(_serve(settings))
    except LeadershipLostError as error:
        log.error(f"{error}; exiting so a restart stands by")
        raise SystemExit(LOST_EXIT_CODE) from error


def identity(settings: OperatorSettings) -> str:
    """Unique per replica (pod names are), stable across a container restart in the same pod (pid 1 again)."""
    return settings.leader_identity or f"{socket.gethostname()}-{os.getpid()}"


async def _serve(settings: OperatorSettings) -> None:
    cluster = await load(settings.kubeconfig, service_account_dir=settings.service_account_dir)
    log.info(f"sgs operator: API server {cluster.server} ({cluster.source})")
    elector = await _lead(settings, cluster) if settings.leader_election else None
    ready, stop = asyncio.Event(), asyncio.Event()

    async def announce() -> None:
        await ready.wait()
        if settings.webhook:
            await _admission_served(settings, cluster)
        quieten_gc()  # in-process only: embedding (tests) leaves the host process's collector alone
        log.info(READY_MESSAGE)

    announcer = asyncio.create_task(announce())
    operator = asyncio.create_task(
        kopf.operator(ready_flag=ready, stop_flag=stop, **operator_kwargs(settings, cluster, elector))  # type: ignore[arg-type]
    )
    keeper = asyncio.create_task(elector.keep()) if elector is not None else asyncio.create_task(asyncio.Event().wait())
    try:
        done, _ = await asyncio.wait({operator, keeper}, return_when=asyncio.FIRST_COMPLETED)
        if keeper in done:
            stop.set()
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(operator, STOP_GRACE_S)
            assert elector is not None
            raise LeadershipLostError(f"Lease {elector.namespace}/{elector.name} lost to {elector.holder}")
        operator.result()
    finally:
        announcer.cancel()
        keeper.cancel()
        if elector is not None:
            with contextlib.suppress(Exception):
                await elector.release()
            await elector.client.close()


async def _admission_served(settings: OperatorSettings, cluster: ClusterConfig) -> None:
    """Until the API server's webhook configuration names this process's webhook: this host, at a port this
    process listens on. kopf raises its ready flag before its webhook server listens and before it patches the
    configuration with that address, and the webhook fails closed: a Site or Run applied in that window — right
    after a restart, while the configuration still names the previous process's port — would be refused. The
    port is tried on this process's own listen address: the configured host (a Service name in a cluster) need
    not resolve from here."""
    path = f"/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/{settings.webhook_name}"
    local = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(settings.webhook_listen, settings.webhook_listen)
    client = await KubeClient.from_config(cluster, user_agent="sgs-operator-readiness")
    deadline = asyncio.get_running_loop().time() + ADMISSION_WAIT_S
    try:
        while asyncio.get_running_loop().time() < deadline:
            configuration = await client.get_or_none(path)
            ports = _webhook_ports(configuration or {}, settings.webhook_host)
            if ports and await _listening(local, ports):
                return
            await asyncio.sleep(0.1)
        log.warning(f"admission webhook {settings.webhook_name} not served here after {ADMISSION_WAIT_S:.0f} s")
    finally:
        await client.close()


def _webhook_ports(configuration: Mapping[str, Any], host: str) -> list[int]:
    """The ports of the configuration's webhook URLs; [] unless every one names ``host`` (not patched yet)."""
    urls = [
        urllib.parse.urlsplit(str((hook.get("clientConfig") or {}).get("url") or ""))
        for hook in configuration.get("webhooks") or []
    ]
    if not urls or any(url.hostname != host.strip("[]").lower() for url in urls):
        return []
    return sorted({url.port or 443 for url in urls})


async def _listening(address: str, ports: list[int]) -> bool:
    """Each port accepts a connection at ``address`` (the TLS and the request are the API server's to check)."""
    for port in ports:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(address, port), 1.0)
        except (OSError, TimeoutError):
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return True


async def _lead(settings: OperatorSettings, cluster: ClusterConfig) -> LeaderElector:
    timing = LeaseTiming(settings.lease_duration_s, settings.lease_renew_deadline_s, settings.lease_retry_s)
    client = await KubeClient.from_config(cluster, user_agent="sgs-operator-lease")
    namespace = home_namespace(settings.operator_namespace, cluster)
    elector = LeaderElector(client, namespace, settings.lease_name, identity(settings), timing)
    if not await elector.try_acquire_or_renew():
        log.info(f"{STANDBY_MESSAGE}: Lease {elector.namespace}/{elector.name} is held by {elector.holder}")
        await elector.acquire()
    log.info(f"leading as {elector.identity} (Lease {elector.namespace}/{elector.name})")
    return elector

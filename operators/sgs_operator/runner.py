"""Start the operator: in this process (``sgs operator``) or embedded in a thread (tests, dev stack)."""

from __future__ import annotations

import asyncio
import logging

import kopf

from sgs.runtime import quieten_gc
from sgs_operator.settings import OperatorSettings


def operator_kwargs(settings: OperatorSettings) -> dict[str, object]:
    import sgs_operator.handlers  # noqa: F401  (registers the handlers)

    return {
        "standalone": True,  # one operator per cluster scope; no KopfPeering objects needed
        "clusterwide": not settings.namespaces,
        "namespaces": settings.namespaces,
        "memo": kopf.Memo(settings=settings),
    }


READY_MESSAGE = "sgs operator ready"


def run(settings: OperatorSettings) -> None:
    """Serve until interrupted (SIGINT/SIGTERM stop it cleanly); logs READY_MESSAGE once serving."""
    asyncio.run(_serve(settings))


async def _serve(settings: OperatorSettings) -> None:
    ready = asyncio.Event()

    async def announce() -> None:
        await ready.wait()
        quieten_gc()  # in-process only: embedding (tests) leaves the host process's collector alone
        logging.getLogger("sgs_operator").info(READY_MESSAGE)

    announcer = asyncio.create_task(announce())
    try:
        await kopf.operator(ready_flag=ready, **operator_kwargs(settings))  # type: ignore[arg-type]
    finally:
        announcer.cancel()

"""Start the operator: in this process (``sgs operator``) or embedded in a thread (tests, dev stack)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import threading
from collections.abc import Iterator

import kopf

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
        quieten_gc()
        logging.getLogger("sgs_operator").info(READY_MESSAGE)

    announcer = asyncio.create_task(announce())
    try:
        await kopf.operator(ready_flag=ready, **operator_kwargs(settings))  # type: ignore[arg-type]
    finally:
        announcer.cancel()


GC_GEN0_THRESHOLD = 50_000  # default 700: a 2,000-task fan-out allocates millions of short-lived objects


def quieten_gc() -> None:
    """Move start-up objects (modules, kopf, pydantic schemas) out of the collector's sight; collect less often.

    The operator's garbage is almost all acyclic (freed by reference counting); with the default thresholds
    the cyclic collector rescans the start-up heap thousands of times during a fan-out. In-process only:
    embedding (tests) leaves the host process's collector alone.
    """
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


@contextlib.contextmanager
def embedded(settings: OperatorSettings, timeout_s: float = 60) -> Iterator[None]:
    """The operator in a background thread, ready when entered, stopped when left (kopf example 12)."""
    ready, stop = threading.Event(), threading.Event()

    def serve() -> None:
        asyncio.run(kopf.operator(ready_flag=ready, stop_flag=stop, **operator_kwargs(settings)))  # type: ignore[arg-type]

    thread = threading.Thread(target=serve, name="sgs-operator", daemon=True)
    thread.start()
    if not ready.wait(timeout_s):
        stop.set()
        raise TimeoutError(f"the operator did not get ready in {timeout_s:.0f} s")
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout_s)

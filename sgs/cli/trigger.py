"""`sgs trigger`: the trigger service (Runs created when data arrives, from Pipeline.spec.triggers)."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Annotated

import typer


def trigger_command(
    namespace: Annotated[
        str | None, typer.Option("-n", "--namespace", help="Namespace whose Pipelines are served (default all)")
    ] = None,
    verbose: Annotated[bool, typer.Option("-v", "--verbose", help="Debug logs")] = False,
) -> None:
    """Run the trigger service: archive events (JetStream) matched against every Pipeline's triggers; each
    complete group becomes one Run (settings: SGS_TRIGGER_*)."""
    from sgs_trigger.service import serve
    from sgs_trigger.settings import TriggerSettings

    settings = TriggerSettings(namespace=namespace) if namespace else TriggerSettings()
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    async def main() -> None:
        stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopped.set)
        await serve(settings, stopped)

    asyncio.run(main())

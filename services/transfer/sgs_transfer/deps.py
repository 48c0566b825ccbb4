"""What route handlers need, as Annotated dependencies: the app state, the caller's identity, transactions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Header, Request

from sgs.service.errors import UnauthorizedError
from sgs.service.tokens import parse_bearer
from sgs.telemetry import Tracing
from sgs_transfer.archive_client import ArchiveClient
from sgs_transfer.auth import Principal, authenticate
from sgs_transfer.db import Conn, Pool
from sgs_transfer.metrics import TransferMetrics
from sgs_transfer.settings import TransferSettings
from sgs_transfer.sites import SiteBook
from sgs_transfer.universe import UniverseCache

if TYPE_CHECKING:
    from sgs_transfer.evaluator import Evaluator
    from sgs_transfer.worker import Worker


@dataclass
class TransferState:
    settings: TransferSettings
    pool: Pool
    sites: SiteBook
    archive: ArchiveClient
    universe: UniverseCache
    metrics: TransferMetrics
    admin_hash: str | None
    tracing: Tracing = field(default_factory=Tracing.off)
    evaluator: Evaluator | None = None
    worker: Worker | None = None
    background: list[str] = field(default_factory=list)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Conn]:
        """One connection, one transaction: committed when the block ends, rolled back if it raises."""
        async with self.pool.connection() as conn:
            yield conn


def get_state(request: Request) -> TransferState:
    state: TransferState = request.app.state.transfer
    return state


StateDep = Annotated[TransferState, Depends(get_state)]


async def caller(
    state: StateDep,
    authorization: Annotated[str | None, Header(description="Bearer <token>")] = None,
) -> Principal:
    token = parse_bearer(authorization)
    if token is None:
        raise UnauthorizedError(("header", "authorization"), "this service needs 'Authorization: Bearer <token>'")
    async with state.pool.connection() as conn:
        return await authenticate(conn, token, state.admin_hash)


async def admin(principal: Annotated[Principal, Depends(caller)]) -> Principal:
    principal.require_admin()
    return principal


Caller = Annotated[Principal, Depends(caller)]
Admin = Annotated[Principal, Depends(admin)]

"""What route handlers need, as Annotated dependencies: the app state, the caller's identity, transactions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request

from sgs.model.dataset import DimensionUniverse
from sgs_archive.auth import AUTHORIZATION, Principal, authenticate, parse_bearer
from sgs_archive.db import Conn, Pool
from sgs_archive.errors import UnauthorizedError
from sgs_archive.metrics import ArchiveMetrics
from sgs_archive.outbox import OutboxRelay
from sgs_archive.registry.dataset_types import TypeCatalog
from sgs_archive.settings import ArchiveSettings


@dataclass
class ArchiveState:
    settings: ArchiveSettings
    universe: DimensionUniverse
    pool: Pool
    catalog: TypeCatalog
    metrics: ArchiveMetrics
    admin_hash: str | None
    relay: OutboxRelay | None = None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Conn]:
        """One connection, one transaction: committed when the block ends, rolled back if it raises.

        Committed before the handler returns, so the client never sees an answer for an uncommitted write;
        the relay is woken afterwards to publish whatever the transaction put in the outbox.
        """
        async with self.pool.connection() as conn:
            yield conn
        if self.relay is not None:
            self.relay.wake()


def get_state(request: Request) -> ArchiveState:
    state: ArchiveState = request.app.state.archive
    return state


StateDep = Annotated[ArchiveState, Depends(get_state)]


async def optional_principal(
    state: StateDep,
    authorization: Annotated[str | None, Header(description="Bearer <token>")] = None,
) -> Principal | None:
    token = parse_bearer(authorization)
    if token is None:
        return None
    async with state.pool.connection() as conn:
        return await authenticate(conn, token, state.admin_hash)


OptionalPrincipal = Annotated[Principal | None, Depends(optional_principal)]


async def writer(principal: OptionalPrincipal) -> Principal:
    if principal is None:
        raise UnauthorizedError(AUTHORIZATION, "writes need 'Authorization: Bearer <token>'")
    principal.require_writer()
    return principal


async def admin(principal: Annotated[Principal, Depends(writer)]) -> Principal:
    principal.require_admin()
    return principal


async def reader(state: StateDep, principal: OptionalPrincipal) -> Principal | None:
    if principal is None and not state.settings.public_reads:
        raise UnauthorizedError(AUTHORIZATION, "reads need 'Authorization: Bearer <token>' (reads are not public)")
    return principal


Writer = Annotated[Principal, Depends(writer)]
Admin = Annotated[Principal, Depends(admin)]
Reader = Annotated[Principal | None, Depends(reader)]

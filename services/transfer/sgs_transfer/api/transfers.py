from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Query

from sgs.model.dataset import SITE_PATTERN
from sgs.replication.rules import TransferState
from sgs_transfer.deps import Caller, StateDep
from sgs_transfer.schemas import TransferPage, TransferPublic
from sgs_transfer.store import transfers as transfer_rows

router = APIRouter(prefix="/transfers", tags=["transfers"])


@router.get("", summary="Transfer requests, by state, destination or rule, paged by id.")
async def list_transfers(
    state: StateDep,
    _: Caller,
    transfer_state: Annotated[TransferState | None, Query(alias="state")] = None,
    destination: Annotated[str | None, Query(max_length=63, pattern=SITE_PATTERN)] = None,
    rule: uuid.UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    cursor: Annotated[int | None, Query(ge=0, le=2**63 - 1)] = None,
) -> TransferPage:
    async with state.transaction() as conn:
        return await transfer_rows.page(conn, transfer_state, destination, rule, limit, cursor)


@router.get("/counts", summary="How many transfers are in each state.")
async def counts(state: StateDep, _: Caller) -> dict[str, int]:
    async with state.transaction() as conn:
        return await transfer_rows.counts(conn)


@router.get("/{transfer_id}", summary="One transfer request.")
async def get_transfer(
    transfer_id: Annotated[int, Path(ge=1, le=2**63 - 1)], state: StateDep, _: Caller
) -> TransferPublic:
    async with state.transaction() as conn:
        return await transfer_rows.get(conn, transfer_id)

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from sgs.replication.rules import LockState, RuleState
from sgs_transfer import rules
from sgs_transfer.deps import Caller, StateDep
from sgs_transfer.schemas import LockPage, RuleCreate, RulePage, RulePublic
from sgs_transfer.store import rules as rule_rows

router = APIRouter(prefix="/rules", tags=["rules"])


@router.post("", status_code=status.HTTP_201_CREATED, summary="Create a rule (evaluated at once, in the background).")
async def create(body: RuleCreate, state: StateDep, principal: Caller) -> RulePublic:
    return await rules.create(state, principal, body)


@router.get("", summary="Rules, optionally in one state or of one owner, paged by id.")
async def list_rules(
    state: StateDep,
    _: Caller,
    rule_state: Annotated[RuleState | None, Query(alias="state")] = None,
    owner: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: uuid.UUID | None = None,
) -> RulePage:
    async with state.transaction() as conn:
        return await rule_rows.page(conn, rule_state, owner, limit, cursor)


@router.get("/{rule_id}", summary="One rule: state, lock counters and, when STUCK, why.")
async def get_rule(rule_id: uuid.UUID, state: StateDep, _: Caller) -> RulePublic:
    async with state.transaction() as conn:
        return await rule_rows.get(conn, rule_id)


@router.get("/{rule_id}/locks", summary="The (dataset, Site) pairs a rule holds, optionally in one state.")
async def locks(
    rule_id: uuid.UUID,
    state: StateDep,
    _: Caller,
    lock_state: Annotated[LockState | None, Query(alias="state")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    cursor: Annotated[str | None, Query(max_length=128)] = None,
) -> LockPage:
    async with state.transaction() as conn:
        await rule_rows.get(conn, rule_id)
        return await rule_rows.locks(conn, rule_id, lock_state.value if lock_state else None, limit, cursor)


@router.post("/{rule_id}/suspend", summary="Stop copying for a rule (its locks keep protecting its copies).")
async def suspend(rule_id: uuid.UUID, state: StateDep, principal: Caller) -> RulePublic:
    return await rules.suspend(state, principal, rule_id, True)


@router.post("/{rule_id}/resume", summary="Resume a suspended rule (re-evaluated against the archive).")
async def resume(rule_id: uuid.UUID, state: StateDep, principal: Caller) -> RulePublic:
    return await rules.suspend(state, principal, rule_id, False)


@router.delete("/{rule_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete a rule, releasing its locks.")
async def delete(rule_id: uuid.UUID, state: StateDep, principal: Caller) -> Response:
    await rules.delete(state, principal, rule_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status

from sgs.model.dataset import SITE_PATTERN
from sgs.model.replica import Replica, ReplicaRecord, ReplicaState
from sgs_archive.deps import Reader, StateDep, Writer
from sgs_archive.registry import replicas as replica_ops
from sgs_archive.schemas import (
    LocateRequest,
    LocateResult,
    ReplicaPage,
    ReplicaUpdate,
)

router = APIRouter(prefix="/replicas", tags=["replicas"])
ReplicaId = Annotated[int, Path(ge=1, le=2**63 - 1)]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Register a replica of an existing dataset (needs the Site's token or an admin token).",
)
async def register(body: Replica, state: StateDep, principal: Writer, response: Response) -> ReplicaRecord:
    async with state.transaction() as conn:
        replica, created = await replica_ops.register(conn, body, principal, state.settings.source)
    if not created:
        response.status_code = status.HTTP_200_OK
    return replica


@router.get("", summary="The per-Site view: replicas held at one Site, paged by id.")
async def at_site(
    state: StateDep,
    _: Reader,
    site: Annotated[str, Query(min_length=1, max_length=63, pattern=SITE_PATTERN)],
    replica_state: Annotated[ReplicaState | None, Query(alias="state")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    cursor: Annotated[int | None, Query(ge=0, le=2**63 - 1)] = None,
) -> ReplicaPage:
    async with state.transaction() as conn:
        return await replica_ops.at_site(conn, site, replica_state, limit, cursor)


@router.post("/locate", summary="Replicas of many datasets at once (all Sites, or one; default: available).")
async def locate(body: LocateRequest, state: StateDep, _: Reader) -> LocateResult:
    async with state.transaction() as conn:
        found = await replica_ops.locate(conn, body.dataset_ids, body.site, body.state)
    return LocateResult(replicas=found)


@router.get("/{replica_id}", summary="One replica.")
async def get_replica(replica_id: ReplicaId, state: StateDep, _: Reader) -> ReplicaRecord:
    async with state.transaction() as conn:
        return await replica_ops.get(conn, replica_id)


@router.patch("/{replica_id}", summary="Change a replica's state (announced as sgs.replica.<state>).")
async def update(replica_id: ReplicaId, body: ReplicaUpdate, state: StateDep, principal: Writer) -> ReplicaRecord:
    async with state.transaction() as conn:
        return await replica_ops.update_state(conn, replica_id, body.state, principal, state.settings.source)

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status

from sgs.model.dataset import SITE_PATTERN, PlacementDimension
from sgs_archive import auth
from sgs_archive.deps import Admin, Reader, StateDep
from sgs_archive.registry import placement as placement_ops
from sgs_archive.schemas import (
    Count,
    ObservationList,
    PlacementBatch,
    PlacementPublic,
    TokenCreate,
    TokenCreated,
    TokenPublic,
)

router = APIRouter(tags=["tokens and placement"])


@router.post("/tokens", status_code=status.HTTP_201_CREATED, summary="Create a token (admin only; shown once).")
async def create_token(body: TokenCreate, state: StateDep, _: Admin) -> TokenCreated:
    async with state.transaction() as conn:
        return await auth.create_token(conn, body)


@router.get("/tokens", summary="Tokens (names and scopes, never the secrets).")
async def list_tokens(state: StateDep, _: Admin) -> list[TokenPublic]:
    async with state.transaction() as conn:
        return await auth.list_tokens(conn)


@router.delete("/tokens/{name}", status_code=status.HTTP_204_NO_CONTENT, summary="Revoke a token.")
async def revoke_token(name: Annotated[str, Path(max_length=128)], state: StateDep, _: Admin) -> Response:
    async with state.transaction() as conn:
        await auth.revoke_token(conn, name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.put("/placements", summary="Upsert observation/tile placements (admin; the DataPlacement controller).")
async def put_placements(body: PlacementBatch, state: StateDep, _: Admin) -> Count:
    async with state.transaction() as conn:
        return Count(count=await placement_ops.upsert(conn, body.placements))


@router.get("/placements", summary="Placements by dimension, value or Site.")
async def get_placements(
    state: StateDep,
    _: Reader,
    dimension: PlacementDimension | None = None,
    value: Annotated[int | None, Query(ge=0, le=2**63 - 1)] = None,
    site: Annotated[str | None, Query(max_length=63, pattern=SITE_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 1000,
    after_dimension: Annotated[
        PlacementDimension | None, Query(description="Page on after this (dimension, value).")
    ] = None,
    after_value: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
) -> list[PlacementPublic]:
    after = (after_dimension.value, after_value) if after_dimension else None
    async with state.transaction() as conn:
        return await placement_ops.find(conn, dimension, value, site, limit, after)


@router.post(
    "/placements/processed",
    summary="Which observations have data in the archive (a re-plan freezes them where they are).",
)
async def processed_observations(body: ObservationList, state: StateDep, _: Reader) -> ObservationList:
    has_observation = "observation" in state.universe.names
    async with state.transaction() as conn:
        found = await placement_ops.processed(conn, body.observations, has_observation)
    return ObservationList(observations=found)

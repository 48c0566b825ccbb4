from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from sgs.model.dataset import DatasetType
from sgs_archive.api.dimensions import public_type
from sgs_archive.deps import Admin, Reader, StateDep
from sgs_archive.schemas import DatasetTypeCreate, DatasetTypePublic

router = APIRouter(prefix="/dataset-types", tags=["dataset types"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Register a dataset type (admin only; the same definition again answers 200, a different one 409).",
)
async def register(body: DatasetTypeCreate, state: StateDep, _: Admin, response: Response) -> DatasetTypePublic:
    requested = DatasetType(
        name=body.name, dimensions=tuple(body.dimensions), storage_class=body.storage_class, doc=body.doc
    )
    async with state.transaction() as conn:
        stored, created = await state.catalog.register(conn, requested)
    if not created:
        response.status_code = status.HTTP_200_OK
    return public_type(stored)


@router.get("", summary="All dataset types.")
async def list_types(state: StateDep, _: Reader) -> list[DatasetTypePublic]:
    async with state.transaction() as conn:
        return [public_type(s) for s in await state.catalog.all(conn)]


@router.get("/{name}", summary="One dataset type.")
async def get_type(name: Annotated[str, Path(max_length=128)], state: StateDep, _: Reader) -> DatasetTypePublic:
    async with state.transaction() as conn:
        return public_type(await state.catalog.get(conn, name, ("path", "name")))

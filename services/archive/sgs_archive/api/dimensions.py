from __future__ import annotations

from fastapi import APIRouter

from sgs.model.dataset import DimensionUniverse
from sgs_archive.deps import Reader, StateDep
from sgs_archive.registry.dataset_types import StoredType
from sgs_archive.schemas import DatasetTypePublic

router = APIRouter(tags=["dimensions"])


@router.get("/dimensions", summary="The dimension universe this archive indexes.")
async def get_universe(state: StateDep, _: Reader) -> DimensionUniverse:
    return state.universe


def public_type(stored: StoredType) -> DatasetTypePublic:
    return DatasetTypePublic(
        name=stored.type.name,
        dimensions=list(stored.type.dimensions),
        implied=list(stored.implied),
        storage_class=stored.type.storage_class,
        doc=stored.type.doc,
    )

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter

from sgs_transfer.deps import Caller, StateDep
from sgs_transfer.schemas import SiteStatusPublic
from sgs_transfer.sites import in_maintenance

router = APIRouter(prefix="/sites", tags=["sites"])


@router.get("", summary="The Sites this service copies between, and whether transfers into each are flowing.")
async def list_sites(state: StateDep, _: Caller) -> list[SiteStatusPublic]:
    now = datetime.now(UTC)
    async with state.transaction() as conn:
        cursor = await conn.execute(
            "SELECT destination, count(*) AS n FROM transfer WHERE state = 'ACTIVE' GROUP BY destination"
        )
        active = {str(row["destination"]): int(row["n"]) for row in await cursor.fetchall()}
        cursor = await conn.execute("SELECT site, reason FROM destination_pause WHERE resumed_at IS NULL")
        paused = {str(row["site"]): str(row["reason"]) for row in await cursor.fetchall()}
    return [
        SiteStatusPublic(
            name=known.name,
            labels=dict(known.site.metadata.labels),
            in_maintenance=in_maintenance(known.site, now),
            storage=known.site.spec.storage.kind.value,
            archive_url=known.archive_url,
            paused=known.name in paused,
            paused_reason=paused.get(known.name),
            active=active.get(known.name, 0),
        )
        for known in state.sites.all()
    ]

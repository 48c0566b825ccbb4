"""Placement: observation/tile -> primary and secondary Site (written by the DataPlacement controller)."""

from __future__ import annotations

from collections.abc import Sequence

from sgs.model.dataset import PlacementDimension
from sgs_archive.db import Conn
from sgs_archive.errors import InvalidInputError
from sgs_archive.schemas import PlacementIn, PlacementPublic


async def upsert(conn: Conn, placements: Sequence[PlacementIn]) -> int:
    for index, placement in enumerate(placements):
        if placement.secondary_site == placement.primary_site:
            raise InvalidInputError(("body", "placements", index, "secondary_site"), "must differ from primary_site")
    async with conn.cursor() as cursor:
        await cursor.executemany(
            """INSERT INTO placement (dimension, value, primary_site, secondary_site) VALUES (%s, %s, %s, %s)
               ON CONFLICT (dimension, value) DO UPDATE SET primary_site = EXCLUDED.primary_site,
                   secondary_site = EXCLUDED.secondary_site, updated_at = now()
               WHERE (placement.primary_site, placement.secondary_site)
                     IS DISTINCT FROM (EXCLUDED.primary_site, EXCLUDED.secondary_site)""",
            [(p.dimension.value, p.value, p.primary_site, p.secondary_site) for p in placements],
        )
    return len(placements)


async def find(
    conn: Conn,
    dimension: PlacementDimension | None,
    value: int | None,
    site: str | None,
    limit: int,
    after: tuple[str, int] | None = None,
) -> list[PlacementPublic]:
    """Placements in (dimension, value) order; ``after`` pages on from the last (dimension, value) seen."""
    cursor = await conn.execute(
        """SELECT dimension, value, primary_site, secondary_site, updated_at FROM placement
           WHERE (%(dimension)s::text IS NULL OR dimension = %(dimension)s)
             AND (%(value)s::bigint IS NULL OR value = %(value)s)
             AND (%(site)s::text IS NULL OR primary_site = %(site)s OR secondary_site = %(site)s)
             AND (%(after_dim)s::text IS NULL OR (dimension, value) > (%(after_dim)s, %(after_value)s::bigint))
           ORDER BY dimension, value LIMIT %(limit)s""",
        {
            "dimension": dimension.value if dimension else None,
            "value": value,
            "site": site,
            "limit": limit,
            "after_dim": after[0] if after else None,
            "after_value": after[1] if after else None,
        },
    )
    return [PlacementPublic.model_validate(row) for row in await cursor.fetchall()]


async def processed(conn: Conn, observations: Sequence[int], has_observation: bool) -> list[int]:
    """Which of ``observations`` have a dataset in the archive (their data arrived: a re-plan keeps them)."""
    if not has_observation or not observations:
        return []
    cursor = await conn.execute(
        "SELECT DISTINCT dim_observation FROM dataset WHERE dim_observation = ANY(%s) ORDER BY 1",
        (list(observations),),
    )
    return [int(row["dim_observation"]) for row in await cursor.fetchall()]

"""Lineage walks: the inputs of a dataset (up) or its products (down), to depth N, by recursive CTE."""

from __future__ import annotations

import uuid
from typing import Literal

from sgs_archive.db import Conn
from sgs_archive.errors import NotFoundError
from sgs_archive.schemas import LineageEdge, LineageGraph, LineageNode, Provenance

MAX_NODES = 10_000

_WALK = {
    "up": """WITH RECURSIVE walk(id, depth) AS (
                 SELECT %(root)s::uuid, 0
                 UNION
                 SELECT li.input_id, w.depth + 1 FROM walk w JOIN lineage_input li ON li.dataset_id = w.id
                 WHERE w.depth < %(depth)s)
             SELECT id, min(depth) AS depth FROM walk GROUP BY id ORDER BY 2, 1 LIMIT %(limit)s""",
    "down": """WITH RECURSIVE walk(id, depth) AS (
                 SELECT %(root)s::uuid, 0
                 UNION
                 SELECT li.dataset_id, w.depth + 1 FROM walk w JOIN lineage_input li ON li.input_id = w.id
                 WHERE w.depth < %(depth)s)
             SELECT id, min(depth) AS depth FROM walk GROUP BY id ORDER BY 2, 1 LIMIT %(limit)s""",
}


async def walk(conn: Conn, root: uuid.UUID, direction: Literal["up", "down"], depth: int) -> LineageGraph:
    exists = await (await conn.execute("SELECT 1 FROM dataset WHERE id = %s", (root,))).fetchone()
    if exists is None:
        raise NotFoundError(("path", "dataset_id"), f"no dataset {root}")
    cursor = await conn.execute(_WALK[direction].encode(), {"root": root, "depth": depth, "limit": MAX_NODES + 1})
    depths = {row["id"]: int(row["depth"]) for row in await cursor.fetchall()}
    truncated = len(depths) > MAX_NODES
    ids = list(depths)[:MAX_NODES]
    cursor = await conn.execute(
        """SELECT d.id, dt.name AS dataset_type, d.data_id, c.name AS run, l.executable, l.image, l.version,
                  l.config_digest, l.pipeline_run, l.task, l.attempt, l.dataset_id IS NOT NULL AS has_lineage
           FROM dataset d JOIN dataset_type dt ON dt.id = d.dataset_type_id JOIN collection c ON c.id = d.run_id
           LEFT JOIN lineage l ON l.dataset_id = d.id WHERE d.id = ANY(%s)""",
        (ids,),
    )
    nodes = [_node(row, depths[row["id"]]) for row in await cursor.fetchall()]
    nodes.sort(key=lambda n: (n.depth, str(n.id)))
    cursor = await conn.execute(
        "SELECT dataset_id, input_id FROM lineage_input WHERE dataset_id = ANY(%s) AND input_id = ANY(%s)",
        (ids, ids),
    )
    edges = [LineageEdge(output=row["dataset_id"], input=row["input_id"]) for row in await cursor.fetchall()]
    return LineageGraph(root=root, direction=direction, depth=depth, nodes=nodes, edges=edges, truncated=truncated)


def _node(row: dict[str, object], depth: int) -> LineageNode:
    provenance = Provenance.model_validate({k: row[k] for k in Provenance.model_fields}) if row["has_lineage"] else None
    return LineageNode.model_validate(
        {
            "id": row["id"],
            "dataset_type": row["dataset_type"],
            "data_id": row["data_id"],
            "run": row["run"],
            "depth": depth,
            "provenance": provenance,
        }
    )

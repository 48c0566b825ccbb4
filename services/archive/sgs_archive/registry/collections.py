"""Collections: RUN, TAGGED and CHAINED, with their invariants (see CollectionType) enforced here and in SQL."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from psycopg import errors as pg_errors

from sgs.model.dataset import CollectionType
from sgs_archive.auth import Principal
from sgs_archive.db import Conn
from sgs_archive.errors import ConflictError, InvalidInputError, NotFoundError
from sgs_archive.schemas import CollectionCreate, CollectionPage, CollectionPublic

CHAIN_LOCK_ID = 0x5A5C_0002  # serialises chain edits so two concurrent edits cannot build a cycle together


@dataclass(frozen=True)
class SearchPath:
    """A flattened collection search path: leaf (RUN/TAGGED) collection ids in lookup order."""

    run_ids: list[int]
    run_ranks: list[int]
    tagged_ids: list[int]
    tagged_ranks: list[int]

    @property
    def empty(self) -> bool:
        return not self.run_ids and not self.tagged_ids


async def create(conn: Conn, request: CollectionCreate, principal: Principal) -> CollectionPublic:
    """Create a collection owned by the principal's Site (an admin's: the one it names, or none); the same
    definition again is a no-op, another type, chain or owner a ConflictError."""
    owner = principal.owner_of_new_collection(request.site, ("body", "site"))
    if request.children and request.type is not CollectionType.CHAINED:
        raise InvalidInputError(("body", "children"), f"only a CHAINED collection has children, not {request.type}")
    cursor = await conn.execute(
        """INSERT INTO collection (name, type, doc, site) VALUES (%s, %s, %s, %s)
           ON CONFLICT (name) DO NOTHING RETURNING id""",
        (request.name, request.type.value, request.doc, owner),
    )
    if await cursor.fetchone() is None:
        existing = await get(conn, request.name)
        if existing.type is not request.type:
            raise ConflictError(("body", "name"), f"collection {request.name!r} exists as {existing.type}")
        if existing.site != owner:
            raise ConflictError(
                ("body", "name"), f"collection {request.name!r} exists, owned by {_held(existing.site)}"
            )
        if request.type is CollectionType.CHAINED and existing.children != request.children:
            raise ConflictError(("body", "children"), f"chain {request.name!r} exists with other children")
        return existing
    if request.children:
        await set_chain(conn, request.name, request.children, principal, loc=("body", "children"))
    return await get(conn, request.name)


def _held(owner: str | None) -> str:
    return f"site {owner!r}" if owner is not None else "the survey (admins only)"


async def get(conn: Conn, name: str) -> CollectionPublic:
    cursor = await conn.execute("SELECT id, name, type, doc, site FROM collection WHERE name = %s", (name,))
    row = await cursor.fetchone()
    if row is None:
        raise NotFoundError(("path", "name"), f"no collection named {name!r}")
    children: list[str] = []
    if row["type"] == CollectionType.CHAINED.value:
        cursor = await conn.execute(
            """SELECT c.name FROM collection_chain ch JOIN collection c ON c.id = ch.child_id
               WHERE ch.parent_id = %s ORDER BY ch.position""",
            (row["id"],),
        )
        children = [str(r["name"]) for r in await cursor.fetchall()]
    return CollectionPublic(
        name=str(row["name"]),
        type=CollectionType(row["type"]),
        doc=str(row["doc"]),
        children=children,
        site=row["site"],
    )


async def page(
    conn: Conn, type_: CollectionType | None, prefix: str | None, site: str | None, limit: int, after: str | None
) -> CollectionPage:
    """Collections in name order after ``after``, at most ``limit``; chains with their children, one query."""
    cursor = await conn.execute(
        """SELECT c.name, c.type, c.doc, c.site,
                  coalesce(array_agg(k.name ORDER BY ch.position) FILTER (WHERE k.name IS NOT NULL), '{}') AS children
           FROM collection c LEFT JOIN collection_chain ch ON ch.parent_id = c.id
           LEFT JOIN collection k ON k.id = ch.child_id
           WHERE (%(type)s::text IS NULL OR c.type = %(type)s)
             AND (%(prefix)s::text IS NULL OR starts_with(c.name, %(prefix)s))
             AND (%(site)s::text IS NULL OR c.site = %(site)s)
             AND (%(after)s::text IS NULL OR c.name > %(after)s)
           GROUP BY c.id ORDER BY c.name LIMIT %(limit)s""",
        {"type": type_.value if type_ else None, "prefix": prefix, "site": site, "after": after, "limit": limit + 1},
    )
    rows = await cursor.fetchall()
    items = [CollectionPublic.model_validate(row) for row in rows[:limit]]
    return CollectionPage(items=items, next_cursor=items[-1].name if len(rows) > limit else None)


async def delete(conn: Conn, name: str, principal: Principal) -> None:
    collection_id, _ = await _writable(conn, name, principal, ("path", "name"))
    cursor = await conn.execute(
        """SELECT p.name FROM collection_chain ch JOIN collection p ON p.id = ch.parent_id
           WHERE ch.child_id = %s LIMIT 1""",
        (collection_id,),
    )
    parent = await cursor.fetchone()
    if parent is not None:
        raise ConflictError(("path", "name"), f"collection {name!r} is a child of chain {parent['name']!r}")
    try:
        async with conn.transaction():
            await conn.execute("DELETE FROM collection WHERE id = %s", (collection_id,))
    except pg_errors.ForeignKeyViolation:
        raise ConflictError(("path", "name"), f"RUN collection {name!r} still holds datasets") from None


async def set_owner(conn: Conn, name: str, owner: str | None, principal: Principal) -> CollectionPublic:
    """Hand a collection to another Site, or to the survey (admins only: it moves who may write it)."""
    principal.require_admin()
    cursor = await conn.execute("UPDATE collection SET site = %s WHERE name = %s", (owner, name))
    if cursor.rowcount == 0:
        raise NotFoundError(("path", "name"), f"no collection named {name!r}")
    return await get(conn, name)


async def _id_and_type(conn: Conn, name: str, loc: tuple[str | int, ...]) -> tuple[int, CollectionType]:
    collection_id, collection_type, _ = await _identify(conn, name, loc)
    return collection_id, collection_type


async def _writable(
    conn: Conn, name: str, principal: Principal, loc: tuple[str | int, ...]
) -> tuple[int, CollectionType]:
    """The collection's id and type, once the principal is known to be allowed to write it."""
    collection_id, collection_type, owner = await _identify(conn, name, loc)
    principal.require_collection(name, owner, loc)
    return collection_id, collection_type


async def _identify(conn: Conn, name: str, loc: tuple[str | int, ...]) -> tuple[int, CollectionType, str | None]:
    cursor = await conn.execute("SELECT id, type, site FROM collection WHERE name = %s", (name,))
    row = await cursor.fetchone()
    if row is None:
        raise NotFoundError(loc, f"no collection named {name!r}")
    return int(row["id"]), CollectionType(row["type"]), row["site"]


async def set_chain(
    conn: Conn,
    name: str,
    children: Sequence[str],
    principal: Principal,
    loc: tuple[str | int, ...] = ("body", "children"),
) -> CollectionPublic:
    """Replace a CHAINED collection's search path, refusing unknown children, duplicates and cycles.

    The chain must be the principal's to write; its children may be anyone's (a chain only reads them).
    """
    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (CHAIN_LOCK_ID,))
    parent_id, parent_type = await _writable(conn, name, principal, ("path", "name"))
    if parent_type is not CollectionType.CHAINED:
        raise InvalidInputError(("path", "name"), f"collection {name!r} is {parent_type}, not CHAINED")
    child_ids: list[int] = []
    for index, child in enumerate(children):
        if child in children[:index]:
            raise InvalidInputError((*loc, index), f"{child!r} appears twice in the chain")
        child_id, _ = await _id_and_type(conn, child, (*loc, index))
        if child_id == parent_id or await _reaches(conn, child_id, parent_id):
            raise InvalidInputError((*loc, index), f"adding {child!r} to {name!r} would make a cycle")
        child_ids.append(child_id)
    await conn.execute("DELETE FROM collection_chain WHERE parent_id = %s", (parent_id,))
    if child_ids:
        async with conn.cursor() as cursor:
            await cursor.executemany(
                "INSERT INTO collection_chain (parent_id, position, child_id) VALUES (%s, %s, %s)",
                [(parent_id, position, child_id) for position, child_id in enumerate(child_ids)],
            )
    return await get(conn, name)


async def insert_child(conn: Conn, name: str, child: str, position: int, principal: Principal) -> CollectionPublic:
    current = await get(conn, name)
    principal.require_collection(name, current.site, ("path", "name"))
    if child in current.children:
        raise ConflictError(("body", "child"), f"{child!r} is already in chain {name!r}")
    children = list(current.children)
    children.insert(min(position, len(children)), child)
    return await set_chain(conn, name, children, principal, loc=("body", "child"))


async def remove_child(conn: Conn, name: str, child: str, principal: Principal) -> CollectionPublic:
    current = await get(conn, name)
    principal.require_collection(name, current.site, ("path", "name"))
    if child not in current.children:
        raise NotFoundError(("path", "child"), f"{child!r} is not in chain {name!r}")
    return await set_chain(conn, name, [c for c in current.children if c != child], principal, loc=("path", "child"))


async def _reaches(conn: Conn, start: int, target: int) -> bool:
    """Whether ``target`` is reachable from ``start`` through chain edges (i.e. start contains target)."""
    cursor = await conn.execute(
        """WITH RECURSIVE down(id) AS (
               SELECT %s::bigint
               UNION
               SELECT ch.child_id FROM down JOIN collection_chain ch ON ch.parent_id = down.id)
           SELECT 1 FROM down WHERE id = %s""",
        (start, target),
    )
    return await cursor.fetchone() is not None


async def search_path(conn: Conn, names: Sequence[str], loc: tuple[str | int, ...]) -> SearchPath:
    """Flatten ``names`` (chains expanded depth-first, first occurrence wins) into leaf collections."""
    cursor = await conn.execute("SELECT name FROM collection WHERE name = ANY(%s)", (list(names),))
    known = {str(row["name"]) for row in await cursor.fetchall()}
    for index, name in enumerate(names):
        if name not in known:
            raise NotFoundError((*loc, index), f"no collection named {name!r}")
    cursor = await conn.execute(
        """WITH RECURSIVE walk(id, type, path, sort) AS (
               SELECT c.id, c.type, ARRAY[c.id], ARRAY[n.ord]
               FROM unnest(%s::text[]) WITH ORDINALITY AS n(name, ord) JOIN collection c ON c.name = n.name
               UNION ALL
               SELECT c.id, c.type, w.path || c.id, w.sort || ch.position::bigint
               FROM walk w JOIN collection_chain ch ON ch.parent_id = w.id JOIN collection c ON c.id = ch.child_id
               WHERE w.type = 'CHAINED' AND NOT c.id = ANY(w.path))
           SELECT id, type FROM walk WHERE type <> 'CHAINED' ORDER BY sort""",
        (list(names),),
    )
    path = SearchPath([], [], [], [])
    seen: set[int] = set()
    for rank, row in enumerate(await cursor.fetchall()):
        collection_id = int(row["id"])
        if collection_id in seen:
            continue
        seen.add(collection_id)
        if row["type"] == CollectionType.RUN.value:
            path.run_ids.append(collection_id)
            path.run_ranks.append(rank)
        else:
            path.tagged_ids.append(collection_id)
            path.tagged_ranks.append(rank)
    return path


async def tag(conn: Conn, name: str, dataset_ids: Sequence[uuid.UUID], principal: Principal) -> int:
    """Add datasets (anyone's) to a TAGGED collection the principal may write; a second dataset for the same
    (type, data ID) is a ConflictError."""
    collection_id, collection_type = await _writable(conn, name, principal, ("path", "name"))
    if collection_type is not CollectionType.TAGGED:
        raise InvalidInputError(("path", "name"), f"collection {name!r} is {collection_type}, not TAGGED")
    cursor = await conn.execute("SELECT id FROM dataset WHERE id = ANY(%s)", (list(dataset_ids),))
    found = {row["id"] for row in await cursor.fetchall()}
    for index, dataset_id in enumerate(dataset_ids):
        if dataset_id not in found:
            raise NotFoundError(("body", "dataset_ids", index), f"no dataset {dataset_id}")
    try:
        async with conn.transaction():
            cursor = await conn.execute(
                """INSERT INTO collection_tag (collection_id, dataset_id, dataset_type_id, data_id_key)
                   SELECT %s, d.id, d.dataset_type_id, d.data_id_key FROM dataset d WHERE d.id = ANY(%s)
                   ON CONFLICT (collection_id, dataset_id) DO NOTHING""",
                (collection_id, list(dataset_ids)),
            )
            return cursor.rowcount
    except pg_errors.UniqueViolation:
        raise ConflictError(
            ("body", "dataset_ids"),
            f"collection {name!r} already holds a dataset with the same type and data ID as one of these",
        ) from None


async def untag(conn: Conn, name: str, dataset_ids: Sequence[uuid.UUID], principal: Principal) -> int:
    collection_id, collection_type = await _writable(conn, name, principal, ("path", "name"))
    if collection_type is not CollectionType.TAGGED:
        raise InvalidInputError(("path", "name"), f"collection {name!r} is {collection_type}, not TAGGED")
    cursor = await conn.execute(
        "DELETE FROM collection_tag WHERE collection_id = %s AND dataset_id = ANY(%s)",
        (collection_id, list(dataset_ids)),
    )
    return cursor.rowcount

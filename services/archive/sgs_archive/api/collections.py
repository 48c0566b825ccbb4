from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response, status

from sgs.model.dataset import SITE_PATTERN, CollectionType
from sgs_archive.deps import Admin, Reader, StateDep, Writer
from sgs_archive.registry import collections as ops
from sgs_archive.schemas import (
    ChainInsert,
    ChainUpdate,
    CollectionCreate,
    CollectionOwner,
    CollectionPage,
    CollectionPublic,
    TagRequest,
    TagResult,
)

router = APIRouter(prefix="/collections", tags=["collections"])
# Collection names may contain '/', hence path parameters; sub-resource routes are declared first.
Name = Annotated[str, Path(min_length=1, max_length=200)]
DEFAULT_PAGE_SIZE = 1000


@router.post("", status_code=status.HTTP_201_CREATED, summary="Create a RUN, TAGGED or CHAINED collection.")
async def create(body: CollectionCreate, state: StateDep, principal: Writer) -> CollectionPublic:
    async with state.transaction() as conn:
        return await ops.create(conn, body, principal)


@router.get(
    "",
    summary="Collections in name order, optionally of one type or under a name prefix (paged: follow next_cursor).",
)
async def list_collections(
    request: Request,
    response: Response,
    state: StateDep,
    _: Reader,
    type: CollectionType | None = None,
    prefix: Annotated[str | None, Query(max_length=200)] = None,
    site: Annotated[str | None, Query(max_length=63, pattern=SITE_PATTERN, description="Owned by this Site.")] = None,
    limit: Annotated[int | None, Query(ge=1, description="Page size, at most the archive's max_page_size.")] = None,
    cursor: Annotated[str | None, Query(max_length=200, description="next_cursor of the previous page.")] = None,
) -> CollectionPage:
    page_size = min(limit or DEFAULT_PAGE_SIZE, state.settings.max_page_size)
    async with state.transaction() as conn:
        page = await ops.page(conn, type, prefix, site, page_size, cursor)
    if page.next_cursor is not None:
        next_url = request.url.include_query_params(cursor=page.next_cursor, limit=page_size)
        response.headers["Link"] = f'<{next_url}>; rel="next"'
    return page


@router.put("/{name:path}/chain", summary="Replace a CHAINED collection's search path.")
async def set_chain(name: Name, body: ChainUpdate, state: StateDep, principal: Writer) -> CollectionPublic:
    async with state.transaction() as conn:
        return await ops.set_chain(conn, name, body.children, principal)


@router.post("/{name:path}/chain", summary="Insert one child into a chain at a position (0 = searched first).")
async def insert_child(name: Name, body: ChainInsert, state: StateDep, principal: Writer) -> CollectionPublic:
    async with state.transaction() as conn:
        return await ops.insert_child(conn, name, body.child, body.position, principal)


@router.delete("/{name:path}/chain/{child:path}", summary="Remove one child from a chain.")
async def remove_child(
    name: Name, child: Annotated[str, Path(max_length=200)], state: StateDep, principal: Writer
) -> CollectionPublic:
    async with state.transaction() as conn:
        return await ops.remove_child(conn, name, child, principal)


@router.post("/{name:path}/tags", summary="Add datasets to a TAGGED collection.")
async def tag(name: Name, body: TagRequest, state: StateDep, principal: Writer) -> TagResult:
    async with state.transaction() as conn:
        return TagResult(changed=await ops.tag(conn, name, body.dataset_ids, principal))


@router.post("/{name:path}/untag", summary="Remove datasets from a TAGGED collection.")
async def untag(name: Name, body: TagRequest, state: StateDep, principal: Writer) -> TagResult:
    async with state.transaction() as conn:
        return TagResult(changed=await ops.untag(conn, name, body.dataset_ids, principal))


@router.put("/{name:path}/owner", summary="Hand a collection to another Site, or to the survey (admin only).")
async def set_owner(name: Name, body: CollectionOwner, state: StateDep, principal: Admin) -> CollectionPublic:
    async with state.transaction() as conn:
        return await ops.set_owner(conn, name, body.site, principal)


@router.get("/{name:path}", summary="One collection (a chain lists its children in search order).")
async def get_collection(name: Name, state: StateDep, _: Reader) -> CollectionPublic:
    async with state.transaction() as conn:
        return await ops.get(conn, name)


@router.delete(
    "/{name:path}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete an empty, unreferenced collection."
)
async def delete(name: Name, state: StateDep, principal: Writer) -> Response:
    async with state.transaction() as conn:
        await ops.delete(conn, name, principal)
    return Response(status_code=status.HTTP_204_NO_CONTENT)

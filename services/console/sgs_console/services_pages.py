"""Pages backed by the services: transfers and rules, the archive (search, a dataset, its lineage), placement."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from sgs.replication.rules import TransferState
from sgs_console import skymap
from sgs_console.access import visible_namespaces
from sgs_console.app import Console, ConsoleDep, SessionDep
from sgs_console.auth import Session
from sgs_console.filters import parse_time
from sgs_console.lineage import lineage_svg
from sgs_console.pages import PLACEMENTS, etag_of, not_modified, status_of, with_etag
from sgs_console.upstream import UpstreamError

router = APIRouter()
TRANSFER_STATES = tuple(s.value for s in TransferState)
TransferStateQuery = Annotated[str, Query(max_length=16, pattern=r"^[A-Z]*$")]


def bandwidth(transfers: list[dict[str, Any]]) -> dict[str, float]:
    """MB/s of finished copies, per destination: bytes over the time from start to copied."""
    totals: dict[str, list[float]] = {}
    for t in transfers:
        started, copied = parse_time(t.get("started_at")), parse_time(t.get("copied_at"))
        if t.get("bytes") and started and copied and copied > started:
            pair = totals.setdefault(str(t["destination"]), [0.0, 0.0])
            pair[0] += float(t["bytes"])
            pair[1] += (copied - started).total_seconds()
    return {site: b / s / 1e6 for site, (b, s) in totals.items() if s > 0}


async def transfers_context(console: Console, session: Session, state: str) -> dict[str, Any]:
    """What the transfer service holds now (read with the console's reader token)."""
    context: dict[str, Any] = {"error": None, "state": state, "transfer_states": TRANSFER_STATES}
    try:
        rules = await console.transfer.get("/rules", limit=200)
        counts = await console.transfer.get("/transfers/counts")
        sites = await console.transfer.get("/sites")
        stuck = await console.transfer.get("/transfers", state="STUCK", limit=50)
        listed = await console.transfer.get("/transfers", state=state or None, limit=100)
        done = await console.transfer.get("/transfers", state="DONE", limit=500)
    except UpstreamError as error:
        context["error"] = str(error)
        return context
    context.update(
        rules=rules["items"],
        rule_states=Counter(r["state"] for r in rules["items"]),
        counts=counts,
        sites=sites,
        stuck=stuck["items"],
        transfers=listed["items"],
        bandwidth=bandwidth(done["items"]),
        can_act=session.transfer_token is not None,
    )
    return context


def content_etag(session: Session, context: dict[str, Any]) -> str:
    """No watch counter here: the ETag is a digest of what the services answered (a 304 still saves the page)."""
    return etag_of(session, session.transfer_token is not None, json.dumps(context, sort_keys=True, default=str))


@router.get("/transfers")
async def transfers_page(
    request: Request, console: ConsoleDep, session: SessionDep, state: TransferStateQuery = ""
) -> Response:
    return console.render(request, "transfers.html", **await transfers_context(console, session, state))


@router.get("/transfers/fragment")
async def transfers_fragment(
    request: Request, console: ConsoleDep, session: SessionDep, state: TransferStateQuery = ""
) -> Response:
    context = await transfers_context(console, session, state)
    etag = content_etag(session, context)
    if (cached := not_modified(request, etag)) is not None:
        return cached
    return with_etag(console.render(request, "_transfers.html", **context), etag)


@router.get("/archive")
async def archive_page(
    request: Request,
    console: ConsoleDep,
    session: SessionDep,
    where: str = Query(default="", max_length=10_000),
    dataset_type: str = Query(default="", max_length=128),
    collection: str = Query(default="", max_length=200),
    cursor: str = Query(default="", max_length=64),
) -> Response:
    context: dict[str, Any] = {
        "where": where,
        "dataset_type": dataset_type,
        "collection": collection,
        "error": None,
        "page": None,
        "types": [],
    }
    try:
        context["types"] = await console.archive.get("/dataset-types")
        if where or dataset_type or collection:
            context["page"] = await console.archive.get(
                "/datasets",
                where=where,
                dataset_type=dataset_type or None,
                collection=collection or None,
                cursor=cursor or None,
                limit=100,
            )
    except UpstreamError as error:
        context["error"] = str(error)
    return console.render(request, "archive.html", **context)


@router.get("/archive/datasets/{dataset_id}")
async def dataset_page(request: Request, console: ConsoleDep, session: SessionDep, dataset_id: uuid.UUID) -> Response:
    try:
        dataset = await console.archive.get(f"/datasets/{dataset_id}")
        replicas = await console.archive.get(f"/datasets/{dataset_id}/replicas")
        up = await console.archive.get(f"/datasets/{dataset_id}/lineage", direction="up", depth=5)
        down = await console.archive.get(f"/datasets/{dataset_id}/lineage", direction="down", depth=5)
    except UpstreamError as error:
        status = error.status if error.status in (404, 422) else 502
        return console.render(request, "error.html", status_code=status, title="Archive", message=str(error))
    return console.render(
        request,
        "dataset.html",
        dataset=dataset,
        replicas=replicas,
        up=up,
        down=down,
        graph=lineage_svg(dataset, up, down),
    )


@router.get("/placement")
async def placement_page(request: Request, console: ConsoleDep, session: SessionDep) -> Response:
    namespaces = await visible_namespaces(console, session, PLACEMENTS, console.view.placements)
    placements = sorted(console.view.placements.in_namespaces(namespaces), key=lambda p: str(p["metadata"].get("name")))
    tiles: list[dict[str, Any]] = []
    error = None
    if console.archive.configured:
        try:
            tiles = await console.archive.get("/placements", dimension="tile", limit=100_000)
        except UpstreamError as failure:
            error = str(failure)
    else:
        error = "archive not configured (SGS_CONSOLE_ARCHIVE_URL)"
    return console.render(
        request,
        "placement.html",
        placements=placements,
        status_of=status_of,
        sky=skymap.svg(tiles) if tiles else None,
        site_colours=skymap.colours(str(t["primary_site"]) for t in tiles),
        error=error,
    )

"""Rule creation and changes: check what the caller asked against the archive and the Sites, then store it.

Bad input is refused with 422 naming the field (a malformed or unknown-dimension ``where``, an unknown Site
or label in ``site_expression``, an unknown dataset type or collection). A rule that is well formed but cannot
be met as asked (more copies than Sites match) is accepted and shown STUCK with that reason, so it starts
working as soon as a Site is added instead of having to be re-submitted.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sgs.expression import ExpressionError, check_sites, evaluate_sites
from sgs.replication.rules import Selector, is_glob
from sgs.service.errors import InvalidInputError, UnavailableError
from sgs_transfer.archive_client import ArchiveError
from sgs_transfer.auth import Principal
from sgs_transfer.deps import TransferState
from sgs_transfer.schemas import RuleCreate, RulePublic
from sgs_transfer.store import rules as rule_rows
from sgs_transfer.store.rules import NewRule


def _now() -> datetime:
    return datetime.now(UTC)


async def _check_where(state: TransferState, body: RuleCreate) -> None:
    allowed: list[str] | None = None
    if body.dataset_type is not None:
        allowed = await _dataset_type_dimensions(state, body.dataset_type)
    if not body.where.strip():
        return
    universe = await state.universe.get(("body", "where"))
    try:
        Selector(body.dataset_type, tuple(body.collections), body.where).compile(universe, allowed)
    except ExpressionError as error:
        raise InvalidInputError(("body", "where"), str(error)) from None


async def _dataset_type_dimensions(state: TransferState, name: str) -> list[str]:
    url, token = _archive(state)
    try:
        found = await state.archive.dataset_type(url, token, name)
    except ArchiveError as error:
        raise _unavailable(("body", "dataset_type"), error) from error
    if found is None:
        raise InvalidInputError(("body", "dataset_type"), f"unknown dataset type {name!r} in the archive")
    return [*found["dimensions"], *found.get("implied", [])]


async def _check_collections(state: TransferState, collections: list[str]) -> None:
    url, token = _archive(state)
    for index, name in enumerate(collections):
        if is_glob(name):
            continue
        try:
            found = await state.archive.collection(url, token, name)
        except ArchiveError as error:
            raise _unavailable(("body", "collections", index), error) from error
        if found is None:
            raise InvalidInputError(("body", "collections", index), f"no collection {name!r} in the archive")
        if found["type"] != "RUN":
            raise InvalidInputError(
                ("body", "collections", index),
                f"{name!r} is a {found['type']} collection; rules select RUN collections by name or pattern "
                "(datasets announce the RUN they were born in)",
            )


def _archive(state: TransferState) -> tuple[str, str | None]:
    url = state.settings.archive_url
    if url is None:
        raise InvalidInputError(("body",), "this transfer service has no archive_url: it cannot check rules")
    token = state.settings.archive_token.get_secret_value() if state.settings.archive_token else None
    return url, token


def _unavailable(loc: tuple[str | int, ...], error: ArchiveError) -> UnavailableError:
    return UnavailableError(loc, f"cannot check against the archive now: {error}")


def _check_sites(state: TransferState, field: str, text: str) -> frozenset[str]:
    facts = state.sites.facts(_now())
    try:
        return evaluate_sites(check_sites(text, facts), facts)
    except ExpressionError as error:
        raise InvalidInputError(("body", field), str(error)) from None


def unsatisfiable(copies: int, matching: frozenset[str]) -> str | None:
    if copies <= len(matching):
        return None
    names = ", ".join(sorted(matching)) or "none"
    word = "copy" if copies == 1 else "copies"
    return f"{copies} {word} asked, but only {len(matching)} Sites match the Site expression ({names})"


def _check_dataset_ids(body: RuleCreate) -> tuple[uuid.UUID, ...]:
    """The ids, in order without repeats; refused beside another selector (which one would win is unclear)."""
    if not body.dataset_ids:
        return ()
    others = [
        name
        for name, given in (
            ("dataset_type", body.dataset_type),
            ("collections", body.collections),
            ("where", body.where.strip()),
        )
        if given
    ]
    if others:
        raise InvalidInputError(
            ("body", "dataset_ids"), f"dataset_ids selects exactly those datasets: leave {', '.join(others)} unset"
        )
    return tuple(dict.fromkeys(body.dataset_ids))


async def create(state: TransferState, principal: Principal, body: RuleCreate) -> RulePublic:
    principal.require_writer()
    dataset_ids = _check_dataset_ids(body)
    matching = _check_sites(state, "site_expression", body.site_expression)
    if body.source_expression is not None:
        _check_sites(state, "source_expression", body.source_expression)
    if body.owner is not None and body.owner != principal.name:
        principal.require_admin()
    await _check_where(state, body)
    await _check_collections(state, body.collections)
    rule = NewRule(
        id=uuid.uuid4(),
        owner=body.owner or principal.name,
        selector=Selector(body.dataset_type, tuple(body.collections), body.where, dataset_ids),
        copies=body.copies,
        site_expression=body.site_expression,
        source_expression=body.source_expression,
        grouping=body.grouping,
        priority=body.priority,
        expires_at=_now() + timedelta(seconds=body.lifetime_s) if body.lifetime_s else None,
    )
    async with state.transaction() as conn:
        await rule_rows.insert(conn, rule)
        if reason := unsatisfiable(body.copies, matching):
            await rule_rows.note_unsatisfied(conn, {rule.id: reason})
    if state.evaluator is not None:
        state.evaluator.schedule(rule.id)
    async with state.transaction() as conn:
        return await rule_rows.get(conn, rule.id)


async def suspend(state: TransferState, principal: Principal, rule_id: uuid.UUID, suspended: bool) -> RulePublic:
    async with state.transaction() as conn:
        principal.require_owner(await rule_rows.owner_of(conn, rule_id), ("path", "rule_id"))
        await rule_rows.set_suspended(conn, rule_id, suspended, principal.name)
    if not suspended and state.evaluator is not None:
        state.evaluator.schedule(rule_id)
    async with state.transaction() as conn:
        return await rule_rows.get(conn, rule_id)


async def delete(state: TransferState, principal: Principal, rule_id: uuid.UUID) -> int:
    async with state.transaction() as conn:
        principal.require_owner(await rule_rows.owner_of(conn, rule_id), ("path", "rule_id"))
        return await rule_rows.delete(conn, rule_id)

"""DataPlacement reconcile: read the survey plan, plan with ``sgs.placement``, write the archive, report in status.

Each create/update/resume (and operator restart) recomputes the plan from observed state, so a crash at any
moment loses nothing and a repeat writes the same rows: the previous plan is the archive's placement table,
observations the archive holds data for (and those planned before ``spec.frozenBefore``) are frozen, and the
solver is deterministic (``status.digest`` is the plan's sha256).

Security: a survey plan is read only from a directory or URL prefix the administrator allowed
(``SGS_OPERATOR_SURVEY_ROOTS``, JSON list); anything else is refused with reason ``SourceRefused``.
The operator reaches the archive over HTTP with ``SGS_OPERATOR_ARCHIVE_URL`` / ``SGS_OPERATOR_ARCHIVE_TOKEN``
(an admin token: placements are admin writes).

Replication rules: one per (primary, secondary) pair and chunk of observations (``sgs.placement.consequences``),
owned by ``placement.<namespace>.<name>`` at the transfer service (``SGS_OPERATOR_TRANSFER_URL`` /
``SGS_OPERATOR_TRANSFER_TOKEN``, an admin token: it sets the owner); each reconcile makes that owner's rules
exactly the plan's (missing ones created, stale ones deleted). Without a transfer URL, condition ``RulesApplied``
is False with reason ``TransferServiceNotConfigured``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import kopf
from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from sgs.model.base import GROUP, VERSION, Condition
from sgs.model.placement import DataPlacementSpec, DataPlacementStatus, PlacementPhase, SiteShare
from sgs.model.site import SiteSpec
from sgs.placement.consequences import RuleSpec, replication_rules
from sgs.placement.metrics import PlanReport, evaluate
from sgs.placement.plan import Assignments, Plan, PlanError, PlanRequest, check_horizon
from sgs.placement.sites import PlacementSite, SitesError, check_sites
from sgs.placement.solver import solve
from sgs.placement.survey import Survey, SurveyError, read_survey
from sgs_operator.checks import describe_errors, spec_unchanged
from sgs_operator.status import condition, merge_conditions, utc_now

WRITE_BATCH = 50_000
PAGE = 100_000
ARCHIVE_RETRY_S = 10.0


class PlacementSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SGS_OPERATOR_", extra="ignore")

    archive_url: str | None = Field(default=None, description="Archive base URL (placements are written there).")
    archive_token: SecretStr | None = Field(default=None, description="Admin token of the archive.")
    survey_roots: list[str] = Field(
        default_factory=list, description="Directories and http(s) URL prefixes survey plans may come from."
    )
    transfer_url: str | None = Field(default=None, description="Transfer service: the plan's replication rules.")
    transfer_token: SecretStr | None = Field(default=None, description="Admin token of the transfer service.")


class PlacementRefusedError(Exception):
    """Input the placement cannot use: reason (CamelCase) and a message naming the field."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class ArchiveUnavailableError(Exception):
    """The archive did not answer or refused a request: retried later."""


# ----------------------------------------------------------------------------------------------- sources


def allowed_source(source: str, roots: Sequence[str]) -> tuple[str, str]:
    """('file', path) or ('url', url) for a survey plan under an allowed root; else ``PlacementRefusedError``."""
    field = "spec.source.surveyPlan"
    if source.startswith(("http://", "https://")):
        if any(source.startswith(root.rstrip("/") + "/") for root in roots if root.startswith(("http://", "https://"))):
            return "url", source
        raise PlacementRefusedError(
            "SourceRefused", f"{field}: {source} is not under an allowed URL prefix (SGS_OPERATOR_SURVEY_ROOTS)"
        )
    if "://" in source and not source.startswith("file://"):
        raise PlacementRefusedError("SourceRefused", f"{field}: {source}: only files and http(s) URLs are read")
    path = Path(source.removeprefix("file://"))
    if not path.is_absolute():
        raise PlacementRefusedError("SourceRefused", f"{field}: {source} is not an absolute path")
    real = Path(os.path.realpath(path))
    for root in roots:
        if root.startswith(("http://", "https://")):
            continue
        if real.is_relative_to(Path(os.path.realpath(root))):
            return "file", str(real)
    raise PlacementRefusedError(
        "SourceRefused", f"{field}: {source} is not under an allowed directory (SGS_OPERATOR_SURVEY_ROOTS)"
    )


async def read_source(source: str, roots: Sequence[str]) -> str:
    kind, where = allowed_source(source, roots)
    if kind == "url":
        async with httpx.AsyncClient(timeout=60, follow_redirects=False, trust_env=False) as client:
            response = await client.get(where)
        if response.status_code != 200:
            raise PlacementRefusedError(
                "SourceUnreadable", f"spec.source.surveyPlan: {where}: HTTP {response.status_code}"
            )
        return response.text
    try:
        return await asyncio.to_thread(Path(where).read_text, encoding="utf-8")
    except OSError as error:
        raise PlacementRefusedError(
            "SourceUnreadable", f"spec.source.surveyPlan: {where}: {error.strerror or error}"
        ) from error


# ----------------------------------------------------------------------------------------------- archive


class ArchivePlacements:
    """The archive's placement table over HTTP."""

    def __init__(self, url: str, token: str | None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.AsyncClient(base_url=url, headers=headers, timeout=120, trust_env=False)

    async def close(self) -> None:
        await self.client.aclose()

    async def _call(self, method: str, url: str, **kwargs: Any) -> Any:
        try:
            response = await self.client.request(method, url, **kwargs)
        except httpx.HTTPError as error:
            raise ArchiveUnavailableError(f"archive {method} {url}: {error}") from error
        if response.status_code >= 400:
            raise ArchiveUnavailableError(f"archive {method} {url}: HTTP {response.status_code} {response.text[:300]}")
        return response.json()

    async def previous(self) -> Assignments:
        tables: dict[str, dict[int, tuple[str, str | None]]] = {"observation": {}, "tile": {}}
        params: dict[str, Any] = {"limit": PAGE}
        while True:
            page = await self._call("GET", "/placements", params=params)
            for row in page:
                tables[row["dimension"]][int(row["value"])] = (row["primary_site"], row["secondary_site"])
            if len(page) < PAGE:
                return Assignments(tables["observation"], tables["tile"])
            params = {"limit": PAGE, "after_dimension": page[-1]["dimension"], "after_value": page[-1]["value"]}

    async def processed(self, observations: Sequence[int]) -> set[int]:
        found: set[int] = set()
        for start in range(0, len(observations), WRITE_BATCH):
            body = {"observations": list(observations[start : start + WRITE_BATCH])}
            found.update((await self._call("POST", "/placements/processed", json=body))["observations"])
        return found

    async def write(self, plan: Assignments) -> int:
        rows = [
            {"dimension": dimension, "value": value, "primary_site": p, "secondary_site": s}
            for dimension, table in (("observation", plan.observations), ("tile", plan.tiles))
            for value, (p, s) in sorted(table.items())
        ]
        for start in range(0, len(rows), WRITE_BATCH):
            await self._call("PUT", "/placements", json={"placements": rows[start : start + WRITE_BATCH]})
        return len(rows)


def rule_body(rule: RuleSpec, owner: str) -> dict[str, Any]:
    """The transfer service's RuleCreate for one placement rule: copies at exactly the listed Sites."""
    return {
        "dataset_type": rule.dataset_type,
        "where": rule.where,
        "copies": rule.copies,
        "site_expression": " | ".join(rule.sites),
        "owner": owner,
    }


def rule_key(body: Mapping[str, Any]) -> tuple[str | None, str, int, str]:
    return (body.get("dataset_type"), str(body["where"]), int(body["copies"]), str(body["site_expression"]))


def rule_changes(
    wanted: Sequence[Mapping[str, Any]], existing: Sequence[Mapping[str, Any]]
) -> tuple[list[Mapping[str, Any]], list[str]]:
    """Rules to create and rule ids to delete so the owner's rules are exactly ``wanted`` (a repeat does nothing)."""
    have = {rule_key(r): str(r["id"]) for r in existing}
    want = {rule_key(r): r for r in wanted}
    create = [body for key, body in want.items() if key not in have]
    delete = sorted(rule_id for key, rule_id in have.items() if key not in want)
    return create, delete


class TransferRules:
    """The transfer service's rules API over HTTP, for the rules one DataPlacement owns."""

    def __init__(self, url: str, token: str | None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.AsyncClient(base_url=url, headers=headers, timeout=60, trust_env=False)

    async def _call(self, method: str, url: str, **kwargs: Any) -> Any:
        try:
            response = await self.client.request(method, url, **kwargs)
        except httpx.HTTPError as error:
            raise TransferUnavailableError(f"transfer {method} {url}: {error}") from error
        if response.status_code >= 400:
            raise TransferUnavailableError(
                f"transfer {method} {url}: HTTP {response.status_code} {response.text[:300]}"
            )
        return response.json() if response.content else None

    async def owned(self, owner: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        params: dict[str, Any] = {"owner": owner, "limit": 1000}
        while True:
            page = await self._call("GET", "/rules", params=params)
            found += page["items"]
            if page["next_cursor"] is None:
                return found
            params["cursor"] = page["next_cursor"]

    async def apply(self, owner: str, rules: list[RuleSpec]) -> tuple[int, int]:
        wanted = [rule_body(rule, owner) for rule in rules]
        create, delete = rule_changes(wanted, await self.owned(owner))
        for body in create:
            await self._call("POST", "/rules", json=body)
        for rule_id in delete:
            await self._call("DELETE", f"/rules/{rule_id}")
        return len(create), len(delete)

    async def close(self) -> None:
        await self.client.aclose()


class TransferUnavailableError(Exception):
    """The transfer service did not answer or refused a rule: retried later."""


async def send_rules(owner: str, rules: list[RuleSpec], settings: PlacementSettings) -> Condition:
    """Make the transfer service hold exactly these rules for ``owner`` (created, or deleted when gone)."""
    if not settings.transfer_url:
        return condition(
            "RulesApplied",
            False,
            "TransferServiceNotConfigured",
            f"{len(rules)} replication rules computed (raw data at primary and secondary); not sent: the operator "
            "has no SGS_OPERATOR_TRANSFER_URL",
        )
    token = settings.transfer_token.get_secret_value() if settings.transfer_token else None
    client = TransferRules(settings.transfer_url, token)
    try:
        created, deleted = await client.apply(owner, rules)
    except TransferUnavailableError as error:
        return condition("RulesApplied", False, "TransferServiceUnavailable", str(error))
    finally:
        await client.close()
    return condition(
        "RulesApplied",
        True,
        "RulesApplied",
        f"{len(rules)} replication rules owned by {owner} ({created} created, {deleted} deleted)",
    )


# ----------------------------------------------------------------------------------------------- planning


def chosen_sites(
    spec: DataPlacementSpec, namespace: str, known: Mapping[tuple[str, str], Mapping[str, Any]]
) -> list[PlacementSite]:
    """The Sites named in spec.sites plus those matching spec.siteSelector, in name order."""
    mine = {name: entry for (ns, name), entry in known.items() if ns == namespace}
    names = set(spec.sites)
    missing = sorted(names - set(mine))
    if missing:
        raise PlacementRefusedError(
            "SitesInvalid", f"spec.sites: {', '.join(missing)}: no such Site in namespace {namespace}"
        )
    if spec.site_selector is not None:
        wanted = spec.site_selector.match_labels.items()
        names |= {n for n, e in mine.items() if all((e.get("labels") or {}).get(k) == v for k, v in wanted)}
    if not names:
        raise PlacementRefusedError("SitesInvalid", f"spec.siteSelector: no Site of namespace {namespace} matches")
    sites = []
    for name in sorted(names):
        try:
            site_spec = SiteSpec.model_validate(mine[name]["spec"])
            sites.append(PlacementSite.from_site(name, site_spec, dict(mine[name].get("labels") or {})))
        except ValidationError as error:
            raise PlacementRefusedError("SitesInvalid", describe_errors(error, f"Site {name}: spec")) from error
    try:
        check_sites(sites)
    except SitesError as error:
        raise PlacementRefusedError("SitesInvalid", str(error)) from error
    return sites


def frozen_rows(survey: Survey, previous: Assignments, processed: set[int], before: datetime | None) -> frozenset[int]:
    cut = int(before.timestamp()) if before else None
    early = {int(i) for i, t in zip(survey.ids.tolist(), survey.times.tolist(), strict=True) if cut and t < cut}
    return frozenset(o for o in processed | early if o in previous.observations)


def plan_status(report: PlanReport, plan: Plan, rules: int, generation: int | None) -> DataPlacementStatus:
    return DataPlacementStatus(
        phase=PlacementPhase.PLANNED,
        observations=report.observations,
        tiles=report.tiles,
        frozen=report.frozen,
        shares=[
            SiteShare(
                site=s.site,
                primary=s.primaries,
                secondary=s.secondaries,
                target=s.target,
                share=s.share,
                worst_window_error=s.worst_window_error,
                longest_gap_days=s.longest_gap_days,
                tiles=s.tiles,
            )
            for s in report.sites
        ],
        tiles_coherent=report.tiles_coherent,
        copied_pairs=report.copied_pairs,
        secondary_equals_primary=report.secondary_equals_primary,
        churn=report.churn,
        frozen_moved=report.frozen_moved,
        digest=plan.digest(),
        rules=rules,
        observed_generation=generation,
    )


def _solve(request: PlanRequest) -> tuple[Plan, PlanReport]:
    plan = solve(request)
    return plan, evaluate(request, plan)


async def reconcile(
    name: str,
    namespace: str,
    spec: Mapping[str, Any],
    generation: int | None,
    known: Mapping[tuple[str, str], Mapping[str, Any]],
    settings: PlacementSettings,
    now: datetime,
) -> tuple[DataPlacementStatus, list[Condition]]:
    """The DataPlacement's status (and conditions) after planning it now."""
    try:
        placement = DataPlacementSpec.model_validate(spec)
        check_horizon(placement.window_end, now, "spec.windowEnd")
    except ValidationError as error:
        raise PlacementRefusedError("SpecInvalid", describe_errors(error)) from error
    except PlanError as error:
        raise PlacementRefusedError("HorizonPast", str(error)) from error
    if placement.source.survey_plan is None:
        raise PlacementRefusedError(
            "SourceUnsupported", "spec.source.query: archive queries are not supported yet; use surveyPlan"
        )
    if not settings.archive_url:
        raise PlacementRefusedError(
            "ArchiveNotConfigured", "the operator has no SGS_OPERATOR_ARCHIVE_URL to write placements to"
        )
    sites = chosen_sites(placement, namespace, known)
    text = await read_source(placement.source.survey_plan, settings.survey_roots)
    try:
        survey = await asyncio.to_thread(read_survey, text, placement.source.survey_plan)
    except SurveyError as error:
        raise PlacementRefusedError("SurveyInvalid", f"spec.source.surveyPlan: {error}") from error
    token = settings.archive_token.get_secret_value() if settings.archive_token else None
    archive = ArchivePlacements(settings.archive_url, token)
    try:
        previous = await archive.previous()
        known_ids = [int(i) for i in survey.ids.tolist() if int(i) in previous.observations]
        frozen = frozen_rows(survey, previous, await archive.processed(known_ids), placement.frozen_before)
        try:
            request = PlanRequest(
                survey, sites, placement.window_start, placement.window_end, placement.policy, previous, frozen
            )
            plan, report = await asyncio.to_thread(_solve, request)
        except (PlanError, SitesError) as error:
            raise PlacementRefusedError("PlanInvalid", str(error)) from error
        written = await archive.write(plan.assignments())
    finally:
        await archive.close()
    owner = f"placement.{namespace}.{name}"
    rules = replication_rules(owner, plan.assignments())
    status = plan_status(report, plan, len(rules), generation)
    conditions = [
        condition(
            "Planned",
            True,
            "Planned",
            f"{report.observations} observations and {report.tiles} tiles on {len(sites)} Sites; "
            f"{100 * report.tiles_coherent:.1f} % of tiles at one primary; churn {100 * report.churn:.2f} %",
        ),
        condition("Archived", True, "PlacementsWritten", f"{written} rows in the archive's placement table"),
        await send_rules(owner, rules, settings),
    ]
    return status, conditions


def failed_status(generation: int | None) -> DataPlacementStatus:
    return DataPlacementStatus(phase=PlacementPhase.FAILED, observed_generation=generation)


# ----------------------------------------------------------------------------------------------- kopf


@kopf.index(GROUP, VERSION, "sites")
def placement_sites(
    name: str, namespace: str | None, spec: Mapping[str, Any], labels: Mapping[str, str], **_: Any
) -> dict[tuple[str, str], dict[str, Any]]:
    """Site specs and labels, for spec.sites and spec.siteSelector."""
    return {(namespace or "", name): {"spec": dict(spec), "labels": dict(labels)}}


# failurePolicy Fail and kept while no operator runs, as for Pipelines and Runs (handlers.py).
@kopf.on.validate(GROUP, VERSION, "dataplacements", operations=["CREATE", "UPDATE"], persistent=True)
def validate_placement(spec: Mapping[str, Any], **kwargs: Any) -> None:
    """PlacementRefusedError at apply: a spec the model rejects, or a horizon already over. An update that keeps
    the spec is admitted: once its window has passed, the operator must still be able to remove its finalizer."""
    if spec_unchanged(kwargs.get("old"), spec):  # `old` is passed, but kopf's WebhookFn protocol omits it
        return
    try:
        placement = DataPlacementSpec.model_validate(spec)
        check_horizon(placement.window_end, datetime.now(UTC), "spec.windowEnd")
    except ValidationError as error:
        raise kopf.AdmissionError(describe_errors(error), code=422) from error
    except PlanError as error:
        raise kopf.AdmissionError(str(error), code=422) from error


# kopf injects the Site index by parameter name, which its handler protocol cannot express.
@kopf.on.resume(GROUP, VERSION, "dataplacements")
@kopf.on.create(GROUP, VERSION, "dataplacements")
@kopf.on.update(GROUP, VERSION, "dataplacements", field="spec")  # type: ignore[arg-type]
async def placement_changed(
    name: str,
    namespace: str | None,
    spec: Mapping[str, Any],
    meta: Mapping[str, Any],
    status: Mapping[str, Any],
    patch: kopf.Patch,
    logger: kopf.Logger,
    placement_sites: kopf.Index[tuple[str, str], dict[str, Any]],
    **_: Any,
) -> None:
    generation = meta.get("generation")
    now = utc_now()
    known = {key: next(iter(values)) for key, values in placement_sites.items()}
    try:
        result, conditions = await reconcile(name, namespace or "", spec, generation, known, PlacementSettings(), now)
    except PlacementRefusedError as refused:
        result = failed_status(generation)
        conditions = [condition("Planned", False, refused.reason, str(refused))]
        logger.warning(f"dataplacement {namespace}/{name}: {refused.reason}: {refused}")
    except ArchiveUnavailableError as error:
        raise kopf.TemporaryError(str(error), delay=ARCHIVE_RETRY_S) from error
    result.planned_at = now
    result.conditions = merge_conditions((status or {}).get("conditions") or [], conditions, now)
    patch.status.update(result.model_dump(mode="json", by_alias=True, exclude_none=True))

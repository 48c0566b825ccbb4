"""Stage-in of a Run's archive inputs that have no replica at its Site, by the transfer service.

A Run's stage-in is one replication rule (Rucio-style): ``dataset_ids`` = the Run's resolved inputs, one copy at
the Run's Site, owned by ``run:<namespace>/<name>:<uid>``, priority from the Run's, a bounded lifetime. The
copies are then made by the same workers as any other rule: retries, checksum verification, registration of
the replica at the Site's archive. Inputs already at the Site get an OK lock, which keeps their copy from the
reaper while the Run needs it; the rule is deleted when the Run finishes.

Crash-safety: the intent (owner, the dataset ids, the bytes) is recorded in ``sgs_run_stage_in`` before the rule
is created, and the rule's id after; a restart in between finds the rule by its owner and adopts it, so a Run
never has two rules. A rule that goes STUCK (its transfers failed their fast retries, or it cannot be met)
fails the Run with the transfer service's reason; that verdict is recorded first, so a restart repeats it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from psycopg_pool import AsyncConnectionPool

from sgs.model.base import Condition
from sgs_operator.blocked import RunBlockedError
from sgs_operator.crash import crash_point
from sgs_operator.inputs import Resolution
from sgs_operator.status import condition

KIND = "StagingInputs"
MAX_STAGE_IN_DATASETS = 10_000  # the transfer service's bound on a rule's dataset_ids
OWNER_MAX = 128


class TransferUnavailableError(Exception):
    """The transfer service did not answer or refused a request: the Run keeps waiting, with this message."""


@dataclass(frozen=True)
class StageInRow:
    owner: str
    site: str
    dataset_ids: tuple[uuid.UUID, ...]
    bytes_total: int
    bytes_to_stage: int  # missing at the Site when the stage-in began
    bytes_minimum: int  # missing at the best Site: what any choice of Site would have had to copy
    best_site: str
    rule_id: uuid.UUID | None
    failed: str | None
    released: bool


def owner_of(namespace: str, name: str, uid: str) -> str:
    """Names the Run (the transfer service's owner is at most 128 characters: the UID alone when longer)."""
    full = f"run:{namespace}/{name}:{uid}"
    return full if len(full) <= OWNER_MAX else f"run:{uid}"


def rule_priority(run_priority: int) -> int:
    """The Run's priority (-1000..1000, 0 by default) on the transfer service's 1..5 (3 by default)."""
    return max(1, min(5, 3 + round(run_priority / 250)))


def missing_bytes(resolution: Resolution, site: str) -> int:
    return sum(_size(f.replicas)[1] for f in resolution.found if site not in f.replicas)


def _size(replicas: Mapping[str, tuple[str, int]]) -> tuple[str, int]:
    return next(iter(replicas.values()), ("", 0))


def plan_row(resolution: Resolution, owner: str, site: str, sites: Iterable[str]) -> StageInRow:
    """What the stage-in will copy and the least any Site choice could copy (the figure it is judged by)."""
    ids = tuple(dict.fromkeys(f.dataset_id for f in resolution.found))
    if len(ids) > MAX_STAGE_IN_DATASETS:
        raise RunBlockedError(
            KIND,
            "TooManyToStage",
            f"{len(ids):,} input datasets; a stage-in rule holds at most {MAX_STAGE_IN_DATASETS:,}",
        )
    total = sum(_size(f.replicas)[1] for f in resolution.found)
    candidates = sorted({site, *sites})
    best = min(candidates, key=lambda s: (missing_bytes(resolution, s), s))
    return StageInRow(
        owner,
        site,
        ids,
        total,
        missing_bytes(resolution, site),
        missing_bytes(resolution, best),
        best,
        None,
        None,
        False,
    )


# ----------------------------------------------------------------------------------------------- records


_COLUMNS = "owner, site, dataset_ids, bytes_total, bytes_to_stage, bytes_minimum, best_site, rule_id, failed, released"


class StageInRecords:
    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self.pool = pool

    async def load(self, run_uid: str) -> StageInRow | None:
        async with self.pool.connection() as conn:
            cur = await conn.execute(f"SELECT {_COLUMNS} FROM sgs_run_stage_in WHERE run_uid = %s", (run_uid,))
            row = await cur.fetchone()
        if row is None:
            return None
        owner, site, ids, total, to_stage, minimum, best, rule_id, failed, released = row
        return StageInRow(owner, site, tuple(ids), total, to_stage, minimum, best, rule_id, failed, released)

    async def intend(self, run_uid: str, row: StageInRow) -> StageInRow:
        """Record the intent (a first one stays: two operators racing agree on one) and return the kept row."""
        async with self.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO sgs_run_stage_in (run_uid, owner, site, dataset_ids, bytes_total, bytes_to_stage,"
                " bytes_minimum, best_site) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (
                    run_uid,
                    row.owner,
                    row.site,
                    list(row.dataset_ids),
                    row.bytes_total,
                    row.bytes_to_stage,
                    row.bytes_minimum,
                    row.best_site,
                ),
            )
        kept = await self.load(run_uid)
        assert kept is not None
        return kept

    async def set(self, run_uid: str, column: str, value: Any) -> None:
        assert column in ("rule_id", "failed", "released")  # a column name, never user input
        async with self.pool.connection() as conn:
            await conn.execute(f"UPDATE sgs_run_stage_in SET {column} = %s WHERE run_uid = %s", (value, run_uid))


# ----------------------------------------------------------------------------------------------- transfer API


class TransferClient:
    """The transfer service's rules API (``SGS_OPERATOR_TRANSFER_URL`` / ``_TOKEN``: an admin token, which may
    name the rule's owner)."""

    def __init__(self, url: str, token: str | None, timeout_s: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.AsyncClient(base_url=url, headers=headers, timeout=timeout_s, trust_env=False)

    async def close(self) -> None:
        await self.client.aclose()

    async def _call(self, method: str, url: str, ok: tuple[int, ...] = (200,), **kwargs: Any) -> Any:
        try:
            response = await self.client.request(method, url, **kwargs)
        except httpx.HTTPError as error:
            raise TransferUnavailableError(f"transfer service {method} {url}: {error}") from error
        if response.status_code not in ok:
            raise TransferUnavailableError(
                f"transfer service {method} {url}: HTTP {response.status_code} {response.text[:300]}"
            )
        return response.json() if response.content and response.status_code != 404 else None

    async def owned(self, owner: str) -> list[dict[str, Any]]:
        page = await self._call("GET", "/rules", params={"owner": owner, "limit": 100})
        items: list[dict[str, Any]] = page["items"]
        return items

    async def rule(self, rule_id: uuid.UUID) -> dict[str, Any] | None:
        found: dict[str, Any] | None = await self._call("GET", f"/rules/{rule_id}", ok=(200, 404))
        return found

    async def create(self, body: Mapping[str, Any]) -> dict[str, Any]:
        made: dict[str, Any] = await self._call("POST", "/rules", ok=(201,), json=dict(body))
        return made

    async def delete(self, rule_id: uuid.UUID) -> None:
        await self._call("DELETE", f"/rules/{rule_id}", ok=(204, 404))


# ----------------------------------------------------------------------------------------------- the stage-in


@dataclass
class StageIn:
    """One Run's stage-in: ``check`` before it starts (raises RunBlockedError while waiting or when failed),
    ``release`` once it has finished."""

    records: StageInRecords
    client: TransferClient | None
    run_uid: str
    owner: str
    lifetime_s: int
    condition: Condition | None = None  # StagingInputs once staged (shown in the started Run's status)
    _released: bool = False

    async def check(self, resolution: Resolution, site: str, sites: Iterable[str], priority: int) -> Resolution:
        """The resolution to start with (limited to the datasets the stage-in rule was made for, if one was);
        RunBlockedError while inputs are still being copied, or when the stage-in failed."""
        row = await self.records.load(self.run_uid)
        if row is not None:
            resolution = only(resolution, row.dataset_ids)  # a later registration cannot change the inputs
            if row.failed:
                raise RunBlockedError(KIND, "StageInFailed", row.failed, failed=True)
        missing = [f for f in resolution.found if site not in f.replicas]
        if row is None and (not missing or self.client is None):
            return resolution  # all at the Site (or no transfer service: InputsNotAtSite, as before)
        if self.client is None:
            return resolution
        if row is None:
            row = await self.records.intend(self.run_uid, plan_row(resolution, self.owner, site, sites))
        try:
            rule = await self._rule(row, priority)
        except TransferUnavailableError as err:
            raise RunBlockedError(KIND, "TransferServiceUnavailable", str(err)) from err
        message = progress(resolution, row, rule)
        if not missing:
            self.condition = condition(KIND, True, "Staged", message)
            return resolution
        if rule.get("state") == "STUCK":
            await self._fail(row, f"stage-in to {row.site} failed: {rule.get('reason') or 'rule STUCK'}")
        raise RunBlockedError(KIND, "StagingInputs", message)

    async def _rule(self, row: StageInRow, priority: int) -> dict[str, Any]:
        assert self.client is not None
        if row.rule_id is not None:
            found = await self.client.rule(row.rule_id)
            if found is not None:
                return found
        owned = await self.client.owned(self.owner)  # created before a crash, its id not recorded: adopt it
        rule = owned[0] if owned else await self.client.create(self._body(row, priority))
        crash_point("after-stage-in-rule")
        await self.records.set(self.run_uid, "rule_id", uuid.UUID(str(rule["id"])))
        return rule

    def _body(self, row: StageInRow, priority: int) -> dict[str, Any]:
        return {
            "dataset_ids": [str(i) for i in row.dataset_ids],
            "copies": 1,
            "site_expression": row.site,
            "priority": rule_priority(priority),
            "lifetime_s": self.lifetime_s,
            "owner": self.owner,
        }

    async def _fail(self, row: StageInRow, reason: str) -> None:
        await self.records.set(self.run_uid, "failed", reason[:1024])  # first: a restart repeats the verdict
        await self.release()
        raise RunBlockedError(KIND, "StageInFailed", reason, failed=True)

    async def release(self) -> None:
        """The Run is done with its inputs: delete its rule (the reaper may then remove copies no rule needs)."""
        if self._released or self.client is None:
            return
        row = await self.records.load(self.run_uid)
        if row is None or row.released:
            self._released = True
            return
        rule_ids = {row.rule_id} if row.rule_id else set()
        rule_ids |= {uuid.UUID(str(r["id"])) for r in await self.client.owned(self.owner)}
        for rule_id in rule_ids:
            await self.client.delete(rule_id)
        await self.records.set(self.run_uid, "released", True)
        self._released = True


def only(resolution: Resolution, ids: tuple[uuid.UUID, ...]) -> Resolution:
    wanted = set(ids)
    return Resolution([f for f in resolution.found if f.dataset_id in wanted])


def progress(resolution: Resolution, row: StageInRow, rule: Mapping[str, Any]) -> str:
    """Counts and bytes: at the Site / in all, staged / to stage, and the minimum (missing at the best Site)."""
    present = [f for f in resolution.found if row.site in f.replicas]
    still = missing_bytes(resolution, row.site)
    staged = max(0, row.bytes_to_stage - still)
    return (
        f"{len(present)}/{len(resolution.found)} input datasets at {row.site}; staged {staged:,} of "
        f"{row.bytes_to_stage:,} bytes to stage (minimum possible {row.bytes_minimum:,}: missing at the best "
        f"Site, {row.best_site}); rule {rule.get('id')} {rule.get('state')}"
    )

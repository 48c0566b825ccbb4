"""The archive over HTTP: what the triggers read (the universe, a dataset, a group's datasets and replicas)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import httpx

from sgs.model.dataset import DimensionUniverse
from sgs.model.replica import ReplicaState
from sgs.placement.consequences import placement_of, placement_params
from sgs.telemetry import Tracing
from sgs.telemetry.instrument import instrument_client

PAGE = 10_000


class ArchiveError(RuntimeError):
    """The archive could not be reached or answered an error (``status`` None when unreachable)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ArchiveReader:
    """One connection pool to the survey's archive, read with one token."""

    def __init__(self, url: str, token: str | None, timeout_s: float, tracing: Tracing | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.AsyncClient(base_url=url, headers=headers, timeout=timeout_s, trust_env=False)
        instrument_client(self._client, tracing or Tracing.off())  # the archive's answer joins the event's trace

    async def close(self) -> None:
        await self._client.aclose()

    async def _call(self, method: str, path: str, ok: tuple[int, ...] = (200,), **kw: Any) -> Any:
        try:
            response = await self._client.request(method, path, **kw)
        except httpx.HTTPError as error:
            raise ArchiveError(f"archive {method} {path}: {type(error).__name__}: {error}") from error
        if response.status_code not in ok:
            raise ArchiveError(
                f"archive {method} {path}: {response.status_code} {response.text[:500]}", response.status_code
            )
        return response.json() if response.content else None

    async def universe(self) -> DimensionUniverse:
        return DimensionUniverse.model_validate(await self._call("GET", "/dimensions"))

    async def dataset(self, dataset_id: uuid.UUID) -> dict[str, Any] | None:
        found: dict[str, Any] | None = await self._call("GET", f"/datasets/{dataset_id}", ok=(200, 404))
        return None if found is None or "id" not in found else found

    async def query(self, dataset_type: str, collections: Sequence[str], where: str) -> list[dict[str, Any]]:
        """Every dataset matching, following the archive's keyset cursor."""
        found: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            body = {
                "dataset_type": dataset_type,
                "collections": list(collections),
                "where": where,
                "limit": PAGE,
                "cursor": cursor,
            }
            page = await self._call("POST", "/datasets/query", json=body)
            found += page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                return found

    async def placement(self, observation: int) -> tuple[str, str | None] | None:
        """The (primary, secondary) Site the survey's placement gives ``observation``; None: not placed."""
        return placement_of(await self._call("GET", "/placements", params=placement_params(observation)))

    async def available_at(self, dataset_ids: Sequence[uuid.UUID], site: str) -> set[uuid.UUID]:
        """Which of the datasets have a replica available at the Site."""
        held: set[uuid.UUID] = set()
        for start in range(0, len(dataset_ids), PAGE):
            chunk = dataset_ids[start : start + PAGE]
            body = {"dataset_ids": [str(i) for i in chunk], "site": site, "state": ReplicaState.AVAILABLE.value}
            located = (await self._call("POST", "/replicas/locate", json=body))["replicas"]
            held |= {uuid.UUID(key) for key, replicas in located.items() if replicas}
        return held

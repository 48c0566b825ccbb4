"""The archives over HTTP: datasets and replicas to read (the survey's archive), replicas to register (each
destination Site's archive, with that Site's token). Deployables talk to each other only this way."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from sgs.model.dataset import DimensionUniverse
from sgs.model.replica import ReplicaState
from sgs.telemetry import Tracing
from sgs.telemetry.instrument import instrument_client

PAGE = 10_000


class ArchiveError(RuntimeError):
    """The archive could not be reached or answered an error; ``status`` is None when it could not be reached."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def retryable(self) -> bool:
        return self.status is None or self.status >= 500 or self.status == 429


@dataclass(frozen=True)
class ReplicaRegistration:
    dataset_id: uuid.UUID
    site: str
    uri: str
    size: int
    adler32: str
    sha256: str
    state: ReplicaState = ReplicaState.AVAILABLE

    def body(self) -> dict[str, Any]:
        return {
            "dataset_id": str(self.dataset_id),
            "site": self.site,
            "uri": self.uri,
            "size": self.size,
            "adler32": self.adler32,
            "sha256": self.sha256,
            "state": self.state.value,
        }


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    if isinstance(detail, list):
        return "; ".join(f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg')}" for d in detail)
    return str(detail)[:500]


class ArchiveClient:
    """One connection pool for every archive this service talks to."""

    def __init__(self, timeout_s: float, tracing: Tracing | None = None) -> None:
        self._client = httpx.AsyncClient(timeout=timeout_s, trust_env=False)
        instrument_client(self._client, tracing or Tracing.off())  # a registration joins the copy's trace

    async def close(self) -> None:
        await self._client.aclose()

    async def _call(self, method: str, url: str, token: str | None, ok: tuple[int, ...] = (200,), **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            response = await self._client.request(method, url, headers=headers, **kw)
        except httpx.HTTPError as error:
            raise ArchiveError(f"archive {method} {url}: {type(error).__name__}: {error}") from error
        if response.status_code not in ok:
            raise ArchiveError(
                f"archive {method} {url}: {response.status_code} {_detail(response)}", response.status_code
            )
        return response.json() if response.content else None

    # ------------------------------------------------------------------ reads

    async def universe(self, base: str, token: str | None) -> DimensionUniverse:
        return DimensionUniverse.model_validate(await self._call("GET", f"{base}/dimensions", token))

    async def collection(self, base: str, token: str | None, name: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = await self._call("GET", f"{base}/collections/{name}", token)
        except ArchiveError as error:
            if error.status == 404:
                return None
            raise
        return found

    async def collections(self, base: str, token: str | None, prefix: str, kind: str = "RUN") -> list[dict[str, Any]]:
        """Every collection of one type under a name prefix, following the archive's paging."""
        found: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"type": kind, "limit": PAGE}
            if prefix:
                params["prefix"] = prefix
            if cursor is not None:
                params["cursor"] = cursor
            page = await self._call("GET", f"{base}/collections", token, params=params)
            found.extend(page["items"])
            cursor = page["next_cursor"]
            if cursor is None:
                return found

    async def dataset(self, base: str, token: str | None, dataset_id: uuid.UUID) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = await self._call("GET", f"{base}/datasets/{dataset_id}", token)
        except ArchiveError as error:
            if error.status == 404:
                return None
            raise
        return found

    async def datasets(
        self,
        base: str,
        token: str | None,
        dataset_type: str | None,
        collections: Sequence[str],
        where: str,
        page_size: int = PAGE,
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Pages of datasets matching, following the archive's keyset cursor."""
        cursor: str | None = None
        while True:
            body = {
                "dataset_type": dataset_type,
                "collections": list(collections),
                "where": where,
                "limit": page_size,
                "cursor": cursor,
            }
            page = await self._call("POST", f"{base}/datasets/query", token, json=body)
            if page["items"]:
                yield page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                return

    async def locate(
        self, base: str, token: str | None, dataset_ids: Sequence[uuid.UUID]
    ) -> dict[str, list[dict[str, Any]]]:
        """Available replicas of up to PAGE datasets."""
        body = {"dataset_ids": [str(i) for i in dataset_ids], "state": ReplicaState.AVAILABLE.value}
        found: dict[str, list[dict[str, Any]]] = (
            await self._call("POST", f"{base}/replicas/locate", token, json=body)
        )["replicas"]
        return found

    # ------------------------------------------------------------------ writes (with the destination Site's token)

    async def register_replica(self, base: str, token: str | None, replica: ReplicaRegistration) -> dict[str, Any]:
        """Register (idempotently: the same again answers 200) and return the archive's replica."""
        found: dict[str, Any] = await self._call("POST", f"{base}/replicas", token, ok=(200, 201), json=replica.body())
        return found

    async def set_replica_state(self, base: str, token: str | None, replica_id: int, state: ReplicaState) -> None:
        await self._call("PATCH", f"{base}/replicas/{replica_id}", token, json={"state": state.value})

    async def replicas_of(self, base: str, token: str | None, dataset_id: uuid.UUID) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = await self._call("GET", f"{base}/datasets/{dataset_id}/replicas", token)
        return found

    async def dataset_type(self, base: str, token: str | None, name: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = await self._call("GET", f"{base}/dataset-types/{name}", token)
        except ArchiveError as error:
            if error.status == 404:
                return None
            raise
        return found

"""The demo's archive over HTTP: the archive service's bulk ingest, replicas, placements and queries.

Writes go with Site-scoped tokens where the API allows (a Site registers the replicas it holds and the datasets
of the RUN collections it makes), and with the admin token for what only an operator may do (tokens,
placements, dataset types, and the survey collections every Site's inputs go into). Reads carry the admin
token too: the archive answers no read without one unless it was configured with public reads.
"""

from __future__ import annotations

import ssl
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Self

import httpx

from sgs.demo.archive import Registered, Registration
from sgs.model.dataset import DatasetRef, DatasetType, Lineage, Placement
from sgs.model.replica import Replica, ReplicaRecord

PAGE = 10_000
TOKEN_PREFIX = "demo-"


class ArchiveRequestError(RuntimeError):
    """The archive answered an error: the message names the call, the status and the archive's reason."""

    def __init__(self, response: httpx.Response) -> None:
        request = response.request
        try:
            detail: Any = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        super().__init__(f"archive {request.method} {request.url.path}: {response.status_code} {detail}")
        self.status = response.status_code


def _replica_body(replica: Replica) -> dict[str, Any]:
    return replica.model_dump(mode="json", exclude={"dataset_id"})


def _lineage_body(lineage: Lineage) -> dict[str, Any]:
    return lineage.model_dump(mode="json", exclude={"dataset_id"})


def _dataset_body(ref: DatasetRef, replicas: list[Replica], lineage: Lineage | None) -> dict[str, Any]:
    body: dict[str, Any] = ref.model_dump(mode="json")
    body["replicas"] = [_replica_body(r) for r in replicas]
    if lineage is not None:
        body["lineage"] = _lineage_body(lineage)
    return body


class HttpArchive:
    """Implements the demo's :class:`~sgs.demo.archive.Archive` protocol against a running archive service."""

    def __init__(
        self,
        url: str,
        admin_token: str,
        timeout_s: float = 60.0,
        survey_runs: Iterable[str] = (),
        ca_bundle: Path | None = None,
    ) -> None:
        """``survey_runs``: RUN collections every Site's data goes into (raw data, calibrations), which only an
        admin writes; the datasets of every other run are registered with the token of the Site holding them.
        ``ca_bundle``: PEM CA certificates to verify an https:// archive with (default: the system's)."""
        self.url = url
        self._admin = admin_token
        self._site_tokens: dict[str, str] = {}
        self._known_types: set[str] = set()
        self._survey_runs = frozenset(survey_runs)
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(ca_bundle)) if ca_bundle else True
        self._client = httpx.Client(base_url=url, timeout=timeout_s, verify=verify)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    # ------------------------------------------------------------------ plumbing

    def _call(self, method: str, path: str, token: str | None = None, ok: tuple[int, ...] = (200,), **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {token or self._admin}"}
        response = self._client.request(method, path, headers=headers, **kw)
        if response.status_code not in ok:
            raise ArchiveRequestError(response)
        return response.json() if response.content else None

    def site_token(self, site: str) -> str:
        """The token issued to ``site`` by :meth:`issue_site_tokens`."""
        return self._site_tokens[site]

    def _token_for(self, sites: Iterable[str]) -> str:
        """A Site's own token when every replica is at that Site; the admin token otherwise."""
        distinct = set(sites)
        if len(distinct) == 1 and (site := next(iter(distinct))) in self._site_tokens:
            return self._site_tokens[site]
        return self._admin

    # ------------------------------------------------------------------ writes

    def issue_site_tokens(self, sites: Iterable[str]) -> None:
        """A fresh token per Site (tokens are shown once, so a re-run revokes the previous run's first)."""
        for site in sites:
            name = f"{TOKEN_PREFIX}{site}"
            self._call("DELETE", f"/tokens/{name}", self._admin, ok=(204, 404))
            created = self._call("POST", "/tokens", self._admin, ok=(201,), json={"name": name, "site": site})
            self._site_tokens[site] = created["token"]

    def issue_reader_token(self, name: str = f"{TOKEN_PREFIX}reader") -> str:
        """A fresh read-only token (for the commands the demo suggests), revoking an earlier one of that name."""
        self._call("DELETE", f"/tokens/{name}", self._admin, ok=(204, 404))
        created = self._call("POST", "/tokens", self._admin, ok=(201,), json={"name": name, "role": "reader"})
        return str(created["token"])

    def ensure_types(self, types: Iterable[DatasetType]) -> None:
        for kind in types:
            if kind.name not in self._known_types:
                body = kind.model_dump(mode="json")
                body["dimensions"] = list(kind.dimensions)
                self._call("POST", "/dataset-types", self._admin, ok=(200, 201), json=body)
                self._known_types.add(kind.name)

    def register(self, batch: Registration) -> Registered:
        """Bulk ingests, each committing its datasets, replicas and lineage together or not at all: first those
        of survey runs (admin token), then the others (their Site's token), so lineage finds its inputs."""
        if not batch.datasets:
            return Registered(0, 0)
        self.ensure_types(batch.dataset_types.values())
        replicas: dict[uuid.UUID, list[Replica]] = {}
        for replica in batch.replicas:
            replicas.setdefault(replica.dataset_id, []).append(replica)
        lineage = {item.dataset_id: item for item in batch.lineage}
        survey = [ref for ref in batch.datasets if ref.run in self._survey_runs]
        own = [ref for ref in batch.datasets if ref.run not in self._survey_runs]
        registered = Registered(0, 0)
        for refs, token in (
            (survey, self._admin),
            (own, self._token_for(r.site for ref in own for r in replicas.get(ref.id, []))),
        ):
            if refs:
                datasets = [_dataset_body(ref, replicas.get(ref.id, []), lineage.get(ref.id)) for ref in refs]
                result = self._call("POST", "/datasets/ingest", token, json={"datasets": datasets})
                registered += Registered(int(result["inserted"]), int(result["existing"]))
        return registered

    def register_replicas(self, replicas: Sequence[Replica]) -> Registered:
        """Each copy registered by the Site that holds it (201: new, 200: already registered as is)."""
        new = 0
        for replica in replicas:
            body = replica.model_dump(mode="json")
            token = self._token_for([replica.site])
            response = self._client.post("/replicas", json=body, headers={"Authorization": f"Bearer {token}"})
            if response.status_code not in (200, 201):
                raise ArchiveRequestError(response)
            new += response.status_code == 201
        return Registered(new, len(replicas) - new)

    def register_placements(self, placements: Sequence[Placement]) -> None:
        body = {"placements": [p.model_dump(mode="json") for p in placements]}
        self._call("PUT", "/placements", self._admin, json=body)

    # ------------------------------------------------------------------ reads (with the admin token)

    def replicas_of(self, dataset_id: str) -> list[Replica]:
        found = self._call("GET", f"/datasets/{dataset_id}/replicas")
        replicas: list[Replica] = [ReplicaRecord.model_validate(r) for r in found]
        return replicas

    def datasets(self, dataset_type: str | None = None, where: str = "") -> Iterator[dict[str, Any]]:
        """Every dataset matching, following the archive's paging cursor."""
        cursor: str | None = None
        while True:
            body = {"dataset_type": dataset_type, "where": where, "limit": PAGE, "cursor": cursor}
            page = self._call("POST", "/datasets/query", json=body)
            yield from page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                return

    def replicas_at(self, site: str) -> Iterator[dict[str, Any]]:
        """The per-Site view: every replica the Site holds."""
        cursor: int | None = None
        while True:
            params: dict[str, Any] = {"site": site, "limit": PAGE}
            if cursor is not None:
                params["cursor"] = cursor
            page = self._call("GET", "/replicas", params=params)
            yield from page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                return

    def placements(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self._call("GET", "/placements", params={"limit": 100_000})
        return found

    def lineage(self, dataset_id: str, depth: int = 20, direction: str = "up") -> dict[str, Any]:
        graph: dict[str, Any] = self._call(
            "GET", f"/datasets/{dataset_id}/lineage", params={"direction": direction, "depth": depth}
        )
        return graph

"""The archive and the transfer service, over HTTP with the console's read tokens (and, to suspend or resume
a rule, the signed-in person's own transfer-service token: the console has no rights of its own there)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

TIMEOUT_S = 10.0


class UpstreamError(RuntimeError):
    """A service answered with an error or could not be reached: ``status`` (0 = unreachable) and a message."""

    def __init__(self, service: str, status: int, message: str) -> None:
        super().__init__(f"{service}: {status} {message}" if status else f"{service}: {message}")
        self.service = service
        self.status = status
        self.message = message


@dataclass
class Service:
    name: str
    url: str | None
    token: str | None
    client: httpx.AsyncClient | None = None

    @property
    def configured(self) -> bool:
        return self.url is not None

    def _client(self) -> httpx.AsyncClient:
        if self.client is None:
            assert self.url is not None
            self.client = httpx.AsyncClient(base_url=self.url, timeout=TIMEOUT_S, trust_env=False)
        return self.client

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        token: str | None = None,
    ) -> Any:
        if self.url is None:
            raise UpstreamError(self.name, 0, "not configured")
        bearer = token or self.token
        headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
        clean = {k: v for k, v in (params or {}).items() if v not in (None, "")}
        try:
            response = await self._client().request(method, path, params=clean, json=json, headers=headers)
        except httpx.HTTPError as error:
            raise UpstreamError(self.name, 0, f"cannot reach {self.url}: {error!r}") from error
        if response.status_code >= 400:
            raise UpstreamError(self.name, response.status_code, detail_of(response))
        return response.json() if response.content else None

    async def get(self, path: str, **params: Any) -> Any:
        return await self.call("GET", path, params=params)


def detail_of(response: httpx.Response) -> str:
    """The services' error bodies name the field: ``{"detail": [{"loc": [...], "msg": ...}]}`` or a string."""
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        return response.text[:500]
    if isinstance(detail, list):
        return "; ".join(problem(d) for d in detail if isinstance(d, dict))
    return str(detail)[:500]


def problem(detail: dict[str, Any]) -> str:
    """``body.where: unknown dimension 'x'``; a refusal about the Authorization header is its message alone."""
    loc = [str(p) for p in detail.get("loc") or []]
    if not loc or loc[0] == "header":
        return str(detail.get("msg"))
    return f"{'.'.join(loc)}: {detail.get('msg')}"

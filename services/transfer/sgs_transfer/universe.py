"""The dimension universe, read from the archive (the transfer service holds no copy of its own)."""

from __future__ import annotations

import asyncio
import time

from sgs.model.dataset import DimensionUniverse
from sgs.service.errors import UnavailableError
from sgs_transfer.archive_client import ArchiveClient, ArchiveError

REFRESH_S = 300.0


class UniverseCache:
    def __init__(self, archive: ArchiveClient, url: str | None, token: str | None) -> None:
        self.archive = archive
        self.url = url
        self.token = token
        self._universe: DimensionUniverse | None = None
        self._fetched = 0.0
        self._lock = asyncio.Lock()

    def set(self, universe: DimensionUniverse) -> None:
        self._universe, self._fetched = universe, time.monotonic()

    async def get(self, loc: tuple[str | int, ...] = ("body", "where")) -> DimensionUniverse:
        """The universe; a stale copy if the archive cannot be reached, 503 naming ``loc`` if there is none."""
        async with self._lock:
            if self._universe is None or time.monotonic() - self._fetched > REFRESH_S:
                if self.url is None:
                    if self._universe is None:
                        raise UnavailableError(
                            loc, "no archive_url configured: dimension expressions cannot be checked"
                        )
                else:
                    try:
                        self.set(await self.archive.universe(self.url, self.token))
                    except ArchiveError as error:
                        if self._universe is None:
                            raise UnavailableError(loc, f"cannot check the expression now: {error}") from error
            assert self._universe is not None
            return self._universe

"""Replicas: one copy of a dataset's file at a Site — the one model the archive, the events and transfers share.

Three views of the same record, each adding what its holder knows (the Create / Public pattern):

- :class:`ReplicaFile` — where a copy is and what it holds: Site, URI, size, checksums, state. This is how a
  replica travels inside its dataset (archive ingest, ``sgs.dataset.registered``).
- :class:`Replica` — the same with the dataset it copies: a replica registered on its own (``POST /replicas``,
  a finished transfer) and the fields of ``sgs.replica.*`` events.
- :class:`ReplicaRecord` — as the archive holds it: its id and when its state last changed.

Checksums are values (:mod:`sgs.model.checksum`): adler32 compares as a number, sha256 case-folded.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from pydantic import Field

from sgs.model.checksum import Adler32, Checksums, Sha256
from sgs.model.dataset import ArchiveModel, SiteName


class ReplicaState(StrEnum):
    AVAILABLE = "available"
    """The file is at the site and its checksums were verified."""
    COPYING = "copying"
    """A transfer to the site is under way; not yet usable."""
    BAD = "bad"
    """The copy failed verification or was found corrupted; must be replaced."""
    DELETED = "deleted"
    """The copy was removed; kept as a record."""


class ReplicaFile(ArchiveModel):
    """One copy of a dataset's file at a Site, inside its dataset (which is why it does not name it)."""

    site: SiteName
    uri: str = Field(min_length=1, max_length=2048)
    size: int = Field(ge=0, le=2**62)
    adler32: Adler32
    sha256: Sha256
    state: ReplicaState = ReplicaState.AVAILABLE

    @property
    def checksums(self) -> Checksums:
        return Checksums(size=self.size, adler32=self.adler32, sha256=self.sha256)


class Replica(ReplicaFile):
    """One copy of a dataset's file at a Site, naming the dataset."""

    dataset_id: uuid.UUID


class ReplicaRecord(Replica):
    """A replica as the archive stores it."""

    id: int = Field(ge=1)
    updated_at: datetime

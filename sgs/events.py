"""Events the services exchange over NATS JetStream: subjects and payload models.

Every publisher sets ``Nats-Msg-Id`` to the event id, so a re-publish after a crash is dropped by JetStream's
duplicate window; every consumer keys its side effects by business id, so a redelivery does no harm either.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from pydantic import Field

from sgs.model.dataset import ArchiveModel, DataId, ReplicaState, SiteName

STREAM = "SGS"
"""The one JetStream stream holding every sgs event (subjects ``sgs.>``)."""
STREAM_SUBJECTS = ("sgs.>",)
MSG_ID_HEADER = "Nats-Msg-Id"

DATASET_REGISTERED = "sgs.dataset.registered"
REPLICA_ANY = "sgs.replica.*"
MAX_DATASETS_PER_EVENT = 256
"""Large ingests are split into several events so that one message stays far below NATS' 1 MiB limit."""


def replica_subject(state: ReplicaState) -> str:
    """``sgs.replica.available``, ``sgs.replica.copying``, ``sgs.replica.bad`` or ``sgs.replica.deleted``."""
    return f"sgs.replica.{state.value}"


def _now() -> datetime:
    return datetime.now(UTC)


class Event(ArchiveModel):
    """Fields common to every event: ``event_id`` doubles as the ``Nats-Msg-Id``."""

    event_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    occurred_at: datetime = Field(default_factory=_now)
    source: str = Field(default="archive", description="The service (and site) that emitted the event.")


class RegisteredReplica(ArchiveModel):
    site: SiteName
    uri: str
    size: int
    adler32: str
    sha256: str
    state: ReplicaState


class RegisteredDataset(ArchiveModel):
    id: uuid.UUID
    dataset_type: str
    data_id: DataId
    run: str
    task: str | None = None
    replicas: tuple[RegisteredReplica, ...] = ()


class DatasetRegistered(Event):
    """New datasets were committed to the archive (re-ingesting known ones emits nothing)."""

    datasets: tuple[RegisteredDataset, ...] = Field(min_length=1, max_length=MAX_DATASETS_PER_EVENT)


class ReplicaStateChanged(Event):
    """A replica was registered or changed state; the subject carries the new state."""

    replica_id: int
    dataset_id: uuid.UUID
    dataset_type: str
    site: SiteName
    uri: str
    size: int
    adler32: str
    sha256: str
    state: ReplicaState
    previous_state: ReplicaState | None = None

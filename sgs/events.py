"""Events the services exchange over NATS JetStream: subjects and payload models.

Every publisher sets ``Nats-Msg-Id`` to the event id, so a re-publish after a crash is dropped by JetStream's
duplicate window; every consumer keys its side effects by business id, so a redelivery does no harm either.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from pydantic import Field

from sgs.model.dataset import ArchiveModel, DataId
from sgs.model.replica import Replica, ReplicaFile, ReplicaRecord, ReplicaState

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


class RegisteredDataset(ArchiveModel):
    id: uuid.UUID
    dataset_type: str
    data_id: DataId
    run: str
    task: str | None = None
    replicas: tuple[ReplicaFile, ...] = ()


class DatasetRegistered(Event):
    """New datasets were committed to the archive (re-ingesting known ones emits nothing)."""

    datasets: tuple[RegisteredDataset, ...] = Field(min_length=1, max_length=MAX_DATASETS_PER_EVENT)


class ReplicaStateChanged(Event, Replica):
    """A replica was registered or changed state; the subject carries the new state.

    The replica's own fields (:class:`~sgs.model.replica.Replica`) sit at the top level beside the event's.
    """

    replica_id: int
    dataset_type: str
    previous_state: ReplicaState | None = None
    # The dataset's data ID and RUN collection, so that a consumer grouping arrivals by data ID (the trigger
    # service) need not ask the archive for them; None from an archive older than these fields.
    data_id: DataId | None = None
    run: str | None = None

    @classmethod
    def of(
        cls,
        replica: ReplicaRecord,
        dataset_type: str,
        source: str,
        previous_state: ReplicaState | None = None,
        data_id: DataId | None = None,
        run: str | None = None,
    ) -> ReplicaStateChanged:
        fields = replica.model_dump(exclude={"id", "updated_at"})
        return cls(
            replica_id=replica.id,
            dataset_type=dataset_type,
            source=source,
            previous_state=previous_state,
            data_id=data_id,
            run=run,
            **fields,
        )

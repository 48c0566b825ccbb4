"""The HTTP API's request and response models (Create / Public / Page per resource)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import Field, ValidationInfo, field_validator

from sgs.model.dataset import DATASET_TYPE_PATTERN, ArchiveModel
from sgs.replication.rules import COLLECTION_PATTERN_RE, Grouping, LockState, RuleState, TransferState

DatasetTypeName = Annotated[str, Field(min_length=1, max_length=128, pattern=DATASET_TYPE_PATTERN)]
CollectionPattern = Annotated[str, Field(min_length=1, max_length=200, pattern=COLLECTION_PATTERN_RE)]
MAX_LIFETIME_S = 100 * 365 * 86400
MAX_RULE_DATASET_IDS = 10_000  # one bulk evaluation fetches each by id: bounded like a page of the archive's


class RuleCreate(ArchiveModel):
    """N copies of the datasets matching the selector, at Sites matching the Site expression."""

    dataset_type: DatasetTypeName | None = Field(default=None, description="Only this dataset type (default: any).")
    collections: list[CollectionPattern] = Field(
        default_factory=list, max_length=100, description="RUN collections, or glob patterns over their names."
    )
    where: str = Field(default="", max_length=10_000, description="Dimension expression, e.g. \"band = 'H'\".")
    dataset_ids: list[uuid.UUID] = Field(
        default_factory=list,
        max_length=MAX_RULE_DATASET_IDS,
        description="Exactly these datasets (e.g. a Run's stage-in); not with dataset_type, collections or where.",
    )
    copies: int = Field(ge=1, le=64, description="Copies wanted at Sites matching site_expression.")
    site_expression: str = Field(min_length=1, max_length=2_000, description="e.g. 'tier=primary & !maintenance'.")
    source_expression: str | None = Field(
        default=None, max_length=2_000, description="Sites to read from first, when they hold a copy."
    )
    grouping: Grouping = Field(default=Grouping.DATASET, description="'all': every dataset at the same Sites.")
    priority: int = Field(default=3, ge=1, le=5, description="1 (lowest) to 5 (highest).")
    lifetime_s: int | None = Field(default=None, ge=1, le=MAX_LIFETIME_S, description="Expires after; default never.")
    owner: str | None = Field(default=None, max_length=128, description="Admin only: owner other than the caller.")


class LockCounts(ArchiveModel):
    ok: int
    replicating: int
    stuck: int


class RulePublic(ArchiveModel):
    id: uuid.UUID
    owner: str
    dataset_type: str | None
    collections: list[str]
    where: str
    dataset_ids: list[uuid.UUID]
    copies: int
    site_expression: str
    source_expression: str | None
    grouping: Grouping
    priority: int
    expires_at: datetime | None
    state: RuleState
    reason: str | None = Field(description="Why the rule is STUCK or SUSPENDED; null otherwise.")
    locks: LockCounts
    chosen_sites: list[str] | None = Field(description="grouping 'all': the Sites every dataset goes to.")
    evaluated_at: datetime | None = Field(description="When the datasets already archived were evaluated.")
    created_at: datetime
    updated_at: datetime


class RulePage(ArchiveModel):
    items: list[RulePublic]
    next_cursor: uuid.UUID | None


class LockPublic(ArchiveModel):
    rule_id: uuid.UUID
    dataset_id: uuid.UUID
    site: str
    state: LockState
    created_at: datetime


class LockPage(ArchiveModel):
    items: list[LockPublic]
    next_cursor: str | None


class TransferPublic(ArchiveModel):
    id: int
    dataset_id: uuid.UUID
    destination: str
    source: str | None
    state: TransferState
    priority: int
    attempts: int
    last_error: str | None
    bytes: int | None
    next_attempt_at: datetime
    queued_at: datetime
    started_at: datetime | None
    copied_at: datetime | None
    registered_at: datetime | None
    done_at: datetime | None


class TransferPage(ArchiveModel):
    items: list[TransferPublic]
    next_cursor: int | None


class SiteStatusPublic(ArchiveModel):
    name: str
    labels: dict[str, str]
    in_maintenance: bool
    storage: str
    archive_url: str | None
    paused: bool = Field(description="Transfers to it wait: it failed repeatedly and is being probed.")
    paused_reason: str | None
    active: int = Field(description="Transfers into it now.")


class TokenCreate(ArchiveModel):
    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.\-]+$")
    admin: bool = False
    reader: bool = Field(default=False, description="Reads everything, changes nothing (the console's token).")

    @field_validator("reader")
    @classmethod
    def _reader_is_not_admin(cls, reader: bool, info: ValidationInfo) -> bool:
        if reader and info.data.get("admin"):
            raise ValueError("a reader token cannot also be an admin token")
        return reader


class TokenPublic(ArchiveModel):
    name: str
    admin: bool
    reader: bool = False
    created_at: datetime


class TokenCreated(TokenPublic):
    token: str = Field(description="The bearer token; shown once, stored only as a hash.")

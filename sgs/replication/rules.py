"""Which datasets a replication rule selects: a dataset type, RUN collections (names or glob patterns) and a
dimension expression, matched against each registered dataset as its event arrives."""

from __future__ import annotations

import fnmatch
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from sgs.model.dataset import DimensionUniverse, DimensionValue

if TYPE_CHECKING:
    from sgs.expression.dimensions import DataIdMatcher

GLOB_CHARACTERS = frozenset("*?[")
COLLECTION_PATTERN_RE = r"^[A-Za-z0-9_*?\[][A-Za-z0-9_.\-/*?\[\]]*$"


class Grouping(StrEnum):
    ALL = "all"
    """All of the rule's datasets go to the same Sites (one choice for the rule, like Rucio's ALL)."""
    DATASET = "dataset"
    """Each dataset's Sites are chosen on its own (spread by weight and free storage)."""


class RuleState(StrEnum):
    OK = "OK"
    """Every selected dataset has its copies, verified."""
    REPLICATING = "REPLICATING"
    """Copies are being made (or datasets already archived are still being evaluated)."""
    STUCK = "STUCK"
    """A copy keeps failing, or the rule cannot be met as asked; the rule's reason says which and why."""
    SUSPENDED = "SUSPENDED"
    """Nothing is copied for this rule until it is resumed; its locks still protect its copies."""


class LockState(StrEnum):
    OK = "OK"
    REPLICATING = "REPLICATING"
    STUCK = "STUCK"


class TransferState(StrEnum):
    QUEUED = "QUEUED"
    """Waiting for a worker (also between retries: see next_attempt_at and last_error)."""
    ACTIVE = "ACTIVE"
    """A worker is copying or verifying it."""
    DONE = "DONE"
    """Copied, verified and registered as available at the destination."""
    STUCK = "STUCK"
    """Failed repeatedly; retried slowly, with the last error kept."""
    CANCELLED = "CANCELLED"
    """No rule needs the copy any more."""


def is_glob(pattern: str) -> bool:
    return any(character in GLOB_CHARACTERS for character in pattern)


def glob_prefix(pattern: str) -> str:
    """The literal start of a pattern (to narrow a listing of collections before matching)."""
    return re.split(r"[*?\[]", pattern, maxsplit=1)[0]


@dataclass(frozen=True)
class Selector:
    dataset_type: str | None = None
    collections: tuple[str, ...] = ()
    where: str = ""
    dataset_ids: tuple[uuid.UUID, ...] = ()
    """Exactly these datasets (a Run's stage-in): then the other three stay unset."""

    def compile(self, universe: DimensionUniverse, allowed: Sequence[str] | None = None) -> CompiledSelector:
        """Checks the expression against the universe (ExpressionError) and returns the matcher."""
        # Imported here: the expression module loads astropy (HEALPix), which a transfer worker never needs.
        from sgs.expression.dimensions import compile_matcher

        return CompiledSelector(self, compile_matcher(self.where, universe, allowed), frozenset(self.dataset_ids))


@dataclass(frozen=True)
class CompiledSelector:
    selector: Selector
    where: DataIdMatcher = field(repr=False)
    ids: frozenset[uuid.UUID] = field(default=frozenset(), repr=False)

    def matches_collection(self, run: str) -> bool:
        patterns = self.selector.collections
        return not patterns or any(fnmatch.fnmatchcase(run, p) if is_glob(p) else run == p for p in patterns)

    def matches(
        self, dataset_type: str, run: str, data_id: Mapping[str, DimensionValue], dataset_id: uuid.UUID | None = None
    ) -> bool:
        if self.ids:
            return dataset_id in self.ids
        wanted_type = self.selector.dataset_type
        return (
            (wanted_type is None or wanted_type == dataset_type)
            and self.matches_collection(run)
            and self.where(data_id)
        )

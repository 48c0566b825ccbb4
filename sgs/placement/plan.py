"""What the solver takes (a request) and gives (a plan), and the plan's file form.

A plan file is CSV, ``dimension,value,primary,secondary``, observations then tiles, each sorted by value: the
same request gives the same bytes, and ``sgs placement diff`` compares two of them.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from numpy.typing import NDArray

from sgs.model.placement import PlacementPolicy
from sgs.placement.sites import PlacementSite, check_sites
from sgs.placement.survey import Survey

Pair = tuple[str, str | None]


class PlanError(ValueError):
    """The request cannot be planned; the message names the field."""


@dataclass(frozen=True)
class Assignments:
    """A plan as names: observation id / tile id -> (primary, secondary)."""

    observations: Mapping[int, Pair] = field(default_factory=dict)
    tiles: Mapping[int, Pair] = field(default_factory=dict)


@dataclass(frozen=True)
class PlanRequest:
    survey: Survey
    sites: Sequence[PlacementSite]
    start: datetime
    end: datetime
    policy: PlacementPolicy = field(default_factory=PlacementPolicy)
    previous: Assignments | None = None
    frozen: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            if getattr(self, name).tzinfo is None:
                raise PlanError(f"horizon.{name}: needs a time zone")
        if self.end <= self.start:
            raise PlanError(f"horizon.end: {self.end.isoformat()} is not after horizon.start {self.start.isoformat()}")
        check_sites(self.sites)


def check_horizon(end: datetime, now: datetime, field_name: str = "horizon.end") -> None:
    """Refuse a horizon already over (the caller passes the clock: the solver reads none)."""
    if end <= now:
        raise PlanError(f"{field_name}: {end.isoformat()} is in the past (now {now.isoformat()})")


@dataclass(frozen=True)
class Plan:
    sites: tuple[str, ...]
    obs_ids: NDArray[np.int64]
    obs_primary: NDArray[np.int64]  # index into sites
    obs_secondary: NDArray[np.int64]  # index into sites, -1 for none
    tile_ids: NDArray[np.int64]
    tile_primary: NDArray[np.int64]
    tile_secondary: NDArray[np.int64]

    def _name(self, index: int) -> str | None:
        return self.sites[index] if index >= 0 else None

    def assignments(self) -> Assignments:
        obs = {
            int(i): (self.sites[p], self._name(s))
            for i, p, s in zip(
                self.obs_ids.tolist(), self.obs_primary.tolist(), self.obs_secondary.tolist(), strict=True
            )
        }
        tiles = {
            int(i): (self.sites[p], self._name(s))
            for i, p, s in zip(
                self.tile_ids.tolist(), self.tile_primary.tolist(), self.tile_secondary.tolist(), strict=True
            )
        }
        return Assignments(obs, tiles)

    def to_csv(self) -> str:
        return assignments_to_csv(self.assignments())

    def digest(self) -> str:
        return hashlib.sha256(self.to_csv().encode()).hexdigest()


def assignments_to_csv(assignments: Assignments) -> str:
    out = io.StringIO()
    out.write("dimension,value,primary,secondary\n")
    for dimension, table in (("observation", assignments.observations), ("tile", assignments.tiles)):
        for value in sorted(table):
            primary, secondary = table[value]
            out.write(f"{dimension},{value},{primary},{secondary or ''}\n")
    return out.getvalue()


def read_plan(text: str) -> Assignments:
    """A plan file back into names, refused naming the line on a bad row or a repeated value."""
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or set(reader.fieldnames) < {"dimension", "value", "primary"}:
        raise PlanError("line 1: header: expected dimension,value,primary,secondary")
    tables: dict[str, dict[int, Pair]] = {"observation": {}, "tile": {}}
    for record in reader:
        line = reader.line_num
        dimension = record.get("dimension") or ""
        if dimension not in tables:
            raise PlanError(f"line {line}: dimension: {dimension!r} is neither observation nor tile")
        try:
            value = int(record.get("value") or "")
        except ValueError as error:
            raise PlanError(f"line {line}: value: not an integer") from error
        primary, secondary = record.get("primary") or "", record.get("secondary") or None
        if not primary:
            raise PlanError(f"line {line}: primary: empty")
        if secondary == primary:
            raise PlanError(f"line {line}: secondary: equals primary {primary}")
        if value in tables[dimension]:
            raise PlanError(f"line {line}: value: {dimension} {value} appears twice")
        tables[dimension][value] = (primary, secondary)
    return Assignments(tables["observation"], tables["tile"])

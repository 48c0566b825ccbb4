"""The DataPlacement resource: which Site is primary and secondary for each observation/tile (Euclid COORS).

Placement is planned ahead for the coming months: shares follow each Site's size (cores, storage), arrivals
are spread evenly in time, tiles stay together (MER coherence), and maintenance windows are avoided.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import ClassVar, Self

from pydantic import Field, model_validator

from sgs.model.base import Condition, KubeObject, PrinterColumn, SgsModel


class PlacementSource(SgsModel):
    """Where the planned observations come from: a survey plan file/URI or an archive query."""

    survey_plan: str | None = Field(default=None, description="URI of the survey plan (observations, tiles).")
    query: str | None = Field(default=None, description="Archive expression selecting observations.")

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.survey_plan is None) == (self.query is None):
            raise ValueError("give exactly one of surveyPlan or query")
        return self


class PlacementPolicy(SgsModel):
    copies: int = Field(default=2, ge=1, le=9, description="Primary plus secondary copies of each product.")
    weigh_by: list[str] = Field(default_factory=lambda: ["cores", "storage"], description="Site size measures.")
    keep_tiles_together: bool = Field(default=True, description="All observations of a tile at one primary.")
    linearise_in_time: bool = Field(default=True, description="Spread each Site's arrivals evenly in time.")
    avoid_maintenance: bool = Field(default=True)


class DataPlacementSpec(SgsModel):
    sites: list[str] = Field(min_length=1, description="Sites taking part (names of Site objects).")
    window_start: datetime = Field(description="Start of the planned period.")
    window_end: datetime = Field(description="End of the planned period (typically 2-3 months later).")
    source: PlacementSource
    policy: PlacementPolicy = Field(default_factory=PlacementPolicy)

    @model_validator(mode="after")
    def _window(self) -> Self:
        if self.window_end <= self.window_start:
            raise ValueError("windowEnd must be after windowStart")
        return self


class PlacementPhase(StrEnum):
    PENDING = "Pending"
    PLANNED = "Planned"
    FAILED = "Failed"


class SiteShare(SgsModel):
    site: str
    primary: int = 0
    secondary: int = 0


class DataPlacementStatus(SgsModel):
    phase: PlacementPhase = Field(default=PlacementPhase.PENDING)
    observations: int | None = None
    shares: list[SiteShare] = Field(default_factory=list, max_length=64)
    churn: float | None = Field(default=None, description="Share of assignments changed by the last re-plan.")
    planned_at: datetime | None = None
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)


class DataPlacement(KubeObject):
    """Assignment of observations/tiles to a primary and secondary Site for a planning window."""

    kind: str = "DataPlacement"
    spec: DataPlacementSpec
    status: DataPlacementStatus | None = None

    plural: ClassVar[str] = "dataplacements"
    short_names: ClassVar[tuple[str, ...]] = ("dp",)
    printer_columns: ClassVar[tuple[PrinterColumn, ...]] = (
        PrinterColumn(name="Sites", type="string", json_path=".spec.sites"),
        PrinterColumn(name="Observations", type="integer", json_path=".status.observations"),
        PrinterColumn(name="Phase", type="string", json_path=".status.phase"),
        PrinterColumn(name="Age", type="date", json_path=".metadata.creationTimestamp"),
    )

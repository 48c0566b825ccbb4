"""The DataPlacement resource: which Site is primary and secondary for each observation/tile (Euclid COORS).

Placement is planned ahead for the coming months: shares follow each Site's size (cores, storage), arrivals
are spread evenly in time, tiles stay together (MER coherence), and maintenance windows are avoided. The solver
(`sgs.placement`) reads the policy below; the operator writes the assignments to the archive and a summary here.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import ClassVar, Self

from pydantic import Field, model_validator

from sgs.model.base import Condition, KubeObject, PrinterColumn, SgsModel


class PlacementSource(SgsModel):
    """Where the planned observations come from: a survey plan file/URI or an archive query."""

    survey_plan: str | None = Field(
        default=None,
        description="Survey plan (CSV, YAML or JSON): a path or file:// / http(s):// URL under a root the operator "
        "allows (SGS_OPERATOR_SURVEY_ROOTS).",
    )
    query: str | None = Field(
        default=None, description="Archive expression selecting observations (not supported by the operator yet)."
    )

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.survey_plan is None) == (self.query is None):
            raise ValueError("give exactly one of surveyPlan or query")
        return self


class PlacementWeights(SgsModel):
    """Relative weights of the solver's objective terms (each term is normalised to 0-1 first)."""

    window_share: float = Field(default=4.0, ge=0, description="Share error in each time window.")
    cumulative_share: float = Field(default=4.0, ge=0, description="Cumulative share error (drives catch-up).")
    gap: float = Field(default=1.0, ge=0, description="Time windows of maxGapDays in which a Site gets nothing.")
    copies: float = Field(default=12.0, ge=0, description="(observation, tile) pairs copied to another Site.")
    split_tiles: float = Field(default=4.0, ge=0, description="Tiles whose observations are not all at one Site.")
    churn: float = Field(default=8.0, ge=0, description="Observations moved from the previous plan.")
    external: float = Field(default=0.5, ge=0, description="Observations at a Site lacking their ground data.")


class PlacementPolicy(SgsModel):
    copies: int = Field(default=2, ge=1, le=2, description="1 = primary only; 2 = primary plus a secondary Site.")
    weigh_by: list[str] = Field(
        default_factory=lambda: ["cores", "storage"],
        description="Site size measures (cores, storage, gpus) multiplied by each Site's weight; empty = weight only.",
    )
    keep_tiles_together: bool = Field(default=True, description="Place HEALPix patches of tiles as one unit.")
    linearise_in_time: bool = Field(default=True, description="Spread each Site's arrivals evenly in time.")
    avoid_maintenance: bool = Field(default=True, description="Nothing arrives at a Site during its maintenance.")
    patch_order: int = Field(default=4, ge=0, le=29, description="HEALPix order of the coarsest placement unit.")
    max_unit_observations: int = Field(
        default=40, ge=1, le=100_000, description="A patch holding more observations is split into its 4 children."
    )
    segment_days: float = Field(default=30.0, gt=0, description="Longest time span of one placement unit.")
    window_days: float = Field(default=30.0, gt=0, description="Window of the per-window share target.")
    max_gap_days: float = Field(default=3.0, gt=0, description="Longest wanted gap without new data at a Site.")
    recovery_days: float = Field(
        default=60.0, ge=0, description="After a maintenance, time to win the cumulative share back (reported)."
    )
    refine_passes: int = Field(default=2, ge=0, le=50, description="Local-search passes over the units.")
    swap_budget: int = Field(
        default=400,
        ge=0,
        le=1_000_000,
        description="Unit swaps tried per pass (each unit with its next swapBudget/units units in time order).",
    )
    weights: PlacementWeights = Field(default_factory=PlacementWeights)


class SiteSelector(SgsModel):
    match_labels: dict[str, str] = Field(default_factory=dict, description="Labels every chosen Site carries.")


class DataPlacementSpec(SgsModel):
    sites: list[str] = Field(default_factory=list, description="Sites taking part (names of Site objects).")
    site_selector: SiteSelector | None = Field(
        default=None, description="Sites taking part, by label (instead of, or as well as, names)."
    )
    window_start: datetime = Field(description="Start of the planned period (the horizon).")
    window_end: datetime = Field(description="End of the planned period (typically 2-3 months later).")
    source: PlacementSource
    policy: PlacementPolicy = Field(default_factory=PlacementPolicy)
    frozen_before: datetime | None = Field(
        default=None,
        description="Observations planned before this time are frozen too (besides those the archive has data for).",
    )

    @model_validator(mode="after")
    def _window(self) -> Self:
        if self.window_end <= self.window_start:
            raise ValueError("windowEnd must be after windowStart")
        if not self.sites and self.site_selector is None:
            raise ValueError("give sites or siteSelector")
        return self


class PlacementPhase(StrEnum):
    PENDING = "Pending"
    PLANNED = "Planned"
    FAILED = "Failed"


class SiteShare(SgsModel):
    site: str
    primary: int = 0
    secondary: int = 0
    target: float | None = Field(default=None, description="Target share of primaries (0-1).")
    share: float | None = Field(default=None, description="Planned share of primaries (0-1).")
    worst_window_error: float | None = Field(
        default=None, description="Largest |share - target| over the time windows outside maintenance (0-1)."
    )
    longest_gap_days: float | None = Field(default=None, description="Longest time without new data while up.")
    tiles: int | None = Field(default=None, description="Tiles whose primary is this Site.")


class DataPlacementStatus(SgsModel):
    phase: PlacementPhase = Field(default=PlacementPhase.PENDING)
    observations: int | None = None
    tiles: int | None = None
    frozen: int | None = Field(default=None, description="Observations kept where they were (already processed).")
    shares: list[SiteShare] = Field(default_factory=list, max_length=64)
    tiles_coherent: float | None = Field(default=None, description="Share of tiles entirely at their primary Site.")
    copied_pairs: float | None = Field(
        default=None, description="Share of (observation, tile) pairs whose observation is at another Site."
    )
    secondary_equals_primary: int | None = Field(
        default=None, description="Assignments violating secondary != primary."
    )
    churn: float | None = Field(default=None, description="Share of assignments changed by the last re-plan.")
    frozen_moved: int | None = Field(default=None, description="Frozen observations the last re-plan moved (0).")
    digest: str | None = Field(default=None, description="sha256 of the plan: same inputs, same digest.")
    rules: int | None = Field(default=None, description="Replication rules made for the plan.")
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
        PrinterColumn(name="Coherent", type="number", json_path=".status.tilesCoherent"),
        PrinterColumn(name="Churn", type="number", json_path=".status.churn"),
        PrinterColumn(name="Phase", type="string", json_path=".status.phase"),
        PrinterColumn(name="Age", type="date", json_path=".metadata.creationTimestamp"),
    )

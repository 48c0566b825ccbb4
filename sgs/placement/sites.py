"""The Sites a placement spreads data over: size, weight, maintenance windows, ground data they ingest.

A Site's target share of primaries is its weight times its size (the mean of its fraction of each measure in
``policy.weighBy``: cores, storage, gpus), normalised over the Sites. A Site with no capacity but a non-zero
weight is refused: it asks for data it has nowhere to put.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Self

import numpy as np
import yaml
from numpy.typing import NDArray
from pydantic import Field, ValidationError, model_validator

from sgs.model.base import SgsModel
from sgs.model.dataset import SITE_PATTERN
from sgs.model.placement import PlacementPolicy
from sgs.model.site import MaintenanceWindow, Site, SiteSpec

MEASURES = ("cores", "storage", "gpus")


class SitesError(ValueError):
    """The Sites cannot be used; the message names the Site (or line) and field."""


class PlacementSite(SgsModel):
    name: str = Field(min_length=1, max_length=63, pattern=SITE_PATTERN)
    cores: int = Field(default=0, ge=0)
    storage_tb: float = Field(default=0.0, ge=0)
    gpus: int = Field(default=0, ge=0)
    weight: float = Field(default=1.0, ge=0, le=1000)
    labels: dict[str, str] = Field(default_factory=dict)
    maintenance: list[MaintenanceWindow] = Field(default_factory=list)
    ingests: list[str] = Field(default_factory=list, description="Ground data sources this Site ingests.")

    @model_validator(mode="after")
    def _capacity_for_weight(self) -> Self:
        if self.weight > 0 and self.cores == 0 and self.storage_tb == 0 and self.gpus == 0:
            raise ValueError(f"capacity: zero cores and storage with weight {self.weight:g} > 0 (set weight: 0)")
        return self

    def measure(self, name: str) -> float:
        return {"cores": float(self.cores), "storage": self.storage_tb, "gpus": float(self.gpus)}[name]

    @classmethod
    def from_site(cls, name: str, spec: SiteSpec, labels: dict[str, str] | None = None) -> PlacementSite:
        return cls(
            name=name,
            cores=spec.capacity.cores,
            storage_tb=spec.capacity.storage_tb,
            gpus=spec.capacity.gpus,
            weight=spec.weight,
            labels=labels or {},
            maintenance=list(spec.maintenance),
            ingests=list(spec.ingests),
        )


def _describe(error: ValidationError) -> str:
    issue = error.errors()[0]
    field = ".".join(str(p) for p in issue["loc"])
    message = str(issue["msg"]).removeprefix("Value error, ")
    return f"{field}: {message}" if field else message  # a whole-Site check names its field itself


def site_from_data(data: Any, at: str) -> PlacementSite:
    """A Site from a Site manifest (``kind: Site``) or a short entry (``name, cores, storageTb, ...``)."""
    try:
        if isinstance(data, dict) and data.get("kind") == "Site":
            site = Site.model_validate(data)
            return PlacementSite.from_site(site.metadata.name, site.spec, site.metadata.labels)
        return PlacementSite.model_validate(data)
    except ValidationError as error:
        name = data.get("name") or (data.get("metadata") or {}).get("name") if isinstance(data, dict) else None
        raise SitesError(f"{at}{f' ({name})' if name else ''}: {_describe(error)}") from error


def read_sites(text: str) -> list[PlacementSite]:
    """A YAML list (or ``---``-separated documents) of Sites, refused naming the line and field."""
    loader = yaml.SafeLoader(text)
    found: list[PlacementSite] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            items = node.value if isinstance(node, yaml.SequenceNode) else [node]
            for item in items:
                kind = next(
                    (v.value for k, v in getattr(item, "value", []) if getattr(k, "value", None) == "kind"), None
                )
                if kind == "Secret":  # a storage Sites file also carries the Sites' credentials: not needed here
                    continue
                found.append(
                    site_from_data(loader.construct_object(item, deep=True), f"line {item.start_mark.line + 1}")
                )
    except yaml.YAMLError as error:
        raise SitesError(f"not YAML: {error}") from error
    finally:
        loader.dispose()
    check_sites(found)
    return found


def check_sites(sites: Sequence[PlacementSite]) -> None:
    if not sites:
        raise SitesError("sites: none given")
    seen: set[str] = set()
    for site in sites:
        if site.name in seen:
            raise SitesError(f"sites: {site.name} is listed twice")
        seen.add(site.name)


def target_shares(sites: Sequence[PlacementSite], policy: PlacementPolicy) -> NDArray[np.float64]:
    """Each Site's target share of primaries: weight x size, normalised."""
    unknown = [m for m in policy.weigh_by if m not in MEASURES]
    if unknown:
        raise SitesError(f"policy.weighBy: unknown measure {unknown[0]!r} (use {', '.join(MEASURES)})")
    size = np.ones(len(sites))
    if policy.weigh_by:
        fractions = []
        for measure in policy.weigh_by:
            values = np.array([s.measure(measure) for s in sites], dtype=np.float64)
            total = values.sum()
            fractions.append(values / total if total > 0 else np.zeros_like(values))
        size = np.mean(fractions, axis=0)
    raw = np.array([s.weight for s in sites], dtype=np.float64) * size
    for site, value in zip(sites, raw, strict=True):
        if site.weight > 0 and value == 0:
            raise SitesError(
                f"sites: {site.name}: capacity: no {' or '.join(policy.weigh_by)} but weight {site.weight:g} > 0"
            )
    if raw.sum() <= 0:
        raise SitesError("sites: every Site has weight 0")
    shares: NDArray[np.float64] = raw / raw.sum()
    return shares

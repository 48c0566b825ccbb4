"""Datasets: the dimension universe, data IDs, dataset types, collections, lineage and placement.

The vocabulary follows the Butler registry (dimensions, data IDs, RUN/TAGGED/CHAINED collections); where the
bytes are is in :mod:`sgs.model.replica`. Everything here is pure: validation and identity rules that the
archive service, the transfer service and the local executor must agree on.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from enum import StrEnum
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, model_validator

NAME_PATTERN = r"^[a-z][a-z0-9_]{0,30}$"
DATASET_TYPE_PATTERN = r"^[A-Za-z][A-Za-z0-9_.]{0,127}$"
COLLECTION_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*(/[A-Za-z0-9_][A-Za-z0-9_.\-]*)*$"
SITE_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
MAX_STRING_KEY = 256
MAX_INT_KEY = 2**63 - 1

# Dataset ids derived from (type, data ID, run) are stable across re-ingests: the namespace must never change.
DATASET_ID_NAMESPACE = uuid.UUID("9c1b7a1e-5b7e-4d0c-8f53-2b5e0f6c2a11")

DimensionValue = StrictInt | StrictStr
DataId = dict[str, DimensionValue]
CollectionName = Annotated[str, Field(min_length=1, max_length=200, pattern=COLLECTION_PATTERN)]
SiteName = Annotated[str, Field(min_length=1, max_length=63, pattern=SITE_PATTERN)]


class ArchiveModel(BaseModel):
    """Base of the archive's models: snake_case on the wire (a REST API, not a CRD); unknown fields rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DataIdError(ValueError):
    """A data ID does not fit its dataset type; ``field`` names the offending dimension (or None)."""

    def __init__(self, field: str | None, reason: str) -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.field = field
        self.reason = reason


# --------------------------------------------------------------------------------------------------------------
# Dimension universe


class DimensionKeyType(StrEnum):
    INT = "int"
    STRING = "string"


class DimensionElement(ArchiveModel):
    """One dimension: its key type and its relations to the others.

    ``requires``: dimensions that must accompany this one in any data ID (an exposure is only unique within
    its instrument). ``implies``: dimensions whose value follows from this one (an exposure was taken in one
    band); they may be given with the data ID, are stored and queryable, but are not part of its identity.
    ``healpix_order`` marks a sky pixelization dimension (nested HEALPix at that order) usable in region queries.
    """

    name: str = Field(pattern=NAME_PATTERN)
    key_type: DimensionKeyType
    max_length: int | None = Field(default=None, ge=1, le=MAX_STRING_KEY)
    requires: tuple[str, ...] = ()
    implies: tuple[str, ...] = ()
    healpix_order: int | None = Field(default=None, ge=0, le=29)
    doc: str = ""

    @model_validator(mode="after")
    def _skypix_is_int(self) -> Self:
        if self.healpix_order is not None and self.key_type is not DimensionKeyType.INT:
            raise ValueError(f"dimension {self.name}: a HEALPix dimension must have key_type int")
        return self

    def check_value(self, value: object) -> DimensionValue:
        """The value, if it has this dimension's key type and range; DataIdError naming the dimension if not."""
        if self.key_type is DimensionKeyType.INT:
            if isinstance(value, bool) or not isinstance(value, int):
                raise DataIdError(self.name, f"must be an integer, got {type(value).__name__}")
            limit = 12 * 4**self.healpix_order - 1 if self.healpix_order is not None else MAX_INT_KEY
            if not 0 <= value <= limit:
                raise DataIdError(self.name, f"must be between 0 and {limit}, got {value}")
            return value
        if not isinstance(value, str):
            raise DataIdError(self.name, f"must be a string, got {type(value).__name__}")
        max_length = self.max_length or MAX_STRING_KEY
        if not 0 < len(value) <= max_length:
            raise DataIdError(self.name, f"must be 1 to {max_length} characters long")
        if "\x00" in value:
            raise DataIdError(self.name, "must not contain NUL characters")
        return value


class DimensionUniverse(ArchiveModel):
    """All dimensions known to an archive, loaded from data (``dimensions.yaml``), never hard-coded."""

    namespace: str = Field(pattern=NAME_PATTERN)
    version: int = Field(ge=0)
    elements: dict[str, DimensionElement]

    @model_validator(mode="before")
    @classmethod
    def _names_from_keys(cls, data: object) -> object:
        # In YAML each element is keyed by its name; repeating the name inside would be noise.
        if isinstance(data, dict) and isinstance(data.get("elements"), dict):
            elements = {
                key: {"name": key, **value} if isinstance(value, dict) and "name" not in value else value
                for key, value in data["elements"].items()
            }
            return {**data, "elements": elements}
        return data

    @model_validator(mode="after")
    def _relations_are_consistent(self) -> Self:
        for name, element in self.elements.items():
            if element.name != name:
                raise ValueError(f"elements.{name}: key and name ({element.name}) differ")
            for relation in ("requires", "implies"):
                for other in getattr(element, relation):
                    if other not in self.elements:
                        raise ValueError(f"elements.{name}.{relation}: unknown dimension {other!r}")
                    if other == name:
                        raise ValueError(f"elements.{name}.{relation}: a dimension cannot relate to itself")
        for name in self.elements:
            self._check_no_cycle(name, ())
        return self

    def _check_no_cycle(self, name: str, path: tuple[str, ...]) -> None:
        if name in path:
            raise ValueError(f"elements: 'requires' cycle {' -> '.join((*path, name))}")
        for other in self.elements[name].requires:
            self._check_no_cycle(other, (*path, name))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.elements)

    def element(self, name: str) -> DimensionElement:
        try:
            return self.elements[name]
        except KeyError:
            raise DataIdError(name, f"unknown dimension (known: {', '.join(self.elements)})") from None

    def required_closure(self, names: Iterable[str]) -> tuple[str, ...]:
        """The given dimensions plus everything they require, in universe order."""
        found: set[str] = set()
        stack = list(names)
        while stack:
            name = stack.pop()
            if name not in found:
                found.add(name)
                stack.extend(self.element(name).requires)
        return tuple(n for n in self.elements if n in found)

    def implied_closure(self, required: Iterable[str]) -> tuple[str, ...]:
        """Dimensions implied (directly or through other implied ones) by ``required``, minus those."""
        required_set = set(required)
        found: set[str] = set()
        stack = [i for r in required_set for i in self.element(r).implies]
        while stack:
            name = stack.pop()
            if name not in found and name not in required_set:
                found.add(name)
                stack.extend(self.element(name).implies)
        return tuple(n for n in self.elements if n in found)

    def skypix_dimensions(self) -> tuple[DimensionElement, ...]:
        return tuple(e for e in self.elements.values() if e.healpix_order is not None)


# --------------------------------------------------------------------------------------------------------------
# Dataset types and datasets


class DatasetType(ArchiveModel):
    """A kind of data product: its name, the dimensions that identify one, and how it is stored."""

    name: str = Field(pattern=DATASET_TYPE_PATTERN)
    dimensions: tuple[str, ...] = Field(max_length=32)
    storage_class: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z][A-Za-z0-9_.]*$")
    doc: str = Field(default="", max_length=4096)

    def normalized(self, universe: DimensionUniverse) -> DatasetType:
        """The same type with its dimensions expanded by 'requires' and put in universe order.

        Raises DataIdError naming ``dimensions[i]`` for an unknown dimension.
        """
        for index, name in enumerate(self.dimensions):
            if name not in universe.elements:
                raise DataIdError(f"dimensions[{index}]", f"unknown dimension {name!r}")
        return self.model_copy(update={"dimensions": universe.required_closure(self.dimensions)})

    def implied(self, universe: DimensionUniverse) -> tuple[str, ...]:
        return universe.implied_closure(self.dimensions)

    def validate_data_id(
        self,
        universe: DimensionUniverse,
        data_id: Mapping[str, object],
        implied: AbstractSet[str] | None = None,
    ) -> DataId:
        """The data ID checked against this (normalized) type: every required key, only known keys, right types.

        Returns required and implied values in universe order. Raises DataIdError naming the dimension.
        ``implied`` may be passed precomputed (bulk ingest validates many data IDs of one type).
        """
        if implied is None:
            implied = set(self.implied(universe))
        for key in data_id:
            if key not in self.dimensions and key not in implied:
                if key not in universe.elements:
                    raise DataIdError(key, "unknown dimension")
                raise DataIdError(key, f"not a dimension of dataset type {self.name}")
        checked: DataId = {}
        for name, element in universe.elements.items():
            if name in data_id:
                checked[name] = element.check_value(data_id[name])
            elif name in self.dimensions:
                raise DataIdError(name, f"required by dataset type {self.name} but missing")
        return checked

    def data_id_key(self, data_id: Mapping[str, DimensionValue]) -> str:
        """Canonical text of the identifying part of a data ID (its required dimensions), for unique keys."""
        # Default json.dumps arguments keep the C encoder's fast path (this runs once per ingested dataset).
        return json.dumps([data_id[name] for name in self.dimensions])


def dataset_uuid(dataset_type: str, data_id_key: str, run: str) -> uuid.UUID:
    """The id a dataset gets when the producer supplies none: same (type, data ID, run) gives the same id."""
    return uuid.uuid5(DATASET_ID_NAMESPACE, f"{dataset_type}\x1f{data_id_key}\x1f{run}")


class DatasetRef(ArchiveModel):
    """A resolved dataset: its id, type, data ID and the RUN collection it was produced in."""

    id: uuid.UUID
    dataset_type: str
    data_id: DataId
    run: str
    task: str | None = None


# --------------------------------------------------------------------------------------------------------------
# Collections


class CollectionType(StrEnum):
    RUN = "RUN"
    """Where datasets are born: every dataset belongs to exactly one RUN collection, for ever; at most one
    dataset per (dataset type, data ID); a RUN holding datasets cannot be removed."""

    TAGGED = "TAGGED"
    """A hand-picked set of existing datasets, editable; still at most one dataset per (type, data ID)."""

    CHAINED = "CHAINED"
    """An ordered search path over other collections (no datasets of its own, no cycles); a lookup returns,
    for each (type, data ID), the dataset from the first child that has one."""


class Collection(ArchiveModel):
    name: CollectionName
    type: CollectionType
    doc: str = Field(default="", max_length=4096)
    children: tuple[CollectionName, ...] = Field(default=(), max_length=1000)

    @model_validator(mode="after")
    def _only_chains_have_children(self) -> Self:
        if self.children and self.type is not CollectionType.CHAINED:
            raise ValueError(f"children: only a CHAINED collection has children, not a {self.type} one")
        return self


# --------------------------------------------------------------------------------------------------------------
# Lineage and placement


class Lineage(ArchiveModel):
    """How a dataset was made: its exact inputs and the executable, image, configuration, Run and attempt."""

    dataset_id: uuid.UUID
    inputs: tuple[uuid.UUID, ...] = Field(default=(), max_length=10_000)
    executable: str = Field(min_length=1, max_length=256)
    image: str | None = Field(default=None, max_length=512)
    version: str = Field(min_length=1, max_length=128)
    config_digest: str = Field(min_length=1, max_length=128)
    pipeline_run: str | None = Field(default=None, max_length=253)
    task: str | None = Field(default=None, max_length=253)
    attempt: int = Field(default=0, ge=0, le=1000)


class PlacementDimension(StrEnum):
    OBSERVATION = "observation"
    TILE = "tile"


class Placement(ArchiveModel):
    """Which Sites hold an observation or tile: primary first, secondary as the backup copy."""

    dimension: PlacementDimension
    value: StrictInt = Field(ge=0, le=MAX_INT_KEY)
    primary_site: SiteName
    secondary_site: SiteName | None = None

    @model_validator(mode="after")
    def _distinct_sites(self) -> Self:
        if self.secondary_site == self.primary_site:
            raise ValueError("secondary_site: must differ from primary_site")
        return self


def is_valid_collection_name(name: str) -> bool:
    return 0 < len(name) <= 200 and re.fullmatch(COLLECTION_PATTERN, name) is not None

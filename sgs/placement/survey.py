"""A survey plan: the observations to place, as column arrays, and its readers (CSV, YAML, JSON text).

45k observations are held as numpy columns rather than 45k objects: the solver works on arrays, and building
objects would cost more than planning. Readers take text (no file access here) and refuse bad input naming the
line and field: a duplicate observation id, a time without a zone, a tile outside the HEALPix order.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import yaml
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

DEFAULT_TILE_ORDER = 7  # nested HEALPix order 7: 0.21 deg² pixels, the size of a Euclid MER tile
MAX_TILES_PER_OBSERVATION = 256


class SurveyError(ValueError):
    """The survey plan cannot be used; the message names the line (or item) and field."""


class ObservationRow(BaseModel):
    """One planned observation as written in a survey file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: int = Field(ge=0, le=2**63 - 1)
    time: datetime
    ra: float = Field(ge=0, lt=360)
    dec: float = Field(ge=-90, le=90)
    tiles: tuple[int, ...] = Field(min_length=1, max_length=MAX_TILES_PER_OBSERVATION)
    kind: str = Field(default="wide", min_length=1, max_length=32)
    needs: tuple[str, ...] = Field(default=(), max_length=16, description="Ground data sources it needs.")

    @field_validator("tiles")
    @classmethod
    def _distinct(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if len(set(value)) != len(value):
            raise ValueError("lists a tile twice")
        return value

    @field_validator("time")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("needs a time zone (e.g. 2027-03-01T04:00:00Z)")
        return value


@dataclass(frozen=True)
class Survey:
    """Observations sorted by (time, id); tiles of observation i are ``tile_ids[tile_ptr[i]:tile_ptr[i+1]]``."""

    ids: NDArray[np.int64]
    times: NDArray[np.int64]  # seconds since the Unix epoch, UTC
    ra: NDArray[np.float64]
    dec: NDArray[np.float64]
    tile_ptr: NDArray[np.int64]
    tile_ids: NDArray[np.int64]
    kinds: tuple[str, ...]
    needs: tuple[tuple[str, ...], ...]
    tile_order: int = DEFAULT_TILE_ORDER

    def __len__(self) -> int:
        return int(self.ids.size)

    @property
    def pair_obs(self) -> NDArray[np.int64]:
        """The observation index of each (observation, tile) pair, aligned with ``tile_ids``."""
        return np.repeat(np.arange(len(self), dtype=np.int64), np.diff(self.tile_ptr))

    def pairs_of(self, rows: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """The (observation, tile) pairs of ``rows``: each pair's position in ``rows`` and its tile."""
        counts = np.diff(self.tile_ptr)[rows]
        owner = np.repeat(np.arange(rows.size, dtype=np.int64), counts)
        offsets = np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
        return owner, self.tile_ids[np.repeat(self.tile_ptr[rows], counts) + offsets]

    def tiles_of(self, index: int) -> tuple[int, ...]:
        return tuple(int(t) for t in self.tile_ids[self.tile_ptr[index] : self.tile_ptr[index + 1]])

    def row(self, index: int) -> ObservationRow:
        return ObservationRow(
            id=int(self.ids[index]),
            time=datetime.fromtimestamp(int(self.times[index]), UTC),
            ra=float(self.ra[index]),
            dec=float(self.dec[index]),
            tiles=self.tiles_of(index),
            kind=self.kinds[index],
            needs=self.needs[index],
        )

    def index_of(self) -> dict[int, int]:
        return {int(obs): i for i, obs in enumerate(self.ids)}


def build_survey(
    rows: Sequence[ObservationRow], tile_order: int = DEFAULT_TILE_ORDER, lines: Sequence[int] | None = None
) -> Survey:
    """Columns from rows, refusing duplicate ids and tiles outside the order (naming the line when known)."""
    if not 0 <= tile_order <= 29:
        raise SurveyError(f"tileOrder: must be between 0 and 29, got {tile_order}")
    where = list(lines) if lines is not None else [i + 1 for i in range(len(rows))]
    label = "line" if lines is not None else "observation"
    first: dict[int, int] = {}
    npix = 12 * 4**tile_order
    for row, at in zip(rows, where, strict=True):
        if row.id in first:
            raise SurveyError(f"{label} {at}: id: duplicate observation id {row.id} (first on {label} {first[row.id]})")
        first[row.id] = at
        bad = next((t for t in row.tiles if not 0 <= t < npix), None)
        if bad is not None:
            raise SurveyError(f"{label} {at}: tiles: {bad} is not a HEALPix pixel of order {tile_order}")
    times = np.array([int(r.time.timestamp()) for r in rows], dtype=np.int64)
    ids = np.array([r.id for r in rows], dtype=np.int64)
    order = np.lexsort((ids, times))
    ordered = [rows[i] for i in order]
    counts = np.array([len(r.tiles) for r in ordered], dtype=np.int64)
    ptr = np.zeros(len(ordered) + 1, dtype=np.int64)
    np.cumsum(counts, out=ptr[1:])
    tiles = np.fromiter((t for r in ordered for t in sorted(r.tiles)), dtype=np.int64, count=int(ptr[-1]))
    return Survey(
        ids=ids[order],
        times=times[order],
        ra=np.array([r.ra for r in ordered], dtype=np.float64),
        dec=np.array([r.dec for r in ordered], dtype=np.float64),
        tile_ptr=ptr,
        tile_ids=tiles,
        kinds=tuple(r.kind for r in ordered),
        needs=tuple(r.needs for r in ordered),
        tile_order=tile_order,
    )


def _row(data: Any, at: str) -> ObservationRow:
    try:
        return ObservationRow.model_validate(data)
    except ValidationError as error:
        issue = error.errors()[0]
        field = ".".join(str(part) for part in issue["loc"]) or "row"
        raise SurveyError(f"{at}: {field}: {issue['msg']}") from error


def _split_list(text: str) -> list[str]:
    return [part for part in text.replace(";", " ").split() if part]


def read_csv(text: str, tile_order: int = DEFAULT_TILE_ORDER) -> Survey:
    """``id,time,ra,dec,tiles[,kind][,needs]``; tiles and needs separated by spaces or ``;``."""
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in ("id", "time", "ra", "dec", "tiles") if c not in (reader.fieldnames or [])]
    if missing:
        raise SurveyError(f"line 1: header: missing column(s) {', '.join(missing)}")
    rows: list[ObservationRow] = []
    lines: list[int] = []
    for record in reader:
        line = reader.line_num
        if None in record:
            raise SurveyError(f"line {line}: more fields than the header has")
        data: dict[str, Any] = {k: v for k, v in record.items() if k in ObservationRow.model_fields and v != ""}
        data["tiles"] = _split_list(record.get("tiles") or "")
        if "needs" in data:
            data["needs"] = _split_list(data["needs"])
        rows.append(_row(data, f"line {line}"))
        lines.append(line)
    return build_survey(rows, tile_order, lines)


class _LineLoader(yaml.SafeLoader):
    """A safe loader that remembers the line of each observation mapping."""


def read_yaml(text: str) -> Survey:
    """``{tileOrder: 7, observations: [{id, time, ra, dec, tiles, kind, needs}, ...]}`` (JSON is YAML too)."""
    loader = _LineLoader(text)
    try:
        node = loader.get_single_node()
        if node is None or not isinstance(node, yaml.MappingNode):
            raise SurveyError("line 1: expected a mapping with 'observations' (and optionally 'tileOrder')")
        top: dict[str, yaml.Node] = {str(loader.construct_object(k)): v for k, v in node.value}
        unknown = sorted(set(top) - {"observations", "tileOrder"})
        if unknown:
            raise SurveyError(f"line {top[unknown[0]].start_mark.line + 1}: {unknown[0]}: unknown field")
        order_node = top.get("tileOrder")
        tile_order = int(loader.construct_object(order_node)) if order_node is not None else DEFAULT_TILE_ORDER
        items = top.get("observations")
        if not isinstance(items, yaml.SequenceNode):
            raise SurveyError("observations: expected a list")
        rows: list[ObservationRow] = []
        lines: list[int] = []
        for item in items.value:
            line = item.start_mark.line + 1
            rows.append(_row(loader.construct_object(item, deep=True), f"line {line}"))
            lines.append(line)
    except yaml.YAMLError as error:
        raise SurveyError(f"not YAML/JSON: {error}") from error
    finally:
        loader.dispose()
    return build_survey(rows, tile_order, lines)


def read_survey(text: str, name: str, tile_order: int = DEFAULT_TILE_ORDER) -> Survey:
    """By the name's suffix: ``.csv`` as CSV, ``.yaml``/``.yml``/``.json`` as YAML."""
    lowered = name.lower().split("?")[0]
    if lowered.endswith(".csv"):
        return read_csv(text, tile_order)
    if lowered.endswith((".yaml", ".yml", ".json")):
        return read_yaml(text)
    raise SurveyError(f"{name}: unknown survey format (use .csv, .yaml, .yml or .json)")


def to_rows(survey: Survey) -> Iterable[ObservationRow]:
    return (survey.row(i) for i in range(len(survey)))


def write_csv(survey: Survey) -> str:
    """The CSV form ``read_csv`` reads back (times to the second, coordinates to 1e-6 degree)."""
    out = io.StringIO()
    out.write("id,time,ra,dec,tiles,kind,needs\n")
    for i in range(len(survey)):
        when = datetime.fromtimestamp(int(survey.times[i]), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        tiles = " ".join(str(t) for t in survey.tiles_of(i))
        out.write(
            f"{survey.ids[i]},{when},{survey.ra[i]:.6f},{survey.dec[i]:.6f},{tiles},{survey.kinds[i]},"
            f"{' '.join(survey.needs[i])}\n"
        )
    return out.getvalue()


def write_json(survey: Survey) -> str:
    rows = [r.model_dump(mode="json") for r in to_rows(survey)]
    return json.dumps({"tileOrder": survey.tile_order, "observations": rows}, indent=1)

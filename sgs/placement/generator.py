"""A synthetic Euclid-like survey for tests and benches (made by code, never stored as data).

The shape follows the Euclid reference survey as far as placement cares:

* **Wide** fields (0.76 x 0.72 deg, ~0.55 deg²) tile the extragalactic sky: ecliptic latitude |b_ecl| >= 15 deg
  and galactic latitude |b| >= 30 deg, ~15,000 deg². The Sun constraint lets the telescope look ~90 deg from the
  Sun, so two windows (Sun + 90 deg, Sun - 90 deg) sweep ecliptic longitude at ~1 deg/day, one per hemisphere.
  Each hemisphere is cut into 6 latitude bands of equal field count, one swept per year in a random order: at any
  time the survey works along two thin stripes, which is what makes tile coherence and steady arrivals at every
  Site pull against each other.
* **Deep** fields (EDF-North 20 deg², EDF-Fornax 10 deg², EDF-South 23 deg²) are re-observed in passes (the
  whole field, ~1-2 days each) spread evenly over the survey; their tiles collect hundreds of observations.
* ~20 observations a day in all; observation ids are 1..N in time order.
* Tiles are nested HEALPix pixels of order 7 (0.21 deg², a MER tile's size); an observation overlaps the tiles
  under a 6 x 6 grid of points across its footprint (4-9 tiles).
* Ground data: observations at declination < -30 deg need ``des``, > +30 deg need ``unions``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import astropy.units as u
import numpy as np
from astropy_healpix import lonlat_to_healpix
from numpy.typing import NDArray

from sgs.model.site import MaintenanceWindow
from sgs.placement.sites import PlacementSite
from sgs.placement.survey import DEFAULT_TILE_ORDER, Survey

OBLIQUITY_DEG = 23.4393
GALACTIC_POLE_RADEC = (192.85948, 27.12825)
FOOTPRINT_DEG = (0.76, 0.72)  # along ecliptic longitude, latitude
FIELD_SPACING_DEG = 0.70  # fields overlap a little, as Euclid's do
SAMPLES = 6
DEEP_FIELDS = (("EDF-N", 0.0, 86.0, 20.0), ("EDF-F", 41.0, -45.0, 10.0), ("EDF-S", 30.0, -67.0, 23.0))
YEAR_DAYS = 365.25
SECONDS_PER_DAY = 86_400
DEFAULT_START = datetime(2027, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class _Fields:
    lon: NDArray[np.float64]  # ecliptic, degrees
    lat: NDArray[np.float64]


def _ecliptic_to_vectors(lon: NDArray[np.float64], lat: NDArray[np.float64]) -> NDArray[np.float64]:
    lam, bet = np.radians(lon), np.radians(lat)
    return np.stack([np.cos(bet) * np.cos(lam), np.cos(bet) * np.sin(lam), np.sin(bet)], axis=-1)


def _to_equatorial(vectors: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    eps = np.radians(OBLIQUITY_DEG)
    x, y, z = vectors[..., 0], vectors[..., 1], vectors[..., 2]
    ye, ze = y * np.cos(eps) - z * np.sin(eps), y * np.sin(eps) + z * np.cos(eps)
    ra = np.degrees(np.arctan2(ye, x)) % 360.0
    dec = np.degrees(np.arcsin(np.clip(ze, -1.0, 1.0)))
    return ra, dec


def _galactic_latitude(ra: NDArray[np.float64], dec: NDArray[np.float64]) -> NDArray[np.float64]:
    pra, pdec = np.radians(GALACTIC_POLE_RADEC[0]), np.radians(GALACTIC_POLE_RADEC[1])
    r, d = np.radians(ra), np.radians(dec)
    sin_b = np.sin(d) * np.sin(pdec) + np.cos(d) * np.cos(pdec) * np.cos(r - pra)
    return np.asarray(np.degrees(np.arcsin(np.clip(sin_b, -1.0, 1.0))), dtype=np.float64)


def _field_grid(spacing: float) -> _Fields:
    lons: list[NDArray[np.float64]] = []
    lats: list[NDArray[np.float64]] = []
    for row, lat in enumerate(np.arange(-90 + spacing / 2, 90, spacing)):
        count = max(1, round(360 * np.cos(np.radians(lat)) / spacing))
        lon = (np.arange(count) + 0.5 * (row % 2)) * 360.0 / count
        lons.append(lon)
        lats.append(np.full(count, lat))
    lon_all, lat_all = np.concatenate(lons), np.concatenate(lats)
    ra, dec = _to_equatorial(_ecliptic_to_vectors(lon_all, lat_all))
    keep = (np.abs(lat_all) >= 15.0) & (np.abs(_galactic_latitude(ra, dec)) >= 30.0)
    return _Fields(lon_all[keep], lat_all[keep])


def _wide_order(fields: _Fields, rng: np.random.Generator) -> NDArray[np.int64]:
    """Fields in survey order: per hemisphere 6 bands (equal counts), one band swept per year by its window."""
    sweep_time = np.zeros(fields.lon.size)
    for hemisphere, window in ((fields.lat >= 0, 90.0), (fields.lat < 0, -90.0)):
        members = np.flatnonzero(hemisphere)
        by_latitude = members[np.argsort(np.abs(fields.lat[members]), kind="stable")]
        years = rng.permutation(6)
        for band, chunk in enumerate(np.array_split(by_latitude, 6)):
            phase = ((fields.lon[chunk] - window) % 360.0) / 360.0
            sweep_time[chunk] = (years[band] + phase) * YEAR_DAYS + np.abs(fields.lat[chunk]) * 1e-3
    return np.argsort(sweep_time, kind="stable").astype(np.int64)


def _deep_pointings(lon: float, lat: float, area: float) -> _Fields:
    radius = np.sqrt(area / np.pi)
    steps = np.arange(-radius, radius + 1e-9, FIELD_SPACING_DEG)
    dx, dy = np.meshgrid(steps, steps)
    inside = dx**2 + dy**2 <= radius**2
    centre = _ecliptic_to_vectors(np.array([lon]), np.array([lat]))[0]
    vectors = _offset(centre[None, :], np.radians(dx[inside]), np.radians(dy[inside]))
    plon = np.degrees(np.arctan2(vectors[:, 1], vectors[:, 0])) % 360.0
    plat = np.degrees(np.arcsin(np.clip(vectors[:, 2], -1.0, 1.0)))
    return _Fields(plon, plat)


def _offset(centres: NDArray[np.float64], dx: NDArray[np.float64], dy: NDArray[np.float64]) -> NDArray[np.float64]:
    """Points dx (along longitude) and dy (along latitude) radians from each centre, on the sphere."""
    x, y, z = centres[..., 0], centres[..., 1], centres[..., 2]
    lam = np.arctan2(y, x)
    bet = np.arcsin(np.clip(z, -1.0, 1.0))
    east = np.stack([-np.sin(lam), np.cos(lam), np.zeros_like(lam)], axis=-1)
    north = np.stack([-np.sin(bet) * np.cos(lam), -np.sin(bet) * np.sin(lam), np.cos(bet)], axis=-1)
    points = centres + dx[..., None] * east + dy[..., None] * north
    normalised: NDArray[np.float64] = points / np.linalg.norm(points, axis=-1, keepdims=True)
    return normalised


def _tiles(lon: NDArray[np.float64], lat: NDArray[np.float64], order: int) -> list[NDArray[np.int64]]:
    grid = (np.arange(SAMPLES) + 0.5) / SAMPLES - 0.5
    gx, gy = np.meshgrid(np.radians(grid * FOOTPRINT_DEG[0]), np.radians(grid * FOOTPRINT_DEG[1]))
    centres = _ecliptic_to_vectors(lon, lat)
    points = _offset(centres[:, None, :], gx.ravel()[None, :], gy.ravel()[None, :])
    ra, dec = _to_equatorial(points)
    pixels = lonlat_to_healpix(ra.ravel() * u.deg, dec.ravel() * u.deg, 2**order, order="nested")
    per_obs = np.asarray(pixels, dtype=np.int64).reshape(lon.size, -1)
    return [np.unique(row) for row in per_obs]


def generate_survey(
    wide: int = 29_000,
    deep: int = 16_000,
    per_day: float = 20.0,
    seed: int = 1,
    start: datetime = DEFAULT_START,
    sky_fields: int | None = None,
    tile_order: int = DEFAULT_TILE_ORDER,
) -> Survey:
    """``wide`` + ``deep`` observations from ``start`` at ``per_day``; the field grid is sized for ``sky_fields``
    (default ``wide``), so a small ``wide`` takes the survey's first fields rather than a sparse sky."""
    rng = np.random.default_rng(seed)
    target = sky_fields or wide
    spacing = FIELD_SPACING_DEG
    fields = _field_grid(spacing)
    spacing *= float(np.sqrt(fields.lon.size / max(target, 1)))
    fields = _field_grid(spacing)
    order = _wide_order(fields, rng)[:wide]
    days = (wide + deep) / per_day
    wide_lon, wide_lat = fields.lon[order], fields.lat[order]
    wide_days = np.arange(order.size) * (days / max(order.size, 1))

    deep_lon: list[NDArray[np.float64]] = []
    deep_lat: list[NDArray[np.float64]] = []
    deep_days: list[NDArray[np.float64]] = []
    areas = np.array([f[3] for f in DEEP_FIELDS])
    counts = np.floor(deep * areas / areas.sum()).astype(int)
    counts[0] += deep - counts.sum()
    for (_, field_lon, field_lat, area), count, phase in zip(DEEP_FIELDS, counts, rng.uniform(0, 1, 3), strict=True):
        pointings = _deep_pointings(field_lon, field_lat, area)
        size = pointings.lon.size
        passes = int(np.ceil(count / size)) if count else 0
        index = np.arange(count)
        pass_no, within = index // size, index % size
        deep_lon.append(pointings.lon[within])
        deep_lat.append(pointings.lat[within])
        deep_days.append((pass_no + phase) * (days / max(passes, 1)) + within / per_day)

    lon = np.concatenate([wide_lon, *deep_lon])
    lat = np.concatenate([wide_lat, *deep_lat])
    when = np.concatenate([wide_days, *deep_days])
    kinds = ["wide"] * order.size + ["deep"] * int(sum(len(d) for d in deep_days))
    chrono = np.argsort(when, kind="stable")
    lon, lat, when = lon[chrono], lat[chrono], when[chrono]
    kinds = [kinds[i] for i in chrono]
    ra, dec = _to_equatorial(_ecliptic_to_vectors(lon, lat))
    tiles = _tiles(lon, lat, tile_order)
    ptr = np.zeros(len(tiles) + 1, dtype=np.int64)
    np.cumsum([t.size for t in tiles], out=ptr[1:])
    seconds = int(start.timestamp()) + np.round(when * SECONDS_PER_DAY).astype(np.int64)
    needs = tuple(("des",) if d < -30 else ("unions",) if d > 30 else () for d in dec)
    return Survey(
        ids=np.arange(1, lon.size + 1, dtype=np.int64),
        times=seconds,
        ra=np.round(ra, 6),
        dec=np.round(dec, 6),
        tile_ptr=ptr,
        tile_ids=np.concatenate(tiles) if tiles else np.zeros(0, dtype=np.int64),
        kinds=tuple(kinds),
        needs=needs,
        tile_order=tile_order,
    )


# Nine Euclid-like Science Data Centres: sizes made up, spread like the real ones (the largest ~5x the smallest).
EUCLID_SITES = (
    ("sdc-fr", 9000, 9000.0, ("unions",)),
    ("sdc-it", 7000, 7000.0, ()),
    ("sdc-de", 6500, 6000.0, ("des",)),
    ("sdc-es", 5000, 4500.0, ()),
    ("sdc-uk", 4500, 5000.0, ("unions",)),
    ("sdc-nl", 3000, 3500.0, ()),
    ("sdc-ch", 2500, 2500.0, ()),
    ("sdc-fi", 2000, 1500.0, ()),
    ("sdc-us", 1800, 2000.0, ("des",)),
)


def euclid_sites(
    count: int = 9, maintenance: dict[str, tuple[datetime, datetime]] | None = None
) -> list[PlacementSite]:
    """The first ``count`` Euclid-like Sites, with optional maintenance windows by Site name."""
    windows = maintenance or {}
    return [
        PlacementSite(
            name=name,
            cores=cores,
            storage_tb=storage,
            ingests=list(ingests),
            maintenance=[MaintenanceWindow(start=windows[name][0], end=windows[name][1])] if name in windows else [],
        )
        for name, cores, storage, ingests in EUCLID_SITES[:count]
    ]

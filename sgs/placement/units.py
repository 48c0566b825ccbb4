"""Placement units: HEALPix-nested patches of tiles, cut in time, that move between Sites as one.

An observation belongs to the patch (nested HEALPix pixel at ``policy.patchOrder``) under its pointing; the
observations of one patch are cut into segments where they are more than ``segmentDays`` apart or span more
than that, and a segment holding more than ``maxUnitObservations`` is split into the patch's four children,
down to the tile order. Segments are also cut where the set of Sites in maintenance changes. Whole patches
keep their inner tiles at one Site (MER coherence); cutting in time lets a deep field's passes, months apart,
go to different Sites when the shares ask for it, and lets maintenance forbid a Site for only the units it
overlaps.
"""

from __future__ import annotations

from dataclasses import dataclass

import astropy.units as u
import numpy as np
from astropy_healpix import lonlat_to_healpix
from numpy.typing import NDArray

SECONDS_PER_DAY = 86_400


@dataclass(frozen=True)
class Units:
    """``of_obs[i]`` is the unit of the i-th movable observation; units are numbered in time order."""

    of_obs: NDArray[np.int64]
    order: NDArray[np.int64]  # HEALPix order of each unit's patch
    patch: NDArray[np.int64]  # nested pixel of each unit's patch at that order
    first_time: NDArray[np.int64]

    @property
    def count(self) -> int:
        return int(self.order.size)


def home_pixels(ra: NDArray[np.float64], dec: NDArray[np.float64], order: int) -> NDArray[np.int64]:
    if ra.size == 0:
        return np.zeros(0, dtype=np.int64)
    pixels = lonlat_to_healpix(ra * u.deg, dec * u.deg, 2**order, order="nested")
    return np.asarray(pixels, dtype=np.int64)


def _segments(
    days: NDArray[np.float64], patch: NDArray[np.int64], phase: NDArray[np.int64], segment_days: float
) -> NDArray[np.int64]:
    """Segment number of each observation (inputs sorted by patch, then time)."""
    starts = np.ones(days.size, dtype=bool)
    starts[1:] = (patch[1:] != patch[:-1]) | (days[1:] - days[:-1] > segment_days) | (phase[1:] != phase[:-1])
    run = np.cumsum(starts) - 1
    run_start = days[np.flatnonzero(starts)][run]
    bucket = np.floor((days - run_start) / segment_days).astype(np.int64)
    new = starts.copy()
    new[1:] |= bucket[1:] != bucket[:-1]
    return np.cumsum(new).astype(np.int64) - 1


def build_units(
    times: NDArray[np.int64],
    home: NDArray[np.int64],
    home_order: int,
    patch_order: int,
    max_observations: int,
    segment_days: float,
    phase: NDArray[np.int64] | None = None,
) -> Units:
    """Units over observations with their times (s) and home pixels at ``home_order`` (the tile order).

    ``phase`` (e.g. which Sites are in maintenance at each observation's time) also cuts segments, so every
    unit is up or down at each Site throughout."""
    count = times.size
    of_obs = np.full(count, -1, dtype=np.int64)
    unit_order: list[NDArray[np.int64]] = []
    unit_patch: list[NDArray[np.int64]] = []
    unit_first: list[NDArray[np.int64]] = []
    unit_members: list[NDArray[np.int64]] = []
    pending = np.arange(count, dtype=np.int64)
    level = min(patch_order, home_order)
    days = times / SECONDS_PER_DAY
    phases = np.zeros(count, dtype=np.int64) if phase is None else phase
    while pending.size:
        patch = home[pending] >> (2 * (home_order - level))
        sort = np.lexsort((times[pending], patch))
        members, patch = pending[sort], patch[sort]
        segment = _segments(days[members], patch, phases[members], segment_days)
        sizes = np.bincount(segment)
        split = (sizes[segment] > max_observations) & (level < home_order)
        keep = ~split
        if keep.any():
            kept, kept_segment = members[keep], segment[keep]
            heads = np.flatnonzero(np.r_[True, kept_segment[1:] != kept_segment[:-1]])
            unit_order.append(np.full(heads.size, level, dtype=np.int64))
            unit_patch.append(patch[keep][heads])
            unit_first.append(times[kept[heads]])
            unit_members.append(np.repeat(np.arange(heads.size), np.diff(np.r_[heads, kept.size])))
            unit_members.append(kept)
        pending = members[split]
        level += 1
    if not unit_order:
        empty = np.zeros(0, dtype=np.int64)
        return Units(of_obs, empty, empty, empty)
    orders, patches, firsts = np.concatenate(unit_order), np.concatenate(unit_patch), np.concatenate(unit_first)
    # Number units in time order (then order, patch) so every pass visits them as the survey unfolds.
    rank = np.empty(orders.size, dtype=np.int64)
    rank[np.lexsort((patches, orders, firsts))] = np.arange(orders.size)
    offset = 0
    for local, members in zip(unit_members[::2], unit_members[1::2], strict=True):
        of_obs[members] = rank[local + offset]
        offset += int(local.max()) + 1 if local.size else 0
    inverse = np.argsort(rank)
    return Units(of_obs, orders[inverse], patches[inverse], firsts[inverse])

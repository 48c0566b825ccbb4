"""Background subtraction with a sigma-clipped mesh (the SExtractor method).

Each mesh box gets a clipped mode and RMS; the mesh is median-filtered to remove boxes biased by bright
sources and interpolated with a bicubic spline to every pixel. The RMS map becomes the background noise used
for weights downstream.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from sgs.nir.fitsio import Exposure, NirDataError, add_history, read_exposure, write_exposure
from sgs.nir.stats import sigma_clipped_stats
from sgs.nir.steps._cli import run_step


@dataclass(frozen=True)
class BackgroundMaps:
    level: npt.NDArray[np.float64]
    rms: npt.NDArray[np.float64]


def box_edges(length: int, box: int) -> npt.NDArray[np.int64]:
    count = max(1, round(length / box))
    return np.linspace(0, length, count + 1).round().astype(np.int64)


def mesh_statistics(
    image: npt.NDArray[np.floating], good: npt.NDArray[np.bool_], box: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Clipped mode and RMS per box, with the box centres (rows, columns)."""
    ys, xs = box_edges(image.shape[0], box), box_edges(image.shape[1], box)
    level = np.full((len(ys) - 1, len(xs) - 1), np.nan)
    rms = np.full_like(level, np.nan)
    for i in range(len(ys) - 1):
        for j in range(len(xs) - 1):
            block = image[ys[i] : ys[i + 1], xs[j] : xs[j + 1]]
            usable = block[good[ys[i] : ys[i + 1], xs[j] : xs[j + 1]]]
            if usable.size < 0.3 * block.size:
                continue  # mostly masked: filled from neighbours below
            stats = sigma_clipped_stats(usable, nsigma=3.0)
            level[i, j], rms[i, j] = stats.mode, stats.std
    centres_y = (ys[:-1] + ys[1:] - 1) / 2.0
    centres_x = (xs[:-1] + xs[1:] - 1) / 2.0
    return _fill_nan(level), _fill_nan(rms), centres_y, centres_x


def _fill_nan(mesh: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    if np.isnan(mesh).all():
        raise NirDataError("no mesh box has enough unmasked pixels to estimate the background")
    missing = np.isnan(mesh)
    if missing.any():
        _, (iy, ix) = ndimage.distance_transform_edt(missing, return_indices=True)
        mesh = mesh[iy, ix]
    return mesh


def interpolate_mesh(
    mesh: npt.NDArray[np.float64],
    centres_y: npt.NDArray[np.float64],
    centres_x: npt.NDArray[np.float64],
    shape: tuple[int, ...],
) -> npt.NDArray[np.float64]:
    """Bicubic spline through the box values, evaluated at every pixel.

    The mesh is first extended by odd reflection (linear extrapolation), so a sky gradient stays a straight
    gradient up to the image edges instead of flattening beyond the outer box centres.
    """
    pad = 2
    extended = np.pad(mesh, pad, mode="reflect", reflect_type="odd") if min(mesh.shape) > 1 else mesh
    offset = pad if min(mesh.shape) > 1 else 0
    rows = _mesh_coordinate(shape[0], centres_y) + offset
    cols = _mesh_coordinate(shape[1], centres_x) + offset
    grid = np.meshgrid(rows, cols, indexing="ij")
    return np.asarray(ndimage.map_coordinates(extended, grid, order=3, mode="nearest"))


def _mesh_coordinate(length: int, centres: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Fractional mesh index of every pixel (box sizes differ by at most one pixel, so spacing is uniform)."""
    if len(centres) < 2:
        return np.zeros(length)
    step = (centres[-1] - centres[0]) / (len(centres) - 1)
    return np.asarray((np.arange(length) - centres[0]) / step)


def _median_filter_mesh(mesh: npt.NDArray[np.float64], size: int) -> npt.NDArray[np.float64]:
    """Median filter that leaves a linear gradient intact at the mesh edges (odd-reflected padding)."""
    pad = size // 2
    extended = np.pad(mesh, pad, mode="reflect", reflect_type="odd")
    return np.asarray(ndimage.median_filter(extended, size=size)[pad:-pad, pad:-pad])


def estimate_background(
    image: npt.NDArray[np.floating], good: npt.NDArray[np.bool_], box: int = 32, filter_size: int = 3
) -> BackgroundMaps:
    level, rms, cy, cx = mesh_statistics(image, good, box)
    if min(level.shape) >= filter_size:
        level = _median_filter_mesh(level, filter_size)
        rms = _median_filter_mesh(rms, filter_size)
    return BackgroundMaps(
        level=interpolate_mesh(level, cy, cx, image.shape),
        rms=np.clip(interpolate_mesh(rms, cy, cx, image.shape), 1e-6, None),
    )


def subtract_background(exposure: Exposure, box: int = 32) -> Exposure:
    maps = estimate_background(exposure.sci, exposure.good(), box)
    meta = exposure.meta.copy()
    meta["BKGLEVEL"] = (float(np.median(maps.level)), "median background subtracted, e-")
    meta["BKGRMS"] = (float(np.median(maps.rms)), "median background RMS, e-")
    meta["BKGBOX"] = (box, "background mesh box, pixels")
    add_history(meta, "background", f"level {np.median(maps.level):.1f} e-, rms {np.median(maps.rms):.2f} e-")
    return Exposure(
        sci=(exposure.sci - maps.level).astype(np.float32),
        dq=exposure.dq,
        meta=meta,
        wcs_header=exposure.wcs_header,
        var=exposure.var,
        rms=maps.rms.astype(np.float32),
    )


def _action(inputs: dict[str, str], outputs: dict[str, Path]) -> str:
    result = subtract_background(read_exposure(inputs["input"]))
    write_exposure(result, outputs["outfile"])
    level, rms = result.meta["BKGLEVEL"], result.meta["BKGRMS"]
    return f"background {level:.1f} e- (rms {rms:.2f}) -> {outputs['outfile'].name}"


def main() -> None:
    raise SystemExit(run_step("sgs-nir-background", ["input"], ["outfile"], _action))

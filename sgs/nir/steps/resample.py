"""Resample calibrated dithers onto the common tile grid (TAN, North up, same pixel scale).

The output grid is a window on a lattice anchored at the tile tangent point (TILERA/TILEDEC), so every
observation of a tile lands on the same pixels. Values are interpolated with a cubic spline after bad pixels
are filled; output pixels that drew on a bad or missing input pixel get zero weight.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import numpy.typing as npt
from astropy.io import fits
from astropy.wcs import WCS
from scipy import ndimage

from sgs.nir.fitsio import Exposure, Mosaic, NirDataError, add_history, read_exposure, wcs_cards, write_mosaic
from sgs.nir.imaging import fill_masked
from sgs.nir.steps._cli import run_step

INPUTS = ("calDither1", "calDither2", "calDither3", "calDither4")
OUTPUTS = ("resampDither1", "resampDither2", "resampDither3", "resampDither4")
# An output pixel whose interpolation drew this much weight from bad input pixels is dropped.
BAD_FRACTION_LIMIT = 0.02


def pixel_scale_deg(wcs: WCS) -> float:
    return float(math.sqrt(abs(np.linalg.det(wcs.pixel_scale_matrix))))


def tile_lattice(meta: fits.Header, scale_deg: float) -> WCS:
    """The tile's global pixel lattice: tangent point at 1-based pixel (1, 1) before windowing."""
    if "TILERA" not in meta or "TILEDEC" not in meta:
        raise NirDataError("exposure header lacks TILERA/TILEDEC: cannot place it on a tile grid")
    lattice = WCS(naxis=2)
    lattice.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    lattice.wcs.crval = [float(meta["TILERA"]), float(meta["TILEDEC"])]
    lattice.wcs.crpix = [1.0, 1.0]
    lattice.wcs.cd = np.array([[-scale_deg, 0.0], [0.0, scale_deg]])
    lattice.wcs.radesys = "ICRS"
    return lattice


def common_grid(exposures: list[Exposure]) -> tuple[WCS, tuple[int, int]]:
    """The smallest window of the tile lattice that covers every exposure."""
    tiles = {str(e.meta.get("TILE_ID", "")) for e in exposures}
    if len(tiles) != 1:
        raise NirDataError(f"dithers belong to different tiles {sorted(tiles)}; resample them separately")
    wcss = [WCS(e.wcs_header) for e in exposures]
    lattice = tile_lattice(exposures[0].meta, float(np.mean([pixel_scale_deg(w) for w in wcss])))
    xs, ys = [], []
    for exposure, wcs in zip(exposures, wcss, strict=True):
        ny, nx = exposure.sci.shape
        cx = np.array([-0.5, nx - 0.5, nx - 0.5, -0.5])
        cy = np.array([-0.5, -0.5, ny - 0.5, ny - 0.5])
        x, y = lattice.all_world2pix(*wcs.all_pix2world(cx, cy, 0), 0)
        xs.extend(x)
        ys.extend(y)
    x0, x1 = math.floor(min(xs) + 0.5), math.ceil(max(xs) - 0.5)
    y0, y1 = math.floor(min(ys) + 0.5), math.ceil(max(ys) - 0.5)
    grid = lattice.deepcopy()
    grid.wcs.crpix = [1.0 - x0, 1.0 - y0]
    return grid, (y1 - y0 + 1, x1 - x0 + 1)


def input_coordinates(
    grid: WCS, shape: tuple[int, int], wcs: WCS
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Where each output pixel centre falls on the input exposure (0-based rows, columns)."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    ra, dec = grid.all_pix2world(xx.ravel(), yy.ravel(), 0)
    x, y = wcs.all_world2pix(ra, dec, 0)
    return y.reshape(shape), x.reshape(shape)


def resample(exposure: Exposure, grid: WCS, shape: tuple[int, int]) -> Mosaic:
    var = exposure.var
    rms = exposure.rms
    if var is None or rms is None:
        raise NirDataError("exposure lacks VAR or RMS: run the bad-pixel and background steps first")
    wcs = WCS(exposure.wcs_header)
    good = exposure.good()
    rows, cols = input_coordinates(grid, shape, wcs)
    coords = np.array([rows, cols])
    sci = ndimage.map_coordinates(fill_masked(exposure.sci, good), coords, order=3, mode="constant", cval=0.0)
    badness = ndimage.map_coordinates((~good).astype(np.float64), coords, order=1, mode="constant", cval=1.0)
    variance = ndimage.map_coordinates(fill_masked(var, good), coords, order=1, mode="nearest")
    background_rms = ndimage.map_coordinates(rms.astype(np.float64), coords, order=1, mode="nearest")
    valid = badness < BAD_FRACTION_LIMIT
    exptime = float(exposure.meta["EXPTIME"])
    # Surface brightness is preserved; rescale to flux per output pixel, in electron/s.
    flux_scale = (pixel_scale_deg(grid) / pixel_scale_deg(wcs)) ** 2 / exptime
    meta = exposure.meta.copy()
    meta["BUNIT"] = "electron/s"
    meta["RESAMPLD"] = (True, "on the tile lattice")
    add_history(meta, "resample", f"onto {shape[1]}x{shape[0]} tile grid, {int(valid.sum())} valid pixels")
    return Mosaic(
        sci=np.where(valid, sci * flux_scale, 0.0).astype(np.float32),
        var=np.where(valid, variance * flux_scale**2, 0.0).astype(np.float32),
        wht=np.where(valid, 1.0 / (background_rms * flux_scale) ** 2, 0.0).astype(np.float32),
        meta=meta,
        wcs_header=wcs_cards(grid.to_header()),
    )


def _action(inputs: dict[str, str], outputs: dict[str, Path]) -> str:
    exposures = [read_exposure(inputs[name]) for name in INPUTS]
    grid, shape = common_grid(exposures)
    for exposure, out in zip(exposures, OUTPUTS, strict=True):
        write_mosaic(resample(exposure, grid, shape), outputs[out])
    return f"4 dithers onto a {shape[1]}x{shape[0]} tile grid"


def main() -> None:
    raise SystemExit(run_step("sgs-nir-resample", list(INPUTS), list(OUTPUTS), _action))

"""Inverse-variance stacking of resampled dithers with per-pixel outlier rejection.

Weights come from the background noise only (WHT), not from the total variance: weighting by a variance that
includes the source's own Poisson noise would bias bright pixels low. A pixel far from the median of the other
dithers (a residual cosmic ray, a hot pixel) is dropped when at least three dithers cover it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import numpy.typing as npt

from sgs.nir.fitsio import Mosaic, NirDataError, add_history, read_mosaic, write_mosaic
from sgs.nir.steps._cli import run_step

INPUTS = ("resampledme1", "resampledme2", "resampledme3", "resampledme4")
REJECT_SIGMA = 5.0
# Resampling leaves small misregistrations at bright cores: tolerate this fraction of the signal.
SIGNAL_TOLERANCE = 0.1


def check_same_grid(mosaics: list[Mosaic]) -> None:
    reference = mosaics[0]
    for index, other in enumerate(mosaics[1:], start=2):
        if other.sci.shape != reference.sci.shape:
            raise NirDataError(f"input {index} has shape {other.sci.shape}, input 1 has {reference.sci.shape}")
        for key in ("CRPIX1", "CRPIX2", "CRVAL1", "CRVAL2"):
            if not np.isclose(float(other.wcs_header[key]), float(reference.wcs_header[key]), rtol=0, atol=1e-9):
                raise NirDataError(f"input {index} is on a different grid ({key} differs); resample them together")


def reject_outliers(
    sci: npt.NDArray[np.float64], var: npt.NDArray[np.float64], weight: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Weights with outlying samples set to zero (only where at least three samples exist)."""
    valid = weight > 0
    masked = np.where(valid, sci, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # uncovered pixels: all-NaN columns are expected
        median = np.nanmedian(masked, axis=0)
    tolerance = np.sqrt(var + (SIGNAL_TOLERANCE * np.abs(median)) ** 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        deviation = np.abs(sci - median) / tolerance
    outlier = valid & (deviation > REJECT_SIGMA) & (valid.sum(axis=0) >= 3)
    return np.where(outlier, 0.0, weight)


def stack(mosaics: list[Mosaic]) -> Mosaic:
    if not mosaics:
        raise NirDataError("nothing to stack")
    check_same_grid(mosaics)
    sci = np.array([m.sci for m in mosaics], dtype=np.float64)
    var = np.array([m.var for m in mosaics], dtype=np.float64)
    weight = reject_outliers(sci, var, np.array([m.wht for m in mosaics], dtype=np.float64))
    total = weight.sum(axis=0)
    covered = total > 0
    safe = np.where(covered, total, 1.0)
    mean = np.where(covered, (weight * sci).sum(axis=0) / safe, 0.0)
    mean_var = np.where(covered, (weight**2 * var).sum(axis=0) / safe**2, 0.0)
    nexp = (weight > 0).sum(axis=0).astype(np.int16)
    rejected = int(((np.array([m.wht for m in mosaics]) > 0) & (weight == 0)).sum())
    meta = mosaics[0].meta.copy()
    for key in ("DITHER", "ASTNMAT", "ASTRMS", "ASTSHFTX", "ASTSHFTY", "NCRPIX", "NCOSMIC", "DARKSUB"):
        meta.remove(key, ignore_missing=True)
    meta["NCOMBINE"] = (len(mosaics), "dithers stacked")
    meta["TEXPTIME"] = (sum(float(m.meta["EXPTIME"]) for m in mosaics), "total exposure time, s")
    meta["NREJECT"] = (rejected, "outlying samples rejected")
    add_history(meta, "stack", f"{len(mosaics)} dithers, {rejected} samples rejected")
    return Mosaic(
        sci=mean.astype(np.float32),
        var=mean_var.astype(np.float32),
        wht=total.astype(np.float32),
        meta=meta,
        wcs_header=mosaics[0].wcs_header,
        extra={"NEXP": nexp},
    )


def _action(inputs: dict[str, str], outputs: dict[str, Path]) -> str:
    result = stack([read_mosaic(inputs[name]) for name in INPUTS])
    write_mosaic(result, outputs["stack"])
    return f"{result.meta['NCOMBINE']} dithers stacked, {result.meta['NREJECT']} samples rejected"


def main() -> None:
    raise SystemExit(run_step("sgs-nir-stack", list(INPUTS), ["stack"], _action))

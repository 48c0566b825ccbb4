"""Astrometric calibration: match stars detected in each dither to the reference catalogue and fix the WCS.

The header WCS comes from the commanded pointing and is off by about an arcsecond. For each dither the step
finds bright point-like peaks, projects the reference stars with the current WCS, finds the common offset by
voting over all pair differences (robust to a large initial error), matches, and fits an affine correction
(shift only when few stars match) with outlier rejection. The corrected WCS replaces the header one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from astropy.wcs import WCS

from sgs.nir.fitsio import (
    Exposure,
    NirDataError,
    add_history,
    read_exposure,
    read_table,
    require_columns,
    wcs_cards,
    write_exposure,
)
from sgs.nir.imaging import FWHM_TO_SIGMA, fill_masked, find_peaks, matched_filter_snr, windowed_centroids
from sgs.nir.steps._cli import run_step

FloatArray = npt.NDArray[np.float64]
DITHERS = ("dither1", "dither2", "dither3", "dither4")
OUTPUTS = ("calDither1", "calDither2", "calDither3", "calDither4")


@dataclass(frozen=True)
class AstromParams:
    detection_snr: float = 20.0
    search_radius_arcsec: float = 8.0
    match_radius_arcsec: float = 0.6
    min_matches_affine: int = 6
    clip_sigma: float = 3.0


@dataclass(frozen=True)
class AstromSolution:
    matrix: FloatArray  # 2x2, maps measured (1-based) pixel positions onto reference positions
    offset: FloatArray
    matches: int
    rms_arcsec: float


def detect_bright_peaks(exposure: Exposure, params: AstromParams) -> tuple[FloatArray, FloatArray]:
    """1-based pixel positions of bright compact sources (windowed centroids)."""
    sigma = float(exposure.meta.get("PSFFWHM", 2.0)) * FWHM_TO_SIGMA
    good = exposure.good()
    image = fill_masked(exposure.sci, good)
    rms = exposure.rms if exposure.rms is not None else np.full(image.shape, float(np.std(image[good])))
    peaks = find_peaks(matched_filter_snr(image, rms.astype(np.float64) ** 2, sigma), params.detection_snr, 6)
    x, y = windowed_centroids(image, peaks.x, peaks.y, sigma)
    return x + 1.0, y + 1.0


def vote_offset(measured: FloatArray, reference: FloatArray, radius: float) -> FloatArray | None:
    """The shift reference - measured shared by most pairs (2-D histogram peak, refined by a local mean)."""
    diff = (reference[None, :, :] - measured[:, None, :]).reshape(-1, 2)
    diff = diff[np.hypot(diff[:, 0], diff[:, 1]) < radius]
    if len(diff) == 0:
        return None
    bins = np.arange(-radius, radius + 1.0, 1.0)
    hist, xe, ye = np.histogram2d(diff[:, 0], diff[:, 1], bins=[bins, bins])
    ix, iy = np.unravel_index(np.argmax(hist), hist.shape)
    guess = np.array([(xe[ix] + xe[ix + 1]) / 2, (ye[iy] + ye[iy + 1]) / 2])
    near = diff[np.hypot(*(diff - guess).T) < 1.5]
    return np.asarray(near.mean(axis=0)) if len(near) else guess


def nearest_matches(
    measured: FloatArray, reference: FloatArray, radius: float
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Index pairs (measured, reference) that are each other's nearest neighbour within ``radius``."""
    if len(measured) == 0 or len(reference) == 0:
        return np.empty(0, np.intp), np.empty(0, np.intp)
    dist = np.hypot(*(measured[:, None, :] - reference[None, :, :]).transpose(2, 0, 1))
    best_ref = np.argmin(dist, axis=1)
    best_meas = np.argmin(dist, axis=0)
    idx = np.arange(len(measured))
    mutual = (best_meas[best_ref] == idx) & (dist[idx, best_ref] < radius)
    return idx[mutual], best_ref[mutual]


def fit_transform(
    measured: FloatArray, reference: FloatArray, affine: bool, clip_sigma: float
) -> tuple[FloatArray, FloatArray, npt.NDArray[np.bool_]]:
    """Affine (or pure shift) least-squares fit reference ≈ M @ measured + t, with iterative clipping."""
    keep = np.ones(len(measured), dtype=bool)
    matrix: FloatArray = np.eye(2)
    offset: FloatArray = np.zeros(2)
    for _ in range(5):
        if affine:
            design = np.column_stack([measured[keep], np.ones(int(keep.sum()))])
            solution, *_ = np.linalg.lstsq(design, reference[keep], rcond=None)
            matrix, offset = (
                np.asarray(solution[:2].T, dtype=np.float64),
                np.asarray(solution[2], dtype=np.float64),
            )
        else:
            offset = np.median(reference[keep] - measured[keep], axis=0)
        resid = np.hypot(*(reference - (measured @ matrix.T + offset)).T)
        scatter = max(1.4826 * float(np.median(resid[keep])), 0.02)
        new_keep = resid < clip_sigma * scatter
        if np.array_equal(new_keep, keep) or new_keep.sum() < (3 if affine else 1):
            break
        keep = new_keep
    return matrix, offset, keep


def solve(exposure: Exposure, ref_ra: FloatArray, ref_dec: FloatArray, params: AstromParams) -> AstromSolution:
    wcs = WCS(exposure.wcs_header)
    scale = float(np.sqrt(abs(np.linalg.det(wcs.pixel_scale_matrix)))) * 3600.0
    mx, my = detect_bright_peaks(exposure, params)
    measured = np.column_stack([mx, my])
    rx, ry = wcs.all_world2pix(ref_ra, ref_dec, 1)
    ny, nx = exposure.sci.shape
    margin = params.search_radius_arcsec / scale
    inside = (rx > -margin) & (rx < nx + margin) & (ry > -margin) & (ry < ny + margin)
    reference = np.column_stack([rx[inside], ry[inside]])
    shift = vote_offset(measured, reference, params.search_radius_arcsec / scale)
    if shift is None:
        raise NirDataError(
            f'astrometry: no reference star within {params.search_radius_arcsec}" of the '
            f"{len(measured)} detected stars (check the reference catalogue covers the field)"
        )
    mi, ri = nearest_matches(measured + shift, reference, params.match_radius_arcsec / scale)
    if len(mi) < 2:
        raise NirDataError(f"astrometry: only {len(mi)} star(s) matched the reference catalogue (need 2)")
    affine = len(mi) >= params.min_matches_affine
    matrix, offset, keep = fit_transform(measured[mi], reference[ri], affine, params.clip_sigma)
    resid = reference[ri][keep] - (measured[mi][keep] @ matrix.T + offset)
    rms = float(np.sqrt(np.mean(np.sum(resid**2, axis=1)))) * scale
    return AstromSolution(matrix=matrix, offset=offset, matches=int(keep.sum()), rms_arcsec=rms)


def corrected_wcs(wcs: WCS, solution: AstromSolution) -> WCS:
    """world'(p) = world(M p + t): CD' = CD M and CRPIX' = M⁻¹ (CRPIX - t), exact for a linear WCS."""
    fixed = WCS(naxis=2)
    fixed.wcs.ctype = list(wcs.wcs.ctype)
    fixed.wcs.crval = list(wcs.wcs.crval)
    fixed.wcs.cd = wcs.pixel_scale_matrix @ solution.matrix
    fixed.wcs.crpix = np.linalg.solve(solution.matrix, np.asarray(wcs.wcs.crpix) - solution.offset)
    fixed.wcs.radesys = wcs.wcs.radesys or "ICRS"
    return fixed


def calibrate(exposure: Exposure, ref_ra: FloatArray, ref_dec: FloatArray, params: AstromParams) -> Exposure:
    solution = solve(exposure, ref_ra, ref_dec, params)
    new_wcs = corrected_wcs(WCS(exposure.wcs_header), solution)
    meta = exposure.meta.copy()
    shift = solution.offset + (solution.matrix - np.eye(2)) @ np.asarray(WCS(exposure.wcs_header).wcs.crpix)
    meta["ASTNMAT"] = (solution.matches, "reference stars used in the fit")
    meta["ASTRMS"] = (round(solution.rms_arcsec, 4), "astrometric fit residual RMS, arcsec")
    meta["ASTSHFTX"] = (round(float(shift[0]), 4), "correction at CRPIX along x, pixels")
    meta["ASTSHFTY"] = (round(float(shift[1]), 4), "correction at CRPIX along y, pixels")
    add_history(meta, "astrom", f"{solution.matches} stars, rms {solution.rms_arcsec:.3f} arcsec")
    return Exposure(
        sci=exposure.sci,
        dq=exposure.dq,
        meta=meta,
        wcs_header=wcs_cards(new_wcs.to_header()),
        var=exposure.var,
        rms=exposure.rms,
    )


def read_reference(path: str) -> tuple[FloatArray, FloatArray]:
    table, _ = read_table(path, "reference catalogue")
    require_columns(table, ("RA", "DEC"), path)
    ra = np.asarray(table["RA"], dtype=np.float64)
    dec = np.asarray(table["DEC"], dtype=np.float64)
    if len(ra) < 2:
        raise NirDataError(f"{path}: reference catalogue has {len(ra)} star(s); astrometry needs at least 2")
    return ra, dec


def _action(inputs: dict[str, str], outputs: dict[str, Path]) -> str:
    ref_ra, ref_dec = read_reference(inputs["refcat_xml"])
    params = AstromParams()
    notes = []
    for name, out in zip(DITHERS, OUTPUTS, strict=True):
        result = calibrate(read_exposure(inputs[name]), ref_ra, ref_dec, params)
        write_exposure(result, outputs[out])
        notes.append(f'{name}: {result.meta["ASTNMAT"]} stars rms {result.meta["ASTRMS"]:.3f}"')
    return "; ".join(notes)


def main() -> None:
    raise SystemExit(run_step("sgs-nir-astrom", [*DITHERS, "refcat_xml"], list(OUTPUTS), _action))

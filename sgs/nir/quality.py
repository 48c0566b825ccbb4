"""Compare a source catalogue with the simulator's truth: completeness, astrometry, photometry.

Only truth sources whose whole photometric aperture lies on covered stack pixels are counted. Each truth
source gets the S/N an ideal measurement in the stack would reach (its flux against the local background
noise over its aperture plus its own Poisson noise); completeness is quoted for S/N >= 10. Truth sources are
matched brightest first to the nearest unclaimed detection within the match radius.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
from astropy.wcs import WCS
from scipy import ndimage

from sgs.nir.fitsio import Mosaic, NirDataError, read_mosaic, read_table, require_columns
from sgs.nir.sim import TruthCatalog, read_truth

FloatArray = npt.NDArray[np.float64]
SNR_COMPLETE = 10.0
SNR_PRECISE = 20.0  # sources bright enough that bias is not hidden in noise or selection


@dataclass(frozen=True)
class MagnitudeBin:
    mag_low: float
    mag_high: float
    truth: int
    found: int

    @property
    def completeness(self) -> float:
        return self.found / self.truth if self.truth else float("nan")


@dataclass
class QualityReport:
    truth_in_field: int
    detected: int
    matched: int
    spurious: int
    truth_snr10: int
    found_snr10: int
    completeness_snr10: float
    astrometric_rms_arcsec: float  # radial RMS of catalogue - truth for point sources with S/N >= 20
    astrometric_offset_arcsec: tuple[float, float]  # mean (east, north) offset: a systematic WCS error
    flux_bias_stars: float  # median (FLUX_APER - truth) / truth, point sources with S/N >= 20
    flux_scatter_stars: float  # robust std of the same
    flux_error_ratio_stars: float  # robust std of (FLUX_APER - truth) / FLUXERR_APER: 1 when errors are right
    flux_bias_galaxies: float  # median (FLUX_AUTO - truth) / truth, galaxies with S/N >= 20
    stars_used: int
    galaxies_used: int
    by_magnitude: list[MagnitudeBin] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["by_magnitude"] = [asdict(b) | {"completeness": b.completeness} for b in self.by_magnitude]
        return data


@dataclass
class CatalogPositions:
    ra: FloatArray
    dec: FloatArray
    flux_aper: FloatArray
    err_aper: FloatArray
    flux_auto: FloatArray


def read_catalog(path: Path | str) -> CatalogPositions:
    table, _ = read_table(path, "source catalogue")
    require_columns(table, ("RA", "DEC", "FLUX_APER", "FLUXERR_APER", "FLUX_AUTO"), path)
    return CatalogPositions(
        *(np.asarray(table[c], dtype=np.float64) for c in ("RA", "DEC", "FLUX_APER", "FLUXERR_APER", "FLUX_AUTO"))
    )


def aperture_radius_px(truth: TruthCatalog, psf_fwhm: float, scale_arcsec: float) -> FloatArray:
    """Radius of the aperture that holds the source: 2 FWHM for stars, ~3 r_eff in quadrature for galaxies."""
    point = 2.0 * psf_fwhm
    return np.asarray(np.hypot(point, 3.0 * truth.reff_arcsec / scale_arcsec))


def expected_snr(truth: TruthCatalog, stack: Mosaic, x: FloatArray, y: FloatArray, radius: FloatArray) -> FloatArray:
    ny, nx = stack.sci.shape
    ix = np.clip(np.rint(x).astype(int), 0, nx - 1)
    iy = np.clip(np.rint(y).astype(int), 0, ny - 1)
    wht = stack.wht[iy, ix].astype(np.float64)
    nexp = np.asarray(stack.extra.get("NEXP", np.full(stack.sci.shape, 1)))[iy, ix].astype(np.float64)
    exptime = float(stack.meta["EXPTIME"])
    background = np.where(wht > 0, math.pi * radius**2 / np.where(wht > 0, wht, 1.0), np.inf)
    poisson = truth.flux / (exptime * np.maximum(nexp, 1.0))
    return np.asarray(truth.flux / np.sqrt(background + poisson))


def fully_covered(stack: Mosaic, x: FloatArray, y: FloatArray, radius: FloatArray) -> npt.NDArray[np.bool_]:
    """True where the whole aperture (plus a pixel) lies on covered pixels."""
    distance_to_gap = ndimage.distance_transform_edt(np.pad(stack.wht > 0, 1, constant_values=False))[1:-1, 1:-1]
    ny, nx = stack.sci.shape
    inside = (x >= 0) & (x <= nx - 1) & (y >= 0) & (y <= ny - 1)
    ix = np.clip(np.rint(x).astype(int), 0, nx - 1)
    iy = np.clip(np.rint(y).astype(int), 0, ny - 1)
    return np.asarray(inside & (distance_to_gap[iy, ix] > radius + 1.0))


def match(truth_xy: FloatArray, truth_flux: FloatArray, det_xy: FloatArray, radius: float) -> npt.NDArray[np.intp]:
    """For each truth source, the index of its matched detection or -1 (brightest truth chooses first)."""
    matched = np.full(len(truth_xy), -1, dtype=np.intp)
    if len(det_xy) == 0:
        return matched
    claimed = np.zeros(len(det_xy), dtype=bool)
    for t in np.argsort(-truth_flux):
        dist = np.hypot(*(det_xy - truth_xy[t]).T)
        dist[claimed] = np.inf
        best = int(np.argmin(dist))
        if dist[best] <= radius:
            matched[t] = best
            claimed[best] = True
    return matched


def robust_std(values: FloatArray) -> float:
    if values.size == 0:
        return float("nan")
    return float(1.4826 * np.median(np.abs(values - np.median(values))))


def evaluate(
    catalog_path: Path | str, truth_path: Path | str, stack_path: Path | str, match_radius_arcsec: float = 0.6
) -> QualityReport:
    stack = read_mosaic(stack_path)
    wcs = WCS(stack.wcs_header)
    scale = float(math.sqrt(abs(np.linalg.det(wcs.pixel_scale_matrix)))) * 3600.0
    psf_fwhm = float(stack.meta.get("PSFFWHM", 2.0))
    truth = read_truth(truth_path)
    catalog = read_catalog(catalog_path)
    tx, ty = wcs.all_world2pix(truth.ra, truth.dec, 0)
    radius = aperture_radius_px(truth, psf_fwhm, scale)
    in_field = fully_covered(stack, tx, ty, radius)
    snr = expected_snr(truth, stack, tx, ty, radius)
    dx, dy = wcs.all_world2pix(catalog.ra, catalog.dec, 0) if len(catalog.ra) else (np.empty(0), np.empty(0))
    det_xy = np.column_stack([dx, dy])
    all_matches = match(np.column_stack([tx, ty]), truth.flux, det_xy, match_radius_arcsec / scale)
    found = all_matches >= 0
    claimed = np.zeros(len(det_xy), dtype=bool)
    claimed[all_matches[found]] = True
    det_in_field = fully_covered(stack, dx, dy, np.full(len(dx), 2.0 * psf_fwhm)) if len(dx) else claimed
    bright = in_field & (snr >= SNR_COMPLETE)
    precise = in_field & found & (snr >= SNR_PRECISE)
    stars = precise & truth.is_star
    galaxies = precise & ~truth.is_star
    star_det = all_matches[stars]
    rel_star = catalog.flux_aper[star_det] / truth.flux[stars] - 1.0
    pull_star = (catalog.flux_aper[star_det] - truth.flux[stars]) / catalog.err_aper[star_det]
    rel_gal = catalog.flux_auto[all_matches[galaxies]] / truth.flux[galaxies] - 1.0
    offsets = (det_xy[star_det] - np.column_stack([tx, ty])[stars]) * scale
    # Pixel x grows to the West on a North-up East-left grid.
    east_north = np.column_stack([-offsets[:, 0], offsets[:, 1]]) if len(offsets) else np.zeros((0, 2))
    return QualityReport(
        truth_in_field=int(in_field.sum()),
        detected=len(det_xy),
        matched=int((found & in_field).sum()),
        spurious=int((det_in_field & ~claimed).sum()),
        truth_snr10=int(bright.sum()),
        found_snr10=int((bright & found).sum()),
        completeness_snr10=float((bright & found).sum() / bright.sum()) if bright.any() else float("nan"),
        astrometric_rms_arcsec=float(np.sqrt(np.mean(np.sum(offsets**2, axis=1)))) if len(offsets) else float("nan"),
        astrometric_offset_arcsec=(
            (float(east_north[:, 0].mean()), float(east_north[:, 1].mean())) if len(offsets) else (math.nan, math.nan)
        ),
        flux_bias_stars=float(np.median(rel_star)) if rel_star.size else float("nan"),
        flux_scatter_stars=robust_std(rel_star),
        flux_error_ratio_stars=robust_std(pull_star),
        flux_bias_galaxies=float(np.median(rel_gal)) if rel_gal.size else float("nan"),
        stars_used=int(stars.sum()),
        galaxies_used=int(galaxies.sum()),
        by_magnitude=_completeness_by_magnitude(truth.mag[in_field], found[in_field]),
    )


def _completeness_by_magnitude(mag: FloatArray, found: npt.NDArray[np.bool_], width: float = 0.5) -> list[MagnitudeBin]:
    if mag.size == 0:
        return []
    edges = np.arange(math.floor(mag.min()), math.ceil(mag.max()) + width, width)
    bins = []
    for lo, hi in itertools.pairwise(edges):
        chosen = (mag >= lo) & (mag < hi)
        if chosen.any():
            bins.append(MagnitudeBin(float(lo), float(hi), int(chosen.sum()), int((found & chosen).sum())))
    return bins


def format_report(report: QualityReport) -> str:
    east, north = report.astrometric_offset_arcsec
    lines = [
        f"truth sources in field   {report.truth_in_field}  (detected {report.detected},"
        f" matched {report.matched}, spurious {report.spurious})",
        f"completeness at S/N>=10  {report.completeness_snr10:.1%}  ({report.found_snr10}/{report.truth_snr10})",
        f"astrometric scatter      {report.astrometric_rms_arcsec * 1000:.1f} mas rms"
        f"  (mean offset E {east * 1000:+.1f} N {north * 1000:+.1f} mas, {report.stars_used} stars)",
        f"flux bias, stars         {report.flux_bias_stars:+.2%}  (scatter {report.flux_scatter_stars:.2%},"
        f" error ratio {report.flux_error_ratio_stars:.2f})",
        f"flux bias, galaxies      {report.flux_bias_galaxies:+.2%}  (Kron, {report.galaxies_used} galaxies)",
        "completeness by magnitude:",
    ]
    lines += [
        f"  {b.mag_low:5.1f}-{b.mag_high:4.1f}  {b.found:3d}/{b.truth:3d}  {b.completeness:6.1%}"
        for b in report.by_magnitude
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="sgs-nir-quality", description="Compare a NIR catalogue with truth")
    parser.add_argument("--catalog", required=True)
    parser.add_argument("--truth", required=True)
    parser.add_argument("--stack", required=True)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    try:
        report = evaluate(args.catalog, args.truth, args.stack)
    except (NirDataError, OSError) as exc:
        print(f"sgs-nir-quality: error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    print(json.dumps(report.to_dict(), indent=2) if args.json else format_report(report))

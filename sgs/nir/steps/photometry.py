"""Photometry of the detected sources on the stack: windowed centroids, shapes, aperture and Kron fluxes.

Pixels of neighbouring sources inside an aperture are replaced by their mirror image through the source
centre (SExtractor's MASK_TYPE CORRECT), so a neighbour does not inflate the flux. Errors come from the
propagated variance plane. Output: a FITS table (``CATALOG``) with positions, fluxes (electron/s) and AB mags.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from astropy.io import fits
from astropy.wcs import WCS

from sgs.nir.fitsio import Mosaic, NirDataError, add_history, read_mosaic, require_file, write_table
from sgs.nir.imaging import FWHM_TO_SIGMA, windowed_centroids
from sgs.nir.steps._cli import run_step

FloatArray = npt.NDArray[np.float64]
InsideTest = Callable[[FloatArray, FloatArray], npt.NDArray[np.bool_]]
SUBPIXELS = 5
KRON_FACTOR = 2.5
KRON_MIN_RADIUS = 3.5


class Flag:
    NEIGHBOURS = 1  # pixels of other sources were replaced in an aperture
    BLENDED = 2  # split from a blend by the deblender
    UNCOVERED = 4  # the aperture includes pixels without data
    TRUNCATED = 8  # the aperture runs off the image


@dataclass(frozen=True)
class Shape:
    a: float
    b: float
    theta: float  # radians, from +x towards +y

    def ellipse_radius(self, dx: FloatArray, dy: FloatArray) -> FloatArray:
        cos, sin = np.cos(self.theta), np.sin(self.theta)
        major = dx * cos + dy * sin
        minor = -dx * sin + dy * cos
        return np.asarray(np.sqrt((major / self.a) ** 2 + (minor / self.b) ** 2))


@dataclass
class Measurement:
    flux: float
    error: float
    flags: int


def read_segmentation(path: str | Path) -> tuple[npt.NDArray[np.int32], fits.FITS_rec]:
    p = require_file(path, "source_mask")
    with fits.open(p, memmap=False) as hdul:
        try:
            return np.asarray(hdul["SEGM"].data, dtype=np.int32), hdul["PEAKS"].data.copy()
        except KeyError:
            raise NirDataError(f"{p}: not a segmentation file (needs SEGM and PEAKS extensions)") from None


def segment_shape(image: FloatArray, member: npt.NDArray[np.bool_], x: float, y: float, floor: float) -> Shape:
    """Flux-weighted second moments of the segment pixels, as ellipse axes (with a PSF-sized floor)."""
    rows, cols = np.nonzero(member)
    weights = np.clip(image[rows, cols], 0.0, None)
    if weights.sum() <= 0:
        return Shape(floor, floor, 0.0)
    dx, dy = cols - x, rows - y
    x2 = float((weights * dx**2).sum() / weights.sum())
    y2 = float((weights * dy**2).sum() / weights.sum())
    xy = float((weights * dx * dy).sum() / weights.sum())
    mean, diff = (x2 + y2) / 2, np.hypot((x2 - y2) / 2, xy)
    a = np.sqrt(max(mean + diff, floor**2))
    b = np.sqrt(max(mean - diff, floor**2))
    return Shape(float(a), float(b), float(0.5 * np.arctan2(2 * xy, x2 - y2)))


def aperture_weights(dx: FloatArray, dy: FloatArray, inside: InsideTest) -> FloatArray:
    """Fraction of each pixel inside the aperture, from SUBPIXELS x SUBPIXELS samples per pixel."""
    offsets = (np.arange(SUBPIXELS) + 0.5) / SUBPIXELS - 0.5
    total = np.zeros(dx.shape)
    for oy in offsets:
        for ox in offsets:
            total += inside(dx + ox, dy + oy)
    return total / SUBPIXELS**2


def corrected_sum(
    sci: FloatArray,
    var: FloatArray,
    covered: npt.NDArray[np.bool_],
    labels: npt.NDArray[np.int32],
    label: int,
    x: float,
    y: float,
    weights: FloatArray,
    rows: npt.NDArray[np.intp],
    cols: npt.NDArray[np.intp],
) -> Measurement:
    """Sum inside an aperture, replacing other sources' pixels by their mirror through (x, y)."""
    ny, nx = sci.shape
    flags = 0
    inside_image = (rows >= 0) & (rows < ny) & (cols >= 0) & (cols < nx)
    if (weights[~inside_image] > 0).any():
        flags |= Flag.TRUNCATED
    r = np.clip(rows, 0, ny - 1)
    c = np.clip(cols, 0, nx - 1)
    use = (weights > 0) & inside_image
    values = sci[r, c].astype(np.float64)
    variances = var[r, c].astype(np.float64)
    foreign = use & (labels[r, c] != 0) & (labels[r, c] != label)
    if foreign.any():
        flags |= Flag.NEIGHBOURS
        mr = np.rint(2 * y - rows).astype(int)
        mc = np.rint(2 * x - cols).astype(int)
        mirror_ok = (mr >= 0) & (mr < ny) & (mc >= 0) & (mc < nx)
        mr_c, mc_c = np.clip(mr, 0, ny - 1), np.clip(mc, 0, nx - 1)
        mirror_clean = mirror_ok & np.isin(labels[mr_c, mc_c], (0, label))
        values = np.where(foreign, np.where(mirror_clean, sci[mr_c, mc_c], 0.0), values)
        variances = np.where(foreign, np.where(mirror_clean, var[mr_c, mc_c], 0.0), variances)
    if (use & ~covered[r, c]).any():
        flags |= Flag.UNCOVERED
    w = np.where(use, weights, 0.0)
    return Measurement(float((w * values).sum()), float(np.sqrt((w**2 * variances).sum())), flags)


def kron_radius(image: FloatArray, shape: Shape, x: float, y: float, own_or_sky: npt.NDArray[np.bool_]) -> float:
    """First moment of the light in elliptical radius (units of the ellipse axes), within 6 axes.

    Sky pixels count too (the outskirts of a faint galaxy fall below the segmentation threshold); pixels of
    other sources do not.
    """
    ny, nx = image.shape
    extent = int(np.ceil(6 * shape.a)) + 1
    rows, cols = np.mgrid[
        max(0, int(y) - extent) : min(ny, int(y) + extent + 1),
        max(0, int(x) - extent) : min(nx, int(x) + extent + 1),
    ]
    r_ell = shape.ellipse_radius(cols - x, rows - y)
    light = np.where((r_ell <= 6.0) & own_or_sky[rows, cols], image[rows, cols], 0.0)
    if light.sum() <= 0:
        return KRON_MIN_RADIUS
    return float((r_ell * light).sum() / light.sum())


@dataclass
class Catalog:
    columns: dict[str, npt.NDArray[np.generic]]

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0


def measure(mosaic: Mosaic, labels: npt.NDArray[np.int32], peaks: fits.FITS_rec) -> Catalog:
    if labels.shape != mosaic.sci.shape:
        raise NirDataError(f"segmentation shape {labels.shape} differs from the image shape {mosaic.sci.shape}")
    fwhm = float(mosaic.meta.get("PSFFWHM", 2.0))
    sigma = fwhm * FWHM_TO_SIGMA
    sci = mosaic.sci.astype(np.float64)
    var = mosaic.var.astype(np.float64)
    covered = mosaic.wht > 0
    count = len(peaks)
    px = np.asarray(peaks["PEAK_X"], dtype=np.float64)
    py = np.asarray(peaks["PEAK_Y"], dtype=np.float64)
    x, y = windowed_centroids(sci, px, py, sigma)
    drifted = np.hypot(x - px, y - py) > 2 * fwhm  # a centroid that wandered off its peak: keep the peak
    x, y = np.where(drifted, px, x), np.where(drifted, py, y)
    aperture_radius = 2.0 * fwhm
    rows_out: dict[str, list[float]] = {k: [] for k in ("fa", "ea", "fk", "ek", "kr", "a", "b", "t", "area")}
    sky = labels == 0
    flags = np.where(np.asarray(peaks["BLENDED"], dtype=bool), Flag.BLENDED, 0).astype(np.int32)
    for i in range(count):
        label = int(peaks["LABEL"][i])
        member = labels == label
        shape = segment_shape(sci, member, x[i], y[i], floor=sigma)
        kron = max(kron_radius(sci, shape, x[i], y[i], member | sky), KRON_MIN_RADIUS / KRON_FACTOR)
        circle = _measure_aperture(sci, var, covered, labels, label, x[i], y[i], aperture_radius, None)
        auto = _measure_aperture(sci, var, covered, labels, label, x[i], y[i], KRON_FACTOR * kron, shape)
        flags[i] |= circle.flags | auto.flags
        for key, value in zip(
            rows_out,
            (
                circle.flux,
                circle.error,
                auto.flux,
                auto.error,
                kron,
                shape.a,
                shape.b,
                shape.theta,
                member.sum(),
            ),
            strict=True,
        ):
            rows_out[key].append(float(value))
    ra, dec = WCS(mosaic.wcs_header).all_pix2world(x, y, 0) if count else (np.empty(0), np.empty(0))
    zero_point = float(mosaic.meta.get("MAGZERO", 0.0))
    flux_aper, err_aper = np.asarray(rows_out["fa"]), np.asarray(rows_out["ea"])
    flux_auto, err_auto = np.asarray(rows_out["fk"]), np.asarray(rows_out["ek"])
    return Catalog(
        {
            "NUMBER": np.arange(1, count + 1, dtype=np.int32),
            "X_IMAGE": x + 1.0,
            "Y_IMAGE": y + 1.0,
            "RA": np.asarray(ra, dtype=np.float64),
            "DEC": np.asarray(dec, dtype=np.float64),
            "FLUX_APER": flux_aper,
            "FLUXERR_APER": err_aper,
            "MAG_APER": magnitude(flux_aper, zero_point),
            "MAGERR_APER": magnitude_error(flux_aper, err_aper),
            "FLUX_AUTO": flux_auto,
            "FLUXERR_AUTO": err_auto,
            "MAG_AUTO": magnitude(flux_auto, zero_point),
            "MAGERR_AUTO": magnitude_error(flux_auto, err_auto),
            "SNR": np.where(err_auto > 0, flux_auto / np.where(err_auto > 0, err_auto, 1.0), 0.0),
            "KRON_RADIUS": np.asarray(rows_out["kr"]),
            "A_IMAGE": np.asarray(rows_out["a"]),
            "B_IMAGE": np.asarray(rows_out["b"]),
            "THETA_IMAGE": np.degrees(np.asarray(rows_out["t"])),
            "ISOAREA": np.asarray(rows_out["area"], dtype=np.int32),
            "PEAK_SNR": np.asarray(peaks["PEAK_SNR"], dtype=np.float64),
            "FLAGS": flags,
        }
    )


def _measure_aperture(
    sci: FloatArray,
    var: FloatArray,
    covered: npt.NDArray[np.bool_],
    labels: npt.NDArray[np.int32],
    label: int,
    x: float,
    y: float,
    radius: float,
    shape: Shape | None,
) -> Measurement:
    """Circular aperture of ``radius`` pixels, or the Kron ellipse of ``radius`` axes if ``shape`` is set."""
    reach = radius * (shape.a if shape else 1.0) + 1
    r0, r1 = int(np.floor(y - reach)), int(np.ceil(y + reach))
    c0, c1 = int(np.floor(x - reach)), int(np.ceil(x + reach))
    rows, cols = np.mgrid[r0 : r1 + 1, c0 : c1 + 1]
    dx, dy = cols - x, rows - y
    if shape is None:
        weights = aperture_weights(dx, dy, lambda u, v: (u**2 + v**2) <= radius**2)
    else:
        weights = aperture_weights(dx, dy, lambda u, v: shape.ellipse_radius(u, v) <= radius)
    return corrected_sum(sci, var, covered, labels, label, x, y, weights, rows, cols)


def magnitude(flux: FloatArray, zero_point: float) -> FloatArray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(flux > 0, zero_point - 2.5 * np.log10(np.where(flux > 0, flux, 1.0)), 99.0)


def magnitude_error(flux: FloatArray, error: FloatArray) -> FloatArray:
    return np.where(flux > 0, 1.0857 * error / np.where(flux > 0, flux, 1.0), 99.0)


UNITS = {
    "X_IMAGE": "pixel",
    "Y_IMAGE": "pixel",
    "RA": "deg",
    "DEC": "deg",
    "FLUX_APER": "electron/s",
    "FLUXERR_APER": "electron/s",
    "FLUX_AUTO": "electron/s",
    "FLUXERR_AUTO": "electron/s",
    "MAG_APER": "mag",
    "MAGERR_APER": "mag",
    "MAG_AUTO": "mag",
    "MAGERR_AUTO": "mag",
    "A_IMAGE": "pixel",
    "B_IMAGE": "pixel",
    "THETA_IMAGE": "deg",
    "ISOAREA": "pixel2",
}


def write_catalog(catalog: Catalog, mosaic: Mosaic, path: Path) -> Path:
    meta = mosaic.meta.copy()
    meta["NSOURCES"] = (len(catalog), "sources in the catalogue")
    meta["APERRAD"] = (2.0 * float(mosaic.meta.get("PSFFWHM", 2.0)), "FLUX_APER radius, pixels")
    add_history(meta, "photometry", f"{len(catalog)} sources measured")
    return write_table(catalog.columns, path, meta, name="CATALOG", units=UNITS)


def _action(inputs: dict[str, str], outputs: dict[str, Path]) -> str:
    mosaic = read_mosaic(inputs["image"])
    labels, peaks = read_segmentation(inputs["source_mask"])
    catalog = measure(mosaic, labels, peaks)
    write_catalog(catalog, mosaic, outputs["catalog"])
    return f"{len(catalog)} sources measured -> {outputs['catalog'].name}"


def main() -> None:
    raise SystemExit(run_step("sgs-nir-photometry", ["image", "source_mask"], ["catalog"], _action))

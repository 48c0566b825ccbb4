"""Deterministic simulator of NIR-like dither exposures, their calibration files and the truth behind them.

Everything follows from a seed: a sky of stars and exponential-disk galaxies with known positions and fluxes
on a TAN projection, four dithered exposures per observation (Poisson noise, read noise, dark current, hot and
bad pixels, a bad column, cosmic rays, a sloped sky background, a drifting bias with an overscan strip, and a
pointing error in the header WCS that the astrometry step must remove), the Mission DataBase (bad-pixel map,
gain, read noise, zero point, nominal PSF), a master dark, and a reference catalogue of stars with small
position errors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import numpy.typing as npt
from astropy.io import fits
from astropy.wcs import WCS
from scipy import ndimage, special

from sgs.nir.fitsio import FloatArray, write_atomically, write_table

ARCSEC = 1.0 / 3600.0
DITHER_OFFSETS_ARCSEC: tuple[tuple[float, float], ...] = ((0.0, 0.0), (4.2, 1.5), (1.8, 5.1), (-3.0, 3.6))


@dataclass(frozen=True)
class DetectorModel:
    """The instrument as the Mission DataBase describes it (units: pixels, electrons, ADU, seconds)."""

    ny: int = 256
    nx: int = 256
    overscan: int = 16
    gain: float = 2.0  # e-/ADU
    read_noise: float = 8.0  # e-
    bias_level: float = 1000.0  # ADU
    pixel_scale: float = 0.3  # arcsec/pixel
    psf_fwhm: float = 2.2  # pixels
    zero_point: float = 25.0  # AB mag of 1 e-/s
    dark_rate: float = 0.02  # e-/s/pixel
    hot_fraction: float = 0.004
    bad_fraction: float = 0.002
    bad_columns: int = 1
    saturate_adu: int = 65535
    filter_name: str = "H"


@dataclass(frozen=True)
class SkyModel:
    """Source densities (per square arcminute) and magnitude ranges of the simulated sky."""

    star_density: float = 25.0
    galaxy_density: float = 40.0
    star_mags: tuple[float, float] = (17.0, 25.0)
    galaxy_mags: tuple[float, float] = (18.0, 25.0)
    galaxy_reff_arcsec: tuple[float, float] = (0.3, 1.0)
    # Isolated sources: the quality figures then measure detection and measurement, not deblending.
    min_separation_arcsec: float = 2.5
    sky_rate: float = 1.2  # e-/s/pixel at the tile centre
    sky_gradient: float = 0.15  # fractional change across the detector
    refcat_mag_limit: float = 21.5
    refcat_position_error_arcsec: float = 0.02


@dataclass(frozen=True)
class ExposurePlan:
    """How one observation is taken: exposure time, cosmic-ray rate and the header pointing error."""

    exptime: float = 100.0
    cosmic_rate: float = 1.5e-5  # events per pixel per second
    pointing_error_arcsec: float = 1.0
    rotation_error_deg: float = 0.01
    dither_offsets_arcsec: tuple[tuple[float, float], ...] = DITHER_OFFSETS_ARCSEC


@dataclass(frozen=True)
class SimConfig:
    detector: DetectorModel = field(default_factory=DetectorModel)
    sky: SkyModel = field(default_factory=SkyModel)
    exposure: ExposurePlan = field(default_factory=ExposurePlan)


@dataclass(frozen=True)
class Tile:
    """A sky region shared by several observations; resampled images use its tangent point."""

    tile_id: str
    ra: float
    dec: float
    half_width_arcsec: float = 60.0


@dataclass
class TruthCatalog:
    ra: FloatArray
    dec: FloatArray
    mag: FloatArray
    flux: FloatArray  # e-/s
    is_star: npt.NDArray[np.bool_]
    reff_arcsec: FloatArray
    axis_ratio: FloatArray
    position_angle: FloatArray  # degrees, from +x towards +y

    def __len__(self) -> int:
        return int(self.ra.size)


@dataclass(frozen=True)
class CalibrationFiles:
    mdb: Path
    master_dark: Path


@dataclass(frozen=True)
class ObservationFiles:
    obs_id: str
    tile_id: str
    dithers: tuple[Path, ...]
    mdb: Path
    master_dark: Path
    refcat: Path
    truth: Path

    def pipeline_inputs(self) -> dict[str, Path]:
        """The inputs of :func:`sgs.nir.pipeline.nir_pipeline`, by name."""
        inputs = {f"dither{i + 1}": path for i, path in enumerate(self.dithers)}
        inputs.update(mdb=self.mdb, masterDark=self.master_dark, catalog=self.refcat)
        return inputs

    def files(self) -> list[Path]:
        return [*self.dithers, self.mdb, self.master_dark, self.refcat, self.truth]


def flux_from_mag(mag: npt.ArrayLike, zero_point: float) -> FloatArray:
    return np.asarray(10.0 ** (-0.4 * (np.asarray(mag, dtype=np.float64) - zero_point)))


def tan_wcs(ra: float, dec: float, shape: tuple[int, int], scale_arcsec: float, rotation_deg: float = 0.0) -> WCS:
    """A TAN WCS with North up and East left (before ``rotation_deg``), reference pixel at the centre."""
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [ra, dec]
    wcs.wcs.crpix = [(shape[1] + 1) / 2.0, (shape[0] + 1) / 2.0]
    scale = scale_arcsec * ARCSEC
    angle = math.radians(rotation_deg)
    cos, sin = math.cos(angle), math.sin(angle)
    wcs.wcs.cd = np.array([[-scale * cos, scale * sin], [scale * sin, scale * cos]])
    wcs.wcs.radesys = "ICRS"
    return wcs


def offset_position(ra: float, dec: float, east_arcsec: float, north_arcsec: float) -> tuple[float, float]:
    """Small offset on the sky (flat approximation is fine for arcminute offsets)."""
    return ra + east_arcsec * ARCSEC / math.cos(math.radians(dec)), dec + north_arcsec * ARCSEC


# ---------------------------------------------------------------------------------------------- the sky


def make_tile_sky(tile: Tile, sky: SkyModel, zero_point: float, seed: int) -> TruthCatalog:
    """Stars and galaxies scattered over the tile, at least ``min_separation_arcsec`` apart."""
    rng = np.random.default_rng(seed)
    area_arcmin2 = (2 * tile.half_width_arcsec / 60.0) ** 2
    n_star = rng.poisson(sky.star_density * area_arcmin2)
    n_gal = rng.poisson(sky.galaxy_density * area_arcmin2)
    xy = _isolated_positions(n_star + n_gal, tile.half_width_arcsec, sky.min_separation_arcsec, rng)
    is_star = np.zeros(len(xy), dtype=bool)
    is_star[: min(n_star, len(xy))] = True
    mag = np.where(
        is_star,
        rng.uniform(*sky.star_mags, size=len(xy)),
        _power_law_mags(sky.galaxy_mags, 0.3, len(xy), rng),
    )
    reff = np.where(is_star, 0.0, rng.uniform(*sky.galaxy_reff_arcsec, size=len(xy)))
    ras = tile.ra + xy[:, 0] * ARCSEC / math.cos(math.radians(tile.dec))
    decs = tile.dec + xy[:, 1] * ARCSEC
    return TruthCatalog(
        ra=ras,
        dec=decs,
        mag=mag,
        flux=flux_from_mag(mag, zero_point),
        is_star=is_star,
        reff_arcsec=reff,
        axis_ratio=np.where(is_star, 1.0, rng.uniform(0.4, 1.0, size=len(xy))),
        position_angle=rng.uniform(0.0, 180.0, size=len(xy)),
    )


def _isolated_positions(
    count: int, half_width: float, min_sep: float, rng: np.random.Generator
) -> npt.NDArray[np.float64]:
    accepted: list[tuple[float, float]] = []
    attempts = 0
    while len(accepted) < count and attempts < 50 * max(count, 1):
        attempts += 1
        candidate = rng.uniform(-half_width, half_width, size=2)
        if accepted:
            existing = np.asarray(accepted)
            if np.min(np.hypot(*(existing - candidate).T)) < min_sep:
                continue
        accepted.append((float(candidate[0]), float(candidate[1])))
    return np.asarray(accepted, dtype=np.float64).reshape(-1, 2)


def _power_law_mags(mag_range: tuple[float, float], slope: float, size: int, rng: np.random.Generator) -> FloatArray:
    """Magnitudes with counts rising as 10^(slope m), like faint galaxy number counts."""
    lo, hi = (10.0 ** (slope * m) for m in mag_range)
    return np.asarray(np.log10(rng.uniform(lo, hi, size=size)) / slope)


def write_truth(truth: TruthCatalog, path: Path, tile: Tile) -> Path:
    meta = fits.Header()
    meta["TILE_ID"] = tile.tile_id
    meta["COMMENT"] = "Truth catalogue of the simulated sky: total fluxes in e-/s"
    return write_table(
        {
            "ID": np.arange(1, len(truth) + 1, dtype=np.int64),
            "RA": truth.ra,
            "DEC": truth.dec,
            "MAG": truth.mag,
            "FLUX": truth.flux,
            "IS_STAR": truth.is_star,
            "REFF": truth.reff_arcsec,
            "AXIS_RATIO": truth.axis_ratio,
            "PA": truth.position_angle,
        },
        path,
        meta,
        name="TRUTH",
        units={"RA": "deg", "DEC": "deg", "MAG": "mag", "FLUX": "electron/s", "REFF": "arcsec", "PA": "deg"},
    )


def read_truth(path: Path | str) -> TruthCatalog:
    with fits.open(path, memmap=False) as hdul:
        data = hdul["TRUTH"].data
        return TruthCatalog(
            ra=np.asarray(data["RA"], dtype=np.float64),
            dec=np.asarray(data["DEC"], dtype=np.float64),
            mag=np.asarray(data["MAG"], dtype=np.float64),
            flux=np.asarray(data["FLUX"], dtype=np.float64),
            is_star=np.asarray(data["IS_STAR"], dtype=bool),
            reff_arcsec=np.asarray(data["REFF"], dtype=np.float64),
            axis_ratio=np.asarray(data["AXIS_RATIO"], dtype=np.float64),
            position_angle=np.asarray(data["PA"], dtype=np.float64),
        )


def write_reference_catalog(truth: TruthCatalog, sky: SkyModel, path: Path, seed: int, declination: float) -> Path:
    """Bright stars with Gaia-like position errors: what the astrometry step calibrates against."""
    rng = np.random.default_rng(seed)
    chosen = truth.is_star & (truth.mag <= sky.refcat_mag_limit)
    err = sky.refcat_position_error_arcsec
    n = int(chosen.sum())
    ra = truth.ra[chosen] + rng.normal(0, err, n) * ARCSEC / math.cos(math.radians(declination))
    dec = truth.dec[chosen] + rng.normal(0, err, n) * ARCSEC
    meta = fits.Header()
    meta["COMMENT"] = "Astrometric reference catalogue (simulated, Gaia-like)"
    return write_table(
        {"RA": ra, "DEC": dec, "MAG": truth.mag[chosen], "POS_ERR": np.full(n, err)},
        path,
        meta,
        name="REFCAT",
        units={"RA": "deg", "DEC": "deg", "MAG": "mag", "POS_ERR": "arcsec"},
    )


# -------------------------------------------------------------------------------------- calibrations


def make_bad_pixel_map(detector: DetectorModel, rng: np.random.Generator) -> npt.NDArray[np.uint8]:
    bad = rng.random((detector.ny, detector.nx)) < detector.bad_fraction
    for column in rng.integers(8, detector.nx - 8, size=detector.bad_columns):
        bad[:, column] = True
    return bad.astype(np.uint8)


def make_dark_rate(detector: DetectorModel, rng: np.random.Generator) -> npt.NDArray[np.float32]:
    rate = np.full((detector.ny, detector.nx), detector.dark_rate)
    hot = rng.random(rate.shape) < detector.hot_fraction
    rate[hot] = rng.uniform(0.5, 20.0, size=int(hot.sum()))
    return rate.astype(np.float32)


def simulate_calibrations(outdir: Path, config: SimConfig, seed: int) -> CalibrationFiles:
    """The Mission DataBase (bad pixels, gain, noise, zero point, PSF) and the master dark."""
    det = config.detector
    rng = np.random.default_rng([seed, 7])
    outdir.mkdir(parents=True, exist_ok=True)
    mdb_header = fits.Header()
    mdb_header["INSTRUME"] = "NISP-SIM"
    mdb_header["GAIN"] = (det.gain, "e-/ADU")
    mdb_header["RDNOISE"] = (det.read_noise, "read noise, e-")
    mdb_header["MAGZERO"] = (det.zero_point, "AB mag of 1 e-/s")
    mdb_header["PSFFWHM"] = (det.psf_fwhm, "nominal PSF FWHM, pixels")
    mdb_header["PIXSCALE"] = (det.pixel_scale, "arcsec/pixel")
    mdb_header["SATURATE"] = (det.saturate_adu, "ADU")
    mdb = fits.HDUList([fits.PrimaryHDU(header=mdb_header), fits.ImageHDU(make_bad_pixel_map(det, rng), name="BADPIX")])
    dark_header = fits.Header()
    dark_header["BUNIT"] = "electron/s"
    dark_header["NCOMBINE"] = (50, "raw darks combined")
    dark = make_dark_rate(det, rng)
    noisy_dark = dark + rng.normal(0, 0.002, dark.shape).astype(np.float32)
    master_dark = fits.HDUList([fits.PrimaryHDU(data=noisy_dark.astype(np.float32), header=dark_header)])
    files = CalibrationFiles(
        mdb=write_atomically(mdb, outdir / "mdb.fits"),
        master_dark=write_atomically(master_dark, outdir / "master_dark.fits"),
    )
    return files


# ---------------------------------------------------------------------------------------- exposures


def render_sources(truth: TruthCatalog, wcs: WCS, shape: tuple[int, int], psf_fwhm: float, scale: float) -> FloatArray:
    """Expected source signal in e-/s per pixel, pixel-integrated."""
    image = np.zeros(shape, dtype=np.float64)
    x, y = wcs.all_world2pix(truth.ra, truth.dec, 0)
    sigma = psf_fwhm / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    margin = 10
    inside = (x > -margin) & (x < shape[1] + margin) & (y > -margin) & (y < shape[0] + margin)
    for i in np.nonzero(inside)[0]:
        if truth.is_star[i]:
            stamp, x0, y0 = _star_stamp(x[i], y[i], sigma)
        else:
            stamp, x0, y0 = _galaxy_stamp(
                x[i], y[i], truth.reff_arcsec[i] / scale, truth.axis_ratio[i], truth.position_angle[i], sigma
            )
        _add_stamp(image, stamp * truth.flux[i], x0, y0)
    return image


def _star_stamp(x: float, y: float, sigma: float) -> tuple[FloatArray, int, int]:
    half = math.ceil(6 * sigma) + 1
    x0, y0 = round(x) - half, round(y) - half
    edges_x = np.arange(x0, x0 + 2 * half + 2) - 0.5
    edges_y = np.arange(y0, y0 + 2 * half + 2) - 0.5
    fx = np.diff(special.erf((edges_x - x) / (math.sqrt(2) * sigma))) / 2
    fy = np.diff(special.erf((edges_y - y) / (math.sqrt(2) * sigma))) / 2
    return np.outer(fy, fx), x0, y0


def _galaxy_stamp(
    x: float, y: float, reff_px: float, axis_ratio: float, pa_deg: float, psf_sigma: float
) -> tuple[FloatArray, int, int]:
    """Exponential disk convolved with the PSF, rendered 5x oversampled then binned; sums to 1."""
    oversample = 5
    scale_length = reff_px / 1.678
    half = math.ceil(6 * reff_px + 4 * psf_sigma) + 1
    x0, y0 = round(x) - half, round(y) - half
    n = (2 * half + 1) * oversample
    sub = (np.arange(n) + 0.5) / oversample - 0.5
    gx = x0 + sub[None, :] - x
    gy = y0 + sub[:, None] - y
    angle = math.radians(pa_deg)
    major = gx * math.cos(angle) + gy * math.sin(angle)
    minor = -gx * math.sin(angle) + gy * math.cos(angle)
    radius = np.sqrt(major**2 + (minor / axis_ratio) ** 2)
    profile = np.exp(-radius / scale_length)
    profile = ndimage.gaussian_filter(profile, psf_sigma * oversample, mode="constant")
    binned = profile.reshape(2 * half + 1, oversample, 2 * half + 1, oversample).sum(axis=(1, 3))
    return binned / binned.sum(), x0, y0


def _add_stamp(image: FloatArray, stamp: FloatArray, x0: int, y0: int) -> None:
    ny, nx = image.shape
    sy, sx = stamp.shape
    ya, yb = max(0, y0), min(ny, y0 + sy)
    xa, xb = max(0, x0), min(nx, x0 + sx)
    if ya >= yb or xa >= xb:
        return
    image[ya:yb, xa:xb] += stamp[ya - y0 : yb - y0, xa - x0 : xb - x0]


def sky_background(det: DetectorModel, sky: SkyModel, rng: np.random.Generator) -> FloatArray:
    """A sloped sky (e-/s/pixel): zodiacal light varies smoothly across a detector."""
    yy, xx = np.mgrid[0 : det.ny, 0 : det.nx]
    angle = rng.uniform(0, 2 * math.pi)
    ramp = (np.cos(angle) * (xx / det.nx - 0.5) + np.sin(angle) * (yy / det.ny - 0.5)) * sky.sky_gradient
    return np.asarray(sky.sky_rate * (1.0 + ramp))


def add_cosmic_rays(electrons: FloatArray, rate: float, exptime: float, rng: np.random.Generator) -> int:
    """Deposit straight tracks of charge; returns the number of events."""
    ny, nx = electrons.shape
    events = rng.poisson(rate * exptime * ny * nx)
    for _ in range(events):
        length = rng.geometric(0.35)
        angle = rng.uniform(0, math.pi)
        x, y = rng.uniform(0, nx), rng.uniform(0, ny)
        charge = rng.lognormal(math.log(1500.0), 0.6)
        for step in range(length):
            px = int(x + step * math.cos(angle))
            py = int(y + step * math.sin(angle))
            if 0 <= px < nx and 0 <= py < ny:
                electrons[py, px] += charge / length * rng.uniform(0.6, 1.4)
    return int(events)


def raw_frame(
    electrons: FloatArray, det: DetectorModel, bad: npt.NDArray[np.uint8], rng: np.random.Generator
) -> npt.NDArray[np.uint16]:
    """Electrons to ADU with a drifting bias, read noise, garbage in bad pixels and an overscan strip."""
    rows = np.arange(det.ny)
    phase = rng.uniform(0, 2 * math.pi)
    bias_rows = det.bias_level + 6.0 * np.sin(2 * math.pi * 0.7 * rows / det.ny + phase) + 0.01 * rows
    signal = np.where(bad > 0, rng.uniform(0, 3e4, electrons.shape), electrons)
    frame = np.empty((det.ny, det.nx + det.overscan), dtype=np.float64)
    frame[:, : det.nx] = signal / det.gain
    frame[:, det.nx :] = 0.0
    frame += bias_rows[:, None] + rng.normal(0, det.read_noise / det.gain, frame.shape)
    return np.clip(np.rint(frame), 0, det.saturate_adu).astype(np.uint16)


def simulate_dither(
    truth: TruthCatalog,
    true_wcs: WCS,
    header_wcs: WCS,
    meta: fits.Header,
    calibrations: tuple[npt.NDArray[np.uint8], npt.NDArray[np.float32]],
    config: SimConfig,
    rng: np.random.Generator,
) -> fits.HDUList:
    det, sky, plan = config.detector, config.sky, config.exposure
    bad, dark_rate = calibrations
    rate = sky_background(det, sky, rng) + dark_rate
    rate += render_sources(truth, true_wcs, (det.ny, det.nx), det.psf_fwhm, det.pixel_scale)
    electrons = rng.poisson(rate * plan.exptime).astype(np.float64)
    meta["NCOSMIC"] = (add_cosmic_rays(electrons, plan.cosmic_rate, plan.exptime, rng), "simulated events")
    header = meta.copy()
    header.update(header_wcs.to_header())
    header["DATASEC"] = f"[1:{det.nx},1:{det.ny}]"
    header["BIASSEC"] = f"[{det.nx + 1}:{det.nx + det.overscan},1:{det.ny}]"
    header["BUNIT"] = "adu"
    return fits.HDUList([fits.PrimaryHDU(data=raw_frame(electrons, det, bad, rng), header=header)])


def simulate_observation(
    outdir: Path,
    obs_id: str,
    tile: Tile,
    truth: TruthCatalog,
    pointing_offset_arcsec: tuple[float, float],
    calibration: CalibrationFiles,
    refcat: Path,
    truth_path: Path,
    config: SimConfig,
    seed: int,
    date_obs: datetime | None = None,
) -> ObservationFiles:
    """Four raw dither exposures of one observation, written under ``outdir``."""
    det, plan = config.detector, config.exposure
    targets = [outdir / f"{obs_id}_dither{i}.fits" for i in range(1, len(plan.dither_offsets_arcsec) + 1)]
    files = ObservationFiles(
        obs_id, tile.tile_id, tuple(targets), calibration.mdb, calibration.master_dark, refcat, truth_path
    )
    if all(t.exists() for t in targets):
        return files  # written before (files appear atomically): the same seed would give the same bytes
    rng = np.random.default_rng(seed)
    with fits.open(calibration.mdb) as mdb, fits.open(calibration.master_dark) as dark:
        calibs = (np.asarray(mdb["BADPIX"].data, dtype=np.uint8), np.asarray(dark[0].data, dtype=np.float32))
    start = date_obs or datetime(2026, 3, 1, tzinfo=UTC)
    pointing = offset_position(tile.ra, tile.dec, *pointing_offset_arcsec)
    for index, (dx, dy) in enumerate(plan.dither_offsets_arcsec, start=1):
        true_ra, true_dec = offset_position(*pointing, dx, dy)
        true_rotation = rng.normal(0, plan.rotation_error_deg)
        err_e, err_n = rng.normal(0, plan.pointing_error_arcsec, size=2)
        true_wcs = tan_wcs(true_ra, true_dec, (det.ny, det.nx), det.pixel_scale, true_rotation)
        header_wcs = tan_wcs(*offset_position(true_ra, true_dec, err_e, err_n), (det.ny, det.nx), det.pixel_scale)
        meta = _exposure_meta(obs_id, index, tile, plan.exptime, det, start + timedelta(seconds=120 * index))
        hdul = simulate_dither(truth, true_wcs, header_wcs, meta, calibs, config, rng)
        write_atomically(hdul, targets[index - 1])
    return files


def _exposure_meta(
    obs_id: str, dither: int, tile: Tile, exptime: float, det: DetectorModel, when: datetime
) -> fits.Header:
    meta = fits.Header()
    meta["TELESCOP"] = "SGS-SIM"
    meta["INSTRUME"] = "NISP-SIM"
    meta["FILTER"] = det.filter_name
    meta["EXPTIME"] = (exptime, "s")
    meta["OBS_ID"] = obs_id
    meta["DITHER"] = dither
    meta["TILE_ID"] = tile.tile_id
    meta["TILERA"] = (tile.ra, "tile tangent point RA, deg")
    meta["TILEDEC"] = (tile.dec, "tile tangent point Dec, deg")
    meta["DATE-OBS"] = when.strftime("%Y-%m-%dT%H:%M:%S")
    return meta


@dataclass(frozen=True)
class TileFiles:
    tile: Tile
    truth: TruthCatalog
    truth_path: Path
    refcat: Path


def simulate_tile(outdir: Path, tile: Tile, config: SimConfig, seed: int) -> TileFiles:
    """The sky of one tile: truth catalogue and reference catalogue."""
    truth = make_tile_sky(tile, config.sky, config.detector.zero_point, seed)
    truth_path = write_truth(truth, outdir / f"{tile.tile_id}_truth.fits", tile)
    refcat = write_reference_catalog(truth, config.sky, outdir / f"{tile.tile_id}_refcat.fits", seed + 1, tile.dec)
    return TileFiles(tile=tile, truth=truth, truth_path=truth_path, refcat=refcat)


def simulate_field(
    outdir: Path,
    config: SimConfig | None = None,
    seed: int = 1,
    tile: Tile | None = None,
    pointing_offset_arcsec: tuple[float, float] = (0.0, 0.0),
    obs_id: str = "OBS0001",
) -> ObservationFiles:
    """One observation with its own calibrations and sky: the unit of the tests and of ``sgs demo``."""
    cfg = config or SimConfig()
    the_tile = tile or Tile("TILE0001", 150.1, 2.2)
    outdir.mkdir(parents=True, exist_ok=True)
    calibration = simulate_calibrations(outdir, cfg, seed)
    sky = simulate_tile(outdir, the_tile, cfg, seed + 100)
    return simulate_observation(
        outdir,
        obs_id,
        the_tile,
        sky.truth,
        pointing_offset_arcsec,
        calibration,
        sky.refcat,
        sky.truth_path,
        cfg,
        seed + 200,
    )

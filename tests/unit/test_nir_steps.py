"""Each NIR step on small synthetic arrays whose right answer is known by construction."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from sgs.nir.dq import DQ
from sgs.nir.fitsio import Exposure, Mosaic, NirDataError, wcs_cards, write_exposure
from sgs.nir.sim import tan_wcs
from sgs.nir.steps import astrom, background, badpix, crrej, dark, detect, initialize, photometry, resample, stack
from sgs.nir.steps._cli import run_step

SIGMA = 2.2 / (2 * math.sqrt(2 * math.log(2)))


def gaussian_star(shape: tuple[int, int], x: float, y: float, flux: float, sigma: float = SIGMA) -> np.ndarray:
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    profile = np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2)) / (2 * math.pi * sigma**2)
    return np.asarray(flux * profile, dtype=np.float64)


def exposure(sci: np.ndarray, **meta: object) -> Exposure:
    header = fits.Header()
    header.update({"EXPTIME": 100.0, "BUNIT": "electron", "PSFFWHM": 2.2, "TILE_ID": "T1"})
    header.update(meta)
    wcs = tan_wcs(150.0, 2.0, sci.shape, 0.3)
    return Exposure(
        sci=sci.astype(np.float32),
        dq=np.zeros(sci.shape, np.uint16),
        meta=header,
        wcs_header=wcs_cards(wcs.to_header()),
        var=np.full(sci.shape, 170.0, np.float32),
        rms=np.full(sci.shape, 13.0, np.float32),
    )


# ------------------------------------------------------------------------------------------- initialize


def test_parse_section_converts_fits_to_numpy_slices() -> None:
    rows, cols = initialize.parse_section("[257:272,1:256]", "BIASSEC")
    assert (rows, cols) == (slice(0, 256), slice(256, 272))


@pytest.mark.parametrize("value", ["[1:256]", "[0:10,1:5]", "[10:5,1:5]", "junk"])
def test_parse_section_names_the_keyword_on_bad_values(value: str) -> None:
    with pytest.raises(NirDataError, match="BIASSEC"):
        initialize.parse_section(value, "BIASSEC")


def test_initialize_removes_a_drifting_bias_and_flags_saturation() -> None:
    rng = np.random.default_rng(3)
    ny, nx, over = 64, 48, 12
    bias = 1000 + 8 * np.sin(np.arange(ny) / 15.0)
    raw = rng.normal(0, 2.0, (ny, nx + over)) + bias[:, None]
    raw[:, :nx] += 50.0
    raw[10, 10] = 65535
    header = fits.Header({"DATASEC": f"[1:{nx},1:{ny}]", "BIASSEC": f"[{nx + 1}:{nx + over},1:{ny}]", "EXPTIME": 1.0})
    result = initialize.initialize(np.clip(raw, 0, 65535), header)
    assert result.sci.shape == (ny, nx)
    good = result.dq == 0
    assert abs(float(np.median(result.sci[good])) - 50.0) < 0.5
    assert result.dq[10, 10] & DQ.SATURATED
    assert int((~good).sum()) == 1


def test_initialize_reports_a_missing_overscan_keyword() -> None:
    with pytest.raises(NirDataError, match="BIASSEC"):
        initialize.initialize(np.zeros((4, 4)), fits.Header({"DATASEC": "[1:4,1:4]", "EXPTIME": 1.0}))


# ------------------------------------------------------------------------------------- badpix and dark


def mdb_header(gain: float = 2.0) -> fits.Header:
    return fits.Header({"GAIN": gain, "RDNOISE": 5.0, "MAGZERO": 25.0, "PSFFWHM": 2.2, "PIXSCALE": 0.3})


def test_badpix_applies_gain_flags_pixels_and_starts_variance() -> None:
    start = exposure(np.full((8, 8), 100.0), BUNIT="adu")
    start.var = None
    bad = np.zeros((8, 8), np.uint8)
    bad[2, 3] = 1
    result = badpix.mask_bad_pixels(start, bad, mdb_header(2.0))
    assert np.allclose(result.sci, 200.0)
    assert result.dq[2, 3] & DQ.BAD and int((result.dq > 0).sum()) == 1
    assert result.var is not None and np.allclose(result.var, 200.0 + 25.0)
    assert result.meta["BUNIT"] == "electron" and result.meta["MAGZERO"] == 25.0


def test_badpix_rejects_a_map_of_another_shape() -> None:
    with pytest.raises(NirDataError, match=r"shape \(4, 4\)"):
        badpix.mask_bad_pixels(exposure(np.zeros((8, 8))), np.zeros((4, 4), np.uint8), mdb_header())


def test_dark_subtracts_rate_times_exposure_time() -> None:
    rate = np.full((6, 6), 0.5, np.float32)
    rate[1, 1] = 10.0
    result = dark.subtract_dark(exposure(np.full((6, 6), 300.0)), rate)
    assert result.sci[0, 0] == pytest.approx(250.0)
    assert result.sci[1, 1] == pytest.approx(-700.0)


def test_dark_refuses_an_image_still_in_adu() -> None:
    with pytest.raises(NirDataError, match="electrons"):
        dark.subtract_dark(exposure(np.zeros((4, 4)), BUNIT="adu"), np.zeros((4, 4), np.float32))


# ------------------------------------------------------------------------------------------- cosmic rays


def test_crrej_finds_cosmic_rays_but_leaves_stars_alone() -> None:
    rng = np.random.default_rng(11)
    shape = (96, 96)
    stars = [(20.3, 30.7, 4e4), (60.1, 70.4, 2e5), (75.6, 18.2, 8e3)]
    truth = 120.0 + sum((gaussian_star(shape, x, y, f) for x, y, f in stars), np.zeros(shape))
    image = rng.poisson(truth).astype(np.float64) + rng.normal(0, 8, shape)
    hits = np.zeros(shape, bool)
    for _ in range(25):
        r, c = rng.integers(3, 93, size=2)
        length = rng.integers(1, 4)
        image[r, c : c + length] += rng.uniform(400, 3000)
        hits[r, c : c + length] = True
    result = crrej.reject_cosmics(exposure(image), (truth + 64).astype(np.float32))
    flagged = (result.dq & DQ.COSMIC) > 0
    assert (flagged & hits).sum() >= 0.9 * hits.sum()
    star_cores = sum(gaussian_star(shape, x, y, f) for x, y, f in stars) > 50
    assert (flagged & star_cores & ~hits).sum() <= 2
    # Replaced values are back near the sky level, not at the cosmic-ray level.
    assert np.all(result.sci[flagged & hits & ~star_cores] < 120 + 100)


# -------------------------------------------------------------------------------------------- background


def test_background_recovers_a_sloped_sky_under_stars() -> None:
    rng = np.random.default_rng(5)
    shape = (128, 128)
    yy, xx = np.mgrid[0:128, 0:128]
    sky = 100.0 + 0.2 * xx - 0.1 * yy
    stars = sum(gaussian_star(shape, x, y, 5e4) for x, y in rng.uniform(10, 118, size=(15, 2)))
    image = sky + stars + rng.normal(0, 10.0, shape)
    maps = background.estimate_background(image, np.ones(shape, bool), box=32)
    assert np.max(np.abs(maps.level - sky)[16:-16, 16:-16]) < 2.0
    assert float(np.median(maps.rms)) == pytest.approx(10.0, rel=0.1)


# -------------------------------------------------------------------------------------------- astrometry


def test_fit_transform_recovers_an_affine_map_despite_an_outlier() -> None:
    rng = np.random.default_rng(2)
    measured = rng.uniform(0, 256, size=(20, 2))
    matrix = np.array([[1.0002, -0.0004], [0.0004, 0.9998]])
    offset = np.array([3.2, -1.7])
    reference = measured @ matrix.T + offset + rng.normal(0, 0.02, size=(20, 2))
    reference[4] += 5.0
    fitted, shift, keep = astrom.fit_transform(measured, reference, affine=True, clip_sigma=3.0)
    assert not keep[4]
    assert np.allclose(fitted, matrix, atol=2e-4)
    assert np.allclose(shift, offset, atol=0.05)


def test_vote_offset_finds_the_common_shift_among_unrelated_pairs() -> None:
    rng = np.random.default_rng(8)
    reference = rng.uniform(0, 200, size=(30, 2))
    measured = np.vstack([reference[:20] - np.array([6.5, -4.0]), rng.uniform(0, 200, size=(25, 2))])
    shift = astrom.vote_offset(measured, reference, radius=27.0)
    assert shift is not None and np.allclose(shift, [6.5, -4.0], atol=0.2)


def test_corrected_wcs_applies_the_fitted_pixel_transform() -> None:
    wcs = tan_wcs(150.0, 2.0, (100, 100), 0.3)
    solution = astrom.AstromSolution(
        matrix=np.array([[1.001, 0.002], [-0.002, 0.999]]), offset=np.array([2.0, -3.0]), matches=10, rms_arcsec=0.0
    )
    fixed = astrom.corrected_wcs(wcs, solution)
    pixels = np.array([[1.0, 1.0], [50.0, 70.0], [100.0, 3.0]])
    moved = pixels @ solution.matrix.T + solution.offset
    assert np.allclose(fixed.all_pix2world(pixels, 1), wcs.all_pix2world(moved, 1), atol=1e-10)


# ---------------------------------------------------------------------------------- resample and stack


def test_resample_conserves_flux_and_moves_the_source() -> None:
    shape = (64, 64)
    start = exposure(gaussian_star(shape, 30.4, 33.8, 1e5), TILERA=150.0, TILEDEC=2.0)
    grid, out_shape = resample.common_grid([start])
    result = resample.resample(start, grid, out_shape)
    exptime = 100.0
    assert float(result.sci.sum()) * exptime == pytest.approx(1e5, rel=0.01)
    world = WCS(start.wcs_header).all_pix2world([[30.4, 33.8]], 0)
    x, y = WCS(result.wcs_header).all_world2pix(world, 0)[0]
    peak_y, peak_x = np.unravel_index(np.argmax(result.sci), result.sci.shape)
    assert abs(peak_x - x) <= 1 and abs(peak_y - y) <= 1


def test_resample_drops_pixels_that_touch_bad_input() -> None:
    start = exposure(np.ones((32, 32)), TILERA=150.0, TILEDEC=2.0)
    start.dq[10:12, :] = DQ.BAD
    grid, out_shape = resample.common_grid([start])
    result = resample.resample(start, grid, out_shape)
    assert 0 < int((result.wht == 0).sum()) < 0.3 * result.wht.size


def mosaic(sci: np.ndarray, var: float = 1.0, wht: float = 1.0) -> Mosaic:
    header = fits.Header({"EXPTIME": 100.0})
    wcs = tan_wcs(150.0, 2.0, sci.shape, 0.3)
    return Mosaic(
        sci=sci.astype(np.float32),
        var=np.full(sci.shape, var, np.float32),
        wht=np.full(sci.shape, wht, np.float32),
        meta=header,
        wcs_header=wcs_cards(wcs.to_header()),
    )


def test_stack_is_the_weighted_mean_and_rejects_a_lone_outlier() -> None:
    frames = [mosaic(np.full((8, 8), v), wht=w) for v, w in ((1.0, 1.0), (2.0, 1.0), (1.0, 2.0), (2.0, 2.0))]
    frames[1].sci[4, 4] = 500.0  # a residual cosmic ray in one dither
    result = stack.stack(frames)
    assert result.sci[0, 0] == pytest.approx((1 + 2 + 2 + 4) / 6)
    assert result.sci[4, 4] == pytest.approx((1 + 2 + 4) / 5)
    assert result.meta["NREJECT"] == 1
    assert result.extra["NEXP"][4, 4] == 3


def test_stack_refuses_inputs_on_different_grids() -> None:
    with pytest.raises(NirDataError, match="shape"):
        stack.stack([mosaic(np.zeros((8, 8))), mosaic(np.zeros((9, 8)))])


# -------------------------------------------------------------------------------- detect and photometry


def noisy_field(sources: list[tuple[float, float, float]], seed: int = 1) -> Mosaic:
    rng = np.random.default_rng(seed)
    shape = (80, 80)
    image = sum((gaussian_star(shape, x, y, f) for x, y, f in sources), np.zeros(shape))
    field = mosaic(image + rng.normal(0, 1.0, shape), var=1.0, wht=1.0)
    field.meta["PSFFWHM"] = 2.2
    field.meta["MAGZERO"] = 25.0
    return field


def test_detect_finds_isolated_sources_and_nothing_in_pure_noise() -> None:
    found = detect.segment(noisy_field([(20, 20, 300), (60, 55, 150)]), 2.2)
    assert found.count == 2
    assert detect.segment(noisy_field([], seed=4), 2.2).count == 0


def test_detect_splits_a_close_pair() -> None:
    found = detect.segment(noisy_field([(36, 40, 800), (43, 41, 600)]), 2.2)
    assert found.count == 2 and found.blended.all()
    assert sorted(np.round(found.peak_x)) == [36, 43]


def test_photometry_measures_position_and_flux(tmp_path: Path) -> None:
    field = noisy_field([(30.3, 41.6, 2000.0), (35.6, 43.0, 3000.0)])
    segmentation = detect.segment(field, 2.2)
    params = detect.DetectParams()
    path = detect.write_segmentation(segmentation, field, tmp_path / "segm.fits", params)
    labels, peaks = photometry.read_segmentation(path)
    catalog = photometry.measure(field, labels, peaks)
    order = np.argsort(catalog.columns["FLUX_APER"])
    x = np.asarray(catalog.columns["X_IMAGE"])[order] - 1
    flux = np.asarray(catalog.columns["FLUX_APER"])[order]
    error = np.asarray(catalog.columns["FLUXERR_APER"])[order]
    assert x[0] == pytest.approx(30.3, abs=0.15) and x[1] == pytest.approx(35.6, abs=0.15)
    # The neighbour 5.5 pixels away is masked by mirroring, so it barely inflates the flux.
    assert abs(flux[0] - 2000.0) < 3 * error[0] + 20 and abs(flux[1] - 3000.0) < 3 * error[1] + 20
    assert np.all(np.asarray(catalog.columns["FLAGS"]) & photometry.Flag.NEIGHBOURS)


# ------------------------------------------------------------------------------------------ executables


def test_step_reports_a_missing_input_file_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.fits"
    status = run_step(
        "sgs-nir-dark",
        ["infile", "darkcatfile"],
        ["outfile"],
        dark._action,
        [f"--infile={missing}", f"--darkcatfile={missing}", f"--outfile={tmp_path / 'out.fits'}"],
    )
    assert status == 1
    assert "nope.fits does not exist" in capsys.readouterr().err
    assert not (tmp_path / "out.fits").exists()


def test_step_needs_every_port_on_the_command_line() -> None:
    with pytest.raises(SystemExit) as info:
        run_step("sgs-nir-crrej", ["image"], ["outfile"], crrej._action, ["--image=x.fits"])
    assert info.value.code == 2


def test_exposure_files_round_trip(tmp_path: Path) -> None:
    original = exposure(np.arange(16.0).reshape(4, 4))
    path = write_exposure(original, tmp_path / "e.fits")
    with fits.open(path) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "SCI", "VAR", "DQ", "RMS"]
        assert hdul["SCI"].header["CTYPE1"] == "RA---TAN"
    assert not list(tmp_path.glob(".*partial"))

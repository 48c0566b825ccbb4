"""End to end on a small simulated field, in-process: the catalogue must recover the injected sky.

The steps are called as their executables' actions (same code, same files) without the executor, so this
runs in a few seconds; tests/integration/test_demo.py and test_nir_pipeline.py run them as subprocesses.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from sgs.nir import quality
from sgs.nir.sim import ObservationFiles, SimConfig, read_truth, simulate_field
from sgs.nir.steps import astrom, background, badpix, crrej, dark, detect, initialize, photometry, resample, stack


def process(files: ObservationFiles, out: Path) -> dict[str, Path]:
    """The seed-000 data flow, one step after the other."""
    calibrated = {}
    for index, raw in enumerate(files.dithers, start=1):
        paths = [out / f"d{index}_{step}.fits" for step in ("init", "badpix", "dark", "crrej", "bkg")]
        initialize._action({"infile": str(raw)}, {"outfile": paths[0]})
        badpix._action({"infile": str(paths[0]), "mdbfile": str(files.mdb)}, {"outfile": paths[1]})
        dark._action({"infile": str(paths[1]), "darkcatfile": str(files.master_dark)}, {"outfile": paths[2]})
        crrej._action({"image": str(paths[2])}, {"outfile": paths[3]})
        background._action({"input": str(paths[3])}, {"outfile": paths[4]})
        calibrated[f"dither{index}"] = str(paths[4])
    cal = {f"calDither{i}": out / f"cal{i}.fits" for i in range(1, 5)}
    astrom._action(calibrated | {"refcat_xml": str(files.refcat)}, cal)
    resampled = {f"resampDither{i}": out / f"res{i}.fits" for i in range(1, 5)}
    resample._action({k: str(v) for k, v in cal.items()}, resampled)
    stacked = out / "stack.fits"
    stack._action({f"resampledme{i}": str(resampled[f"resampDither{i}"]) for i in range(1, 5)}, {"stack": stacked})
    segm = out / "segm.fits"
    detect._action({"image": str(stacked)}, {"source_mask": segm})
    catalog = out / "catalog.fits"
    photometry._action({"image": str(stacked), "source_mask": str(segm)}, {"catalog": catalog})
    return {"stack": stacked, "catalog": catalog, **cal}


@pytest.fixture(scope="module")
def field(tmp_path_factory: pytest.TempPathFactory) -> tuple[ObservationFiles, dict[str, Path]]:
    root = tmp_path_factory.mktemp("nir-field")
    files = simulate_field(root / "inputs", SimConfig(), seed=7)
    return files, process(files, root / "out")


@pytest.fixture(scope="module")
def report(field: tuple[ObservationFiles, dict[str, Path]]) -> quality.QualityReport:
    files, products = field
    return quality.evaluate(products["catalog"], files.truth, products["stack"])


def test_completeness_at_snr_10_is_at_least_95_percent(report: quality.QualityReport) -> None:
    assert report.truth_snr10 >= 30, "the field must hold enough bright sources for the figure to mean anything"
    assert report.completeness_snr10 >= 0.95


def test_star_fluxes_are_unbiased_within_2_percent(report: quality.QualityReport) -> None:
    assert report.stars_used >= 15
    assert abs(report.flux_bias_stars) < 0.02


def test_flux_errors_describe_the_scatter(report: quality.QualityReport) -> None:
    assert 0.7 < report.flux_error_ratio_stars < 1.4


def test_galaxy_kron_fluxes_are_close_to_total(report: quality.QualityReport) -> None:
    assert report.galaxies_used >= 3
    assert abs(report.flux_bias_galaxies) < 0.05


def test_astrometry_is_tied_to_the_reference_catalogue(report: quality.QualityReport) -> None:
    # The header WCS starts about 1 arcsec off; after calibration stars land within a few tens of mas.
    assert report.astrometric_rms_arcsec < 0.05
    assert max(abs(v) for v in report.astrometric_offset_arcsec) < 0.02


def test_few_spurious_detections(report: quality.QualityReport) -> None:
    assert report.spurious <= max(2, 0.03 * report.detected)


def test_completeness_falls_towards_the_faint_end(report: quality.QualityReport) -> None:
    bright = [b for b in report.by_magnitude if b.mag_high <= 22.0]
    faint = [b for b in report.by_magnitude if b.mag_low >= 24.5]
    assert sum(b.found for b in bright) == sum(b.truth for b in bright)
    assert sum(b.found for b in faint) < 0.5 * sum(b.truth for b in faint)


def test_astrometry_corrected_the_pointing_error(field: tuple[ObservationFiles, dict[str, Path]]) -> None:
    _, products = field
    with fits.open(products["calDither1"]) as hdul:
        assert hdul[0].header["ASTNMAT"] >= 6
        assert hdul[0].header["ASTRMS"] < 0.1
        shift = np.hypot(hdul[0].header["ASTSHFTX"], hdul[0].header["ASTSHFTY"])
    assert shift > 0.3, "the simulated header WCS is off by ~1 arcsec; a zero correction means nothing was fitted"


def test_catalogue_positions_and_magnitudes_match_truth(field: tuple[ObservationFiles, dict[str, Path]]) -> None:
    files, products = field
    truth = read_truth(files.truth)
    with fits.open(products["catalog"]) as hdul:
        catalog = hdul["CATALOG"].data
        edge = photometry.Flag.TRUNCATED | photometry.Flag.UNCOVERED  # cut by the field edge: position biased
        bright = catalog[(catalog["SNR"] > 50) & ((catalog["FLAGS"] & edge) == 0)]
    assert len(bright) >= 10
    for row in bright:
        sep = np.hypot((truth.ra - row["RA"]) * np.cos(np.radians(row["DEC"])), truth.dec - row["DEC"]) * 3600
        nearest = int(np.argmin(sep))
        assert sep[nearest] < 0.15
        assert row["MAG_AUTO"] == pytest.approx(truth.mag[nearest], abs=0.1)


def test_simulation_is_deterministic(tmp_path: Path) -> None:
    first = simulate_field(tmp_path / "a", seed=3)
    second = simulate_field(tmp_path / "b", seed=3)
    for a, b in zip(first.files(), second.files(), strict=True):
        with fits.open(a) as ha, fits.open(b) as hb:
            for x, y in zip(ha, hb, strict=True):
                assert (x.data is None and y.data is None) or np.array_equal(np.asarray(x.data), np.asarray(y.data))
    with fits.open(first.dithers[0]) as hdul:
        header = hdul[0].header
        for key in ("EXPTIME", "FILTER", "OBS_ID", "DITHER", "CTYPE1", "CRVAL1", "BIASSEC"):
            assert key in header
        assert WCS(header).has_celestial


def test_quality_match_lets_the_brightest_truth_choose_first() -> None:
    truth_xy = np.array([[10.0, 10.0], [10.5, 10.0]])
    detections = np.array([[10.4, 10.0]])
    matched = quality.match(truth_xy, np.array([1.0, 100.0]), detections, radius=1.0)
    assert list(matched) == [-1, 0]

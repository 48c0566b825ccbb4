"""Cosmic-ray rejection on a single exposure with the Laplacian edge method (van Dokkum 2001, L.A.Cosmic).

Cosmic rays are sharper than the PSF: the Laplacian of the 2x subsampled image picks out their edges, and a
fine-structure image (median 3 minus median 7) keeps compact stars from being mistaken for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from sgs.nir.dq import DQ
from sgs.nir.fitsio import Exposure, add_history, read_exposure, write_exposure
from sgs.nir.imaging import fill_masked
from sgs.nir.steps._cli import run_step

LAPLACIAN = np.array([[0.0, -1.0, 0.0], [-1.0, 4.0, -1.0], [0.0, -1.0, 0.0]])
GROW = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class CosmicParams:
    sigclip: float = 5.0  # S/N of the Laplacian for a cosmic-ray pixel
    sigfrac: float = 0.3  # fraction of sigclip for neighbouring pixels
    objlim: float = 5.0  # contrast between Laplacian and fine structure
    iterations: int = 4


def laplacian_significance(image: npt.NDArray[np.float64], noise: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """S' of L.A.Cosmic: positive Laplacian of the 2x subsampled image over 2 x noise, minus its median."""
    ny, nx = image.shape
    subsampled = np.repeat(np.repeat(image, 2, axis=0), 2, axis=1)
    edges = np.clip(ndimage.convolve(subsampled, LAPLACIAN, mode="mirror"), 0.0, None)
    rebinned = edges.reshape(ny, 2, nx, 2).mean(axis=(1, 3))
    significance = rebinned / (2.0 * noise)
    return np.asarray(significance - ndimage.median_filter(significance, size=5, mode="mirror"))


def fine_structure(image: npt.NDArray[np.float64], noise: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    med3 = ndimage.median_filter(image, size=3, mode="mirror")
    med7 = ndimage.median_filter(med3, size=7, mode="mirror")
    return np.asarray(np.clip((med3 - med7) / noise, 0.01, None))


def detect_cosmics(
    sci: npt.NDArray[np.floating],
    var: npt.NDArray[np.floating],
    good: npt.NDArray[np.bool_],
    params: CosmicParams = CosmicParams(),
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.float64]]:
    """Mask of cosmic-ray pixels and the image with them replaced by their good neighbours."""
    noise = np.sqrt(np.clip(ndimage.median_filter(var.astype(np.float64), size=5, mode="mirror"), 1e-6, None))
    cosmic = np.zeros(sci.shape, dtype=bool)
    clean = fill_masked(sci.astype(np.float64), good)
    for _ in range(params.iterations):
        s_prime = laplacian_significance(clean, noise)
        fine = fine_structure(clean, noise)
        candidates = (s_prime > params.sigclip) & (s_prime / fine > params.objlim) & good
        grown = ndimage.binary_dilation(candidates, GROW) & (s_prime > params.sigclip)
        grown = ndimage.binary_dilation(grown, GROW) & (s_prime > params.sigfrac * params.sigclip) & good
        new = grown & ~cosmic
        if not new.any():
            break
        cosmic |= grown
        clean = fill_masked(clean, good & ~cosmic)
    return cosmic, clean


def reject_cosmics(exposure: Exposure, var: npt.NDArray[np.float32], params: CosmicParams = CosmicParams()) -> Exposure:
    cosmic, clean = detect_cosmics(exposure.sci, var, exposure.good(), params)
    meta = exposure.meta.copy()
    meta["NCRPIX"] = (int(cosmic.sum()), "pixels flagged as cosmic rays")
    add_history(meta, "crrej", f"{int(cosmic.sum())} cosmic-ray pixels flagged")
    return Exposure(
        sci=clean.astype(np.float32),
        dq=exposure.dq | np.where(cosmic, DQ.COSMIC, 0).astype(np.uint16),
        meta=meta,
        wcs_header=exposure.wcs_header,
        var=var,
    )


def _action(inputs: dict[str, str], outputs: dict[str, Path]) -> str:
    exposure = read_exposure(inputs["image"])
    result = reject_cosmics(exposure, exposure.require_var(inputs["image"]))
    write_exposure(result, outputs["outfile"])
    return f"{result.meta['NCRPIX']} cosmic-ray pixels flagged -> {outputs['outfile'].name}"


def main() -> None:
    raise SystemExit(run_step("sgs-nir-crrej", ["image"], ["outfile"], _action))

"""Image operations shared by several steps: masked filling, peak finding and windowed centroids."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage

FloatArray = npt.NDArray[np.float64]
BoolImage = npt.NDArray[np.bool_]

FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))


def fill_masked(image: npt.NDArray[np.floating], good: BoolImage, sigma: float = 1.5) -> FloatArray:
    """Replace bad pixels by a Gaussian-weighted mean of their good neighbours (normalised convolution).

    Interpolating kernels (splines, Laplacians) would otherwise spread a bad value over its neighbourhood.
    """
    data = np.where(good, image, 0.0).astype(np.float64)
    weight = good.astype(np.float64)
    smooth = ndimage.gaussian_filter(data, sigma, mode="nearest")
    norm = ndimage.gaussian_filter(weight, sigma, mode="nearest")
    with np.errstate(invalid="ignore", divide="ignore"):
        local = np.where(norm > 1e-3, smooth / norm, 0.0)
    if not good.all() and (norm[~good] <= 1e-3).any():
        local = np.where(norm > 1e-3, local, float(np.median(image[good])) if good.any() else 0.0)
    return np.where(good, image, local)


def matched_filter_snr(
    image: npt.NDArray[np.floating], variance: npt.NDArray[np.floating], psf_sigma: float
) -> FloatArray:
    """Signal-to-noise of the image smoothed with the PSF (the optimal point-source detection statistic)."""
    radius = max(2, int(np.ceil(3 * psf_sigma)))
    grid = np.arange(-radius, radius + 1)
    profile = np.exp(-(grid**2) / (2 * psf_sigma**2))
    profile /= profile.sum()
    smooth = ndimage.convolve1d(ndimage.convolve1d(image.astype(np.float64), profile, 0), profile, 1)
    squared = profile**2
    noise_var = ndimage.convolve1d(ndimage.convolve1d(variance.astype(np.float64), squared, 0), squared, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(noise_var > 0, smooth / np.sqrt(noise_var), 0.0)


@dataclass(frozen=True)
class Peaks:
    x: FloatArray
    y: FloatArray
    snr: FloatArray


def find_peaks(snr: FloatArray, threshold: float, border: int = 4) -> Peaks:
    """Local maxima of a S/N image above ``threshold``, away from the border, brightest first."""
    local_max = ndimage.maximum_filter(snr, size=5, mode="constant", cval=0.0) == snr
    candidate = local_max & (snr > threshold)
    candidate[:border, :] = candidate[-border:, :] = False
    candidate[:, :border] = candidate[:, -border:] = False
    ys, xs = np.nonzero(candidate)
    order = np.argsort(-snr[ys, xs])
    return Peaks(x=xs[order].astype(np.float64), y=ys[order].astype(np.float64), snr=snr[ys, xs][order])


def windowed_centroids(
    image: npt.NDArray[np.floating], x: FloatArray, y: FloatArray, sigma: float, iterations: int = 10
) -> tuple[FloatArray, FloatArray]:
    """Gaussian-windowed centroids (SExtractor XWIN/YWIN), 0-based pixel coordinates, vectorised over sources.

    A window matched to the PSF gives centroids close to the PSF-fit precision without fitting a model.
    """
    half = max(3, int(np.ceil(4 * sigma)))
    padded = np.pad(image.astype(np.float64), half + 2, mode="constant")
    offsets = np.arange(-half, half + 1, dtype=np.float64)
    xc = x.astype(np.float64).copy()
    yc = y.astype(np.float64).copy()
    for _ in range(iterations):
        ix = np.rint(xc).astype(int)
        iy = np.rint(yc).astype(int)
        rows = (iy[:, None] + offsets.astype(int)[None, :] + half + 2)[:, :, None]
        cols = (ix[:, None] + offsets.astype(int)[None, :] + half + 2)[:, None, :]
        stamps = padded[rows, cols]
        dx = (ix - xc)[:, None, None] + offsets[None, None, :]
        dy = (iy - yc)[:, None, None] + offsets[None, :, None]
        window = np.exp(-(dx**2 + dy**2) / (2 * sigma**2))
        weighted = np.clip(stamps, 0.0, None) * window
        total = weighted.sum(axis=(1, 2))
        safe = total > 0
        step_x = np.where(safe, 2.0 * (weighted * dx).sum(axis=(1, 2)) / np.where(safe, total, 1.0), 0.0)
        step_y = np.where(safe, 2.0 * (weighted * dy).sum(axis=(1, 2)) / np.where(safe, total, 1.0), 0.0)
        step_x = np.clip(step_x, -1.0, 1.0)
        step_y = np.clip(step_y, -1.0, 1.0)
        xc += step_x
        yc += step_y
        if max(np.abs(step_x).max(initial=0.0), np.abs(step_y).max(initial=0.0)) < 1e-4:
            break
    return xc, yc

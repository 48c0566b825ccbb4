"""Robust statistics in plain numpy (no scipy import, so the cheap steps start fast)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class ClippedStats:
    mean: float
    median: float
    std: float
    count: int

    @property
    def mode(self) -> float:
        """SExtractor's background estimator: 2.5 median - 1.5 mean, unless the field is crowded."""
        if self.std > 0 and abs(self.mean - self.median) / self.std > 0.3:
            return self.median
        return 2.5 * self.median - 1.5 * self.mean


def sigma_clipped_stats(values: npt.ArrayLike, nsigma: float = 3.0, max_iter: int = 10) -> ClippedStats:
    """Mean, median and standard deviation after iteratively rejecting points beyond ``nsigma``."""
    data = np.asarray(values, dtype=np.float64).ravel()
    data = data[np.isfinite(data)]
    if data.size == 0:
        return ClippedStats(float("nan"), float("nan"), float("nan"), 0)
    for _ in range(max_iter):
        median = float(np.median(data))
        std = float(np.std(data))
        kept = data[np.abs(data - median) <= nsigma * std] if std > 0 else data
        if kept.size == data.size or kept.size < 3:
            break
        data = kept
    return ClippedStats(float(np.mean(data)), float(np.median(data)), float(np.std(data)), int(data.size))


def robust_polyfit(x: npt.ArrayLike, y: npt.ArrayLike, degree: int, nsigma: float = 3.0) -> npt.NDArray[np.float64]:
    """Polynomial coefficients (highest power first) fitted with iterative outlier rejection."""
    xs = np.asarray(x, dtype=np.float64)
    ys = np.asarray(y, dtype=np.float64)
    keep = np.isfinite(ys)
    coeffs = np.polyfit(xs[keep], ys[keep], degree)
    for _ in range(5):
        resid = ys - np.polyval(coeffs, xs)
        scatter = 1.4826 * np.median(np.abs(resid[keep])) or 1e-12
        new_keep = np.isfinite(ys) & (np.abs(resid) <= nsigma * scatter)
        if np.array_equal(new_keep, keep):
            break
        keep = new_keep
        coeffs = np.polyfit(xs[keep], ys[keep], degree)
    return coeffs

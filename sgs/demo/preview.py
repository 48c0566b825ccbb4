"""A PNG preview of a stack with the detected sources circled (and truth sources the pipeline missed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def write_preview(
    stack_path: Path, catalog_path: Path, png_path: Path, title: str, truth_path: Path | None = None
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    from astropy.wcs import WCS
    from matplotlib import pyplot as plt
    from matplotlib.patches import Ellipse

    from sgs.nir.fitsio import read_mosaic, read_table

    stack = read_mosaic(stack_path)
    catalog, _ = read_table(catalog_path, "source catalogue")
    image = np.where(stack.wht > 0, stack.sci, np.nan)
    noise = float(np.nanmedian(np.sqrt(np.where(stack.wht > 0, 1.0 / np.where(stack.wht > 0, stack.wht, 1.0), np.nan))))
    # asinh stretch: the noise stays visible, bright stars do not saturate the colour map
    stretched = np.arcsinh(image / (3.0 * noise))
    low, high = np.nanpercentile(stretched, [5, 99.8])
    fig, ax = plt.subplots(figsize=(7.5, 7.5), dpi=110)
    ax.imshow(stretched, origin="lower", cmap="gray_r", vmin=low, vmax=high, interpolation="nearest")
    for row in catalog:
        a = float(row["A_IMAGE"]) * float(row["KRON_RADIUS"]) * 1.2
        b = float(row["B_IMAGE"]) * float(row["KRON_RADIUS"]) * 1.2
        ax.add_patch(
            Ellipse(
                (float(row["X_IMAGE"]) - 1, float(row["Y_IMAGE"]) - 1),
                2 * max(a, 3.0),
                2 * max(b, 3.0),
                angle=float(row["THETA_IMAGE"]),
                fill=False,
                edgecolor="tab:cyan",
                linewidth=0.9,
            )
        )
    if truth_path is not None:
        _mark_missed(ax, stack.sci.shape, catalog["X_IMAGE"], catalog["Y_IMAGE"], truth_path, WCS(stack.wcs_header))
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("x (tile pixels)")
    ax.set_ylabel("y (tile pixels)")
    fig.tight_layout()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path)
    plt.close(fig)
    return png_path


def _mark_missed(ax: Any, shape: tuple[int, ...], det_x: Any, det_y: Any, truth_path: Path, wcs: Any) -> None:
    """Red crosses on truth sources with no detection within 2 pixels (mostly the faintest)."""
    from sgs.nir.sim import read_truth

    truth = read_truth(truth_path)
    tx, ty = wcs.all_world2pix(truth.ra, truth.dec, 0)
    dx = np.asarray(det_x, dtype=np.float64) - 1
    dy = np.asarray(det_y, dtype=np.float64) - 1
    inside = (tx >= 0) & (tx < shape[1]) & (ty >= 0) & (ty < shape[0])
    if len(dx):
        nearest = np.min(np.hypot(tx[:, None] - dx[None, :], ty[:, None] - dy[None, :]), axis=1)
    else:
        nearest = np.full(len(tx), np.inf)
    missed = inside & (nearest > 2.0)
    ax.plot(tx[missed], ty[missed], "x", color="tab:red", markersize=4, linewidth=0.6)

"""A picture of a plan: tiles per primary Site on the sky (Mollweide) and each Site's share over time."""

from __future__ import annotations

from pathlib import Path

import astropy.units as u
import matplotlib
import numpy as np
from astropy_healpix import healpix_to_lonlat

from sgs.placement.plan import Assignments
from sgs.placement.survey import Survey

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # after choosing the file-only backend

WINDOW_DAYS = 30


def draw(survey: Survey, plan: Assignments, out: Path, targets: dict[str, float] | None = None) -> None:
    names = sorted({p for p, _ in plan.observations.values()} | {p for p, _ in plan.tiles.values()})
    colours = {name: plt.get_cmap("tab10")(k % 10) for k, name in enumerate(names)}
    figure = plt.figure(figsize=(15, 6.2))
    sky = figure.add_subplot(1, 2, 1, projection="mollweide")
    tile_ids = np.array(sorted(plan.tiles), dtype=np.int64)
    if tile_ids.size:
        lon, lat = healpix_to_lonlat(tile_ids, 2**survey.tile_order, order="nested")
        x = -(((np.asarray(lon.to_value(u.rad)) + np.pi) % (2 * np.pi)) - np.pi)  # east to the left, as on the sky
        y = np.asarray(lat.to_value(u.rad))
        site_of = np.array([names.index(plan.tiles[int(t)][0]) for t in tile_ids])
        for k, name in enumerate(names):
            mine = site_of == k
            sky.scatter(x[mine], y[mine], s=0.4, color=colours[name], label=f"{name} ({int(mine.sum()):,} tiles)")
    sky.grid(True, alpha=0.3)
    sky.set_title("MER tiles by primary Site (RA, Dec)")
    sky.legend(loc="lower center", bbox_to_anchor=(0.5, -0.32), ncol=3, fontsize=8, markerscale=12, frameon=False)

    shares = figure.add_subplot(1, 2, 2)
    index = survey.index_of()
    placed = [(int(survey.times[index[o]]), p) for o, (p, _) in plan.observations.items() if o in index]
    placed.sort()
    if placed:
        times = np.array([t for t, _ in placed], dtype=np.int64)
        days = (times - times[0]) // 86_400
        span = int(days.max()) + 1
        site_of_obs = np.array([names.index(p) for _, p in placed])
        daily = np.zeros((len(names), span))
        np.add.at(daily, (site_of_obs, days), 1)
        kernel = np.ones(WINDOW_DAYS)
        total = np.convolve(daily.sum(axis=0), kernel, mode="valid")
        axis = np.arange(total.size) + WINDOW_DAYS
        for k, name in enumerate(names):
            rolling = np.convolve(daily[k], kernel, mode="valid")
            share = np.divide(rolling, total, out=np.zeros_like(rolling), where=total > 0)
            shares.plot(axis, 100 * share, color=colours[name], linewidth=0.8, label=name)
            if targets and name in targets:
                shares.axhline(100 * targets[name], color=colours[name], linestyle="--", linewidth=0.6)
    shares.set_xlabel("days since the first observation")
    shares.set_ylabel(f"share of primaries over the last {WINDOW_DAYS} days (%)")
    shares.set_title("shares over time (dashed: targets)")
    shares.grid(True, alpha=0.3)
    shares.legend(fontsize=8, ncol=3)
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    plt.close(figure)

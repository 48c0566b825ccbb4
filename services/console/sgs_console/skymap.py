"""Tiles per Site on a sky map: each placed MER tile (nested HEALPix order 7) at its centre, coloured by its
primary Site, in a plate carrée projection — one SVG path per Site, so 100,000 tiles are a handful of elements."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from astropy_healpix import healpix_to_lonlat
from markupsafe import Markup, escape

TILE_ORDER = 7  # sgs.placement.survey.DEFAULT_TILE_ORDER
WIDTH, HEIGHT = 720, 360
PALETTE = ("#1565c0", "#c62828", "#2e7d32", "#ef6c00", "#6a1b9a", "#00838f", "#ad1457", "#4e342e", "#37474f")


def colours(sites: Iterable[str]) -> dict[str, str]:
    return {site: PALETTE[i % len(PALETTE)] for i, site in enumerate(sorted(set(sites)))}


def grid() -> list[str]:
    """RA every 60° (growing to the left) and Dec every 30°, each line labelled in degrees."""
    parts = []
    for ra in range(0, 361, 60):
        x = WIDTH - ra / 360 * WIDTH
        parts.append(f'<line class="grid" x1="{x:.0f}" y1="0" x2="{x:.0f}" y2="{HEIGHT}"/>')
        if 0 < ra < 360:
            parts.append(f'<text class="axis" x="{x + 3:.0f}" y="{HEIGHT - 4}">RA {ra}°</text>')
    for dec in range(-60, 61, 30):
        y = (90 - dec) / 180 * HEIGHT
        parts.append(f'<line class="grid" x1="0" y1="{y:.0f}" x2="{WIDTH}" y2="{y:.0f}"/>')
        parts.append(f'<text class="axis" x="3" y="{y - 3:.0f}">Dec {dec:+d}°</text>')
    return parts


def svg(tiles: list[dict[str, Any]]) -> Markup:
    by_site: dict[str, list[int]] = {}
    for tile in tiles:
        by_site.setdefault(str(tile["primary_site"]), []).append(int(tile["value"]))
    palette = colours(by_site)
    parts = [
        f'<svg class="sky" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="tiles per Site on the sky">',
        f'<rect class="sky-bg" x="0" y="0" width="{WIDTH}" height="{HEIGHT}"/>',
    ]
    parts += grid()
    for site, values in sorted(by_site.items()):
        lon, lat = healpix_to_lonlat(np.asarray(values, dtype=np.int64), 2**TILE_ORDER, order="nested")
        xs = WIDTH - np.asarray(lon.deg) / 360 * WIDTH  # RA grows to the left, as on the sky
        ys = (90 - np.asarray(lat.deg)) / 180 * HEIGHT
        path = "".join(f"M{x:.1f} {y:.1f}h1.6v1.6h-1.6z" for x, y in zip(xs, ys, strict=True))
        parts.append(
            f'<path class="tiles" data-site="{escape(site)}" data-tiles="{len(values)}" fill="{palette[site]}" '
            f'd="{path}"><title>{escape(site)}: {len(values)} tiles</title></path>'
        )
    parts.append("</svg>")
    legend = "".join(
        f'<span class="legend" data-site="{escape(s)}"><svg width="10" height="10">'
        f'<rect width="10" height="10" fill="{palette[s]}"/></svg>'
        f"{escape(s)} ({len(v):,})</span>"
        for s, v in sorted(by_site.items())
    )
    return Markup("".join(parts) + f'<div class="legends">{legend}</div>')

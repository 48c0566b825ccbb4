"""Initialise a raw exposure: subtract the overscan bias, trim, flag saturation, start the DQ plane."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import numpy.typing as npt
from astropy.io import fits

from sgs.nir.dq import DQ
from sgs.nir.fitsio import Exposure, NirDataError, add_history, require_file, wcs_cards, write_exposure
from sgs.nir.steps._cli import run_step

SECTION = re.compile(r"^\[(\d+):(\d+),(\d+):(\d+)\]$")
BIAS_SMOOTHING_ROWS = 31


def parse_section(value: str, keyword: str) -> tuple[slice, slice]:
    """FITS section ``[x1:x2,y1:y2]`` (1-based, inclusive) to numpy (rows, columns) slices."""
    match = SECTION.match(value.replace(" ", ""))
    if not match:
        raise NirDataError(f"header keyword {keyword}={value!r} is not a section like [1:256,1:256]")
    x1, x2, y1, y2 = (int(g) for g in match.groups())
    if x1 < 1 or y1 < 1 or x2 < x1 or y2 < y1:
        raise NirDataError(f"header keyword {keyword}={value!r} is an empty or negative section")
    return slice(y1 - 1, y2), slice(x1 - 1, x2)


def row_bias(raw: npt.NDArray[np.floating], biassec: tuple[slice, slice]) -> npt.NDArray[np.float64]:
    """Bias per row: median of the overscan pixels, then a running median along rows to beat read noise."""
    per_row = np.median(raw[biassec], axis=1)
    half = BIAS_SMOOTHING_ROWS // 2
    padded = np.pad(per_row, half, mode="reflect")
    windows = np.lib.stride_tricks.sliding_window_view(padded, BIAS_SMOOTHING_ROWS)
    return np.asarray(np.median(windows, axis=1), dtype=np.float64)


def initialize(raw: npt.NDArray[np.number], header: fits.Header) -> Exposure:
    for keyword in ("DATASEC", "BIASSEC", "EXPTIME"):
        if keyword not in header:
            raise NirDataError(f"raw header lacks {keyword}")
    datasec = parse_section(str(header["DATASEC"]), "DATASEC")
    biassec = parse_section(str(header["BIASSEC"]), "BIASSEC")
    frame = raw.astype(np.float64)
    if frame.ndim != 2 or frame[datasec].size == 0 or frame[biassec].size == 0:
        raise NirDataError(f"raw image of shape {raw.shape} does not contain DATASEC and BIASSEC")
    bias = row_bias(frame, biassec)
    data = frame[datasec] - bias[datasec[0], None]
    saturate = float(header.get("SATURATE", np.iinfo(np.uint16).max))
    dq = np.where(raw[datasec] >= saturate, DQ.SATURATED, 0).astype(np.uint16)
    meta = fits.Header([card for card in header.cards if not _is_structural(card.keyword)])
    for keyword in ("DATASEC", "BIASSEC"):
        meta.remove(keyword, ignore_missing=True)
    meta["BUNIT"] = "adu"
    meta["BIASMEAN"] = (float(bias.mean()), "overscan bias subtracted, ADU")
    add_history(meta, "initialize", f"bias {bias.mean():.1f} ADU, {int((dq > 0).sum())} saturated")
    return Exposure(sci=data.astype(np.float32), dq=dq, meta=_without_wcs(meta), wcs_header=wcs_cards(header))


def _is_structural(keyword: str) -> bool:
    return keyword in {
        "SIMPLE",
        "BITPIX",
        "EXTEND",
        "BZERO",
        "BSCALE",
        "PCOUNT",
        "GCOUNT",
    } or keyword.startswith("NAXIS")


def _without_wcs(meta: fits.Header) -> fits.Header:
    wcs_keys = set(wcs_cards(meta).keys())
    return fits.Header([card for card in meta.cards if card.keyword not in wcs_keys])


def _action(inputs: dict[str, str], outputs: dict[str, Path]) -> str:
    path = require_file(inputs["infile"], "infile")
    with fits.open(path, memmap=False) as hdul:
        if hdul[0].data is None:
            raise NirDataError(f"{path}: primary HDU holds no raw image")
        exposure = initialize(np.asarray(hdul[0].data), hdul[0].header)
    write_exposure(exposure, outputs["outfile"])
    return f"{path.name}: bias {exposure.meta['BIASMEAN']:.1f} ADU -> {outputs['outfile'].name}"


def main() -> None:
    raise SystemExit(run_step("sgs-nir-initialize", ["infile"], ["outfile"], _action))

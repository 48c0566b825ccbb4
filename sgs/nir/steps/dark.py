"""Subtract the master dark (a rate in e-/s) scaled by the exposure time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
from astropy.io import fits

from sgs.nir.fitsio import Exposure, NirDataError, add_history, read_exposure, require_file, write_exposure
from sgs.nir.steps._cli import run_step


def read_master_dark(path: Path | str) -> npt.NDArray[np.float32]:
    p = require_file(path, "darkcatfile")
    with fits.open(p, memmap=False) as hdul:
        if hdul[0].data is None:
            raise NirDataError(f"{p}: master dark has no image in its primary HDU")
        unit = str(hdul[0].header.get("BUNIT", "electron/s"))
        if unit != "electron/s":
            raise NirDataError(f"{p}: master dark BUNIT must be 'electron/s', got {unit!r}")
        return np.asarray(hdul[0].data, dtype=np.float32)


def subtract_dark(exposure: Exposure, dark_rate: npt.NDArray[np.float32]) -> Exposure:
    if dark_rate.shape != exposure.sci.shape:
        raise NirDataError(f"master dark shape {dark_rate.shape} differs from the image shape {exposure.sci.shape}")
    if exposure.meta.get("BUNIT") != "electron":
        raise NirDataError("image is not in electrons; run the bad-pixel step (which applies the gain) first")
    exptime = float(exposure.meta["EXPTIME"])
    dark = dark_rate.astype(np.float64) * exptime
    meta = exposure.meta.copy()
    meta["DARKSUB"] = (float(np.median(dark)), "median dark subtracted, e-")
    add_history(meta, "dark", f"master dark x {exptime:g} s, median {np.median(dark):.2f} e-")
    return Exposure(
        sci=(exposure.sci - dark).astype(np.float32),
        dq=exposure.dq,
        meta=meta,
        wcs_header=exposure.wcs_header,
        var=exposure.var,
    )


def _action(inputs: dict[str, str], outputs: dict[str, Path]) -> str:
    exposure = read_exposure(inputs["infile"])
    result = subtract_dark(exposure, read_master_dark(inputs["darkcatfile"]))
    write_exposure(result, outputs["outfile"])
    return f"dark {result.meta['DARKSUB']:.2f} e- subtracted -> {outputs['outfile'].name}"


def main() -> None:
    raise SystemExit(run_step("sgs-nir-dark", ["infile", "darkcatfile"], ["outfile"], _action))

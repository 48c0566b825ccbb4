"""Mask bad pixels from the Mission DataBase, convert ADU to electrons and start the variance plane."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
from astropy.io import fits

from sgs.nir.dq import DQ
from sgs.nir.fitsio import Exposure, NirDataError, add_history, read_exposure, require_file, write_exposure
from sgs.nir.steps._cli import run_step

MDB_KEYWORDS = ("GAIN", "RDNOISE", "MAGZERO", "PSFFWHM", "PIXSCALE")


def read_mdb(path: Path | str) -> tuple[npt.NDArray[np.uint8], fits.Header]:
    p = require_file(path, "mdbfile")
    with fits.open(p, memmap=False) as hdul:
        header = hdul[0].header.copy()
        missing = [k for k in MDB_KEYWORDS if k not in header]
        if missing:
            raise NirDataError(f"{p}: Mission DataBase lacks keyword(s) {missing}")
        try:
            badpix = np.asarray(hdul["BADPIX"].data, dtype=np.uint8)
        except KeyError:
            raise NirDataError(f"{p}: Mission DataBase has no BADPIX extension") from None
    if float(header["GAIN"]) <= 0:
        raise NirDataError(f"{p}: GAIN must be positive, got {header['GAIN']}")
    return badpix, header


def mask_bad_pixels(exposure: Exposure, badpix: npt.NDArray[np.uint8], mdb: fits.Header) -> Exposure:
    if badpix.shape != exposure.sci.shape:
        raise NirDataError(f"bad-pixel map shape {badpix.shape} differs from the image shape {exposure.sci.shape}")
    gain = float(mdb["GAIN"])
    read_noise = float(mdb["RDNOISE"])
    electrons = exposure.sci.astype(np.float64) * gain
    dq = exposure.dq | np.where(badpix > 0, DQ.BAD, 0).astype(np.uint16)
    # Poisson variance of everything collected (sky, dark, sources) plus read noise, before any subtraction.
    variance = np.clip(electrons, 0.0, None) + read_noise**2
    meta = exposure.meta.copy()
    for keyword in MDB_KEYWORDS:
        meta[keyword] = (mdb[keyword], mdb.comments[keyword])
    meta["BUNIT"] = "electron"
    add_history(meta, "badpix", f"gain {gain} e-/ADU, {int((badpix > 0).sum())} bad pixels masked")
    return Exposure(
        sci=electrons.astype(np.float32),
        dq=dq,
        meta=meta,
        wcs_header=exposure.wcs_header,
        var=variance.astype(np.float32),
    )


def _action(inputs: dict[str, str], outputs: dict[str, Path]) -> str:
    exposure = read_exposure(inputs["infile"])
    badpix, mdb = read_mdb(inputs["mdbfile"])
    result = mask_bad_pixels(exposure, badpix, mdb)
    write_exposure(result, outputs["outfile"])
    return f"{int((result.dq & DQ.BAD > 0).sum())} bad pixels masked -> {outputs['outfile'].name}"


def main() -> None:
    raise SystemExit(run_step("sgs-nir-badpix", ["infile", "mdbfile"], ["outfile"], _action))

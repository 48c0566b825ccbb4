"""Reading and writing the multi-extension FITS files that flow between the NIR steps.

An *exposure* file has an empty primary HDU holding the observation metadata (EXPTIME, FILTER, OBS_ID, DITHER,
calibration keywords and HISTORY) and image extensions ``SCI`` (with the WCS), ``VAR`` (total variance),
``DQ`` (bit flags, see :mod:`sgs.nir.dq`) and, after background subtraction, ``RMS`` (background noise per
pixel). Resampled and stacked images use ``SCI``, ``VAR`` and ``WHT`` (inverse background variance).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from astropy.io import fits

FloatImage = npt.NDArray[np.float32]
FloatArray = npt.NDArray[np.float64]
MaskImage = npt.NDArray[np.uint16]

WCS_KEY_PREFIXES = ("WCSAXES", "CRPIX", "CRVAL", "CTYPE", "CUNIT", "CD1_", "CD2_", "PC1_", "PC2_", "CDELT")
WCS_KEY_EXACT = ("LONPOLE", "LATPOLE", "RADESYS", "EQUINOX", "MJDREF", "DATEREF")


class NirDataError(ValueError):
    """An input file is not what the step expects; the message names the file and the problem."""


def is_wcs_key(key: str) -> bool:
    return key.startswith(WCS_KEY_PREFIXES) or key in WCS_KEY_EXACT


def wcs_cards(header: fits.Header) -> fits.Header:
    """The WCS keywords of ``header`` only, so metadata and geometry can travel separately."""
    out = fits.Header()
    for card in header.cards:
        if is_wcs_key(card.keyword):
            out.append(card)
    return out


@dataclass
class Exposure:
    """One detector exposure being calibrated: pixels, their variance and flags, metadata and WCS."""

    sci: FloatImage
    dq: MaskImage
    meta: fits.Header
    wcs_header: fits.Header
    var: FloatImage | None = None
    rms: FloatImage | None = None

    def good(self) -> npt.NDArray[np.bool_]:
        return np.asarray(self.dq == 0)

    def require_var(self, path: Path | str) -> FloatImage:
        if self.var is None:
            raise NirDataError(f"{path}: no VAR extension; run the bad-pixel step (which applies the gain) first")
        return self.var

    def require_rms(self, path: Path | str) -> FloatImage:
        if self.rms is None:
            raise NirDataError(f"{path}: no RMS extension; run the background step first")
        return self.rms


@dataclass
class Mosaic:
    """An image on the common tile grid: resampled exposure or stack (units electron/s)."""

    sci: FloatImage
    var: FloatImage
    wht: FloatImage
    meta: fits.Header
    wcs_header: fits.Header
    extra: dict[str, npt.NDArray[Any]] = field(default_factory=dict)


def require_file(path: Path | str, what: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise NirDataError(f"{what}: file {p} does not exist")
    return p


def _extension(hdul: fits.HDUList, name: str) -> Any:
    try:
        return hdul[name]
    except KeyError:
        return None


def read_exposure(path: Path | str) -> Exposure:
    p = require_file(path, "exposure")
    with fits.open(p, memmap=False) as hdul:
        sci_hdu = _extension(hdul, "SCI")
        dq_hdu = _extension(hdul, "DQ")
        if sci_hdu is None or dq_hdu is None:
            raise NirDataError(f"{p}: not a calibrated exposure (needs SCI and DQ extensions)")
        var_hdu = _extension(hdul, "VAR")
        rms_hdu = _extension(hdul, "RMS")
        return Exposure(
            sci=np.asarray(sci_hdu.data, dtype=np.float32),
            dq=np.asarray(dq_hdu.data, dtype=np.uint16),
            meta=hdul[0].header.copy(),
            wcs_header=wcs_cards(sci_hdu.header),
            var=None if var_hdu is None else np.asarray(var_hdu.data, dtype=np.float32),
            rms=None if rms_hdu is None else np.asarray(rms_hdu.data, dtype=np.float32),
        )


def _image_hdu(data: npt.NDArray[Any], name: str, header: fits.Header | None = None) -> fits.ImageHDU:
    return fits.ImageHDU(data=data, header=header.copy() if header is not None else None, name=name)


def write_atomically(hdul: fits.HDUList, path: Path | str) -> Path:
    """Write to a sibling temporary file and rename, so a crash never leaves a half-written product.

    No FITS CHECKSUM cards: their comments carry the write time, and identical inputs must give identical
    bytes (the archive verifies files with adler32 and sha256).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    hdul.writeto(partial, overwrite=True)
    partial.replace(target)
    return target


def write_exposure(exposure: Exposure, path: Path | str) -> Path:
    sci_header = exposure.wcs_header.copy()
    sci_header["BUNIT"] = exposure.meta.get("BUNIT", "")
    hdus: list[Any] = [fits.PrimaryHDU(header=exposure.meta.copy())]
    hdus.append(_image_hdu(exposure.sci.astype(np.float32), "SCI", sci_header))
    if exposure.var is not None:
        hdus.append(_image_hdu(exposure.var.astype(np.float32), "VAR"))
    hdus.append(_image_hdu(exposure.dq.astype(np.uint16), "DQ"))
    if exposure.rms is not None:
        hdus.append(_image_hdu(exposure.rms.astype(np.float32), "RMS"))
    return write_atomically(fits.HDUList(hdus), path)


def read_mosaic(path: Path | str) -> Mosaic:
    p = require_file(path, "image")
    with fits.open(p, memmap=False) as hdul:
        names = {hdu.name for hdu in hdul}
        missing = {"SCI", "VAR", "WHT"} - names
        if missing:
            raise NirDataError(f"{p}: not a resampled or stacked image (missing {sorted(missing)})")
        extra = {
            hdu.name: np.asarray(hdu.data)
            for hdu in hdul[1:]
            if hdu.name not in {"SCI", "VAR", "WHT"} and hdu.data is not None
        }
        return Mosaic(
            sci=np.asarray(hdul["SCI"].data, dtype=np.float32),
            var=np.asarray(hdul["VAR"].data, dtype=np.float32),
            wht=np.asarray(hdul["WHT"].data, dtype=np.float32),
            meta=hdul[0].header.copy(),
            wcs_header=wcs_cards(hdul["SCI"].header),
            extra=extra,
        )


def write_mosaic(mosaic: Mosaic, path: Path | str) -> Path:
    sci_header = mosaic.wcs_header.copy()
    sci_header["BUNIT"] = mosaic.meta.get("BUNIT", "electron/s")
    hdus: list[Any] = [
        fits.PrimaryHDU(header=mosaic.meta.copy()),
        _image_hdu(mosaic.sci.astype(np.float32), "SCI", sci_header),
        _image_hdu(mosaic.var.astype(np.float32), "VAR"),
        _image_hdu(mosaic.wht.astype(np.float32), "WHT"),
    ]
    hdus.extend(_image_hdu(data, name) for name, data in mosaic.extra.items())
    return write_atomically(fits.HDUList(hdus), path)


def read_table(path: Path | str, what: str) -> tuple[fits.FITS_rec, fits.Header]:
    p = require_file(path, what)
    with fits.open(p, memmap=False) as hdul:
        for hdu in hdul[1:]:
            if isinstance(hdu, fits.BinTableHDU):
                return hdu.data.copy(), hdul[0].header.copy()
    raise NirDataError(f"{p}: {what} has no binary table extension")


def require_columns(table: fits.FITS_rec, columns: tuple[str, ...], path: Path | str) -> None:
    present = {name.upper() for name in table.columns.names}
    missing = [c for c in columns if c.upper() not in present]
    if missing:
        raise NirDataError(f"{path}: table lacks column(s) {missing}")


def write_table(
    columns: dict[str, npt.NDArray[Any]],
    path: Path | str,
    meta: fits.Header | None = None,
    name: str = "CATALOG",
    units: dict[str, str] | None = None,
) -> Path:
    cols = [
        fits.Column(name=key, format=_fits_format(value), array=value, unit=(units or {}).get(key))
        for key, value in columns.items()
    ]
    table = fits.BinTableHDU.from_columns(cols, name=name)
    return write_atomically(fits.HDUList([fits.PrimaryHDU(header=meta), table]), path)


def _fits_format(values: npt.NDArray[Any]) -> str:
    kind = values.dtype.kind
    if kind == "f":
        return "D" if values.dtype.itemsize == 8 else "E"
    if kind in "iu":
        return "K" if values.dtype.itemsize == 8 else "J"
    if kind == "b":
        return "L"
    if kind in "US":
        width = max(1, *(len(str(v)) for v in values)) if len(values) else 1
        return f"{width}A"
    raise NirDataError(f"cannot store column of dtype {values.dtype} in FITS")


def add_history(meta: fits.Header, step: str, detail: str) -> None:
    meta.add_history(f"sgs-nir-{step}: {detail}"[:72])

"""Dynamic-resource functions shipped with sgs (entry points of group ``sgs.dynamic_resources``)."""

from __future__ import annotations

from typing import Any

KEYS = ("cores", "ram", "walltime", "vms", "gpus", "tmpdir")


def fits_header(path: str) -> dict[str, Any]:
    """``fits-header``: resources from a FITS product's primary header, as HIERARCH cards
    ``SGS CORES``, ``SGS RAM`` (GiB), ``SGS WALLTIME`` (hours), ``SGS VMS``, ``SGS GPUS``, ``SGS TMPDIR``;
    cards that are absent leave the declared value."""
    from astropy.io import fits

    header = fits.getheader(path)
    return {key: header[f"SGS {key.upper()}"] for key in KEYS if f"SGS {key.upper()}" in header}

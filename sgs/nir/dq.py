"""Data-quality bits carried in the ``DQ`` extension of every calibrated exposure."""

from __future__ import annotations

from enum import IntFlag


class DQ(IntFlag):
    """Why a pixel must not be trusted; any non-zero value gives the pixel zero weight downstream."""

    BAD = 1  # listed in the Mission DataBase bad-pixel map (dead, hot, bad column)
    SATURATED = 2  # raw value at the ADC ceiling
    COSMIC = 4  # flagged by cosmic-ray rejection; value replaced by a local median
    NODATA = 8  # outside the exposure's footprint after resampling

"""Source detection on the stack: matched filter, threshold, connected segments, watershed deblending.

The output (``source_mask``) is a segmentation image (``SEGM``: 0 = sky, N = pixels of source N) and a
``PEAKS`` table (label, peak position, peak S/N, whether it was split from a blend) for the photometry step.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from astropy.io import fits
from scipy import ndimage

from sgs.nir.fitsio import Mosaic, add_history, read_mosaic, write_atomically
from sgs.nir.imaging import FWHM_TO_SIGMA, matched_filter_snr
from sgs.nir.steps._cli import run_step

Labels = npt.NDArray[np.int32]
FloatArray = npt.NDArray[np.float64]
UNCOVERED_VARIANCE = 1e30


@dataclass(frozen=True)
class DetectParams:
    pixel_snr: float = 2.5  # filtered S/N a pixel needs to belong to a segment
    peak_snr: float = 5.0  # filtered S/N the brightest pixel of a source needs
    min_area: int = 5
    deblend_dip_snr: float = 3.0  # a second peak must stand this far (in S/N) above the saddle ...
    deblend_dip_fraction: float = 0.2  # ... and by this fraction of its own height


@dataclass
class Segmentation:
    labels: Labels
    peak_x: FloatArray  # 0-based
    peak_y: FloatArray
    peak_snr: FloatArray
    blended: npt.NDArray[np.bool_]

    @property
    def count(self) -> int:
        return int(self.peak_x.size)


def detection_snr(mosaic: Mosaic, psf_fwhm: float) -> FloatArray:
    covered = mosaic.wht > 0
    variance = np.where(covered, 1.0 / np.where(covered, mosaic.wht, 1.0), UNCOVERED_VARIANCE)
    return matched_filter_snr(np.where(covered, mosaic.sci, 0.0), variance, psf_fwhm * FWHM_TO_SIGMA)


def _saddle(snr: FloatArray, a: tuple[int, int], b: tuple[int, int]) -> float:
    """Lowest S/N on the straight path between two peaks."""
    steps = max(abs(a[0] - b[0]), abs(a[1] - b[1])) + 1
    rows = np.rint(np.linspace(a[0], b[0], steps)).astype(int)
    cols = np.rint(np.linspace(a[1], b[1], steps)).astype(int)
    return float(snr[rows, cols].min())


def significant_peaks(snr: FloatArray, member: npt.NDArray[np.bool_], params: DetectParams) -> list[tuple[int, int]]:
    """Peaks of one segment that are separate sources: a real dip in S/N towards every brighter peak."""
    local_max = (ndimage.maximum_filter(snr, size=3, mode="constant") == snr) & member & (snr > params.peak_snr)
    rows, cols = np.nonzero(local_max)
    order = np.argsort(-snr[rows, cols])
    kept: list[tuple[int, int]] = []
    for r, c in zip(rows[order], cols[order], strict=True):
        height = float(snr[r, c])
        separate = all(
            height - (saddle := _saddle(snr, (r, c), k)) >= params.deblend_dip_snr
            and height - saddle >= params.deblend_dip_fraction * height
            for k in kept
        )
        if separate:
            kept.append((int(r), int(c)))
    return kept


def split_segment(snr: FloatArray, member: npt.NDArray[np.bool_], peaks: list[tuple[int, int]]) -> Labels:
    """Watershed by priority flood: pixels join a labelled neighbour in decreasing S/N order.

    Returns labels 1..len(peaks) on the segment's pixels, 0 elsewhere.
    """
    labels = np.zeros(snr.shape, dtype=np.int32)
    heap: list[tuple[float, int, int]] = []
    for index, (r, c) in enumerate(peaks, start=1):
        labels[r, c] = index
        heapq.heappush(heap, (-float(snr[r, c]), r, c))
    ny, nx = snr.shape
    while heap:
        _, r, c = heapq.heappop(heap)
        for nr, nc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
            if 0 <= nr < ny and 0 <= nc < nx and member[nr, nc] and labels[nr, nc] == 0:
                labels[nr, nc] = labels[r, c]
                heapq.heappush(heap, (-float(snr[nr, nc]), nr, nc))
    return labels


def segment(mosaic: Mosaic, psf_fwhm: float, params: DetectParams = DetectParams()) -> Segmentation:
    snr = detection_snr(mosaic, psf_fwhm)
    components, _ = ndimage.label(snr > params.pixel_snr)
    labels = np.zeros(snr.shape, dtype=np.int32)
    peaks_x: list[float] = []
    peaks_y: list[float] = []
    peaks_snr: list[float] = []
    blended: list[bool] = []
    for index, box in enumerate(ndimage.find_objects(components), start=1):
        if box is None:
            continue
        member = components[box] == index
        if member.sum() < params.min_area:
            continue
        peaks = significant_peaks(snr[box], member, params)
        if not peaks:
            continue
        parts = split_segment(snr[box], member, peaks) if len(peaks) > 1 else member.astype(np.int32)
        for part, (r, c) in enumerate(peaks, start=1):
            pixels = parts == part
            if pixels.sum() < params.min_area:
                continue
            labels[box][pixels] = len(peaks_x) + 1
            peaks_y.append(float(r + box[0].start))
            peaks_x.append(float(c + box[1].start))
            peaks_snr.append(float(snr[box][r, c]))
            blended.append(len(peaks) > 1)
    return Segmentation(
        labels=labels,
        peak_x=np.asarray(peaks_x),
        peak_y=np.asarray(peaks_y),
        peak_snr=np.asarray(peaks_snr),
        blended=np.asarray(blended, dtype=bool),
    )


def write_segmentation(segmentation: Segmentation, mosaic: Mosaic, path: Path, params: DetectParams) -> Path:
    meta = mosaic.meta.copy()
    meta["NSOURCES"] = (segmentation.count, "detected sources")
    meta["DETSNR"] = (params.peak_snr, "peak matched-filter S/N threshold")
    meta["DETPIX"] = (params.pixel_snr, "segment pixel S/N threshold")
    add_history(meta, "detect", f"{segmentation.count} sources above S/N {params.peak_snr}")
    segm_header = mosaic.wcs_header.copy()
    peaks = fits.BinTableHDU.from_columns(
        [
            fits.Column(name="LABEL", format="J", array=np.arange(1, segmentation.count + 1)),
            fits.Column(name="PEAK_X", format="D", array=segmentation.peak_x),
            fits.Column(name="PEAK_Y", format="D", array=segmentation.peak_y),
            fits.Column(name="PEAK_SNR", format="D", array=segmentation.peak_snr),
            fits.Column(name="BLENDED", format="L", array=segmentation.blended),
        ],
        name="PEAKS",
    )
    hdul = fits.HDUList(
        [
            fits.PrimaryHDU(header=meta),
            fits.ImageHDU(segmentation.labels, header=segm_header, name="SEGM"),
            peaks,
        ]
    )
    return write_atomically(hdul, path)


def _action(inputs: dict[str, str], outputs: dict[str, Path]) -> str:
    mosaic = read_mosaic(inputs["image"])
    params = DetectParams()
    segmentation = segment(mosaic, float(mosaic.meta.get("PSFFWHM", 2.0)), params)
    write_segmentation(segmentation, mosaic, outputs["source_mask"], params)
    return f"{segmentation.count} sources ({int(segmentation.blended.sum())} deblended)"


def main() -> None:
    raise SystemExit(run_step("sgs-nir-detect", ["image"], ["source_mask"], _action))

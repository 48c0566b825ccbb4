"""NIR-like imaging processing function: simulator, calibration steps, pipeline and quality checks.

The layout follows the Euclid NIR proto-pipeline (seed 000): per-dither calibration (initialise, bad-pixel
masking, dark subtraction, cosmic-ray rejection, background subtraction), then astrometry, resampling onto a
common tile grid, stacking, detection and photometry. Each step is a small console script (``sgs-nir-*``)
reading and writing FITS, so any executor (local, Kubernetes, Slurm) can run it.
"""

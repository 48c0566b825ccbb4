"""Package Definition of the NIR processing function: one Executable per ``sgs-nir-*`` command.

Resources are per task for one NISP-like detector exposure (the simulator's images are smaller than a real
2k x 2k detector; these figures are sized for the real one, so schedulers see realistic requests).
"""

# The Executable names are the seed's (camelCase), so the pipeline script reads exactly as Euclid wrote it.
# ruff: noqa: N816
from __future__ import annotations

from sgs.dsl import ComputingResources, Executable, Input, Output

FITS = ".fits"


runInitialize = Executable(
    command="sgs-nir-initialize",
    inputs=[Input("infile")],
    outputs=[Output("outfile", suffix=FITS)],
    resources=ComputingResources(cores=1, ram=1.0, walltime=0.25, vms=2.0),
)

badPixMasking = Executable(
    command="sgs-nir-badpix",
    inputs=[Input("infile"), Input("mdbfile")],
    outputs=[Output("outfile", suffix=FITS, lineage=["infile", "mdbfile"])],
    resources=ComputingResources(cores=1, ram=1.0, walltime=0.25, vms=2.0),
)

darkSubtract = Executable(
    command="sgs-nir-dark",
    inputs=[Input("infile"), Input("darkcatfile")],
    outputs=[Output("outfile", suffix=FITS, lineage=["infile", "darkcatfile"])],
    resources=ComputingResources(cores=1, ram=1.0, walltime=0.25, vms=2.0),
)

crRejection = Executable(
    command="sgs-nir-crrej",
    inputs=[Input("image")],
    outputs=[Output("outfile", suffix=FITS)],
    resources=ComputingResources(cores=1, ram=2.0, walltime=0.5, vms=3.0, tmpdir=1.0),
)

backSubtract = Executable(
    command="sgs-nir-background",
    inputs=[Input("input")],
    outputs=[Output("outfile", suffix=FITS)],
    resources=ComputingResources(cores=1, ram=1.0, walltime=0.25, vms=2.0),
)

doAstrom = Executable(
    command="sgs-nir-astrom",
    inputs=[Input("dither1"), Input("dither2"), Input("dither3"), Input("dither4"), Input("refcat_xml")],
    outputs=[Output(f"calDither{i}", suffix=FITS, lineage=[f"dither{i}", "refcat_xml"]) for i in range(1, 5)],
    resources=ComputingResources(cores=1, ram=2.0, walltime=0.5, vms=4.0),
)

doResampl = Executable(
    command="sgs-nir-resample",
    inputs=[Input(f"calDither{i}") for i in range(1, 5)],
    outputs=[Output(f"resampDither{i}", suffix=FITS, lineage=[f"calDither{i}"]) for i in range(1, 5)],
    resources=ComputingResources(cores=1, ram=4.0, walltime=1.0, vms=6.0, tmpdir=4.0),
)

doStack = Executable(
    command="sgs-nir-stack",
    inputs=[Input(f"resampledme{i}") for i in range(1, 5)],
    outputs=[Output("stack", suffix=FITS)],
    resources=ComputingResources(cores=1, ram=4.0, walltime=0.5, vms=6.0),
)

catalogDetect = Executable(
    command="sgs-nir-detect",
    inputs=[Input("image")],
    outputs=[Output("source_mask", suffix=FITS)],
    resources=ComputingResources(cores=1, ram=2.0, walltime=0.5, vms=3.0),
)

catalogPhot = Executable(
    command="sgs-nir-photometry",
    inputs=[Input("image"), Input("source_mask")],
    outputs=[Output("catalog", suffix=FITS)],
    resources=ComputingResources(cores=1, ram=2.0, walltime=0.5, vms=3.0),
)

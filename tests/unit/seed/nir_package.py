"""A stand-in NIR package definition with the executable names the seed-000 pipeline imports.

Only the declarations matter to the compiler; the real NIR programs live in ``sgs.nir``.
"""

from sgs.dsl import ComputingResources, Executable, Input, Output

_small = ComputingResources(cores=1, ram=1.0, walltime=0.5)

runInitialize = Executable(command="nir_init", inputs=[Input("infile")], outputs=[Output("outfile")], resources=_small)
badPixMasking = Executable(
    command="nir_badpix", inputs=[Input("infile"), Input("mdbfile")], outputs=[Output("outfile")], resources=_small
)
darkSubtract = Executable(
    command="nir_dark", inputs=[Input("infile"), Input("darkcatfile")], outputs=[Output("outfile")], resources=_small
)
crRejection = Executable(command="nir_crrej", inputs=[Input("image")], outputs=[Output("outfile")], resources=_small)
backSubtract = Executable(command="nir_back", inputs=[Input("input")], outputs=[Output("outfile")], resources=_small)
doAstrom = Executable(
    command="nir_astrom",
    inputs=[Input("dither1"), Input("dither2"), Input("dither3"), Input("dither4"), Input("refcat_xml")],
    outputs=[Output("cal1"), Output("cal2"), Output("cal3"), Output("cal4")],
)
doResampl = Executable(
    command="nir_resample",
    inputs=[Input("calDither1"), Input("calDither2"), Input("calDither3"), Input("calDither4")],
    outputs=[Output("res1"), Output("res2"), Output("res3"), Output("res4")],
)
doStack = Executable(
    command="nir_stack",
    inputs=[Input("resampledme1"), Input("resampledme2"), Input("resampledme3"), Input("resampledme4")],
    outputs=[Output("stack")],
)
catalogDetect = Executable(command="nir_detect", inputs=[Input("image")], outputs=[Output("mask")])
catalogPhot = Executable(
    command="nir_phot", inputs=[Input("image"), Input("source_mask")], outputs=[Output("catalog")]
)

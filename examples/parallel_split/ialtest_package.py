"""Package definition of the seed-002 ``parallel_split`` test pipeline (Euclid IAL test package).

Each executable is a small real Python program in ``programs/``; ``sgs run --local`` puts that directory on PATH.
"""

from sgs.dsl import ComputingResources, Executable, Input, Output

ialtest_split_images = Executable(
    command="ialtest_split_images",
    inputs=[Input("images")],
    outputs=[Output("images_splitted", suffix=".json")],
    resources=ComputingResources(cores=1, ram=0.5, walltime=0.1),
)

ialtest_correct_dark = Executable(
    command="ialtest_correct_dark",
    inputs=[Input("image"), Input("master_dark"), Input("control_params")],
    outputs=[
        Output("corrected_image", suffix=".json"),
        Output("darkmap", lineage=["image", "master_dark"], suffix=".json"),
    ],
    resources=ComputingResources(cores=2, ram=2.0, walltime=4.0, vms=20.0),
)

ialtest_correct_flat = Executable(
    command="ialtest_correct_flat",
    inputs=[Input("image"), Input("master_flat"), Input("control_params")],
    outputs=[
        Output("corrected_image", suffix=".json"),
        Output("deadmap", lineage=["image", "master_flat"], suffix=".json"),
    ],
    resources=ComputingResources(cores=1, ram=1.0, walltime=1.0),
)

ialtest_combine_images = Executable(
    command="ialtest_combine_images",
    inputs=[Input("inputlist")],
    outputs=[Output("combined", suffix=".json"), Output("quality", suffix=".json")],
    resources=ComputingResources(cores=1, ram=1.0, walltime=1.0),
)

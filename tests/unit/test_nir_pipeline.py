"""The seed-000 pipeline compiles to the expected graph, and runs end to end through the local executor."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from sgs.local import run_local
from sgs.nir import quality
from sgs.nir.package import (
    backSubtract,
    badPixMasking,
    catalogDetect,
    catalogPhot,
    crRejection,
    darkSubtract,
    doAstrom,
    doResampl,
    doStack,
    runInitialize,
)
from sgs.nir.pipeline import nir_pipeline
from sgs.nir.sim import simulate_field

EXECUTABLES = (
    runInitialize, badPixMasking, darkSubtract, crRejection, backSubtract,
    doAstrom, doResampl, doStack, catalogDetect, catalogPhot,
)  # fmt: skip
BIN = Path(sys.executable).parent


def test_pipeline_has_four_calibration_branches_and_a_serial_tail() -> None:
    spec = nir_pipeline.spec()
    names = [step.name for step in spec.steps]
    assert len(names) == 25
    for dither in range(1, 5):
        assert f"calibrateDither_{dither}.runInitialize" in names
        assert f"calibrateDither_{dither}.backSubtract" in names
    assert names[-5:] == ["doAstrom", "doResampl", "doStack", "catalogDetect", "catalogPhot"]


@pytest.mark.parametrize("executable", EXECUTABLES, ids=lambda e: e.command)
def test_every_executable_is_an_installed_command(executable: object) -> None:
    command = executable.command  # type: ignore[attr-defined]
    assert shutil.which(command, path=str(BIN)) is not None, f"{command}: run `pip install -e .` to install it"


@pytest.mark.slow
def test_pipeline_runs_end_to_end_through_the_local_executor(tmp_path: Path) -> None:
    files = simulate_field(tmp_path / "inputs", seed=11)
    result = run_local(
        nir_pipeline,
        files.pipeline_inputs(),
        tmp_path / "work",
        run_id="nir-e2e",
        cores=2,
        progress=False,
        extra_path=[BIN],
    )
    assert result.succeeded, result.tasks
    assert result.counts["Succeeded"] == 25
    assert set(result.outputs) == {"calDither1", "calDither2", "calDither3", "calDither4", "stackedImage",
                                   "sourceCatalog"}  # fmt: skip
    catalog, stacked = result.outputs["sourceCatalog"], result.outputs["stackedImage"]
    assert isinstance(catalog, str) and isinstance(stacked, str)
    report = quality.evaluate(catalog, files.truth, stacked)
    assert report.completeness_snr10 >= 0.95
    assert abs(report.flux_bias_stars) < 0.02

    again = run_local(nir_pipeline, files.pipeline_inputs(), tmp_path / "work", progress=False, extra_path=[BIN])
    assert again.succeeded and again.run_id == "nir-e2e"
    assert again.outputs == result.outputs

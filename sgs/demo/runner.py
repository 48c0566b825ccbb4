"""Run the NIR pipeline for every observation at its primary Site, then register the inputs and products.

Observations run concurrently (each through the local executor, which runs its tasks as subprocesses), so the
serial tail of one observation (astrometry to photometry) overlaps the calibration branches of the next. Copies
to the secondary Site are the transfer service's (``sgs.demo.replication``), not made here.
"""

from __future__ import annotations

import re
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sgs import __version__
from sgs.demo.archive import (
    Archive,
    Registered,
    Registration,
    archive_universe,
    dataset_ref,
    dataset_type_for,
)
from sgs.demo.survey import DemoSite, PlannedObservation
from sgs.local.executor import LocalExecutor, LocalRunResult, as_pipeline, machine_capacity
from sgs.local.record import RunRecord
from sgs.model.dataset import DatasetRef, Lineage, Placement, PlacementDimension
from sgs.model.replica import Replica
from sgs.nir.quality import QualityReport, evaluate
from sgs.nir.sim import ObservationFiles
from sgs.planner import Planner, TaskState
from sgs.storage import checksum_file

INSTRUMENT = "NISP-SIM"
RAW_COLLECTION = f"{INSTRUMENT}/raw/all"
CALIB_COLLECTION = f"{INSTRUMENT}/calib"
REFCAT_COLLECTION = "refcats"
SIMULATION_COLLECTION = "simulation"
# Every Site's inputs go into these: survey collections, written with an admin token (a Run's own outputs are
# registered by its Site).
SURVEY_COLLECTIONS = (RAW_COLLECTION, CALIB_COLLECTION, REFCAT_COLLECTION, SIMULATION_COLLECTION)
# Pipeline outputs get survey-level dataset type names; intermediates are named after executable and port.
PRODUCT_TYPES = {"calDither": "nir_calexp", "stackedImage": "nir_stack", "sourceCatalog": "nir_catalog"}

ProgressHook = Callable[[PlannedObservation, int, int], None]


@dataclass
class ObservationOutcome:
    observation: PlannedObservation
    run_id: str
    wall_s: float = 0.0
    result: LocalRunResult | None = None
    error: str | None = None
    quality: QualityReport | None = None
    datasets: int = 0
    sources: int = 0
    products: dict[str, Path] = field(default_factory=dict)
    replicated_to: list[str] = field(default_factory=list)  # Sites holding a copy of the products (archive's view)

    @property
    def succeeded(self) -> bool:
        return self.result is not None and self.result.succeeded and self.error is None


def run_id_for(obs: PlannedObservation) -> str:
    return f"nir-{obs.obs_id.lower()}"


def run_observation(
    obs: PlannedObservation, files: ObservationFiles, cores: int, on_progress: ProgressHook | None = None
) -> ObservationOutcome:
    from sgs.nir.pipeline import nir_pipeline

    outcome = ObservationOutcome(observation=obs, run_id=run_id_for(obs))
    started = time.perf_counter()
    executor = LocalExecutor(
        as_pipeline(nir_pipeline),
        {name: str(path) for name, path in files.pipeline_inputs().items()},
        obs.primary.work / obs.obs_id,
        run_id=outcome.run_id,
        capacity=machine_capacity(cores, None, 0),
        # The sgs-nir-* scripts live beside this interpreter, on PATH or not.
        extra_path=[Path(sys.executable).parent],
    )

    def hook(planner: Planner) -> None:
        if on_progress is not None:
            on_progress(obs, planner.counts[TaskState.SUCCEEDED], len(planner.tasks))

    try:
        outcome.result = executor.run(hook)
    finally:
        executor.close()
    outcome.wall_s = time.perf_counter() - started
    if not outcome.result.succeeded:
        outcome.error = f"run {outcome.run_id} ended {outcome.result.phase.value}"
    else:
        outcome.products = {
            name: Path(value) for name, value in outcome.result.outputs.items() if isinstance(value, str)
        }
    return outcome


class SurveyRunner:
    """Runs observations on a pool as they are submitted, so processing starts while others are simulated."""

    def __init__(self, parallel: int, cores: int, on_progress: ProgressHook | None = None) -> None:
        self.cores = cores
        self.on_progress = on_progress
        self.pool = ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix="sgs-demo-obs")
        self.futures: list[Future[ObservationOutcome]] = []

    def __enter__(self) -> SurveyRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def submit(self, obs: PlannedObservation, files: ObservationFiles) -> None:
        self.futures.append(self.pool.submit(run_observation, obs, files, self.cores, self.on_progress))

    def results(self) -> list[ObservationOutcome]:
        return [future.result() for future in self.futures]


# ------------------------------------------------------------------------------------------ registration


@dataclass
class _Registry:
    """Dataset refs, replicas and lineage gathered for one observation, keyed by the file they describe."""

    site: DemoSite
    batch: Registration = field(default_factory=Registration)
    by_path: dict[str, DatasetRef] = field(default_factory=dict)
    replica_of: dict[uuid.UUID, Replica] = field(default_factory=dict)

    def add(
        self, path: Path, dataset_type: str, data_id: dict[str, Any], run: str, task: str | None = None
    ) -> DatasetRef:
        kind = self.batch.dataset_types.get(dataset_type) or dataset_type_for(dataset_type, data_id, archive_universe())
        self.batch.dataset_types[dataset_type] = kind
        ref = dataset_ref(kind, data_id, run, task)
        sums = checksum_file(path)
        replica = Replica(
            dataset_id=ref.id,
            site=self.site.name,
            uri=path.resolve().as_uri(),
            size=sums.size,
            adler32=sums.adler32,
            sha256=sums.sha256,
        )
        self.batch.datasets.append(ref)
        self.batch.replicas.append(replica)
        self.by_path[str(path.resolve())] = ref
        self.replica_of[ref.id] = replica
        return ref


def _base_data_id(obs: PlannedObservation) -> dict[str, Any]:
    """Dimensions of the archive's default universe (services/archive dimensions.yaml)."""
    return {"instrument": INSTRUMENT, "band": "H", "observation": obs.number, "tile": obs.tile_number}


def exposure_number(obs: PlannedObservation, dither: int) -> int:
    """The archive's ``exposure`` dimension (one readout, unique within the instrument) of a dither."""
    return obs.number * 10 + dither


def _dither_of(*names: str) -> int | None:
    for name in names:
        match = re.search(r"(\d+)$", name.split(".")[0]) or re.search(r"(\d+)$", name)
        if match:
            return int(match.group(1))
    return None


def _register_inputs(registry: _Registry, obs: PlannedObservation, files: ObservationFiles) -> None:
    base = _base_data_id(obs)
    for dither, path in enumerate(files.dithers, start=1):
        registry.add(path, "nir_raw", base | {"exposure": exposure_number(obs, dither)}, RAW_COLLECTION)
    registry.add(files.mdb, "nir_mdb", {"instrument": INSTRUMENT}, CALIB_COLLECTION)
    registry.add(files.master_dark, "nir_master_dark", {"instrument": INSTRUMENT}, CALIB_COLLECTION)
    registry.add(files.refcat, "ref_catalog", {"tile": obs.tile_number}, REFCAT_COLLECTION)
    registry.add(files.truth, "sim_truth", {"tile": obs.tile_number}, SIMULATION_COLLECTION)


def _product_type(port: str, executable: str, pipeline_outputs: dict[str, str], path: str) -> str:
    for output_name, output_path in pipeline_outputs.items():
        if output_path == path:
            for prefix, dataset_type in PRODUCT_TYPES.items():
                if output_name.startswith(prefix):
                    return dataset_type
    return f"nir_{executable}.{port}"


def _register_outputs(registry: _Registry, outcome: ObservationOutcome) -> None:
    obs = outcome.observation
    assert outcome.result is not None
    pipeline_outputs = {k: str(Path(v).resolve()) for k, v in outcome.products.items()}
    record = RunRecord.open_existing(obs.primary.work / obs.obs_id)
    try:
        rows = [row for row in record.tasks() if row.lineage]
    finally:
        record.close()
    for row in rows:  # tasks come in creation order, so inputs are registered before what derives from them
        lineage = row.lineage or {}
        for port, produced in lineage.get("outputs", {}).items():
            path = Path(produced["path"]).resolve()
            dither = _dither_of(row.id, port)
            per_exposure = {"exposure": exposure_number(obs, dither)} if dither is not None else {}
            data_id = _base_data_id(obs) | per_exposure
            dataset_type = _product_type(port, str(lineage.get("executable")), pipeline_outputs, str(path))
            ref = registry.add(path, dataset_type, data_id, outcome.run_id, task=row.id)
            inputs = [registry.by_path[p].id for p in map(_resolved, produced["inputs"]) if p in registry.by_path]
            registry.batch.lineage.append(
                Lineage(
                    dataset_id=ref.id,
                    inputs=tuple(inputs),
                    executable=str(lineage.get("executable")),
                    version=str(lineage.get("sgs_version", __version__)),
                    config_digest=str(lineage.get("environment_sha256", "unknown")),
                    pipeline_run=outcome.run_id,
                    task=row.id,
                    attempt=int(lineage.get("attempt", 0)),
                )
            )


def _resolved(path: str) -> str:
    return str(Path(path).resolve())


def register_observation(archive: Archive, outcome: ObservationOutcome, files: ObservationFiles) -> Registered:
    """Inputs and every task output as datasets with a replica at the primary Site, lineage for outputs, and the
    observation's placement. Returns the datasets registered."""
    obs = outcome.observation
    registry = _Registry(site=obs.primary)
    _register_inputs(registry, obs, files)
    if outcome.succeeded:
        _register_outputs(registry, outcome)
    archive.register_placements(
        [
            Placement(
                dimension=PlacementDimension.OBSERVATION,
                value=obs.number,
                primary_site=obs.primary.name,
                secondary_site=obs.secondary.name if obs.secondary != obs.primary else None,
            )
        ]
    )
    registered = archive.register(registry.batch)
    outcome.datasets = len({r.id for r in registry.batch.datasets})
    return registered


def assess(outcome: ObservationOutcome, files: ObservationFiles) -> None:
    """Compare the catalogue with the simulator's truth."""
    if not outcome.succeeded:
        return
    outcome.quality = evaluate(outcome.products["sourceCatalog"], files.truth, outcome.products["stackedImage"])
    outcome.sources = outcome.quality.detected

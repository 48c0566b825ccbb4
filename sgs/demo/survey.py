"""A tiny survey for the demo: Sites as local directories, tiles, observations and their placement.

Every observation gets a primary Site (where its raw data lands and its pipeline runs) and a secondary Site
(where its final products are replicated). The calibration files and each tile's reference catalogue are made
once and replicated, with checksums verified, to every Site that processes data needing them.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sgs.demo.archive import Checksums, checksums
from sgs.nir.sim import (
    CalibrationFiles,
    ObservationFiles,
    SimConfig,
    Tile,
    TileFiles,
    simulate_calibrations,
    simulate_observation,
    simulate_tile,
)

SITE_NAMES = ("sdc-it", "sdc-fr", "sdc-de", "sdc-es", "sdc-uk", "sdc-nl", "sdc-ch", "sdc-fi", "sdc-us")
# Pointings of successive observations of one tile (arcsec east, north of the tile centre).
POINTING_PATTERN = ((0.0, 0.0), (6.0, -4.5), (-5.0, 5.5), (3.0, 7.0), (-6.5, -3.0))
TILE_SPACING_DEG = 0.05


class ReplicationError(RuntimeError):
    """A copy did not match its source after transfer; the partial copy was removed."""


@dataclass(frozen=True)
class DemoSite:
    name: str
    root: Path

    @property
    def store(self) -> Path:
        return self.root / "store"

    @property
    def work(self) -> Path:
        return self.root / "work"


@dataclass(frozen=True)
class PlannedObservation:
    number: int
    obs_id: str
    tile: Tile
    tile_number: int
    pointing_offset_arcsec: tuple[float, float]
    primary: DemoSite
    secondary: DemoSite
    seed: int


@dataclass(frozen=True)
class SurveyPlan:
    root: Path
    sites: tuple[DemoSite, ...]
    tiles: tuple[Tile, ...]
    observations: tuple[PlannedObservation, ...]
    seed: int


def plan_survey(root: Path, observations: int = 6, tiles: int = 2, sites: int = 3, seed: int = 1) -> SurveyPlan:
    """Observations spread over tiles and over Sites round-robin (primary), the next Site as secondary."""
    if not 1 <= sites <= len(SITE_NAMES):
        raise ValueError(f"sites: must be between 1 and {len(SITE_NAMES)}, got {sites}")
    if tiles < 1 or observations < 1:
        raise ValueError("tiles and observations must be at least 1")
    site_list = tuple(DemoSite(name, root / "sites" / name) for name in SITE_NAMES[:sites])
    tile_list = tuple(Tile(f"TILE{t + 1:04d}", 150.10 + TILE_SPACING_DEG * t, 2.20) for t in range(tiles))
    planned = []
    for index in range(observations):
        tile_index = index % tiles
        visit = index // tiles
        primary = site_list[index % sites]
        planned.append(
            PlannedObservation(
                number=index + 1,
                obs_id=f"OBS{index + 1:06d}",
                tile=tile_list[tile_index],
                tile_number=tile_index + 1,
                pointing_offset_arcsec=POINTING_PATTERN[visit % len(POINTING_PATTERN)],
                primary=primary,
                secondary=site_list[(index + 1) % sites] if sites > 1 else primary,
                seed=seed * 1000 + index,
            )
        )
    return SurveyPlan(root, site_list, tile_list, tuple(planned), seed)


def replicate(source: Path, destination: Path) -> Checksums:
    """Copy a file and verify it arrived intact before it becomes visible under its final name."""
    expected = checksums(source)
    if destination.exists() and checksums(destination) == expected:
        return expected
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(f".{destination.name}.partial")
    shutil.copyfile(source, partial)
    if checksums(partial) != expected:
        partial.unlink(missing_ok=True)
        raise ReplicationError(f"copy of {source} to {destination} does not match its checksums")
    partial.replace(destination)
    return expected


@dataclass(frozen=True)
class SimulatedSurvey:
    observations: dict[int, ObservationFiles]
    calibration_home: DemoSite
    tile_home: dict[str, DemoSite]


def _site_copy(files: CalibrationFiles | TileFiles, site: DemoSite, folder: str) -> dict[str, Path]:
    paths = (
        {"mdb": files.mdb, "master_dark": files.master_dark}
        if isinstance(files, CalibrationFiles)
        else {"truth": files.truth_path, "refcat": files.refcat}
    )
    return {key: _replicated(path, site.store / folder / path.name) for key, path in paths.items()}


def _replicated(source: Path, destination: Path) -> Path:
    if source.resolve() != destination.resolve():
        replicate(source, destination)
    return destination


def simulate_survey(
    plan: SurveyPlan,
    config: SimConfig,
    on_observation: Callable[[PlannedObservation, ObservationFiles], None] | None = None,
) -> SimulatedSurvey:
    """Raw data at each observation's primary Site, with the calibrations and catalogues it needs."""
    home = plan.observations[0].primary
    calibration = simulate_calibrations(home.store / "calib", config, plan.seed)
    tile_files: dict[str, TileFiles] = {}
    tile_home: dict[str, DemoSite] = {}
    for obs in plan.observations:
        if obs.tile.tile_id not in tile_files:
            tile_home[obs.tile.tile_id] = obs.primary
            tile_files[obs.tile.tile_id] = simulate_tile(
                obs.primary.store / "catalogs", obs.tile, config, plan.seed * 100 + obs.tile_number
            )
    simulated: dict[int, ObservationFiles] = {}
    for obs in plan.observations:
        calib = _site_copy(calibration, obs.primary, "calib")
        tile = _site_copy(tile_files[obs.tile.tile_id], obs.primary, "catalogs")
        simulated[obs.number] = simulate_observation(
            obs.primary.store / "raw" / obs.obs_id,
            obs.obs_id,
            obs.tile,
            tile_files[obs.tile.tile_id].truth,
            obs.pointing_offset_arcsec,
            CalibrationFiles(mdb=calib["mdb"], master_dark=calib["master_dark"]),
            tile["refcat"],
            tile["truth"],
            config,
            obs.seed,
        )
        if on_observation is not None:
            on_observation(obs, simulated[obs.number])
    return SimulatedSurvey(simulated, home, tile_home)

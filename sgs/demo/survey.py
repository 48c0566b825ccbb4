"""A tiny survey for the demo: Sites as local directories, tiles, observations and their placement.

The placement is the solver's (``sgs.placement``), as for a real survey. Every observation gets a primary Site
(where its raw data lands and its pipeline runs) and a secondary Site (where its final products are replicated).
The calibration files and each tile's reference catalogue are made once and copied to every Site that processes
data needing them. Each Site's store is a POSIX directory, and that copy goes through :mod:`sgs.storage`
(streamed, checksummed, verified), as between real Sites. It is setup (what a Site holds before the survey
starts), not replication: the products' copies to their secondary Site are the transfer service's, by its rules
(``sgs.demo.replication``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from sgs.model.checksum import Checksums
from sgs.model.placement import PlacementPolicy
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
from sgs.placement.plan import PlanRequest
from sgs.placement.sites import PlacementSite
from sgs.placement.solver import solve
from sgs.placement.survey import ObservationRow, build_survey
from sgs.placement.units import home_pixels
from sgs.storage import PosixStore, checksum_file, copy

SITE_NAMES = ("sdc-it", "sdc-fr", "sdc-de", "sdc-es", "sdc-uk", "sdc-nl", "sdc-ch", "sdc-fi", "sdc-us")
# Pointings of successive observations of one tile (arcsec east, north of the tile centre).
POINTING_PATTERN = ((0.0, 0.0), (6.0, -4.5), (-5.0, 5.5), (3.0, 7.0), (-6.5, -3.0))
TILE_SPACING_DEG = 0.05
DEMO_TILE_ORDER = 12  # HEALPix pixels of ~51 arcsec: the demo's tiles, 3 arcmin apart, fall in different ones
DEMO_START = datetime(2027, 1, 1, tzinfo=UTC)


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

    @property
    def storage(self) -> PosixStore:
        """The Site's storage: its whole directory, as a real Site's ``storage.path`` holds its Runs' outputs
        (``work/``) and its data (``store/``, and copies from other Sites at their deterministic keys)."""
        return PosixStore(self.name, self.root)


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
    """Observations spread over tiles, one every 72 minutes; primary and secondary Sites from the placement
    solver (``sgs.placement``), which keeps each tile's observations together and the Sites' shares even."""
    if not 1 <= sites <= len(SITE_NAMES):
        raise ValueError(f"sites: must be between 1 and {len(SITE_NAMES)}, got {sites}")
    if tiles < 1 or observations < 1:
        raise ValueError("tiles and observations must be at least 1")
    site_list = tuple(DemoSite(name, root / "sites" / name) for name in SITE_NAMES[:sites])
    tile_list = tuple(Tile(f"TILE{t + 1:04d}", 150.10 + TILE_SPACING_DEG * t, 2.20) for t in range(tiles))
    visits = [(index % tiles, index // tiles) for index in range(observations)]
    placed = _placement(site_list, tile_list, visits)
    planned = []
    for index, (tile_index, visit) in enumerate(visits):
        primary, secondary = placed[index + 1]
        planned.append(
            PlannedObservation(
                number=index + 1,
                obs_id=f"OBS{index + 1:06d}",
                tile=tile_list[tile_index],
                tile_number=tile_index + 1,
                pointing_offset_arcsec=POINTING_PATTERN[visit % len(POINTING_PATTERN)],
                primary=primary,
                secondary=secondary,
                seed=seed * 1000 + index,
            )
        )
    return SurveyPlan(root, site_list, tile_list, tuple(planned), seed)


def _placement(
    sites: tuple[DemoSite, ...], tiles: tuple[Tile, ...], visits: list[tuple[int, int]]
) -> dict[int, tuple[DemoSite, DemoSite]]:
    """Observation number -> (primary, secondary) from the solver; Sites of equal size; the tile's HEALPix pixel
    at order 12 (~51 arcsec) as its MER tile, each tile its own placement unit."""
    pixels = home_pixels(np.array([t.ra for t in tiles]), np.array([t.dec for t in tiles]), DEMO_TILE_ORDER)
    rows = [
        ObservationRow(
            id=index + 1,
            time=DEMO_START + timedelta(minutes=72 * index),
            ra=tiles[tile].ra,
            dec=tiles[tile].dec,
            tiles=(int(pixels[tile]),),
        )
        for index, (tile, _) in enumerate(visits)
    ]
    survey = build_survey(rows, tile_order=DEMO_TILE_ORDER)
    policy = PlacementPolicy(copies=2 if len(sites) > 1 else 1, patch_order=DEMO_TILE_ORDER, window_days=1)
    request = PlanRequest(
        survey,
        [PlacementSite(name=s.name, cores=1, storage_tb=1) for s in sites],
        DEMO_START,
        DEMO_START + timedelta(days=1 + len(visits) // 20),
        policy=policy,
    )
    by_name = {s.name: s for s in sites}
    placed = solve(request).assignments().observations
    return {obs: (by_name[p], by_name[s] if s else by_name[p]) for obs, (p, s) in placed.items()}


def replicate(
    source: DemoSite, path: Path, destination: DemoSite, key: str, expected: Checksums | None = None
) -> tuple[str, Checksums]:
    """Copy a file of ``source``'s store to ``key`` in ``destination``'s: the copy URI and its checksums.

    Only to seed a Site's store with the calibrations and a tile's catalogue before processing (setup, not
    replication: the transfer service copies products, by rule).

    ``expected`` (the source replica's checksums; read from the file when not given) is what the copy must
    match; a destination already holding it is left as it is, so a re-run copies nothing twice.
    """
    source_store, destination_store = source.storage, destination.storage
    source_key = source_store.key_of(path.resolve().as_uri())
    expected = expected or checksum_file(path)
    result = copy(source_store, source_key, destination_store, key, expected=expected, reuse_existing=True)
    return result.destination_uri, result.checksums


@dataclass(frozen=True)
class SimulatedSurvey:
    observations: dict[int, ObservationFiles]
    calibration_home: DemoSite
    tile_home: dict[str, DemoSite]


def _site_copy(files: CalibrationFiles | TileFiles, home: DemoSite, site: DemoSite, folder: str) -> dict[str, Path]:
    """The files at ``site`` (copied from ``home`` unless they are made there), by role."""
    paths = (
        {"mdb": files.mdb, "master_dark": files.master_dark}
        if isinstance(files, CalibrationFiles)
        else {"truth": files.truth_path, "refcat": files.refcat}
    )
    if site == home:
        return paths
    for path in paths.values():
        replicate(home, path, site, f"store/{folder}/{path.name}")
    return {role: site.store / folder / path.name for role, path in paths.items()}


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
        calib = _site_copy(calibration, home, obs.primary, "calib")
        tile = _site_copy(tile_files[obs.tile.tile_id], tile_home[obs.tile.tile_id], obs.primary, "catalogs")
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

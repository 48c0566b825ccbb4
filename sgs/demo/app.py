"""`sgs demo`: simulate a tiny survey, process it at its Sites, record and replicate the products, report.

Steps: plan (Sites, tiles, observations, placement) → simulate raw data at each primary Site → run the NIR
pipeline per observation with the local executor → register inputs, products, lineage and replicas in the
archive (a local run record until the archive service is plugged in) → replicate stacks and catalogues to the
secondary Site → compare catalogues with truth → summary table and a PNG preview.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sgs.demo.archive import Archive, LocalArchive
from sgs.demo.runner import ObservationOutcome, SurveyRunner, assess, register_observation
from sgs.demo.survey import PlannedObservation, SurveyPlan, plan_survey, simulate_survey
from sgs.nir.sim import ObservationFiles, SimConfig


@dataclass(frozen=True)
class DemoOptions:
    root: Path = Path("sgs-demo")
    observations: int = 6
    tiles: int = 2
    sites: int = 3
    parallel: int = 2
    cores: int | None = None
    seed: int = 1
    clean: bool = False


@dataclass
class DemoResult:
    plan: SurveyPlan
    outcomes: list[ObservationOutcome]
    preview: Path | None
    archive_root: Path
    wall_s: float
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def succeeded(self) -> bool:
        return all(o.succeeded for o in self.outcomes)


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description:<28}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=console,
    )


def run_demo(options: DemoOptions, console: Console, archive: Archive | None = None) -> DemoResult:
    started = time.perf_counter()
    root = options.root.resolve()
    if options.clean and root.exists():
        shutil.rmtree(root)
    plan = plan_survey(root, options.observations, options.tiles, options.sites, options.seed)
    local_archive = LocalArchive(root / "archive")
    the_archive: Archive = archive or local_archive
    cores = options.cores or os.cpu_count() or 1
    console.print(_plan_line(plan, cores, options.parallel))
    timings: dict[str, float] = {}
    config = SimConfig()

    with _progress(console) as progress:
        sim_bar = progress.add_task("simulate raw exposures", total=len(plan.observations), detail="")
        bars = {
            obs.number: progress.add_task(f"NIR pipeline {obs.obs_id}", total=None, detail=f"@ {obs.primary.name}")
            for obs in plan.observations
        }

        def on_task(obs: PlannedObservation, done: int, total: int) -> None:
            progress.update(bars[obs.number], completed=done, total=total)

        mark = time.perf_counter()
        with SurveyRunner(options.parallel, cores, on_task) as runner:

            def simulated(obs: PlannedObservation, files: ObservationFiles) -> None:
                progress.update(sim_bar, advance=1, detail=f"{obs.obs_id} @ {obs.primary.name}")
                runner.submit(obs, files)  # processing starts while the next observation is simulated

            survey = simulate_survey(plan, config, simulated)
            timings["simulate"] = time.perf_counter() - mark
            outcomes = runner.results()
        timings["simulate+process"] = time.perf_counter() - mark

        mark = time.perf_counter()
        ingest_bar = progress.add_task("register, replicate, assess", total=len(outcomes), detail="")
        for outcome in outcomes:
            files = survey.observations[outcome.observation.number]
            register_observation(the_archive, outcome, files)
            assess(outcome, files)
            progress.update(ingest_bar, advance=1, detail=outcome.observation.obs_id)
        timings["register"] = time.perf_counter() - mark

    preview = _write_preview(outcomes, survey.observations, root)
    result = DemoResult(plan, outcomes, preview, local_archive.root, time.perf_counter() - started, timings)
    console.print(summary_table(result))
    _print_footer(console, result, local_archive if archive is None else None)
    return result


def _plan_line(plan: SurveyPlan, cores: int, parallel: int) -> str:
    sites = ", ".join(s.name for s in plan.sites)
    return (
        f"[bold]sgs demo[/]: {len(plan.observations)} observations over {len(plan.tiles)} tiles, "
        f"Sites {sites} under {plan.root}\n"
        f"each observation runs the NIR pipeline (25 tasks) at its primary Site; "
        f"{parallel} observations at a time on {cores} cores"
    )


def _write_preview(
    outcomes: list[ObservationOutcome], files: Mapping[int, ObservationFiles], root: Path
) -> Path | None:
    from sgs.demo.preview import write_preview

    for outcome in outcomes:
        obs_files = files[outcome.observation.number]
        if outcome.succeeded:
            obs = outcome.observation
            title = (
                f"{obs.obs_id} stack ({obs.tile.tile_id}, 4 dithers) at {obs.primary.name}: "
                f"{outcome.sources} sources (cyan), missed truth (red)"
            )
            return write_preview(
                outcome.products["stackedImage"],
                outcome.products["sourceCatalog"],
                root / "preview.png",
                title,
                obs_files.truth,
            )
    return None


def _fmt(value: float, spec: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def summary_table(result: DemoResult) -> Table:
    table = Table(title="sgs demo: NIR pipeline per observation (data at: primary Site → copies)", title_justify="left")
    for column, justify in (
        ("observation", "left"),
        ("tile", "left"),
        ("tasks", "right"),
        ("datasets", "right"),
        ("sources", "right"),
        ("complete S/N≥10", "right"),
        ("astrom rms", "right"),
        ("flux bias", "right"),
        ("data at", "left"),
        ("time", "right"),
    ):
        table.add_column(column, justify=justify, no_wrap=column == "data at")  # type: ignore[arg-type]
    for outcome in result.outcomes:
        obs = outcome.observation
        counts = outcome.result.counts if outcome.result else {}
        quality = outcome.quality
        where = " → ".join([obs.primary.name, *outcome.replicated_to])
        table.add_row(
            obs.obs_id,
            obs.tile.tile_id,
            f"{counts.get('Succeeded', 0)}/{counts.get('Total', 0)}" if counts else "-",
            str(outcome.datasets),
            str(outcome.sources) if quality else "-",
            _fmt(quality.completeness_snr10, ".1%") if quality else "-",
            (_fmt(quality.astrometric_rms_arcsec * 1000, ".0f") + " mas") if quality else "-",
            _fmt(quality.flux_bias_stars, "+.2%") if quality else "-",
            where if outcome.succeeded else f"[red]{outcome.error}[/]",
            f"{outcome.wall_s:.1f} s",
        )
    return table


def _print_footer(console: Console, result: DemoResult, archive: LocalArchive | None) -> None:
    ok = sum(o.succeeded for o in result.outcomes)
    status = "[green]all observations processed[/]" if result.succeeded else f"[red]{ok}/{len(result.outcomes)} ok[/]"
    phases = ", ".join(f"{k} {v:.1f} s" for k, v in result.timings.items())
    console.print(f"{status} in {result.wall_s:.1f} s ({phases})")
    if archive is not None:
        counts = archive.counts()
        console.print(
            f"archive (local run record until the archive service is plugged in): {archive.root} — "
            + ", ".join(f"{v} {k}" for k, v in counts.items())
        )
    for site in result.plan.sites:
        console.print(f"  Site {site.name}: data {site.store}, runs {site.work}")
    if result.preview is not None:
        console.print(f"preview of a stack with its detections: [bold]{result.preview}[/]")

"""`sgs demo`: simulate a tiny survey, process it at its Sites, record and replicate the products, report.

Steps: plan (Sites, tiles, observations, placement) → start the embedded services in the background
(PostgreSQL, NATS JetStream, the archive, the transfer service with a worker over the demo's POSIX Sites) →
simulate raw data at each primary Site → run the NIR pipeline per observation with the local executor → one
replication rule per (product type, secondary Site) at the transfer service → register inputs, products, lineage
and replicas in the archive over HTTP (each registration is an event the rules' evaluator acts on: the worker
copies stacks and catalogues to the secondary Site and registers the copies there) → compare catalogues with
truth → wait for the rules → summary read back from the archive and the transfer service, and a PNG preview.
``--archive local`` keeps a JSON-lines record instead of running the services (and so replicates nothing).
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sgs.demo.archive import NOTHING, Archive, LocalArchive, Registered
from sgs.demo.runner import SURVEY_COLLECTIONS, ObservationOutcome, SurveyRunner, assess, register_observation
from sgs.demo.survey import PlannedObservation, SurveyPlan, plan_survey, simulate_survey
from sgs.nir.sim import ObservationFiles, SimConfig

if TYPE_CHECKING:
    from sgs.demo.http_archive import HttpArchive
    from sgs.demo.replication import ReplicationReport, TransferClient
    from sgs.demo.report import ArchiveReport
    from sgs.demo.service import EmbeddedArchive

ArchiveKind = Literal["service", "local"]
ARCHIVE_DB_DIR = "archive-db"
LOCAL_ARCHIVE_DIR = "archive"


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
    archive: ArchiveKind = "service"
    keep_serving: bool = False
    archive_port: int | None = None


@dataclass
class DemoResult:
    plan: SurveyPlan
    outcomes: list[ObservationOutcome]
    preview: Path | None
    archive_root: Path
    wall_s: float
    timings: dict[str, float] = field(default_factory=dict)
    archive_url: str | None = None
    registered: Registered = NOTHING
    report: ArchiveReport | None = None
    replication: ReplicationReport | None = None

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


@dataclass
class _Processed:
    outcomes: list[ObservationOutcome]
    files: dict[int, ObservationFiles]


def _simulate_and_process(
    plan: SurveyPlan, options: DemoOptions, cores: int, progress: Progress, timings: dict[str, float]
) -> _Processed:
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

        survey = simulate_survey(plan, SimConfig(), simulated)
        timings["simulate"] = time.perf_counter() - mark
        outcomes = runner.results()
    timings["simulate+process"] = time.perf_counter() - mark
    return _Processed(outcomes, survey.observations)


def _register_all(archive: Archive, processed: _Processed, progress: Progress) -> Registered:
    bar = progress.add_task("register, assess", total=len(processed.outcomes), detail="")
    registered = NOTHING
    for outcome in processed.outcomes:
        files = processed.files[outcome.observation.number]
        registered += register_observation(archive, outcome, files)
        assess(outcome, files)
        progress.update(bar, advance=1, detail=outcome.observation.obs_id)
    return registered


@dataclass
class _Replication:
    """The demo's rules at the transfer service, each with the copies it should end with."""

    client: TransferClient
    rules: list[tuple[dict[str, Any], int]]


def _create_rules(plan: SurveyPlan, http: HttpArchive, url: str, token: str) -> _Replication:
    """Before registration: each registered product is then an event the rules' evaluator acts on at once."""
    from sgs.demo.archive import archive_universe, dataset_type_for
    from sgs.demo.replication import REPLICATED_TYPES, TransferClient, rule_specs
    from sgs.demo.runner import INSTRUMENT

    # A rule names its dataset type, which the archive must know (the first registration would define it).
    data_id: dict[str, int | str] = {"instrument": INSTRUMENT, "band": "H", "observation": 1, "tile": 1}
    http.ensure_types([dataset_type_for(name, data_id, archive_universe()) for name in REPLICATED_TYPES])
    client = TransferClient(url, token)
    specs = rule_specs(plan.observations)
    return _Replication(
        client, [(rule, len(spec.observations)) for spec, rule in zip(specs, client.ensure_rules(specs), strict=True)]
    )


def _wait_for_copies(replication: _Replication, processed: _Processed, progress: Progress) -> None:
    """Until every rule is OK with a copy of each product of its observations that succeeded."""
    from sgs.demo.replication import expected_copies, rule_specs, wait_for_rules

    succeeded = [o.observation.number for o in processed.outcomes if o.succeeded]
    specs = rule_specs(o.observation for o in processed.outcomes)
    replication.rules = [
        (rule, expected)
        for (rule, _), expected in zip(replication.rules, expected_copies(specs, succeeded), strict=True)
    ]
    bar = progress.add_task("replicate (transfer service)", total=None, detail="")

    def show(done: int, total: int, detail: str) -> None:
        progress.update(bar, completed=done, total=total, detail=detail)

    replication.rules = [
        (rule, expected)
        for rule, (_, expected) in zip(
            wait_for_rules(replication.client, replication.rules, show), replication.rules, strict=True
        )
    ]


def _copies_from_archive(archive: HttpArchive, outcomes: list[ObservationOutcome]) -> None:
    """Each observation's secondary Sites as the archive records them: the Sites (other than the primary)
    holding a replica of every product the rules copy."""
    from sgs.demo.replication import REPLICATED_TYPES

    for outcome in outcomes:
        if not outcome.succeeded:
            continue
        obs = outcome.observation
        held: set[str] | None = None
        for dataset_type in REPLICATED_TYPES:
            for dataset in archive.datasets(dataset_type, where=f"observation = {obs.number}"):
                sites = {r.site for r in archive.replicas_of(str(dataset["id"]))}
                held = sites if held is None else held & sites
        outcome.replicated_to = sorted((held or set()) - {obs.primary.name})


@contextmanager
def _archive_service(options: DemoOptions, plan: SurveyPlan, progress: Progress) -> Iterator[EmbeddedArchive]:
    """The embedded archive and transfer service, started in the background at once and always stopped
    (Ctrl-C included)."""
    from sgs.demo.service import EmbeddedArchive

    root = plan.root
    row = progress.add_task("archive + transfer service", total=1, detail="starting PostgreSQL, NATS, services")

    def done(service: EmbeddedArchive) -> None:
        if service.start_error is not None:
            progress.update(row, detail=f"[red]failed after {service.startup_s:.1f} s: {service.start_error}[/]")
        else:
            transfer = f", transfers {service.transfer.url}" if service.transfer is not None else ""
            progress.update(
                row, completed=1, detail=f"archive {service.url}{transfer} (up in {service.startup_s:.1f} s)"
            )

    service = EmbeddedArchive(root / ARCHIVE_DB_DIR, options.archive_port, sites=plan.sites)
    try:
        yield service.start_in_background(on_done=done)
    finally:
        service.stop()


def run_demo(options: DemoOptions, console: Console, archive: Archive | None = None) -> DemoResult:
    """The whole demo; ``archive`` replaces the one ``options.archive`` names (tests pass their own)."""
    started, since = time.perf_counter(), datetime.now(UTC)
    root = options.root.resolve()
    if options.clean and root.exists():
        from sgs.demo.service import EmbeddedArchive

        EmbeddedArchive.stop_leftovers(root / ARCHIVE_DB_DIR)
        shutil.rmtree(root)
    plan = plan_survey(root, options.observations, options.tiles, options.sites, options.seed)
    cores = options.cores or os.cpu_count() or 1
    console.print(_plan_line(plan, cores, options.parallel))
    timings: dict[str, float] = {}
    use_service = archive is None and options.archive == "service"
    with _progress(console) as progress, ExitStack() as stack:
        service = stack.enter_context(_archive_service(options, plan, progress)) if use_service else None
        processed = _simulate_and_process(plan, options, cores, progress, timings)
        mark = time.perf_counter()
        replication: _Replication | None = None
        if service is not None:
            from sgs.demo.http_archive import HttpArchive

            service.wait_ready()
            http = stack.enter_context(HttpArchive(service.url, service.admin_token, survey_runs=SURVEY_COLLECTIONS))
            http.issue_site_tokens(site.name for site in plan.sites)
            if service.transfer is not None:
                replication = _create_rules(plan, http, service.transfer.url, service.transfer.token)
                stack.callback(replication.client.close)
            the_archive: Archive = http
        else:
            the_archive = archive or LocalArchive(root / LOCAL_ARCHIVE_DIR)
        registered = _register_all(the_archive, processed, progress)
        timings["register"] = time.perf_counter() - mark
        if replication is not None:
            mark = time.perf_counter()
            _wait_for_copies(replication, processed, progress)
            _copies_from_archive(http, processed.outcomes)
            timings["replicate"] = time.perf_counter() - mark
        progress.stop()
        result = _finish(options, console, plan, processed, the_archive, started, timings)
        result.registered = registered
        if replication is not None:
            _print_replication(console, result, replication, http, since)
        _print_footer(console, result, the_archive)
        if service is not None and options.keep_serving:
            _serve_until_interrupted(console, service, result.report, http.issue_reader_token())
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


def _finish(
    options: DemoOptions,
    console: Console,
    plan: SurveyPlan,
    processed: _Processed,
    archive: Archive,
    started: float,
    timings: dict[str, float],
) -> DemoResult:
    from sgs.demo.http_archive import HttpArchive

    root = plan.root
    preview = _write_preview(processed.outcomes, processed.files, root)
    is_http = isinstance(archive, HttpArchive)
    archive_root = root / (ARCHIVE_DB_DIR if is_http else LOCAL_ARCHIVE_DIR)
    result = DemoResult(plan, processed.outcomes, preview, archive_root, 0.0, timings)
    console.print(summary_table(result))
    if isinstance(archive, HttpArchive):
        _print_archive_report(console, result, archive)
    result.wall_s = time.perf_counter() - started
    return result


def _print_archive_report(console: Console, result: DemoResult, archive: HttpArchive) -> None:
    from sgs.demo.report import holdings_table, lineage_tree, read_report

    first = next((o.observation.number for o in result.outcomes if o.succeeded), None)
    mark = time.perf_counter()
    report = read_report(archive, [site.name for site in result.plan.sites], first)
    result.timings["query archive"] = time.perf_counter() - mark
    result.archive_url, result.report = archive.url, report
    console.print(holdings_table(report))
    if report.lineage is not None:
        console.print(
            f"[bold]lineage of a source catalogue[/] (from the archive, {len(report.lineage['nodes'])} datasets):"
        )
        console.print(lineage_tree(report.lineage))


def _print_replication(
    console: Console, result: DemoResult, replication: _Replication, archive: HttpArchive, since: datetime
) -> None:
    from sgs.demo.replication import read_replication, rules_table

    mark = time.perf_counter()
    result.replication = read_replication(replication.client, archive, replication.rules, since)
    result.timings["query transfers"] = time.perf_counter() - mark
    console.print(rules_table(result.replication))


def _print_footer(console: Console, result: DemoResult, archive: Archive) -> None:
    ok = sum(o.succeeded for o in result.outcomes)
    status = "[green]all observations processed[/]" if result.succeeded else f"[red]{ok}/{len(result.outcomes)} ok[/]"
    phases = ", ".join(f"{k} {v:.1f} s" for k, v in result.timings.items())
    console.print(f"{status} in {result.wall_s:.1f} s ({phases})")
    registered, replication = result.registered, result.replication
    this_run = f"this run: {registered.new} datasets new, {registered.existing} already registered; " + (
        f"{replication.copies_this_run} copies made by the transfer service "
        f"({replication.copies} by its {len(replication.rules)} rules in all)"
        if replication is not None
        else "no copies at secondary Sites (the transfer service runs with the archive service only)"
    )
    if result.report is not None:
        report = result.report
        console.print(
            f"archive {report.url}: {report.datasets} datasets, {report.replicas} replicas at "
            f"{len(report.sites)} Sites, {report.placements} placements\n  {this_run}\n"
            f"  PostgreSQL and JetStream data in {result.archive_root} (a re-run reuses them: it registers "
            "nothing twice and copies nothing twice)"
        )
    elif isinstance(archive, LocalArchive):
        counts = ", ".join(f"{v} {k}" for k, v in archive.counts().items())
        console.print(f"archive (local JSON-lines record, --archive local): {archive.root} — {counts}; {this_run}")
    for site in result.plan.sites:
        console.print(f"  Site {site.name}: data {site.store}, runs {site.work}, copies {site.root}/<type>/…")
    if result.preview is not None:
        console.print(f"preview of a stack with its detections: [bold]{result.preview}[/]")


def try_commands(report: ArchiveReport, token: str) -> list[str]:
    """Ready-to-paste commands against the running archive, with a read-only token (reads need one)."""
    at = f"--url {report.url} --token {token}"
    commands = [
        f'sgs archive query "tile = 1" --type nir_stack {at}',
        f"sgs archive query \"band = 'H' AND observation = 1\" --type nir_raw {at}",
        f"curl -s -H 'Authorization: Bearer {token}' '{report.url}/replicas?site={report.sites[0].site}&limit=5'",
    ]
    if report.catalog is not None:
        commands.insert(1, f"sgs archive lineage {report.catalog['id']} --depth 12 {at}")
    return commands


def _serve_until_interrupted(
    console: Console, service: EmbeddedArchive, report: ArchiveReport | None, reader_token: str
) -> None:
    console.print(f"\n[bold]the archive keeps serving at {service.url}[/] (API docs: {service.url}/docs)")
    commands = try_commands(report, reader_token) if report is not None else []
    if service.transfer is not None:
        transfer = service.transfer
        console.print(f"[bold]and the transfer service at {transfer.url}[/] (API docs: {transfer.url}/docs)")
        commands.append(f"sgs replicate rule list --url {transfer.url} --token {transfer.token}")
    console.print("try:")
    for command in commands:
        console.print(f"  {command}", markup=False, highlight=False)
    console.print("press Ctrl-C to stop it")
    try:
        service.wait_until_stopped()
    except KeyboardInterrupt:
        console.print("stopping the archive service and PostgreSQL")

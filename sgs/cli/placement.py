"""`sgs placement ...`: plan a survey's placement on Sites, explain one observation, compare plans, draw them."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import httpx
import typer
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from sgs.model.placement import PlacementPolicy
from sgs.placement.baselines import greedy_plan, round_robin_plan
from sgs.placement.explain import explain
from sgs.placement.generator import euclid_sites, generate_survey
from sgs.placement.metrics import PlanReport, evaluate
from sgs.placement.plan import Assignments, PlanError, PlanRequest, check_horizon, read_plan
from sgs.placement.sites import PlacementSite, SitesError, read_sites
from sgs.placement.solver import solve
from sgs.placement.survey import Survey, SurveyError, read_survey, write_csv, write_json

app = typer.Typer(
    name="placement",
    help="Place a survey's observations and tiles on primary and secondary Sites (Euclid-style distribution).",
    no_args_is_help=True,
)
console = Console(soft_wrap=True)  # long lines stay whole (they name files and fields)
err_console = Console(stderr=True, soft_wrap=True)

SurveyArg = Annotated[str, typer.Argument(help="Survey plan: .csv, .yaml or .json path, or http(s) URL.")]
SitesOption = Annotated[Path, typer.Option("--sites", help="Sites: YAML list (name, cores, storageTb, ...) or Sites.")]
StartOption = Annotated[
    datetime | None, typer.Option("--start", help="Horizon start (default: the survey's first observation).")
]
DaysOption = Annotated[float, typer.Option("--days", help="Horizon length in days (default: the whole survey).")]
PolicyOption = Annotated[Path | None, typer.Option("--policy", help="Policy YAML (DataPlacement spec.policy).")]
PreviousOption = Annotated[Path | None, typer.Option("--previous", help="Previous plan file (churn is measured).")]
FrozenOption = Annotated[
    datetime | None,
    typer.Option("--frozen-before", help="Observations of the previous plan before this time never move."),
]


def _fail(message: str) -> typer.Exit:
    err_console.print(f"[red]error[/red] {message}")
    return typer.Exit(2)


def _text(source: str) -> str:
    if source.startswith(("http://", "https://")):
        response = httpx.get(source, timeout=60, follow_redirects=False)
        if response.status_code != 200:
            raise _fail(f"{source}: HTTP {response.status_code}")
        return response.text
    try:
        return Path(source).read_text(encoding="utf-8")
    except OSError as error:
        raise _fail(f"{source}: {error.strerror or error}") from error


def _survey(source: str) -> Survey:
    try:
        return read_survey(_text(source), source)
    except SurveyError as error:
        raise _fail(f"{source}: {error}") from error


def _sites(path: Path) -> list[PlacementSite]:
    try:
        return read_sites(_text(str(path)))
    except SitesError as error:
        raise _fail(f"{path}: {error}") from error


def _policy(path: Path | None) -> PlacementPolicy:
    if path is None:
        return PlacementPolicy()
    try:
        return PlacementPolicy.model_validate(yaml.safe_load(_text(str(path))) or {})
    except (ValidationError, yaml.YAMLError) as error:
        raise _fail(f"{path}: {error}") from error


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _request(
    survey: Survey,
    sites: list[PlacementSite],
    start: datetime | None,
    days: float,
    policy: PlacementPolicy,
    previous: Assignments | None,
    frozen_before: datetime | None,
) -> PlanRequest:
    first = datetime.fromtimestamp(int(survey.times.min()), UTC) if len(survey) else datetime.now(UTC)
    begin = _aware(start) if start else first.replace(hour=0, minute=0, second=0)
    if days > 0:
        end = begin + timedelta(days=days)
    else:
        end = datetime.fromtimestamp(int(survey.times.max()), UTC) + timedelta(days=1) if len(survey) else begin
    frozen: frozenset[int] = frozenset()
    if frozen_before is not None and previous is not None:
        cut = int(_aware(frozen_before).timestamp())
        frozen = frozenset(int(i) for i, t in zip(survey.ids.tolist(), survey.times.tolist(), strict=True) if t < cut)
    try:
        return PlanRequest(survey, sites, begin, end, policy=policy, previous=previous, frozen=frozen)
    except (PlanError, SitesError) as error:
        raise _fail(str(error)) from error


def _previous(path: Path | None) -> Assignments | None:
    if path is None:
        return None
    try:
        return read_plan(_text(str(path)))
    except PlanError as error:
        raise _fail(f"{path}: {error}") from error


def print_report(report: PlanReport, title: str) -> None:
    table = Table(title=title)
    for column in ("Site", "target", "share", "primaries", "secondaries", "tiles", "worst 30-d window", "longest gap"):
        table.add_column(column, justify="left" if column == "Site" else "right")
    for site in report.sites:
        table.add_row(
            site.site,
            f"{100 * site.target:.2f} %",
            f"{100 * site.share:.2f} %",
            f"{site.primaries:,}",
            f"{site.secondaries:,}",
            f"{site.tiles:,}",
            f"{100 * site.worst_window_error:.2f} pts",
            f"{site.longest_gap_days:.1f} d",
        )
    console.print(table)
    console.print(
        f"{report.observations:,} observations ({report.frozen:,} frozen), {report.tiles:,} tiles: "
        f"{100 * report.tiles_coherent:.2f} % of tiles at one primary, {100 * report.copied_pairs:.2f} % of "
        f"(observation, tile) pairs copied; share error {100 * report.share_error:.2f} %; "
        f"secondary = primary: {report.secondary_equals_primary}"
    )
    if report.previous_observations:
        console.print(
            f"against the previous plan: {100 * report.churn:.2f} % of {report.previous_observations:,} "
            f"observations changed primary; frozen moved: {report.frozen_moved}"
        )
    console.print(f"plan digest sha256:{report.digest}")


@app.command("plan")
def plan_command(
    survey: SurveyArg,
    sites: SitesOption,
    start: StartOption = None,
    days: DaysOption = 0.0,
    policy: PolicyOption = None,
    previous: PreviousOption = None,
    frozen_before: FrozenOption = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write the plan (CSV) here.")] = None,
    report_out: Annotated[Path | None, typer.Option("--report", help="Write the report (JSON) here.")] = None,
    baseline: Annotated[
        str | None, typer.Option("--baseline", help="Plan with 'greedy' or 'round-robin' instead of the solver.")
    ] = None,
    now: Annotated[datetime | None, typer.Option("--now", help="Refuse horizons ending before this time.")] = None,
) -> None:
    """Plan SURVEY over --sites: prints the report table and writes the plan."""
    planners = {None: solve, "greedy": greedy_plan, "round-robin": round_robin_plan}
    if baseline not in planners:
        raise typer.BadParameter("must be 'greedy' or 'round-robin'", param_hint="--baseline")
    began = time.perf_counter()
    loaded = _survey(survey)
    console.print(f"read {len(loaded):,} observations from {survey} in {time.perf_counter() - began:.2f} s")
    request = _request(loaded, _sites(sites), start, days, _policy(policy), _previous(previous), frozen_before)
    if now is not None:
        try:
            check_horizon(request.end, _aware(now))
        except PlanError as error:
            raise _fail(str(error)) from error
    began = time.perf_counter()
    try:
        plan = planners[baseline](request)
    except (PlanError, SitesError) as error:
        raise _fail(str(error)) from error
    elapsed = time.perf_counter() - began
    report = evaluate(request, plan)
    horizon = f"{request.start:%Y-%m-%d} - {request.end:%Y-%m-%d}"
    print_report(report, f"{baseline or 'solver'} plan, {horizon}, planned in {elapsed:.2f} s")
    if out is not None:
        out.write_text(plan.to_csv(), encoding="utf-8")
        console.print(f"wrote {out}")
    if report_out is not None:
        report_out.write_text(report.model_dump_json(indent=1) + "\n", encoding="utf-8")
        console.print(f"wrote {report_out}")


@app.command("explain")
def explain_command(
    observation: Annotated[int, typer.Argument(help="Observation id.")],
    survey: Annotated[str, typer.Option("--survey", help="The survey plan the plan was made from.")],
    sites: SitesOption,
    plan: Annotated[Path, typer.Option("--plan", help="The plan file.")],
    start: StartOption = None,
    days: DaysOption = 0.0,
    policy: PolicyOption = None,
    previous: PreviousOption = None,
    frozen_before: FrozenOption = None,
) -> None:
    """Why OBSERVATION is at its Site: its unit, and each Site's cost term by term (lower is better)."""
    loaded = _survey(survey)
    request = _request(loaded, _sites(sites), start, days, _policy(policy), _previous(previous), frozen_before)
    try:
        why = explain(request, read_plan(_text(str(plan))), observation)
    except PlanError as error:
        raise _fail(str(error)) from error
    console.print(
        f"observation {why.observation} at {why.time:%Y-%m-%d %H:%M} UTC: primary [bold]{why.primary}[/bold], "
        f"secondary {why.secondary or '-'}"
    )
    if why.frozen:
        console.print("frozen: already processed where it is, a re-plan never moves it")
        return
    console.print(
        f"placed with its unit: {why.unit_patch}, {why.unit_observations} observations over "
        f"{why.unit_span_days:.1f} days; its {why.tiles} tiles, {why.tiles_whole} entirely at one primary"
    )
    table = Table(title="cost of placing the unit at each Site (objective change; lower is better)")
    columns = ("Site", "target", "time balance", "long-run share", "gap", "tile copies", "split tiles", "churn+ground")
    for column in (*columns, "total"):
        table.add_column(column, justify="left" if column == "Site" else "right")
    for cost in sorted(why.costs, key=lambda c: (c.total, c.site)):
        mark = " ←" if cost.site == why.primary else ""
        if cost.down:
            table.add_row(cost.site + mark, f"{100 * cost.target:.1f} %", *(["-"] * 6), "maintenance")
            continue
        t = cost.terms
        table.add_row(
            cost.site + mark,
            f"{100 * cost.target:.1f} %",
            *(f"{1e3 * t[k]:+.3f}" for k in ("window_share", "cumulative_share", "gap", "copies", "split_tiles")),
            f"{1e3 * t['churn_external']:+.3f}",
            f"{1e3 * cost.total:+.3f}",
        )
    console.print(table)
    console.print("(values x 1e-3 of the normalised objective; see `sgs.placement.solver` for the terms)")


@app.command("diff")
def diff_command(
    old: Annotated[Path, typer.Argument(help="Earlier plan file.")],
    new: Annotated[Path, typer.Argument(help="Later plan file.")],
    show: Annotated[int, typer.Option("--show", help="List this many changed observations.")] = 10,
) -> None:
    """What changed between two plans: counts, moves between Sites, the first changed observations."""
    try:
        before, after = read_plan(_text(str(old))), read_plan(_text(str(new)))
    except PlanError as error:
        raise _fail(str(error)) from error
    for dimension in ("observations", "tiles"):
        a: dict[int, tuple[str, str | None]] = dict(getattr(before, dimension))
        b: dict[int, tuple[str, str | None]] = dict(getattr(after, dimension))
        common = sorted(set(a) & set(b))
        primary = [k for k in common if a[k][0] != b[k][0]]
        secondary = [k for k in common if a[k][1] != b[k][1]]
        console.print(
            f"{dimension}: {len(common):,} in both, {len(set(b) - set(a)):,} added, {len(set(a) - set(b)):,} removed; "
            f"primary changed {len(primary):,} ({100 * len(primary) / max(len(common), 1):.2f} %), "
            f"secondary changed {len(secondary):,}"
        )
        if dimension == "observations" and primary:
            moves = Counter((a[k][0], b[k][0]) for k in primary)
            table = Table(title=f"primary moves (the {show} largest)")
            table.add_column("from")
            table.add_column("to")
            table.add_column("observations", justify="right")
            for (source, target), count in sorted(moves.items(), key=lambda m: (-m[1], m[0]))[:show]:
                table.add_row(source, target, f"{count:,}")
            console.print(table)
            for k in primary[:show]:
                console.print(f"  observation {k}: {a[k][0]} -> {b[k][0]}")


@app.command("plot")
def plot_command(
    survey: Annotated[str, typer.Option("--survey", help="The survey plan.")],
    plan: Annotated[Path, typer.Option("--plan", help="The plan file.")],
    out: Annotated[Path, typer.Option("--out", help="PNG to write.")] = Path("placement.png"),
    sites: Annotated[Path | None, typer.Option("--sites", help="Sites (for the target shares).")] = None,
) -> None:
    """Draw the tiles per primary Site on the sky and each Site's share over time (PNG)."""
    from sgs.placement.plot import draw

    loaded = _survey(survey)
    try:
        assignments = read_plan(_text(str(plan)))
    except PlanError as error:
        raise _fail(str(error)) from error
    targets = None
    if sites is not None:
        from sgs.placement.sites import target_shares

        site_list = _sites(sites)
        shares = target_shares(site_list, PlacementPolicy()).tolist()
        targets = dict(zip((s.name for s in site_list), shares, strict=True))
    draw(loaded, assignments, out, targets)
    console.print(f"wrote {out}")


@app.command("generate")
def generate_command(
    out: Annotated[Path, typer.Argument(help="Survey file to write (.csv or .json).")],
    wide: Annotated[int, typer.Option(help="Wide-survey observations.")] = 29_000,
    deep: Annotated[int, typer.Option(help="Deep-field observations.")] = 16_000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 1,
    sites_out: Annotated[Path | None, typer.Option("--sites-out", help="Also write 9 Euclid-like Sites.")] = None,
) -> None:
    """Write a synthetic Euclid-like survey (and Sites) for trying the planner."""
    survey = generate_survey(wide=wide, deep=deep, seed=seed, sky_fields=max(wide, 29_000))
    out.write_text(write_json(survey) if out.suffix == ".json" else write_csv(survey), encoding="utf-8")
    console.print(f"wrote {out}: {len(survey):,} observations")
    if sites_out is not None:
        rows = [s.model_dump(mode="json", by_alias=True, exclude_defaults=True) for s in euclid_sites()]
        sites_out.write_text(yaml.safe_dump(rows, sort_keys=False), encoding="utf-8")
        console.print(f"wrote {sites_out}: {len(rows)} Sites")

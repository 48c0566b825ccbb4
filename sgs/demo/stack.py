"""`sgs demo --stack`: the demo's survey on the real stack (`sgs dev up`), nobody creating a Run by hand.

Steps: find the stack (KUBECONFIG and the archive, from the environment or `sgs dev env`) → Sites with their
archive token and the NIR Pipeline with one trigger per (Site, tile) applied in their own namespace → raw
exposures simulated into each observation's primary Site store and registered at the archive → the trigger
service creates one Run per observation (its 4 dithers complete) → the operator runs it through the Site's bridge
and registers the stack and the catalogue with lineage back to the raws → report read back from the archive.

The trigger's other inputs (calibrations, the tile's reference catalogue) are plain files: a trigger binds them
the same in every Run, so there is one trigger per (Site, tile), restricted to that Site by its label.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from rich.console import Console
from rich.table import Table

from sgs.demo.archive import Registered
from sgs.demo.replication import ReplicationReport, RuleSpec
from sgs.demo.survey import DemoSite, SurveyPlan, plan_survey, simulate_survey
from sgs.nir.sim import ObservationFiles, SimConfig

if TYPE_CHECKING:
    from sgs.demo.http_archive import HttpArchive
    from sgs.demo.runner import _Registry
    from sgs.storage.sites import LoadedSite, Sites

PIPELINE = "nir"
SITE_LABEL = "sgs-demo-site"  # the label a trigger's Site expression selects its Site by
DATA_DIR = "sgs-demo-data"  # under each Site's store: the simulated survey
REGISTERED_PORTS = {"doStack": ("stack", "nir_stack"), "catalogPhot": ("catalog", "nir_catalog")}
FINAL_PHASES = {"Succeeded", "Failed"}
RAW_TYPE = "nir_raw"
GROUP_ANNOTATION = "sgs.io/trigger-group"  # the trigger service's record of the group a Run is for


class StackError(Exception):
    """The stack is not there or refused something; the message says what to do."""


@dataclass(frozen=True)
class StackOptions:
    observations: int = 2
    tiles: int = 2
    seed: int = 1
    namespace: str = "sgs-demo"
    timeout_s: float = 900.0


@dataclass(frozen=True)
class StackTarget:
    """Where the stack is: its API server (a kubeconfig), archive, Sites' stores and trigger service log."""

    kubeconfig: str
    archive_url: str
    admin_token: str
    sites: tuple[str, ...]
    stores: Mapping[str, Path]
    trigger_log: Path | None
    console_url: str | None = None  # the dev stack's web console, when it serves one
    sites_file: Path | None = None  # the transfer service's Sites (the dev stack's MinIO per Site), when it runs
    transfer_url: str | None = None
    transfer_token: str | None = None


def find_stack(environ: Mapping[str, str] | None = None) -> StackTarget:
    """The dev stack from its state file, the environment overriding (`eval "$(sgs dev env)"` or any cluster)."""
    from sgs.dev.components import site_store
    from sgs.dev.stack import DEV_SITES, archive_exports, load_state

    env = dict(os.environ if environ is None else environ)
    state = load_state()
    exported = {k: v for unit in state.values() for k, v in unit.exports.items()}
    if "archive" in state:
        exported |= archive_exports()
    merged = exported | {k: v for k, v in env.items() if k in ("KUBECONFIG", "SGS_ARCHIVE_URL")}
    if env.get("SGS_ARCHIVE_ADMIN_TOKEN"):
        merged["SGS_ARCHIVE_ADMIN_TOKEN"] = env["SGS_ARCHIVE_ADMIN_TOKEN"]
    missing = [k for k in ("KUBECONFIG", "SGS_ARCHIVE_URL", "SGS_ARCHIVE_ADMIN_TOKEN") if not merged.get(k)]
    if missing:
        raise StackError(
            f"no stack: {', '.join(missing)} not set and not in `sgs dev env`; "
            "start one with `sgs dev up --parts pg,nats,kube,archive,sgs`"
        )
    trigger, web = state.get("trigger"), state.get("console")
    return StackTarget(
        kubeconfig=merged["KUBECONFIG"],
        archive_url=merged["SGS_ARCHIVE_URL"].rstrip("/"),
        admin_token=merged["SGS_ARCHIVE_ADMIN_TOKEN"],
        sites=DEV_SITES,
        stores={site: site_store(site) for site in DEV_SITES},
        trigger_log=Path(trigger.info["log"]) if trigger is not None and "log" in trigger.info else None,
        console_url=str(web.info["url"]) if web is not None and "url" in web.info else None,
        sites_file=Path(exported["SGS_SITES_FILE"]) if exported.get("SGS_SITES_FILE") else None,
        transfer_url=exported.get("SGS_TRANSFER_URL"),
        transfer_token=exported.get("SGS_TRANSFER_TOKEN"),
    )


def object_sites(target: StackTarget) -> Sites | None:
    """The stack's S3 Site per demo Site (a MinIO each, as the transfer service knows them) when every demo Site
    has one and the transfer service runs: the demo's Sites are then those S3 Sites, its tasks run under the task
    wrapper and its products are replicated by rule. None: POSIX stores, nothing replicated (no one would)."""
    from sgs.model.site import StorageKind
    from sgs.storage.sites import load_sites_file

    if target.sites_file is None or not target.sites_file.is_file():
        return None
    if not (target.transfer_url and target.transfer_token):
        return None
    loaded = load_sites_file(target.sites_file)
    if all(site in loaded and loaded[site].resource.spec.storage.kind is StorageKind.S3 for site in target.sites):
        return loaded
    return None


class Kubectl:
    """kubectl against the stack's API server, in the demo's namespace."""

    def __init__(self, kubeconfig: str, namespace: str) -> None:
        from sgs.testing.binaries import kubectl_path

        found = kubectl_path()
        if found is None:
            raise StackError("kubectl not found: build it with `sgs dev build` or put one on PATH")
        self.argv = [str(found), f"--kubeconfig={kubeconfig}", f"--namespace={namespace}"]

    def run(self, *args: str, stdin: str | None = None) -> str:
        done = subprocess.run([*self.argv, *args], input=stdin, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise StackError(f"kubectl {' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")
        return done.stdout

    def apply(self, *objects: Mapping[str, Any]) -> None:
        # JSON, not YAML: kubectl's YAML 1.1 reader turns a plain scalar like 065839 (a generated id that PyYAML
        # leaves unquoted) into a number, and a label or name must stay a string.
        listing = {"apiVersion": "v1", "kind": "List", "items": [dict(o) for o in objects]}
        self.run("apply", "-f", "-", stdin=json.dumps(listing))

    def items(self, plural: str, *selector: str) -> list[dict[str, Any]]:
        listed: list[dict[str, Any]] = json.loads(self.run("get", plural, "-o", "json", *selector))["items"]
        return listed


# ------------------------------------------------------------------------------------------ manifests


def nir_pipeline_manifest(plan: SurveyPlan, files: Mapping[int, ObservationFiles]) -> dict[str, Any]:
    """The NIR pipeline fed by one list input (``exposures``, split into the four dithers by a first step), only
    the stack and the catalogue registered, and a trigger per (Site, tile) the survey uses."""
    from sgs.dsl.load import load_pipeline

    compiled = load_pipeline("sgs.nir.pipeline:nir_pipeline")
    spec = compiled.model_dump(mode="json", by_alias=True, exclude_none=True)["spec"]
    dithers = {f"dither{i}" for i in range(1, 5)}
    spec["inputs"] = [{"name": "exposures"}, *(i for i in spec["inputs"] if i["name"] not in dithers)]
    bin_dir = Path(sys.executable).parent  # the stack's bridges run on this machine, with this installation
    for executable in spec["executables"]:
        executable["command"] = str(bin_dir / executable["command"])
        registered = REGISTERED_PORTS.get(executable["name"])
        for output in executable["outputs"]:
            if registered is not None and output["name"] == registered[0]:
                output["datasetType"] = registered[1]
            else:
                output["register"] = False
    spec["executables"].insert(
        0,
        {
            "name": "splitDithers",
            "command": f"{sys.executable} -m sgs.nir.steps.dithers",
            "inputs": [{"name": "exposures"}],
            "outputs": [{"name": name, "suffix": ".fits", "register": False} for name in sorted(dithers)],
            "resources": {"cores": 1, "ram": 0.5, "walltime": 0.1},
        },
    )
    for step in spec["steps"]:
        _from_split(step, dithers)
    spec["steps"].insert(
        0, {"name": "splitDithers", "executable": "splitDithers", "inputs": {"exposures": {"input": "exposures"}}}
    )
    spec["triggers"] = _triggers(plan, files)
    return {"apiVersion": "sgs.io/v1alpha1", "kind": "Pipeline", "metadata": {"name": PIPELINE}, "spec": spec}


def _from_split(step: dict[str, Any], dithers: set[str]) -> None:
    """Bindings of the dither inputs now come from the split step (in nested steps too)."""
    for binding in step.get("inputs", {}).values():
        for ref in binding.get("items", [binding]):
            if ref.get("input") in dithers:
                ref["step"], ref["output"] = "splitDithers", ref.pop("input")
    for inner in step.get("steps", []):
        _from_split(inner, dithers)


def _triggers(plan: SurveyPlan, files: Mapping[int, ObservationFiles]) -> list[dict[str, Any]]:
    triggers: dict[tuple[str, int], dict[str, Any]] = {}
    for obs in plan.observations:
        key = (obs.primary.name, obs.tile_number)
        if key in triggers:
            continue
        observed = files[obs.number]
        triggers[key] = {
            "name": f"{obs.primary.name}-tile{obs.tile_number}",
            "input": "exposures",
            "datasetType": "nir_raw",
            "where": f"tile = {obs.tile_number}",
            "sites": f"{SITE_LABEL}={obs.primary.name}",
            "groupBy": ["instrument", "observation"],
            "complete": {"count": 4},
            "inputs": {
                "mdb": {"uri": observed.mdb.as_uri()},
                "masterDark": {"uri": observed.master_dark.as_uri()},
                "catalog": {"uri": observed.refcat.as_uri()},
            },
        }
    return list(triggers.values())


def site_manifests(
    target: StackTarget, archive_url: str, tokens: Mapping[str, str], buckets: Sites | None = None
) -> list[dict[str, Any]]:
    """Per dev Site: a Secret with its archive token and the Site (its bridge node serves it), its storage the
    dev Site's POSIX store, or with ``buckets`` its S3 bucket (and a Secret with its keys)."""
    from sgs.dev.components import REFERENCE_DIR

    objects: list[dict[str, Any]] = []
    for site in target.sites:
        storage: dict[str, Any] = {
            "kind": "posix",
            "path": str(target.stores[site]),
            "readOnlyPaths": [str(REFERENCE_DIR)],
        }
        if buckets is not None:
            storage, keys = _bucket_storage(buckets[site], f"s3-{site}", REFERENCE_DIR)
            objects.append(keys)
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": f"archive-{site}"},
                "stringData": {"token": tokens[site]},
            }
        )
        objects.append(
            {
                "apiVersion": "sgs.io/v1alpha1",
                "kind": "Site",
                "metadata": {"name": site, "labels": {SITE_LABEL: site}},
                "spec": {
                    "compute": {"kind": "kubernetes", "maxParallel": 20},
                    "storage": storage,
                    "capacity": {"cores": 8, "storageTb": 1},
                    "archiveUrl": archive_url,
                    "archiveCredentials": {"name": f"archive-{site}"},
                },
            }
        )
    return objects


def _bucket_storage(site: LoadedSite, secret: str, reference: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Site's S3 storage as a Site spec names it (the plain-file inputs under the read-only reference root),
    and the Secret with its keys."""
    storage = site.resource.spec.storage
    spec = {
        "kind": "s3",
        "endpoint": storage.endpoint,
        "bucket": storage.bucket,
        "secure": storage.secure,
        "credentials": {"name": secret},
        "readOnlyPaths": [str(reference)],
    }
    keys = site.credentials
    data = {"accessKey": keys.access_key, "secretKey": keys.secret_key} if keys else {}
    return spec, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": secret}, "stringData": data}


def data_dirs(target: StackTarget, buckets: Sites | None) -> dict[str, Path]:
    """Where the survey's files are simulated per Site: its POSIX store, or for an S3 Site the read-only reference
    root (the raws are then uploaded to its bucket; calibrations and catalogues stay plain files there)."""
    from sgs.dev.components import REFERENCE_DIR

    if buckets is None:
        return {name: target.stores[name] / DATA_DIR for name in target.sites}
    return {name: REFERENCE_DIR / DATA_DIR / name for name in target.sites}


def stack_plan(target: StackTarget, options: StackOptions, buckets: Sites | None = None) -> SurveyPlan:
    """The embedded demo's plan (placement solver), its Sites the stack's, data under each Site's store."""
    dirs = data_dirs(target, buckets)
    sites = [DemoSite(name, dirs[name]) for name in target.sites]
    plan = plan_survey(dirs[target.sites[0]], options.observations, options.tiles, len(sites), options.seed)
    by_name = {old.name: new for old, new in zip(plan.sites, sites, strict=True)}
    observations = tuple(
        replace(o, primary=by_name[o.primary.name], secondary=by_name[o.secondary.name]) for o in plan.observations
    )
    return replace(plan, sites=tuple(sites), observations=observations)


# ------------------------------------------------------------------------------------------ the run


@dataclass
class StackResult:
    runs: list[dict[str, Any]]
    wall_s: float
    timings: dict[str, float]
    registered: Registered

    replication: ReplicationReport | None = None  # S3 Sites: the rules copying products to secondary Sites

    @property
    def succeeded(self) -> bool:
        runs_ok = bool(self.runs) and all(r.get("status", {}).get("phase") == "Succeeded" for r in self.runs)
        return runs_ok and (self.replication is None or self.replication.ok)


def _check_archive(target: StackTarget) -> None:
    try:
        response = httpx.get(f"{target.archive_url}/readyz", timeout=10, trust_env=False)
    except httpx.HTTPError as err:
        raise StackError(f"archive {target.archive_url} unreachable ({err}); is `sgs dev up` running?") from err
    if response.status_code != 200:
        raise StackError(f"archive {target.archive_url}/readyz answered {response.status_code}: {response.text}")


def _serving_lines(log: Path | None) -> int:
    return log.read_text(errors="replace").count("serving ") if log is not None and log.is_file() else 0


def _wait_served(target: StackTarget, before: int) -> None:
    """Triggers start nothing for data that arrived before they were served (no backfill): wait for the trigger
    service to log the applied Pipeline; an unchanged Pipeline (a re-run) logs nothing new, so give up quietly."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and _serving_lines(target.trigger_log) <= before:
        time.sleep(0.2)


def _ensure_namespace(kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})


def run_stack_demo(
    options: StackOptions, console: Console, target: StackTarget | None = None, progress_every_s: float = 1.0
) -> StackResult:
    """The whole demo on the stack; raises StackError when the stack is missing or refuses it."""
    from sgs.demo.http_archive import HttpArchive
    from sgs.demo.runner import SURVEY_COLLECTIONS, _register_inputs, _Registry

    started = time.perf_counter()
    started_at = datetime.now(UTC)
    timings: dict[str, float] = {}
    target = target or find_stack()
    _check_archive(target)
    kubectl = Kubectl(target.kubeconfig, options.namespace)
    buckets = object_sites(target)
    plan = stack_plan(target, options, buckets)
    storage = "S3 (a MinIO each), products replicated by rule" if buckets is not None else "POSIX, not replicated"
    console.print(
        f"[bold]sgs demo --stack[/]: {len(plan.observations)} observations over {len(plan.tiles)} tile(s), "
        f"Sites {', '.join(target.sites)} ({storage}), namespace {options.namespace}, archive {target.archive_url}"
    )
    mark = time.perf_counter()
    survey = simulate_survey(plan, SimConfig())
    timings["simulate"] = time.perf_counter() - mark
    with HttpArchive(target.archive_url, target.admin_token, survey_runs=SURVEY_COLLECTIONS) as archive:
        archive.issue_site_tokens(target.sites)
        _ensure_namespace(kubectl, options.namespace)
        tokens = {site: archive.site_token(site) for site in target.sites}
        kubectl.apply(*site_manifests(target, target.archive_url, tokens, buckets))
        _ensure_product_types(archive)
        served = _serving_lines(target.trigger_log)
        kubectl.apply(nir_pipeline_manifest(plan, survey.observations))
        _wait_served(target, served)
        rules = _replication_rules(target, plan) if buckets is not None else []
        mark = time.perf_counter()
        registered = Registered(0, 0)
        for obs in plan.observations:
            registry = _Registry(site=obs.primary)
            _register_inputs(registry, obs, survey.observations[obs.number])
            if buckets is not None:
                _raws_into_bucket(registry, buckets[obs.primary.name])
            registered += archive.register(registry.batch)
        timings["register raws"] = time.perf_counter() - mark
        mark = time.perf_counter()
        runs = wait_for_runs(kubectl, len(plan.observations), options.timeout_s, console)
        timings["triggered runs"] = time.perf_counter() - mark
        result = StackResult(runs, 0.0, timings, registered)
        if rules:
            mark = time.perf_counter()
            result.replication = _replicate(target, archive, plan, rules, runs, started_at)
            timings["replicated"] = time.perf_counter() - mark
        mark = time.perf_counter()
        print_stack_report(console, archive, plan, runs)
        if result.replication is not None:
            from sgs.demo.replication import rules_table

            console.print(rules_table(result.replication))
        timings["query archive"] = time.perf_counter() - mark
    result.wall_s = time.perf_counter() - started
    phases = ", ".join(f"{k} {v:.1f} s" for k, v in timings.items())
    ok = sum(r.get("status", {}).get("phase") == "Succeeded" for r in runs)
    status = "[green]all observations processed[/]" if result.succeeded else f"[red]{ok}/{len(runs)} Runs ok[/]"
    console.print(f"{status} in {result.wall_s:.1f} s ({phases}); {registered.new} raw-side datasets new")
    if target.console_url:
        console.print(
            f"open [bold]{target.console_url}/runs[/] to see the Runs, their tasks and the archive's lineage "
            "(sign in with a Kubernetes token: the admin's is in $KUBECONFIG)"
        )
    return result


def _raws_into_bucket(registry: _Registry, site: LoadedSite) -> None:
    """The observation's raw exposures uploaded to its primary Site's bucket (what the S3 Site's tasks download),
    their replicas registered as those objects; an object already there with the same content is kept."""
    from sgs.model.replica import Replica

    store = site.store()
    for index, replica in enumerate(registry.batch.replicas):
        ref = registry.batch.datasets[index]
        if ref.dataset_type != RAW_TYPE:
            continue
        path = Path(replica.uri.removeprefix("file://"))
        key = f"{DATA_DIR}/{ref.run}/{path.name}"
        if not store.exists(key):  # the registry checksummed the file already: the upload must match it
            with path.open("rb") as source:
                store.put(key, source, replica.checksums)
        registry.batch.replicas[index] = Replica.model_validate({**replica.model_dump(), "uri": store.uri(key)})


def _replication_rules(target: StackTarget, plan: SurveyPlan) -> list[tuple[dict[str, Any], RuleSpec]]:
    """One rule per (product type, secondary Site) at the stack's transfer service, made before any product
    exists so that each registration starts its copy (the same rules again on a re-run)."""
    from sgs.demo.replication import TransferClient, rule_specs

    assert target.transfer_url and target.transfer_token
    specs = rule_specs(plan.observations)
    with TransferClient(target.transfer_url, target.transfer_token) as client:
        return list(zip(client.ensure_rules(specs), specs, strict=True))


def _replicate(
    target: StackTarget,
    archive: HttpArchive,
    plan: SurveyPlan,
    rules: list[tuple[dict[str, Any], RuleSpec]],
    runs: list[dict[str, Any]],
    since: datetime,
) -> ReplicationReport:
    """Wait until each rule holds a copy of every product of its observations that succeeded, and read back
    what the transfer service did."""
    from sgs.demo.replication import TransferClient, expected_copies, read_replication, wait_for_rules

    assert target.transfer_url and target.transfer_token
    succeeded = [_observation_of(r) for r in runs if r.get("status", {}).get("phase") == "Succeeded"]
    expected = expected_copies([spec for _, spec in rules], [n for n in succeeded if n is not None])
    with TransferClient(target.transfer_url, target.transfer_token) as client:
        pairs = list(zip([rule for rule, _ in rules], expected, strict=True))
        current = wait_for_rules(client, pairs)
        return read_replication(client, archive, list(zip(current, expected, strict=True)), since)


def _observation_of(run: Mapping[str, Any]) -> int | None:
    value = (_trigger_group(run) or {}).get("observation")
    return value if isinstance(value, int) else None


def _ensure_product_types(archive: HttpArchive) -> None:
    """The operator registers outputs as types the archive must know: registered as admin first."""
    from sgs.demo.archive import archive_universe, dataset_type_for
    from sgs.demo.runner import INSTRUMENT

    data_id: dict[str, int | str] = {"instrument": INSTRUMENT, "band": "H", "observation": 1, "tile": 1}
    archive.ensure_types([dataset_type_for(name, data_id, archive_universe()) for _, name in REGISTERED_PORTS.values()])


def _pipeline_runs(kubectl: Kubectl) -> list[dict[str, Any]]:
    return sorted(kubectl.items("runs", f"--selector=sgs.io/pipeline={PIPELINE}"), key=lambda r: r["metadata"]["name"])


def wait_for_runs(
    kubectl: Kubectl,
    expected: int,
    timeout_s: float,
    console: Console,
    interval_s: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
) -> list[dict[str, Any]]:
    """The triggered Runs, once ``expected`` of them are Succeeded or Failed (a progress bar meanwhile)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    deadline = clock() + timeout_s
    runs: list[dict[str, Any]] = []
    with Progress(
        TextColumn("[bold]{task.description:<24}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        bar = progress.add_task("triggered NIR Runs", total=expected, detail="waiting for the trigger service")
        while True:
            runs = _pipeline_runs(kubectl)
            done = [r for r in runs if r.get("status", {}).get("phase") in FINAL_PHASES]
            phases = sorted(str(r.get("status", {}).get("phase", "new")) for r in runs)
            progress.update(bar, completed=len(done), detail=f"{len(runs)} created: {', '.join(phases)}")
            if len(done) >= expected:
                return runs
            if clock() > deadline:
                raise StackError(
                    f"timed out after {timeout_s:.0f} s: {len(runs)} of {expected} Runs created, "
                    f"{len(done)} finished ({', '.join(phases) or 'none'}); see `kubectl -n "
                    f"{kubectl.argv[-1].split('=', 1)[1]} get runs` and the trigger service's log"
                )
            time.sleep(interval_s)


def _group_key(run: Mapping[str, Any]) -> str:
    """The trigger group's key (``observation=1``) from the annotation the trigger service writes."""
    key = _trigger_group(run)
    if key is None:
        return "-"
    return " ".join(f"{k}={v}" for k, v in key.items() if k != "instrument")


def _trigger_group(run: Mapping[str, Any]) -> dict[str, Any] | None:
    """The key of the group the trigger service made the Run for (its annotation); None when it has none."""
    text = run.get("metadata", {}).get("annotations", {}).get(GROUP_ANNOTATION, "")
    try:
        key = json.loads(text)["key"]
    except (ValueError, KeyError, TypeError):
        return None
    return key if isinstance(key, dict) else None


def runs_table(runs: list[dict[str, Any]]) -> Table:
    table = Table(title="the Runs (created by the trigger service, run by the operator)", title_justify="left")
    for column in ("Run", "trigger", "group", "Site", "phase", "tasks"):
        table.add_column(column)
    for run in runs:
        status = run.get("status", {})
        table.add_row(
            run["metadata"]["name"],
            run["metadata"].get("labels", {}).get("sgs.io/trigger", "-"),
            _group_key(run),
            str(run["spec"].get("site", "-")),
            str(status.get("phase", "-")),
            str(status.get("progress") or "-"),
        )
    return table


def print_stack_report(console: Console, archive: HttpArchive, plan: SurveyPlan, runs: list[dict[str, Any]]) -> None:
    """The embedded demo's archive report (datasets per type, replicas per Site, a catalogue's lineage), read
    back from the archive, and the Runs."""
    from sgs.demo.report import holdings_table, lineage_tree, read_report

    console.print(runs_table(runs))
    report = read_report(archive, [site.name for site in plan.sites], plan.observations[0].number)
    console.print(holdings_table(report))
    if report.lineage is not None:
        console.print(
            f"[bold]lineage of a source catalogue[/] (from the archive, {len(report.lineage['nodes'])} datasets):"
        )
        console.print(lineage_tree(report.lineage))
    else:
        console.print("[red]no source catalogue in the archive[/]")

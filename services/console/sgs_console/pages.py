"""The cluster's pages: Runs, one Run (graph, tasks, events, logs), Pipelines, Sites, placement.

Pages that change while a Run progresses have fragments (``.../fragment/...``) the page script asks for every
few seconds with ``If-None-Match``; the ETag comes from the watch caches' change counters, so an unchanged
fragment costs a 304 and no query at all.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import PlainTextResponse, Response

from sgs.kube import JSON, KubeError
from sgs.model.base import GROUP
from sgs_console import graph
from sgs_console.access import AccessDeniedError, require, visible_namespaces
from sgs_console.app import Console, ConsoleDep, SessionDep
from sgs_console.auth import Resource, Session
from sgs_console.filters import parse_time
from sgs_console.records import TASK_STATES, TaskPage

router = APIRouter()

RUNS = Resource(GROUP, "runs")
PIPELINES = Resource(GROUP, "pipelines")
SITES = Resource(GROUP, "sites")
PLACEMENTS = Resource(GROUP, "dataplacements")
EVENTS = Resource("", "events")
PHASES = ("Pending", "Running", "Suspended", "Succeeded", "Failed")
ACTIVE_PHASES = ("Pending", "Running", "Suspended")
SORTS = ("age", "name", "namespace", "phase", "priority", "progress", "pipeline", "site")
LOG_TAIL_LINES = 2000
LOG_LIMIT_BYTES = 1024 * 1024


# ------------------------------------------------------------------------------------------------ helpers


def etag_of(session: Session, *parts: object) -> str:
    digest = hashlib.sha256(repr((session.user, *parts)).encode()).hexdigest()[:24]
    return f'W/"{digest}"'


def not_modified(request: Request, etag: str) -> Response | None:
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers={"ETag": etag})
    return None


def with_etag(response: Response, etag: str) -> Response:
    response.headers["ETag"] = etag
    return response


def denied(console: Console, request: Request, error: AccessDeniedError) -> Response:
    return console.render(request, "error.html", status_code=403, title="Not allowed", message=error.message)


def missing(console: Console, request: Request, what: str) -> Response:
    return console.render(request, "error.html", status_code=404, title="Not found", message=what)


def spec_of(obj: JSON) -> dict[str, Any]:
    spec: dict[str, Any] = obj.get("spec") or {}
    return spec


def status_of(obj: JSON) -> dict[str, Any]:
    status: dict[str, Any] = obj.get("status") or {}
    return status


def phase_of(run: JSON) -> str:
    return str(status_of(run).get("phase") or "Pending")


def labels_match(obj: JSON, selector: str) -> bool:
    """``k=v,k2=v2`` or ``k`` (present); an empty selector matches everything."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    for term in filter(None, (t.strip() for t in selector.split(","))):
        key, sep, value = term.partition("=")
        if key.strip() not in labels or (sep and labels[key.strip()] != value.strip()):
            return False
    return True


def sort_key(sort: str) -> Any:
    def key(run: JSON) -> Any:
        meta, spec, status = run.get("metadata") or {}, spec_of(run), status_of(run)
        tasks = status.get("tasks") or {}
        return {
            "age": str(meta.get("creationTimestamp") or ""),
            "name": str(meta.get("name")),
            "namespace": (str(meta.get("namespace")), str(meta.get("name"))),
            "phase": phase_of(run),
            "priority": int(spec.get("priority") or 0),
            "progress": (tasks.get("succeeded") or 0) / max(1, tasks.get("total") or 0),
            "pipeline": str(spec.get("pipeline")),
            "site": str(status.get("site") or spec.get("site") or ""),
        }[sort]

    return key


# ------------------------------------------------------------------------------------------------ Runs


def runs_filtered(
    console: Console, namespaces: list[str] | None, phase: str, site: str, pipeline: str, label: str, namespace: str
) -> list[JSON]:
    runs = console.view.runs.in_namespaces(namespaces)
    out = []
    for run in runs:
        meta, spec, status = run.get("metadata") or {}, spec_of(run), status_of(run)
        if namespace and meta.get("namespace") != namespace:
            continue
        if site and (status.get("site") or spec.get("site")) != site:
            continue
        if pipeline and spec.get("pipeline") != pipeline:
            continue
        if label and not labels_match(run, label):
            continue
        if phase and phase_of(run) != phase:
            continue
        out.append(run)
    return out


async def runs_context(
    console: Console,
    session: Session,
    phase: str,
    site: str,
    pipeline: str,
    label: str,
    namespace: str,
    sort: str,
    order: str,
    page: int,
) -> dict[str, Any]:
    namespaces = await visible_namespaces(console, session, RUNS, console.view.runs)
    if namespaces is not None and not namespaces:
        raise AccessDeniedError(f"{session.user} may not list runs.sgs.io in any namespace (no RBAC rule allows it)")
    every = runs_filtered(console, namespaces, "", site, pipeline, label, namespace)
    phase_counts = Counter(phase_of(r) for r in every)
    chosen = [r for r in every if not phase or phase_of(r) == phase]
    sort = sort if sort in SORTS else "age"
    chosen.sort(key=sort_key(sort), reverse=(order != "asc"))
    size = console.settings.page_size
    pages = max(1, -(-len(chosen) // size))
    page = min(max(1, page), pages)
    known = console.view.runs.in_namespaces(namespaces)
    return {
        "runs": chosen[(page - 1) * size : page * size],
        "matching": len(chosen),
        "phase_counts": phase_counts,
        "phases": PHASES,
        "filters": {
            "phase": phase,
            "site": site,
            "pipeline": pipeline,
            "label": label,
            "namespace": namespace,
            "sort": sort,
            "order": order,
        },
        "page": page,
        "pages": pages,
        "sites": sorted({str(status_of(r).get("site") or spec_of(r).get("site") or "") for r in known} - {""}),
        "pipelines": sorted({str(spec_of(r).get("pipeline")) for r in known}),
        "namespaces": sorted({str((r.get("metadata") or {}).get("namespace")) for r in known}),
    }


class RunsQuery:
    """The Runs list's filters, sort and page, from the query string."""

    def __init__(
        self,
        phase: str = "",
        site: str = "",
        pipeline: str = "",
        label: str = "",
        namespace: str = "",
        sort: str = "age",
        order: str = "desc",
        page: int = Query(default=1, ge=1, le=100_000),
    ) -> None:
        self.args = (phase, site, pipeline, label, namespace, sort, order, page)


@router.get("/runs")
async def runs_page(request: Request, console: ConsoleDep, session: SessionDep, q: RunsQuery = Depends()) -> Response:
    try:
        context = await runs_context(console, session, *q.args)
    except AccessDeniedError as error:
        return denied(console, request, error)
    return console.render(request, "runs.html", **context)


@router.get("/runs/fragment")
async def runs_fragment(
    request: Request, console: ConsoleDep, session: SessionDep, q: RunsQuery = Depends()
) -> Response:
    etag = etag_of(session, "runs", console.view.runs.version, q.args)
    if (cached := not_modified(request, etag)) is not None:
        return cached
    try:
        context = await runs_context(console, session, *q.args)
    except AccessDeniedError as error:
        return denied(console, request, error)
    return with_etag(console.render(request, "_runs_table.html", **context), etag)


# ------------------------------------------------------------------------------------------------ one Run


async def the_run(console: Console, session: Session, namespace: str, name: str) -> JSON | None:
    await require(console, session, RUNS, namespace)
    return console.view.runs.get(namespace, name)


async def run_summary(console: Console, run: JSON) -> dict[str, Any]:
    meta, spec, status = run.get("metadata") or {}, spec_of(run), status_of(run)
    namespace, uid = str(meta.get("namespace")), str(meta.get("uid"))
    pipeline = console.view.pipelines.get(namespace, str(spec.get("pipeline")))
    steps: dict[str, dict[str, int]] = {}
    records_error = None
    if console.records is not None:
        try:
            steps = {name: s.counts for name, s in (await console.records.step_counts(uid)).items()}
        except Exception as error:  # the page still shows the Run's status
            records_error = f"task records unavailable: {error}"
    else:
        records_error = "task records not configured (SGS_CONSOLE_DSN)"
    base = f"/runs/{namespace}/{meta.get('name')}/tasks?step="
    tasks = status.get("tasks") or {}
    return {
        "run": run,
        "spec": spec,
        "status": status,
        "pipeline": pipeline,
        "graph": graph.svg(spec_of(pipeline), steps, link=base) if pipeline else None,
        "records_error": records_error,
        "done_pct": 100 * (tasks.get("succeeded") or 0) / max(1, tasks.get("total") or 0),
        "task_states": TASK_STATES,
    }


async def task_page(
    console: Console, run: JSON, after: str | None, state: str | None, step: str | None, search: str | None
) -> TaskPage | None:
    if console.records is None:
        return None
    uid = str((run.get("metadata") or {}).get("uid"))
    chosen_state = state if state in TASK_STATES else None
    return await console.records.page(
        uid, after=after or None, limit=console.settings.page_size, state=chosen_state, step=step or None, search=search
    )


async def run_events(console: Console, session: Session, run: JSON) -> tuple[list[JSON], str | None]:
    """The Run's events, read with the person's token (None, reason when they may not list events)."""
    meta = run.get("metadata") or {}
    client = console.sessions.client(session.token)
    try:
        found = await client.get(
            f"/api/v1/namespaces/{meta.get('namespace')}/events",
            {"fieldSelector": f"involvedObject.uid={meta.get('uid')}"},
        )
    except KubeError as error:
        return [], f"events not shown: {error.status} {error.message}"
    items: list[JSON] = found.get("items") or []
    items.sort(key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""), reverse=True)
    return items[:50], None


@router.get("/runs/{namespace}/{name}")
async def run_page(
    request: Request,
    console: ConsoleDep,
    session: SessionDep,
    namespace: str,
    name: str,
    after: str | None = None,
    state: str | None = None,
    step: str | None = None,
    q: str | None = Query(default=None, max_length=200),
) -> Response:
    try:
        run = await the_run(console, session, namespace, name)
    except AccessDeniedError as error:
        return denied(console, request, error)
    if run is None:
        return missing(console, request, f"no Run {name!r} in namespace {namespace!r}")
    summary = await run_summary(console, run)
    tasks = await task_page(console, run, after, state, step, q)
    events, events_error = await run_events(console, session, run)
    return console.render(
        request,
        "run.html",
        **summary,
        tasks=tasks,
        task_filter={"state": state or "", "step": step or "", "q": q or "", "after": after or ""},
        events=events,
        events_error=events_error,
    )


@router.get("/runs/{namespace}/{name}/fragment/{part}")
async def run_fragment(
    request: Request,
    console: ConsoleDep,
    session: SessionDep,
    namespace: str,
    name: str,
    part: str,
    after: str | None = None,
    state: str | None = None,
    step: str | None = None,
    q: str | None = Query(default=None, max_length=200),
) -> Response:
    try:
        run = await the_run(console, session, namespace, name)
    except AccessDeniedError as error:
        return denied(console, request, error)
    if run is None:
        return missing(console, request, f"no Run {name!r} in namespace {namespace!r} (deleted?)")
    version = (run.get("metadata") or {}).get("resourceVersion")
    etag = etag_of(session, "run", part, version, after, state, step, q)
    if part != "events" and (cached := not_modified(request, etag)) is not None:
        return cached
    if part == "summary":
        return with_etag(console.render(request, "_run_summary.html", **await run_summary(console, run)), etag)
    if part == "tasks":
        tasks = await task_page(console, run, after, state, step, q)
        flt = {"state": state or "", "step": step or "", "q": q or "", "after": after or ""}
        context: dict[str, Any] = {"run": run, "tasks": tasks, "task_filter": flt, "task_states": TASK_STATES}
        return with_etag(console.render(request, "_tasks.html", **context), etag)
    if part == "events":
        events, events_error = await run_events(console, session, run)
        etag = etag_of(session, "events", [e.get("metadata", {}).get("resourceVersion") for e in events])
        if (cached := not_modified(request, etag)) is not None:
            return cached
        return with_etag(console.render(request, "_events.html", events=events, events_error=events_error), etag)
    return missing(console, request, f"no fragment {part!r}")


@router.get("/runs/{namespace}/{name}/tasks")
async def tasks_page(
    request: Request,
    console: ConsoleDep,
    session: SessionDep,
    namespace: str,
    name: str,
    after: str | None = None,
    state: str | None = None,
    step: str | None = None,
    q: str | None = Query(default=None, max_length=200),
) -> Response:
    try:
        run = await the_run(console, session, namespace, name)
    except AccessDeniedError as error:
        return denied(console, request, error)
    if run is None:
        return missing(console, request, f"no Run {name!r} in namespace {namespace!r}")
    tasks = await task_page(console, run, after, state, step, q)
    flt = {"state": state or "", "step": step or "", "q": q or "", "after": after or ""}
    return console.render(request, "tasks.html", run=run, tasks=tasks, task_filter=flt, task_states=TASK_STATES)


@router.get("/runs/{namespace}/{name}/task/{task}")
async def task_detail(
    request: Request, console: ConsoleDep, session: SessionDep, namespace: str, name: str, task: str
) -> Response:
    try:
        run = await the_run(console, session, namespace, name)
    except AccessDeniedError as error:
        return denied(console, request, error)
    if run is None or console.records is None:
        return missing(console, request, f"no Run {name!r} in namespace {namespace!r}")
    uid = str((run.get("metadata") or {}).get("uid"))
    row = await console.records.task(uid, task)
    if row is None:
        return missing(console, request, f"Run {name!r} has no task {task!r} (yet)")
    attempts = await console.records.attempts(uid, task)
    outputs = await task_outputs(console, run, task, row)
    return console.render(request, "task.html", run=run, row=row, attempts=attempts, outputs=outputs)


async def task_outputs(console: Console, run: JSON, task: str, row: dict[str, Any]) -> list[dict[str, Any]]:
    """The task's output files, and the archive's datasets it made (with links to their lineage)."""
    record = row.get("record") or {}
    outputs = [{"port": port, "path": path} for port, path in sorted((record.get("outputs") or {}).items())]
    return outputs


@router.get("/runs/{namespace}/{name}/task/{task}/log")
async def task_log(
    console: ConsoleDep,
    session: SessionDep,
    namespace: str,
    name: str,
    task: str,
    attempt: int = Query(default=-1, ge=-1, le=1000),
) -> Response:
    """The attempt's container log through the API server's pod log API, with the person's token (RBAC on
    pods/log decides), however the node serves it (the bridge's kubelet API, a real kubelet)."""
    try:
        run = await the_run(console, session, namespace, name)
    except AccessDeniedError as error:
        return PlainTextResponse(error.message, status_code=403)
    if run is None or console.records is None:
        return PlainTextResponse(f"no Run {name!r} in namespace {namespace!r}", status_code=404)
    uid = str((run.get("metadata") or {}).get("uid"))
    attempts = await console.records.attempts(uid, task)
    chosen = [a for a in attempts if attempt < 0 or a["attempt"] == attempt]
    if not chosen:
        return PlainTextResponse(f"task {task!r} has no attempt {attempt}", status_code=404)
    job = str(chosen[-1]["job"])
    client = console.sessions.client(session.token)
    try:
        pods = await client.get(f"/api/v1/namespaces/{namespace}/pods", {"labelSelector": f"job-name={job}"})
        items = pods.get("items") or []
        if not items:
            return PlainTextResponse(f"the pod of Job {job} is gone (its log went with it)", status_code=404)
        pod = str(items[-1]["metadata"]["name"])
        text = await client.read_text(
            f"/api/v1/namespaces/{namespace}/pods/{pod}/log",
            {"tailLines": str(LOG_TAIL_LINES), "limitBytes": str(LOG_LIMIT_BYTES)},
        )
    except KubeError as error:
        code = 403 if error.status == 403 else 502
        return PlainTextResponse(f"the API server refused the log: {error.status} {error.message}", status_code=code)
    return PlainTextResponse(text, headers={"X-Pod": pod})


# ------------------------------------------------------------------------------------------------ Pipelines


def resources_line(executable: dict[str, Any]) -> str:
    r = executable.get("resources") or {}
    parts = [f"{r.get('cores', 1)} cores", f"{r.get('ram', 1.0)} GiB", f"{r.get('walltime', 1.0)} h"]
    if r.get("vms"):
        parts.append(f"vms {r['vms']} GiB")
    if r.get("gpus"):
        parts.append(f"{r['gpus']} GPU")
    if r.get("tmpdir"):
        parts.append(f"tmp {r['tmpdir']} GiB")
    return ", ".join(parts)


@router.get("/pipelines")
async def pipelines_page(request: Request, console: ConsoleDep, session: SessionDep) -> Response:
    namespaces = await visible_namespaces(console, session, PIPELINES, console.view.pipelines)
    pipelines = sorted(
        console.view.pipelines.in_namespaces(namespaces),
        key=lambda p: (p["metadata"].get("namespace"), p["metadata"].get("name")),
    )
    runs = Counter(
        (r["metadata"].get("namespace"), spec_of(r).get("pipeline"))
        for r in console.view.runs.in_namespaces(namespaces)
    )
    return console.render(request, "pipelines.html", pipelines=pipelines, runs=runs, allowed=namespaces != [])


@router.get("/pipelines/{namespace}/{name}")
async def pipeline_page(
    request: Request, console: ConsoleDep, session: SessionDep, namespace: str, name: str
) -> Response:
    try:
        await require(console, session, PIPELINES, namespace)
    except AccessDeniedError as error:
        return denied(console, request, error)
    pipeline = console.view.pipelines.get(namespace, name)
    if pipeline is None:
        return missing(console, request, f"no Pipeline {name!r} in namespace {namespace!r}")
    executables = spec_of(pipeline).get("executables") or []
    lines = {str(e.get("name")): f"{e.get('command')} · {resources_line(e)}" for e in executables}
    runs = [r for r in console.view.runs.in_namespaces([namespace]) if spec_of(r).get("pipeline") == name]
    runs.sort(key=sort_key("age"), reverse=True)
    return console.render(
        request,
        "pipeline.html",
        pipeline=pipeline,
        graph=graph.svg(spec_of(pipeline), resources=lines),
        executables=executables,
        resources_line=resources_line,
        runs=runs[:50],
    )


# ------------------------------------------------------------------------------------------------ Sites


def node_ready(node: JSON) -> tuple[str, str]:
    """('Ready' | 'NotReady' | 'Unknown', time of its last heartbeat)."""
    for condition in status_of(node).get("conditions") or []:
        if condition.get("type") == "Ready":
            state = {"True": "Ready", "False": "NotReady"}.get(str(condition.get("status")), "Unknown")
            return state, str(condition.get("lastHeartbeatTime") or condition.get("lastTransitionTime") or "")
    return "Unknown", ""


def site_nodes(console: Console, site: JSON) -> list[dict[str, Any]]:
    """The nodes a Site's tasks may land on: its node selector plus ``sgs.io/site`` (the Job builder's)."""
    selector = {**(spec_of(site).get("compute") or {}).get("nodeSelector", {})}
    selector["sgs.io/site"] = str(site["metadata"]["name"])
    found = []
    for node in console.view.nodes.objects.values():
        labels = (node.get("metadata") or {}).get("labels") or {}
        if all(labels.get(k) == v for k, v in selector.items()):
            state, heartbeat = node_ready(node)
            found.append({"name": node["metadata"]["name"], "state": state, "heartbeat": heartbeat})
    return sorted(found, key=lambda n: str(n["name"]))


def site_queue(console: Console, site: JSON, namespaces: list[str] | None) -> list[JSON]:
    """The Site's unfinished Runs in the order its slots go to them: priority first, then age (the operator's
    board grants a Run slots only beyond what higher-priority Runs are waiting for)."""
    name, namespace = site["metadata"]["name"], site["metadata"].get("namespace")
    runs = [
        r
        for r in console.view.runs.in_namespaces(namespaces)
        if r["metadata"].get("namespace") == namespace
        and (status_of(r).get("site") or spec_of(r).get("site")) == name
        and phase_of(r) in ACTIVE_PHASES
    ]
    runs.sort(key=lambda r: (-int(spec_of(r).get("priority") or 0), str(r["metadata"].get("creationTimestamp"))))
    return runs


def maintenance_now(site: JSON) -> list[dict[str, Any]]:
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    windows = []
    for window in spec_of(site).get("maintenance") or []:
        start, end = parse_time(window.get("start")), parse_time(window.get("end"))
        state = "past" if end and end < now else "now" if start and start <= now else "planned"
        windows.append({**window, "state": state})
    return windows


async def sites_context(console: Console, session: Session) -> dict[str, Any]:
    namespaces = await visible_namespaces(console, session, SITES, console.view.sites)
    run_namespaces = await visible_namespaces(console, session, RUNS, console.view.runs)
    sites = sorted(console.view.sites.in_namespaces(namespaces), key=lambda s: str(s["metadata"].get("name")))
    rows = [
        {
            "site": s,
            "nodes": site_nodes(console, s),
            "queue": site_queue(console, s, run_namespaces),
            "maintenance": maintenance_now(s),
        }
        for s in sites
    ]
    return {"rows": rows, "nodes_error": console.view.errors.get("nodes"), "allowed": namespaces != []}


@router.get("/sites")
async def sites_page(request: Request, console: ConsoleDep, session: SessionDep) -> Response:
    return console.render(request, "sites.html", **await sites_context(console, session))


@router.get("/sites/fragment")
async def sites_fragment(request: Request, console: ConsoleDep, session: SessionDep) -> Response:
    stores = console.view.stores
    etag = etag_of(session, "sites", stores["sites"].version, stores["nodes"].version, stores["runs"].version)
    if (cached := not_modified(request, etag)) is not None:
        return cached
    return with_etag(console.render(request, "_sites.html", **await sites_context(console, session)), etag)

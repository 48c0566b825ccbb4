"""`sgs challenge SITE`: the suite run against a live Site through the normal path, then cleaned up.

In a namespace of its own (``sgs-challenge-<id>``, label ``sgs.io/challenge=<id>``) it applies a copy of the
Site (same compute, storage and archive; the Secrets it names copied along), one Pipeline and one Run per
feature, with kubectl like anyone; the operator, the Site's bridge node, its storage and its archive do the rest.
Nothing outside that namespace is written except the challenge's own dataset type at the archive, so it is safe
against a production Site; the namespace (and with it every Run, Job and pod) is deleted at the end.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
import sys
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from sgs.challenge.suite import (
    ARRIVAL_INSTRUMENT,
    ARRIVAL_TYPE,
    LABEL,
    PRODUCT_TYPE,
    Check,
    Row,
    Status,
    checks,
    run_row,
    trigger_pipeline,
)
from sgs.demo.stack import FINAL_PHASES, Kubectl, StackError, StackTarget, _serving_lines, _wait_served

Say = Callable[[str], None]


@dataclass(frozen=True)
class ChallengeOptions:
    site: str
    site_namespace: str = "default"
    timeout_s: float = 180.0
    python: str = sys.executable  # the interpreter the Site's tasks run `-m sgs.challenge.tasks` with
    keep: bool = False  # leave the namespace for a look (the command prints how to delete it)
    challenge_id: str | None = None


def _clean(obj: Mapping[str, Any], namespace: str, labels: Mapping[str, str]) -> dict[str, Any]:
    """A copy of a Site or Secret for the challenge's namespace: spec/data kept, server-side metadata dropped."""
    meta = obj["metadata"]
    copy = {k: v for k, v in obj.items() if k not in ("metadata", "status")}
    copy["metadata"] = {"name": meta["name"], "namespace": namespace, "labels": {**meta.get("labels", {}), **labels}}
    return copy


def _secret_names(site: Mapping[str, Any]) -> list[str]:
    spec = site.get("spec", {})
    names = [
        (spec.get("storage", {}).get("credentials") or {}).get("name"),
        (spec.get("archiveCredentials") or {}).get("name"),
        ((spec.get("compute") or {}).get("kubeconfig") or {}).get("name"),
    ]
    return [n for n in names if n]


def _site_has_gpus(kubectl: Kubectl, site: str) -> int:
    nodes = kubectl.items("nodes", f"--selector=sgs.io/site={site}")
    return sum(int((n.get("status", {}).get("allocatable") or {}).get("nvidia.com/gpu", "0")) for n in nodes)


def _objects_for(check: Check, namespace: str, site: str, labels: Mapping[str, str]) -> list[dict[str, Any]]:
    assert check.pipeline is not None
    name = f"challenge-{check.key}"
    pipeline = check.pipeline.model_dump(mode="json", by_alias=True, exclude_none=True)
    meta = {"name": name, "namespace": namespace, "labels": dict(labels)}
    return [
        {"apiVersion": "sgs.io/v1alpha1", "kind": "Pipeline", "metadata": meta, "spec": pipeline},
        {
            "apiVersion": "sgs.io/v1alpha1",
            "kind": "Run",
            "metadata": meta,
            "spec": {"pipeline": name, "site": site, "maxParallel": 10, "retry": {"max": 0}},
        },
    ]


def _oom_seen(kubectl: Kubectl) -> bool:
    """An attempt of the OOM check's task ended OOMKilled (a failed attempt's Job and pod are kept)."""
    pods = kubectl.items("pods", "--selector=sgs.io/run=challenge-oom")
    return any("OOMKilled" in json.dumps(p.get("status", {})) for p in pods)


def _lineage_row(target: StackTarget, namespace: str, fanout: Row) -> Row:
    feature = "outputs registered with lineage"
    headers = {"Authorization": f"Bearer {target.admin_token}"}
    with httpx.Client(base_url=target.archive_url, headers=headers, trust_env=False, timeout=30) as archive:
        found = archive.post("/datasets/query", json={"dataset_type": PRODUCT_TYPE, "where": "", "limit": 1000})
        if found.status_code != 200:
            return Row(feature, Status.FAIL, None, f"archive query: {found.status_code} {found.text[:200]}")
        ours = [d for d in found.json()["items"] if str(d.get("run", "")).startswith(f"{namespace}/challenge-fanout/")]
        if not ours:
            why = "" if fanout.status is Status.PASS else " (the fan-out Run failed)"
            return Row(feature, Status.FAIL, None, f"no {PRODUCT_TYPE} dataset in {namespace}/challenge-fanout{why}")
        product = ours[0]
        replicas = archive.get(f"/datasets/{product['id']}/replicas").json()
        lineage = archive.get(f"/datasets/{product['id']}/lineage", params={"direction": "up", "depth": 5})
        if lineage.status_code != 200:
            return Row(feature, Status.FAIL, None, f"lineage: {lineage.status_code} {lineage.text[:200]}")
        text = json.dumps(lineage.json())
        if "challenge-fanout" not in text or "gather" not in text:
            return Row(feature, Status.FAIL, None, f"lineage of {product['id']} names neither the Run nor its task")
        available = [r for r in replicas if r.get("state") == "available" and r.get("sha256")]
        if not available:
            return Row(feature, Status.FAIL, None, f"{product['id']}: no available replica with a checksum")
        return Row(feature, Status.PASS, None, f"{product['id'][:8]} in {product['run']}, {len(available)} replica(s)")


def run_challenge(target: StackTarget, options: ChallengeOptions, say: Say = print) -> list[Row]:
    """The rows of the table; raises StackError when the Site or the cluster cannot be read at all."""
    cid = options.challenge_id or secrets.token_hex(3)
    namespace = f"sgs-challenge-{cid}"
    labels = {LABEL: cid}
    home = Kubectl(target.kubeconfig, options.site_namespace)
    site = json.loads(home.run("get", "site", options.site, "-o", "json"))
    kubectl = Kubectl(target.kubeconfig, namespace)
    say(f"sgs challenge {options.site}: namespace {namespace}, {options.python} -m sgs.challenge.tasks at the Site")
    started = time.monotonic()
    rows: dict[str, Row] = {}
    try:
        kubectl.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": labels}})
        copies = [
            _clean(json.loads(home.run("get", "secret", n, "-o", "json")), namespace, labels)
            for n in _secret_names(site)
        ]
        kubectl.apply(*copies, _clean(site, namespace, labels))
        archive = bool(site["spec"].get("archiveUrl"))
        if archive:
            _ensure_product_type(target)
        suite = checks(options.python)
        gpus = _site_has_gpus(kubectl, options.site)
        to_run = [c for c in suite if c.pipeline is not None and not (c.needs == "gpu" and not gpus)]
        for check in to_run:
            kubectl.apply(*_objects_for(check, namespace, options.site, labels))
        say(f"applied {len(to_run)} Runs: {', '.join(f'challenge-{c.key}' for c in to_run)}")
        final, timed_out = _wait(kubectl, [f"challenge-{c.key}" for c in to_run], options.timeout_s, say)
        for check in to_run:
            rows[check.key] = run_row(check.feature, final.get(f"challenge-{check.key}"), timed_out=timed_out)
        rows["tmpdir"] = _tmpdir_row(rows["fanout"])
        if rows["oom"].status is Status.PASS and not _oom_seen(kubectl):
            rows["oom"] = Row(
                rows["oom"].feature,
                Status.FAIL,
                rows["oom"].seconds,
                "succeeded without an OOM kill: memory not enforced",
            )
        if not gpus:
            rows["gpu"] = Row("GPU task", Status.SKIP, None, "no GPU: the Site's nodes allocate no nvidia.com/gpu")
        rows["lineage"] = (
            _lineage_row(target, namespace, rows["fanout"])
            if archive
            else Row(
                "outputs registered with lineage", Status.FAIL, None, "the Site names no archive (spec.archiveUrl)"
            )
        )
        rows["replication"] = Row("replication to a second Site", Status.SKIP, None, "not checked by this version")
        rows["trigger"] = _trigger_row(target, kubectl, site, namespace, labels, options)
    finally:
        if options.keep:
            say(f"kept: kubectl delete namespace {namespace}")
        else:
            kubectl.run("delete", "namespace", namespace, "--wait=false", "--ignore-not-found")
            _remove_outputs(site, namespace)
            say(f"cleaned up: namespace {namespace} deleted ({time.monotonic() - started:.1f} s in all)")
    return [rows[c.key] for c in suite if c.key in rows]


def _tmpdir_row(fanout: Row) -> Row:
    feature = "private TMPDIR per task"
    if fanout.status is Status.PASS:
        return Row(feature, Status.PASS, fanout.seconds, "every fanned-out task had its own empty TMPDIR")
    return Row(feature, Status.FAIL, fanout.seconds, f"fan-out Run failed: {fanout.detail}")


def _ensure_product_type(target: StackTarget) -> None:
    headers = {"Authorization": f"Bearer {target.admin_token}"}
    body = {"name": PRODUCT_TYPE, "dimensions": [], "storage_class": "FitsFile"}
    response = httpx.post(
        f"{target.archive_url}/dataset-types", json=body, headers=headers, trust_env=False, timeout=30
    )
    if response.status_code not in (200, 201, 409):
        raise StackError(f"archive refused dataset type {PRODUCT_TYPE}: {response.status_code} {response.text[:300]}")


def _wait(kubectl: Kubectl, names: list[str], timeout_s: float, say: Say) -> tuple[dict[str, dict[str, Any]], bool]:
    deadline = time.monotonic() + timeout_s
    last = ""
    while True:
        runs = {r["metadata"]["name"]: r for r in kubectl.items("runs") if r["metadata"]["name"] in names}
        phases = {n: (runs.get(n, {}).get("status") or {}).get("phase", "new") for n in names}
        line = ", ".join(f"{n.removeprefix('challenge-')} {p}" for n, p in phases.items())
        if line != last:
            say(f"  [{time.monotonic() - deadline + timeout_s:5.1f}s] {line}")
            last = line
        if all(p in FINAL_PHASES for p in phases.values()):
            return runs, False
        if time.monotonic() > deadline:
            return runs, True
        time.sleep(1.0)


def _posix_dir(site: Mapping[str, Any], namespace: str) -> Path | None:
    """The challenge's directory under a POSIX Site's storage path, when this machine sees that path."""
    storage = site["spec"].get("storage", {})
    root = storage.get("path")
    if storage.get("kind") != "posix" or not root or not Path(root).is_dir():
        return None
    return Path(root) / namespace


def _remove_outputs(site: Mapping[str, Any], namespace: str) -> None:
    folder = _posix_dir(site, namespace)
    if folder is not None and folder.name.startswith("sgs-challenge-"):
        shutil.rmtree(folder, ignore_errors=True)


def _trigger_row(
    target: StackTarget,
    kubectl: Kubectl,
    site: Mapping[str, Any],
    namespace: str,
    labels: Mapping[str, str],
    options: ChallengeOptions,
) -> Row:
    """A Pipeline with a trigger, then one dataset of this challenge's own observation registered at the Site:
    the trigger service must create the Run (nobody else does) and it must succeed."""
    feature = "trigger: data arrival starts a Run"
    if target.trigger_log is None:
        return Row(feature, Status.SKIP, None, "no trigger service in this stack (sgs dev env names none)")
    if not site["spec"].get("archiveUrl"):
        return Row(feature, Status.FAIL, None, "the Site names no archive: no arrival can be registered")
    folder = _posix_dir(site, namespace)
    if folder is None:
        return Row(feature, Status.SKIP, None, "needs a POSIX Site whose storage path this machine sees")
    observation = secrets.randbelow(10**9) + 10**9
    headers = {"Authorization": f"Bearer {target.admin_token}"}
    with httpx.Client(base_url=target.archive_url, headers=headers, trust_env=False, timeout=30) as archive:
        kind = {"name": ARRIVAL_TYPE, "dimensions": ["instrument", "observation"], "storage_class": "Fits"}
        archive.post("/dataset-types", json=kind)
        served = _serving_lines(target.trigger_log)
        pipeline = trigger_pipeline(options.python, observation).model_dump(
            mode="json", by_alias=True, exclude_none=True
        )
        meta = {"name": "challenge-trigger", "namespace": namespace, "labels": dict(labels)}
        kubectl.apply({"apiVersion": "sgs.io/v1alpha1", "kind": "Pipeline", "metadata": meta, "spec": pipeline})
        _wait_served(target, served)
        content = json.dumps({"observation": observation}).encode()
        path = folder / "arrivals" / f"arrival-{observation}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        collection = f"{namespace}/arrivals"
        archive.post("/collections", json={"name": collection, "type": "RUN"})
        replica = {
            "site": site["metadata"]["name"],
            "uri": f"file://{path}",
            "size": len(content),
            "adler32": f"{zlib.adler32(content) & 0xFFFFFFFF:08x}",
            "sha256": hashlib.sha256(content).hexdigest(),
        }
        data_id = {"instrument": ARRIVAL_INSTRUMENT, "observation": observation}
        body = {
            "datasets": [{"dataset_type": ARRIVAL_TYPE, "data_id": data_id, "run": collection, "replicas": [replica]}]
        }
        ingested = archive.post("/datasets/ingest", json=body)
        if ingested.status_code not in (200, 201):
            return Row(
                feature, Status.FAIL, None, f"archive refused the arrival: {ingested.status_code} {ingested.text[:200]}"
            )
    deadline = time.monotonic() + options.timeout_s
    while time.monotonic() < deadline:
        made = [r for r in kubectl.items("runs") if r["metadata"].get("labels", {}).get("sgs.io/trigger")]
        if made and (made[0].get("status") or {}).get("phase") in FINAL_PHASES:
            row = run_row(feature, made[0])
            return Row(
                feature,
                row.status,
                row.seconds,
                f"{made[0]['metadata']['name']} created by the trigger service, {row.detail}",
            )
        time.sleep(1.0)
    what = "created but not finished" if made else "no Run created"
    return Row(
        feature,
        Status.FAIL,
        None,
        f"{what} {options.timeout_s:.0f} s after the arrival (trigger service log: {target.trigger_log})",
    )

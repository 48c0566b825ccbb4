"""`sgs challenge SITE`: the suite run against a live Site through the normal path, then cleaned up.

In a namespace of its own (``sgs-challenge-<id>``, label ``sgs.io/challenge=<id>``) it applies a copy of the
Site (same compute, storage and archive; the Secrets it names copied along), one Pipeline and one Run per
feature, with kubectl like anyone; the operator, the Site's bridge node, its storage and its archive do the rest.
Nothing outside that namespace is written except the challenge's own dataset type at the archive, so it is safe
against a production Site; the namespace (and with it every Run, Job and pod) is deleted at the end.
"""

from __future__ import annotations

import contextlib
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
from typing import TYPE_CHECKING, Any

import httpx

from sgs.challenge.suite import (
    ARRIVAL_INSTRUMENT,
    ARRIVAL_TYPE,
    COMPARED,
    LABEL,
    PERTURBATION,
    PRODUCT_TYPE,
    Check,
    Row,
    Status,
    checks,
    field_input,
    numbers_differ,
    reproduce_pipeline,
    run_row,
    trigger_pipeline,
)
from sgs.demo.stack import FINAL_PHASES, Kubectl, StackError, StackTarget, _serving_lines, _wait_served

if TYPE_CHECKING:
    from sgs.storage import Store

Say = Callable[[str], None]


@dataclass(frozen=True)
class ChallengeOptions:
    site: str
    site_namespace: str = "default"
    timeout_s: float = 180.0
    python: str = sys.executable  # the interpreter the Site's tasks run `-m sgs.challenge.tasks` with
    keep: bool = False  # leave the namespace for a look (the command prints how to delete it)
    challenge_id: str | None = None
    replica_site: str | None = None  # the second Site of the replication row (default: one the transfer service knows)


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
        ours = _datasets_under(archive, f"{namespace}/challenge-fanout/", PRODUCT_TYPE)
        if isinstance(ours, str):
            return Row(feature, Status.FAIL, None, ours)
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
    replication: _Replication | Row | None = None
    originals = [json.loads(home.run("get", "secret", n, "-o", "json")) for n in _secret_names(site)]
    copies = [_clean(secret, namespace, labels) for secret in originals]
    try:
        kubectl.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": labels}})
        kubectl.apply(*copies, _clean(site, namespace, labels))
        archive = bool(site["spec"].get("archiveUrl"))
        if archive:
            _ensure_product_type(target)
        suite = checks(options.python)
        gpus = _site_has_gpus(kubectl, options.site)
        to_run = [c for c in suite if c.pipeline is not None and not (c.needs == "gpu" and not gpus)]
        replication = _start_replication(target, site, namespace, options.replica_site)
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
        rows["replication"] = (
            replication
            if isinstance(replication, Row)
            else _replication_row(replication, target, namespace, rows["lineage"], options.timeout_s)
        )
        rows["trigger"] = _trigger_row(target, kubectl, site, namespace, labels, options)
    finally:
        if isinstance(replication, _Replication):
            _end_replication(replication)
        if options.keep:
            say(f"kept: kubectl delete namespace {namespace}")
        else:
            kubectl.run("delete", "namespace", namespace, "--wait=false", "--ignore-not-found")
            store = _visible_store(site, originals)
            _remove_outputs(site, namespace, store)
            stores = {options.site: store}
            if isinstance(replication, _Replication):
                stores[replication.to] = _site_store(home, replication.to)
            _retire_replicas(target, namespace, stores, say)
            say(f"cleaned up: namespace {namespace} deleted ({time.monotonic() - started:.1f} s in all)")
    return [rows[c.key] for c in suite if c.key in rows]


def _tmpdir_row(fanout: Row) -> Row:
    feature = "private TMPDIR per task"
    if fanout.status is Status.PASS:
        return Row(feature, Status.PASS, fanout.seconds, "every fanned-out task had its own empty TMPDIR")
    return Row(feature, Status.FAIL, fanout.seconds, f"fan-out Run failed: {fanout.detail}")


def _ensure_product_type(target: StackTarget, name: str = PRODUCT_TYPE) -> None:
    headers = {"Authorization": f"Bearer {target.admin_token}"}
    body = {"name": name, "dimensions": [], "storage_class": "FitsFile"}
    response = httpx.post(
        f"{target.archive_url}/dataset-types", json=body, headers=headers, trust_env=False, timeout=30
    )
    if response.status_code not in (200, 201, 409):
        raise StackError(f"archive refused dataset type {name}: {response.status_code} {response.text[:300]}")


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


def _remove_outputs(site: Mapping[str, Any], namespace: str, store: Store | None = None) -> None:
    """The challenge's files at the Site: ``<path>/<namespace>`` at a POSIX Site seen here, and with a ``store``
    (an S3 Site) every object under ``<namespace>/``."""
    folder = _posix_dir(site, namespace)
    if folder is not None and folder.name.startswith("sgs-challenge-"):
        shutil.rmtree(folder, ignore_errors=True)
    if store is not None and site["spec"].get("storage", {}).get("kind") == "s3" and namespace.startswith("sgs-"):
        for obj in list(store.list(f"{namespace}/")):
            store.delete(obj.key)


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


# ------------------------------------------------------------------------------------------ cross-Site check


@dataclass(frozen=True)
class CrossSiteOptions:
    sites: tuple[str, str]
    site_namespace: str = "default"
    timeout_s: float = 180.0
    python: str = sys.executable
    keep: bool = False
    challenge_id: str | None = None
    perturb: str | None = None  # the self-test: this Site's input counts changed by PERTURBATION, so a row fails


def _store(site: Mapping[str, Any], secrets: list[dict[str, Any]]) -> Store:
    """The Site's store, as the transfer service and `sgs storage` reach it (a POSIX path must be seen here)."""
    from sgs.storage.sites import resolve

    name = site["metadata"]["name"]
    storage = site["spec"].get("storage", {})
    if storage.get("kind") == "posix" and not Path(str(storage.get("path"))).is_dir():
        raise StackError(f"Site {name}: its storage path {storage.get('path')} is not visible on this machine")
    namespace = site["metadata"].get("namespace", "default")
    loaded = resolve([_clean(site, namespace, {})], secrets)
    return loaded[name].store()


def _visible_store(site: Mapping[str, Any], secrets: list[dict[str, Any]]) -> Store | None:
    """The Site's store for the clean-up, None when this machine cannot reach it (a POSIX path not seen here)."""
    try:
        return _store(site, secrets)
    except (StackError, KeyError, ValueError):
        return None


def _site_store(home: Kubectl, name: str) -> Store | None:
    """The store of another Site of the Site's namespace (the replication's second Site), None if not there."""
    try:
        site = json.loads(home.run("get", "site", name, "-o", "json"))
        secrets = [json.loads(home.run("get", "secret", n, "-o", "json")) for n in _secret_names(site)]
    except (StackError, json.JSONDecodeError):
        return None
    return _visible_store(site, secrets)


def _reproduced(
    archive: httpx.Client, namespace: str, runs: Mapping[str, str], dataset_type: str
) -> dict[str, dict[str, Any]] | str:
    """Per Site, its Run's one dataset of ``dataset_type`` with its available replica at that Site (or why not)."""
    products: dict[str, dict[str, Any]] = {}
    for site, run in runs.items():
        ours = _datasets_under(archive, f"{namespace}/{run}/", dataset_type)
        if isinstance(ours, str):
            return ours
        if not ours:
            return f"no {dataset_type} dataset registered by {run} (at {site})"
        replicas = archive.get(f"/datasets/{ours[0]['id']}/replicas").json()
        at_site = [r for r in replicas if r.get("site") == site and r.get("state") == "available" and r.get("sha256")]
        if not at_site:
            return f"{dataset_type} {ours[0]['id'][:8]}: no available replica with a sha256 at {site}"
        products[site] = {**ours[0], "replica": at_site[0]}
    return products


def _compare_row(
    archive: httpx.Client,
    namespace: str,
    runs: Mapping[str, str],
    stores: Mapping[str, Store],
    dataset_type: str,
    rtol: float | None,
) -> Row:
    how = "sha256" if rtol is None else f"within {rtol:.0e}"
    feature = f"{dataset_type} reproduced ({how})"
    products = _reproduced(archive, namespace, runs, dataset_type)
    if isinstance(products, str):
        return Row(feature, Status.FAIL, None, products)
    (site_a, a), (site_b, b) = products.items()
    sum_a, sum_b = a["replica"]["sha256"], b["replica"]["sha256"]
    if rtol is None:
        if sum_a == sum_b:
            return Row(feature, Status.PASS, None, f"sha256 {sum_a[:12]} at both Sites")
        return Row(
            feature,
            Status.FAIL,
            None,
            f"{dataset_type} differs: sha256 {sum_a[:12]} at {site_a}, {sum_b[:12]} at {site_b}",
        )
    documents = {}
    for site, product in products.items():
        store = stores[site]
        data = store.read_bytes(store.key_of(product["replica"]["uri"]))
        if hashlib.sha256(data).hexdigest() != product["replica"]["sha256"]:
            return Row(feature, Status.FAIL, None, f"{site}'s replica of {dataset_type} does not match its sha256")
        documents[site] = json.loads(data)
    differs = numbers_differ(documents[site_a], documents[site_b], rtol)
    if differs:
        return Row(feature, Status.FAIL, None, f"{dataset_type} differs between {site_a} and {site_b} at {differs}")
    same = "byte-identical" if sum_a == sum_b else "not byte-identical"
    return Row(feature, Status.PASS, None, f"{same}; every number within {rtol:.0e} at both Sites")


def run_cross_site(target: StackTarget, options: CrossSiteOptions, say: Say = print) -> list[Row]:
    """`sgs challenge SITE-A SITE-B`: one Pipeline, one Run at each Site over the same input (staged by the
    challenge at both), then each product compared across the Sites; raises StackError as run_challenge does."""
    cid = options.challenge_id or secrets.token_hex(3)
    namespace = f"sgs-challenge-{cid}"
    labels = {LABEL: cid}
    home = Kubectl(target.kubeconfig, options.site_namespace)
    sites = {name: json.loads(home.run("get", "site", name, "-o", "json")) for name in options.sites}
    for name, site in sites.items():
        if not site["spec"].get("archiveUrl"):
            raise StackError(f"Site {name} names no archive (spec.archiveUrl): its products cannot be compared")
    secret_objects = [
        json.loads(home.run("get", "secret", n, "-o", "json"))
        for n in sorted({n for s in sites.values() for n in _secret_names(s)})
    ]
    stores = {name: _store(site, secret_objects) for name, site in sites.items()}
    kubectl = Kubectl(target.kubeconfig, namespace)
    a, b = options.sites
    say(f"sgs challenge {a} {b}: namespace {namespace}, the same Pipeline and input at both Sites")
    started = time.monotonic()
    rows: list[Row] = []
    try:
        kubectl.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": labels}})
        kubectl.apply(
            *[_clean(s, namespace, labels) for s in secret_objects],
            *[_clean(s, namespace, labels) for s in sites.values()],
        )
        for dataset_type in COMPARED:
            _ensure_product_type(target, dataset_type)
        seed = zlib.crc32(cid.encode())
        inputs: dict[str, str] = {}
        uris: dict[str, str] = {}
        for name, store in stores.items():
            data = field_input(seed, PERTURBATION if name == options.perturb else 0.0)
            key = f"{namespace}/inputs/field.json"
            store.put_bytes(key, data)
            inputs[name], uris[name] = hashlib.sha256(data).hexdigest(), store.uri(key)
        pipeline = reproduce_pipeline(options.python).model_dump(mode="json", by_alias=True, exclude_none=True)
        meta = {"name": "challenge-reproduce", "namespace": namespace, "labels": dict(labels)}
        runs = {name: f"challenge-reproduce-{index}" for index, name in enumerate(options.sites, start=1)}
        kubectl.apply(
            {"apiVersion": "sgs.io/v1alpha1", "kind": "Pipeline", "metadata": meta, "spec": pipeline},
            *[
                {
                    "apiVersion": "sgs.io/v1alpha1",
                    "kind": "Run",
                    "metadata": {**meta, "name": run},
                    "spec": {
                        "pipeline": "challenge-reproduce",
                        "site": name,
                        "inputs": {"field": {"uri": uris[name]}},
                        "retry": {"max": 0},
                    },
                }
                for name, run in runs.items()
            ],
        )
        say(f"applied Pipeline challenge-reproduce and its Runs {', '.join(f'{r} at {s}' for s, r in runs.items())}")
        final, timed_out = _wait(kubectl, list(runs.values()), options.timeout_s, say)
        for name, run in runs.items():
            rows.append(run_row(f"reproduce Run at {name}", final.get(run), timed_out=timed_out))
        digests = {name: (final.get(run, {}).get("status") or {}).get("pipelineDigest") for name, run in runs.items()}
        if None not in digests.values() and len(set(digests.values())) == 1:
            rows.append(Row("same pinned Pipeline", Status.PASS, None, f"spec digest sha256:{digests[a]} at both Runs"))
        else:
            rows.append(Row("same pinned Pipeline", Status.FAIL, None, f"spec digests {digests}"))
        if inputs[a] == inputs[b]:
            rows.append(Row("same input at both Sites", Status.PASS, None, f"field.json sha256 {inputs[a][:12]}"))
        else:
            why = f"--perturb {options.perturb}: its counts changed by {PERTURBATION:.0e} on purpose"
            rows.append(Row("same input at both Sites", Status.SKIP, None, why))
        headers = {"Authorization": f"Bearer {target.admin_token}"}
        with httpx.Client(base_url=target.archive_url, headers=headers, trust_env=False, timeout=30) as archive:
            for dataset_type, rtol in COMPARED.items():
                rows.append(_compare_row(archive, namespace, runs, stores, dataset_type, rtol))
    finally:
        if options.keep:
            say(f"kept: kubectl delete namespace {namespace}")
        else:
            kubectl.run("delete", "namespace", namespace, "--wait=false", "--ignore-not-found")
            for name, site in sites.items():
                _remove_outputs(site, namespace, stores[name])
            _retire_replicas(target, namespace, dict(stores), say)
            say(f"cleaned up: namespace {namespace} deleted ({time.monotonic() - started:.1f} s in all)")
    return rows


# ------------------------------------------------------------------------------------------ replication


REPLICATION = "replication to a second Site"


@dataclass
class _Replication:
    """The rule made at the transfer service before the Runs: one copy of the fan-out's product at ``to``."""

    client: httpx.Client
    url: str
    rule_id: str
    to: str
    since: float


def _transfer_endpoint(target: StackTarget) -> tuple[str | None, str | None]:
    """The transfer service: SGS_TRANSFER_URL / SGS_TRANSFER_TOKEN, else the dev stack's (`sgs dev env`)."""
    import os

    return (
        os.environ.get("SGS_TRANSFER_URL") or target.transfer_url,
        os.environ.get("SGS_TRANSFER_TOKEN") or target.transfer_token,
    )


def _start_replication(
    target: StackTarget, site: Mapping[str, Any], namespace: str, replica_site: str | None
) -> _Replication | Row:
    """A rule for one copy of the fan-out Run's registered product at a second Site, made before the Runs so
    that the product's registration (archive event → NATS → the transfer service's evaluator) starts the copy;
    or the row saying precisely why replication cannot be checked here."""
    url, token = _transfer_endpoint(target)
    if not (url and token):
        return Row(
            REPLICATION, Status.SKIP, None, "no transfer service: SGS_TRANSFER_URL/TOKEN unset, none in the stack"
        )
    name = site["metadata"]["name"]
    if not site["spec"].get("archiveUrl"):
        return Row(REPLICATION, Status.FAIL, None, "the Site names no archive: nothing registered to replicate")
    client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, trust_env=False, timeout=30)
    try:
        listed = client.get("/sites")
    except httpx.HTTPError as error:
        client.close()
        return Row(REPLICATION, Status.SKIP, None, f"transfer service {url} not reachable: {error}")
    if listed.status_code != 200:
        client.close()
        return Row(REPLICATION, Status.SKIP, None, f"transfer service {url}/sites: {listed.status_code}")
    known = {s["name"]: s for s in listed.json()}
    kind = site["spec"].get("storage", {}).get("kind", "s3")
    why = None
    if name not in known:
        why = f"the transfer service at {url} does not copy from {name} (it knows {', '.join(sorted(known)) or 'none'})"
    elif known[name]["storage"] != kind:
        why = f"the transfer service's {name} is {known[name]['storage']} storage, this Site's is {kind}: not its store"
    others = sorted(n for n, s in known.items() if n != name and not s["in_maintenance"] and not s["paused"])
    to = replica_site or (others[0] if others else None)
    if why is None and to is None:
        why = f"the transfer service at {url} knows no second Site to copy {name}'s products to"
    elif why is None and to not in known:
        why = f"the transfer service at {url} does not copy to {to}"
    if why is not None:
        client.close()
        return Row(REPLICATION, Status.SKIP, None, why)
    assert to is not None
    body = {
        "dataset_type": PRODUCT_TYPE,
        "collections": [f"{namespace}/challenge-fanout/*"],
        "copies": 1,
        "site_expression": to,
        "lifetime_s": 3600,  # gone within the hour even if the command is killed before it deletes the rule
    }
    made = client.post("/rules", json=body)
    if made.status_code != 201:
        client.close()
        return Row(
            REPLICATION, Status.FAIL, None, f"transfer service refused the rule: {made.status_code} {made.text[:200]}"
        )
    return _Replication(client, url, str(made.json()["id"]), to, time.monotonic())


def _replication_row(plan: _Replication, target: StackTarget, namespace: str, lineage: Row, timeout_s: float) -> Row:
    """Passes when the fan-out's product has an available replica at the second Site with the sha256 of the
    Site's own, registered there by the transfer service; fails with the rule's reason when it is stuck."""
    if lineage.status is not Status.PASS:
        return Row(REPLICATION, Status.FAIL, None, f"no product to replicate ({lineage.detail})")
    headers = {"Authorization": f"Bearer {target.admin_token}"}
    deadline = time.monotonic() + timeout_s
    rule: dict[str, Any] = {}
    with httpx.Client(base_url=target.archive_url, headers=headers, trust_env=False, timeout=30) as archive:
        ours = _datasets_under(archive, f"{namespace}/challenge-fanout/", PRODUCT_TYPE)
        if isinstance(ours, str) or not ours:
            return Row(REPLICATION, Status.FAIL, None, ours if isinstance(ours, str) else "no product to replicate")
        product = ours[0]["id"]
        while True:
            replicas = archive.get(f"/datasets/{product}/replicas").json()
            sums = {r["sha256"] for r in replicas if r.get("state") == "available" and r.get("site") != plan.to}
            copies = [r for r in replicas if r.get("site") == plan.to and r.get("state") == "available"]
            if copies:
                seconds = time.monotonic() - plan.since
                if copies[0].get("sha256") not in sums:
                    return Row(REPLICATION, Status.FAIL, seconds, f"the copy at {plan.to} has another sha256")
                return Row(
                    REPLICATION,
                    Status.PASS,
                    seconds,
                    f"{product[:8]} copied to {plan.to} by the transfer service, same sha256 (rule {plan.rule_id[:8]})",
                )
            rule = plan.client.get(f"/rules/{plan.rule_id}").json()
            if rule.get("state") == "STUCK":
                return Row(REPLICATION, Status.FAIL, None, f"rule {plan.rule_id[:8]} STUCK: {rule.get('reason')}")
            if time.monotonic() > deadline:
                state = f"rule {rule.get('state')}, locks {rule.get('locks')}"
                return Row(REPLICATION, Status.FAIL, None, f"no copy at {plan.to} after {timeout_s:.0f} s ({state})")
            time.sleep(0.5)


def _end_replication(plan: _Replication) -> None:
    """The rule deleted: its lock released, the transfer service's reaper removes the copy it made."""
    try:
        plan.client.delete(f"/rules/{plan.rule_id}")
    except httpx.HTTPError:
        pass  # it expires within the hour anyway
    finally:
        plan.client.close()


# ------------------------------------------------------------------------------------------ archive clean-up


def _datasets_under(archive: httpx.Client, prefix: str, dataset_type: str | None = None) -> list[dict[str, Any]] | str:
    """The datasets (of ``dataset_type``, or any) of the RUN collections whose names start with ``prefix`` (a
    challenge's ``<namespace>/`` or one Run's ``<namespace>/<run>/``), or what the archive said instead. Asked by
    collection, not by type alone: the challenges' datasets stay at the archive, so a type's grow with every run."""
    names: list[str] = []
    params: dict[str, Any] = {"prefix": prefix, "type": "RUN", "limit": 1000}
    while True:
        page = archive.get("/collections", params=params)
        if page.status_code != 200:
            return f"archive collections: {page.status_code} {page.text[:200]}"
        names += [c["name"] for c in page.json()["items"]]
        if page.json().get("next_cursor") is None:
            break
        params["cursor"] = page.json()["next_cursor"]
    found: list[dict[str, Any]] = []
    for start in range(0, len(names), 100):
        body: dict[str, Any] = {"collections": names[start : start + 100], "where": "", "limit": 10_000}
        if dataset_type is not None:
            body["dataset_type"] = dataset_type
        listed = archive.post("/datasets/query", json=body)
        if listed.status_code != 200:
            return f"archive query: {listed.status_code} {listed.text[:200]}"
        found += listed.json()["items"]
    return found


def _retire_replicas(target: StackTarget, namespace: str, stores: Mapping[str, Store | None], say: Say) -> None:
    """The challenge's datasets keep their records (the archive deletes no dataset), but each replica at a Site
    whose store is given, whose file the clean-up removed (or removes now: a copy the replication made), is
    marked ``deleted``: the archive then points at no file that is gone."""
    from sgs.storage.errors import StorageError

    headers = {"Authorization": f"Bearer {target.admin_token}"}
    retired, refused = 0, 0
    try:
        with httpx.Client(base_url=target.archive_url, headers=headers, trust_env=False, timeout=30) as archive:
            listed = _datasets_under(archive, f"{namespace}/")
            datasets = listed if isinstance(listed, list) else []
            for dataset in datasets:
                for replica in archive.get(f"/datasets/{dataset['id']}/replicas").json():
                    store = stores.get(replica.get("site", ""))
                    if store is None or replica.get("state") == "deleted":
                        continue
                    with contextlib.suppress(StorageError, OSError):
                        store.delete(store.key_of(replica["uri"]))
                    patched = archive.patch(f"/replicas/{replica['id']}", json={"state": "deleted"})
                    retired, refused = (retired + 1, refused) if patched.status_code == 200 else (retired, refused + 1)
    except httpx.HTTPError as error:
        say(f"archive clean-up stopped: {error}")
        return
    more = f", {refused} refused" if refused else ""
    say(f"archive: {retired} replica(s) of the challenge's {len(datasets)} dataset(s) marked deleted{more}")

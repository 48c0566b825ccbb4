"""`sgs challenge SITE` on `sgs dev up` (PostgreSQL, NATS, API server, archive, operator, bridge nodes, trigger
service, all real): against a working Site every feature's row passes and it exits 0; against a Site that is
broken on purpose (it names no archive, so nothing is registered) it exits 1 naming that feature; both times it
leaves no namespace behind."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sgs.testing.binaries import cache_root, kubectl_path

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# POSIX Sites, and S3 ones (a MinIO each) that the transfer service copies between
PARTS = "pg,nats,minio,kube,archive,transfer,sgs"


def _exported(env_text: str) -> dict[str, str]:
    pairs = [line.removeprefix("export ").split("=", 1) for line in env_text.splitlines() if line.startswith("export")]
    return {key: value.strip("'") for key, value in pairs}


def _sgs(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "sgs.cli.main", *args]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A dev stack of its own (a fresh SGS_CACHE beside the built Go binaries), its `sgs dev env`."""
    cache = tmp_path_factory.mktemp("challenge") / "cache"
    cache.mkdir()
    (cache / "bin").symlink_to(cache_root() / "bin")
    env = {**os.environ, "SGS_CACHE": str(cache)}
    for key in [k for k in env if k.startswith(("KUBECONFIG", "SGS_ARCHIVE_", "SGS_TRANSFER_", "SGS_SITES_FILE"))]:
        del env[key]
    started = _sgs(env, "dev", "up", "--parts", PARTS)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield {**env, **_exported(_sgs(env, "dev", "env").stdout)}
    finally:
        _sgs(env, "dev", "down")


def _listing(objects: list[dict[str, Any]]) -> str:
    """JSON for kubectl: as YAML, a generated value like 065839 would reach the API server as a number."""
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})


def _kubectl(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    argv = [str(kubectl_path()), f"--kubeconfig={env['KUBECONFIG']}", *args]
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, check=True, timeout=60).stdout


def _apply_sites(env: dict[str, str]) -> None:
    """site-a and site-c as Sites with the archive (and their Site tokens), site-b without one: the broken Site."""
    from sgs.demo.http_archive import HttpArchive
    from sgs.demo.stack import find_stack, site_manifests

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SGS_CACHE", env["SGS_CACHE"])
        target = find_stack(env)
    with HttpArchive(target.archive_url, target.admin_token) as archive:
        archive.issue_site_tokens(["site-a", "site-c"])
        tokens = {"site-a": archive.site_token("site-a"), "site-b": "", "site-c": archive.site_token("site-c")}
        objects = site_manifests(target, target.archive_url, tokens)
    for obj in objects:
        if obj["kind"] == "Site" and obj["metadata"]["name"] == "site-b":
            del obj["spec"]["archiveUrl"], obj["spec"]["archiveCredentials"]
    names = ("site-a", "site-b", "site-c", "archive-site-a", "archive-site-c")
    wanted = [o for o in objects if o["metadata"]["name"] in names]
    _kubectl(env, "-n", "default", "apply", "-f", "-", stdin=_listing(wanted))


def _rows(stdout: str) -> dict[str, str]:
    """feature → result column, from the table's lines."""
    found: dict[str, str] = {}
    for line in stdout.splitlines():
        for word in ("pass", "FAIL", "skipped"):
            if f"  {word}  " in line:
                found[line.split(f"  {word}  ")[0].strip()] = word
    return found


def _challenge_namespaces(env: dict[str, str]) -> list[str]:
    listed = json.loads(_kubectl(env, "get", "namespaces", "-l", "sgs.io/challenge", "-o", "json"))["items"]
    return [n["metadata"]["name"] for n in listed if n["status"].get("phase") != "Terminating"]


def test_challenge_passes_on_a_working_site_and_names_the_broken_feature(stack: dict[str, str]) -> None:
    _apply_sites(stack)
    good = _sgs(stack, "challenge", "site-a", "--timeout", "120", timeout=200)
    print(good.stdout)
    assert good.returncode == 0, good.stdout[-5000:] + good.stderr[-3000:]
    rows = _rows(good.stdout)
    for feature in (
        "fan-out over a runtime list + fan-in",
        "private TMPDIR per task",
        "failed task retried",
        "dynamic resources from upstream product",
        "OOM kill retried with more memory",
        "outputs registered with lineage",
        "trigger: data arrival starts a Run",
    ):
        assert rows.get(feature) == "pass", (feature, good.stdout)
    assert rows["GPU task"] == "skipped" and "no GPU" in good.stdout  # the process bridges advertise none
    assert rows["replication to a second Site"] == "skipped"  # the transfer service's site-a is the MinIO one
    assert "the transfer service's site-a is s3 storage, this Site's is posix" in good.stdout
    assert "all features passed" in good.stdout and "cleaned up" in good.stdout
    assert _challenge_namespaces(stack) == []
    [namespace] = re.findall(r"namespace (sgs-challenge-[0-9a-f]+),", good.stdout)
    assert not (Path("/tmp/sgs-dev/site-a") / namespace).exists()  # its outputs at the Site went too
    assert re.search(
        r"archive: [1-9]\d* replica\(s\) of the challenge's \d+ dataset\(s\) marked deleted\n", good.stdout
    )

    broken = _sgs(stack, "challenge", "site-b", "--timeout", "120", timeout=200)
    print(broken.stdout)
    assert broken.returncode == 1, broken.stdout[-5000:] + broken.stderr[-3000:]
    assert _rows(broken.stdout)["outputs registered with lineage"] == "FAIL"
    assert "FAILED: outputs registered with lineage, replication to a second Site" in broken.stdout
    assert "names no archive" in broken.stdout
    assert _challenge_namespaces(stack) == []


def test_the_cross_site_check_passes_on_the_same_software_and_names_a_product_that_differs(
    stack: dict[str, str],
) -> None:
    """`sgs challenge site-a site-c`: one Pipeline, a Run at each Site over the same input, the products compared
    (the catalogue by the archive's sha256, the statistics within 1e-9). With --perturb site-c that Site's input
    counts change by 1e-12: the catalogue's bytes differ (the row fails, naming it), the statistics still agree."""
    _apply_sites(stack)
    same = _sgs(stack, "challenge", "site-a", "site-c", "--timeout", "90", timeout=150)
    print(same.stdout)
    assert same.returncode == 0, same.stdout[-5000:] + same.stderr[-3000:]
    rows = _rows(same.stdout)
    for feature in (
        "reproduce Run at site-a",
        "reproduce Run at site-c",
        "same pinned Pipeline",
        "same input at both Sites",
        "challenge_catalogue reproduced (sha256)",
        "challenge_statistics reproduced (within 1e-09)",
    ):
        assert rows.get(feature) == "pass", (feature, same.stdout)
    assert "spec digest sha256:" in same.stdout and "all features passed" in same.stdout
    assert "archive: 4 replica(s) of the challenge's 4 dataset(s) marked deleted" in same.stdout

    differs = _sgs(stack, "challenge", "site-a", "site-c", "--perturb", "site-c", "--timeout", "90", timeout=150)
    print(differs.stdout)
    assert differs.returncode == 1, differs.stdout[-5000:] + differs.stderr[-3000:]
    rows = _rows(differs.stdout)
    assert rows["challenge_catalogue reproduced (sha256)"] == "FAIL"
    assert rows["challenge_statistics reproduced (within 1e-09)"] == "pass"
    assert rows["same pinned Pipeline"] == "pass" and rows["same input at both Sites"] == "skipped"
    assert "challenge_catalogue differs: sha256" in differs.stdout
    assert "FAILED: challenge_catalogue reproduced (sha256)" in differs.stdout
    assert _challenge_namespaces(stack) == []


def test_at_an_s3_site_an_output_is_replicated_to_a_second_site_by_the_transfer_service(stack: dict[str, str]) -> None:
    """The dev stack's S3 Sites (a MinIO each, the ones its transfer service copies between) in a namespace of
    their own: `sgs challenge site-a` makes a rule before its Runs, the fan-out's product registered at site-a
    is copied to site-b (archive event → NATS → transfer service → replica registered) with the same sha256."""
    from sgs.demo.http_archive import HttpArchive
    from sgs.demo.stack import find_stack, object_sites, site_manifests

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SGS_CACHE", stack["SGS_CACHE"])
        target = find_stack(stack)
    buckets = object_sites(target)
    assert buckets is not None, "the stack's transfer service and MinIO Sites"
    with HttpArchive(target.archive_url, target.admin_token) as archive:
        archive.issue_site_tokens(["site-a", "site-b", "site-c"])
        tokens = {site: archive.site_token(site) for site in ("site-a", "site-b", "site-c")}
    objects = site_manifests(target, target.archive_url, tokens, buckets)
    _kubectl(stack, "create", "namespace", "objects")
    _kubectl(stack, "-n", "objects", "apply", "-f", "-", stdin=_listing(objects))

    done = _sgs(stack, "challenge", "site-a", "--site-namespace", "objects", "--replica-site", "site-b", timeout=200)
    print(done.stdout)
    rows = _rows(done.stdout)
    assert rows.get("replication to a second Site") == "pass", done.stdout[-5000:] + done.stderr[-3000:]
    assert "copied to site-b by the transfer service, same sha256" in done.stdout
    assert rows["trigger: data arrival starts a Run"] == "skipped"  # its arrival is written under a POSIX path
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-3000:]
    assert _challenge_namespaces(stack) == []
    [namespace] = re.findall(r"namespace (sgs-challenge-[0-9a-f]+),", done.stdout)
    assert re.search(
        r"archive: [1-9]\d* replica\(s\) of the challenge's [1-9]\d* dataset\(s\) marked deleted\n", done.stdout
    )
    for site in ("site-a", "site-b"):  # the Runs' objects under the namespace, and the copy at site-b, are gone
        store = buckets[site].store()
        assert [o.key for o in store.list(f"{namespace}/")] == []
    with httpx.Client(
        base_url=target.archive_url, headers={"Authorization": f"Bearer {target.admin_token}"}, trust_env=False
    ) as api:
        found = api.post("/datasets/query", json={"dataset_type": "challenge_summary", "where": "", "limit": 10000})
        [product] = [d for d in found.json()["items"] if d["run"].startswith(f"{namespace}/")]
        replicas = api.get(f"/datasets/{product['id']}/replicas").json()
        assert {r["site"]: r["state"] for r in replicas} == {"site-a": "deleted", "site-b": "deleted"}
        copy = next(r for r in replicas if r["site"] == "site-b")
        assert not buckets["site-b"].store().exists(buckets["site-b"].store().key_of(copy["uri"]))

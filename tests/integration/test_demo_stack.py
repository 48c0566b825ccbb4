"""`sgs demo --stack` on `sgs dev up` (PostgreSQL, NATS, a MinIO per Site, API server, archive, transfer
service, operator, bridges, trigger service, all real): the Sites are S3 Sites, the NIR products are in the
archive as objects in their primary Site's bucket, registered by the operator from Runs the trigger service
created (nobody else), with lineage back to the four raw exposures of their observation, and each is copied by
rule to its secondary Site's bucket: issue 15's "done when" on S3 Sites."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from sgs.testing.binaries import cache_root, kubectl_path

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NAMESPACE = "demo-stack-test"


def exported(env_text: str) -> dict[str, str]:
    pairs = [line.removeprefix("export ").split("=", 1) for line in env_text.splitlines() if line.startswith("export")]
    return {key: value.strip("'") for key, value in pairs}


def test_demo_stack_turns_raw_exposures_into_products_with_lineage_through_triggered_runs(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "bin").symlink_to(cache_root() / "bin")
    env = {**os.environ, "SGS_CACHE": str(cache)}
    for key in ("KUBECONFIG", "SGS_ARCHIVE_URL", "SGS_ARCHIVE_ADMIN_TOKEN"):
        env.pop(key, None)

    def sgs(*args: str, timeout: float = 400) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "sgs.cli.main", *args]
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, check=False)

    started = sgs("dev", "up", "--parts", "pg,nats,minio,kube,archive,transfer,sgs")
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        demo = sgs("demo", "--stack", "--observations", "2", "--namespace", NAMESPACE, "--timeout", "600", timeout=900)
        assert demo.returncode == 0, demo.stdout[-6000:] + demo.stderr[-4000:]
        print(demo.stdout[-4000:])  # the report and its wall time, for `pytest -s`
        assert "lineage of a source catalogue" in demo.stdout and "all observations processed" in demo.stdout
        assert (
            "products replicated by rule" in demo.stdout and "replication rules at the transfer service" in demo.stdout
        )
        [console_line] = [line for line in demo.stdout.splitlines() if line.startswith("open http://")]
        runs_page = console_line.split()[1]
        assert httpx.get(runs_page).headers["location"].startswith("/signin")  # the console serves, asks to sign in

        stack = exported(sgs("dev", "env").stdout)
        runs = json.loads(
            subprocess.run(
                [
                    str(kubectl_path()),
                    f"--kubeconfig={stack['KUBECONFIG']}",
                    "-n",
                    NAMESPACE,
                    "get",
                    "runs",
                    "-o",
                    "json",
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )["items"]
        # Every Run in the namespace was made by the trigger service, one per observation, and succeeded.
        assert len(runs) == 2
        assert all(r["metadata"]["labels"].get("sgs.io/trigger") for r in runs)
        assert {r["status"]["phase"] for r in runs} == {"Succeeded"}

        with httpx.Client(
            base_url=stack["SGS_ARCHIVE_URL"],
            headers={"Authorization": f"Bearer {stack['SGS_ARCHIVE_ADMIN_TOKEN']}"},
            trust_env=False,
            timeout=30,
        ) as archive:

            def query(dataset_type: str) -> list[dict[str, Any]]:
                body = {"dataset_type": dataset_type, "where": "", "limit": 100}
                response = archive.post("/datasets/query", json=body)
                assert response.status_code == 200, response.text
                items: list[dict[str, Any]] = response.json()["items"]
                return items

            catalogs, stacks = query("nir_catalog"), query("nir_stack")
            assert len(catalogs) == 2 and len(stacks) == 2
            for product in catalogs + stacks:  # an object at its primary Site, a verified copy at its secondary
                replicas = archive.get(f"/datasets/{product['id']}/replicas").json()
                assert len(replicas) == 2 and {r["state"] for r in replicas} == {"available"}, replicas
                assert all(r["uri"].startswith("s3://") for r in replicas), replicas
                assert len({r["sha256"] for r in replicas}) == 1 and len({r["site"] for r in replicas}) == 2
            run_names = {f"{NAMESPACE}/{r['metadata']['name']}" for r in runs}
            for catalog in catalogs:
                assert any(str(catalog["run"]).startswith(name) for name in run_names), catalog["run"]
                graph = archive.get(f"/datasets/{catalog['id']}/lineage", params={"direction": "up", "depth": 30})
                assert graph.status_code == 200, graph.text
                raws = [n for n in graph.json()["nodes"] if n["dataset_type"] == "nir_raw"]
                observation = catalog["data_id"]["observation"]
                assert len(raws) == 4 and {r["data_id"]["observation"] for r in raws} == {observation}
                kinds = {n["dataset_type"] for n in graph.json()["nodes"]}
                assert "nir_stack" in kinds  # the catalogue derives from its observation's registered stack
    finally:
        sgs("dev", "down")

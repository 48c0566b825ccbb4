"""The issue's "done when", as a user does it: `sgs dev up`, raw files uploaded and registered at one Site, a rule
`sgs replicate rule add`, and the copies at the other Sites shown by `sgs archive replicas` as available with the
checksums of the original files, each re-read at its Site by `sgs storage verify`."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from sgs.testing.binaries import cache_root

pytestmark = pytest.mark.integration

SITES = ("site-a", "site-b", "site-c")
FILES = 2


def run_sgs(*args: str, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sgs.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def ok(*args: str, env: dict[str, str], timeout: float = 180) -> str:
    done = run_sgs(*args, env=env, timeout=timeout)
    assert done.returncode == 0, f"sgs {' '.join(args)}: {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def exported(env_text: str) -> dict[str, str]:
    pairs = [line.removeprefix("export ").split("=", 1) for line in env_text.splitlines() if line]
    return {key: value.strip("'") for key, value in pairs}


@pytest.fixture
def dev_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A dev stack of its own (PostgreSQL, NATS, a MinIO per Site, archive, transfer service + worker)."""
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "bin").symlink_to(cache_root() / "bin")  # the MinIO binary the lead built
    base = {**os.environ, "SGS_CACHE": str(cache)}
    for key in [k for k in base if k.startswith(("SGS_ARCHIVE_", "SGS_TRANSFER_", "SGS_SITES_FILE"))]:
        del base[key]  # only what `sgs dev env` says
    started = run_sgs("dev", "up", "--parts", "pg,nats,minio,archive,transfer", env=base, timeout=300)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield {**base, **exported(ok("dev", "env", env=base))}
    finally:
        stopped = run_sgs("dev", "down", env=base, timeout=120)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr


def raw_files(directory: Path) -> dict[str, bytes]:
    directory.mkdir()
    contents: dict[str, bytes] = {}
    for exposure in range(FILES):
        content = os.urandom(50_000 + exposure * 7_919)
        (directory / f"raw_e{1000 + exposure}.fits").write_bytes(content)
        contents[f"raw_e{1000 + exposure}.fits"] = content
    return contents


def test_a_rule_on_the_dev_stack_makes_verified_available_copies(dev_env: dict[str, str], tmp_path: Path) -> None:
    env = dev_env
    assert {"SGS_ARCHIVE_URL", "SGS_TRANSFER_URL", "SGS_TRANSFER_TOKEN", "SGS_SITES_FILE"} <= set(env)
    contents = raw_files(tmp_path / "raw")
    # the definition the dev stack's operator part registers too (the same again is accepted)
    ok("archive", "type", "add", "raw", "--dimensions", "exposure", env=env)
    ok(
        "archive",
        "ingest",
        *sorted(str(tmp_path / "raw" / name) for name in contents),
        "--type",
        "raw",
        "--run",
        "raw/dev-night-1",
        "--site",
        "site-a",
        "--data-id",
        "instrument=VIS",
        "--pattern",
        r"_e(?P<exposure>\d+)",
        "--upload",
        env=env,
    )
    rule = ok(
        "replicate",
        "rule",
        "add",
        "--type",
        "raw",
        "--collection",
        "raw/dev-night-1",
        "--sites",
        "!site-a",
        "--copies",
        "2",
        "--wait",
        env=env,
        timeout=240,
    )
    assert "OK" in rule, rule
    found = json.loads(ok("archive", "query", "--type", "raw", "--collection", "raw/dev-night-1", "--json", env=env))[
        "items"
    ]
    assert len(found) == FILES
    by_exposure = {f"raw_e{d['data_id']['exposure']}.fits": d["id"] for d in found}
    verified = 0
    for name, dataset_id in by_exposure.items():
        content = contents[name]
        expected: dict[str, str | int] = {
            "size": len(content),
            "adler32": f"{zlib.adler32(content) & 0xFFFFFFFF:08x}",
            "sha256": hashlib.sha256(content).hexdigest(),
        }
        replicas = {r["site"]: r for r in json.loads(ok("archive", "replicas", dataset_id, "--json", env=env))}
        assert set(replicas) == set(SITES), replicas
        key = ok("storage", "key", "raw", dataset_id, "--suffix", ".fits", env=env).strip()  # the same at every Site
        for site, replica in replicas.items():
            assert replica["state"] == "available", replica
            assert int(replica["adler32"], 16) == int(str(expected["adler32"]), 16), (site, replica)
            assert (replica["size"], replica["sha256"]) == (expected["size"], expected["sha256"]), (site, replica)
            assert replica["uri"].endswith(key), (site, replica)
            ok(
                "storage",
                "verify",
                f"{site}:{key}",
                "--size",
                str(expected["size"]),
                "--adler32",
                str(expected["adler32"]),
                "--sha256",
                str(expected["sha256"]),
                env=env,
            )
            verified += 1
    listed = ok("replicate", "rule", "list", env=env)
    assert "OK" in listed
    print(f"{FILES} raw files at site-a: {verified} replicas available with matching checksums, re-read at their Site")

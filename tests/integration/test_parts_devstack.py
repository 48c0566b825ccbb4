import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import nats
import psycopg
import pytest
import yaml
from sgs_archive.settings import ArchiveSettings

from sgs.dev.stack import load_state, parse_parts
from sgs.testing import wait_until
from sgs.testing.binaries import cache_root, kubectl_path
from sgs.testing.prometheus import PrometheusClient

pytestmark = pytest.mark.integration


def sgs(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SGS_CACHE": str(cache)}
    return subprocess.run(
        [sys.executable, "-m", "sgs.cli.main", "dev", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def exported(env_text: str) -> dict[str, str]:
    pairs = [line.removeprefix("export ").split("=", 1) for line in env_text.splitlines() if line]
    return {key: value.strip("'") for key, value in pairs}


def test_parts_option_names_the_bad_part() -> None:
    assert parse_parts("slurm,pg") == ["pg", "slurm"]
    with pytest.raises(ValueError, match=r"--parts: unknown part\(s\) postgres"):
        parse_parts("postgres,nats")


async def test_dev_up_status_env_down(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    started = sgs("up", "--parts", "pg,nats", cache=cache)
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        env = exported(sgs("env", cache=cache).stdout)
        with psycopg.connect(env["SGS_ARCHIVE_DSN"]) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        # The archive started from this environment runs as development, with the stack's admin token.
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        archive = ArchiveSettings()
        assert archive.environment == "development" and archive.admin_token is not None
        assert env["SGS_ARCHIVE_TOKEN"] == archive.admin_token.get_secret_value()
        nc = await nats.connect(env["NATS_URL"])
        assert nc.is_connected
        await nc.close()
        assert sgs("status", cache=cache).returncode == 0
        again = sgs("up", "--parts", "pg", cache=cache)
        assert again.returncode == 0 and "already running" in again.stdout
    finally:
        stopped = sgs("down", cache=cache)
    assert stopped.returncode == 0, stopped.stderr
    monkeypatch.setenv("SGS_CACHE", str(cache))
    assert load_state() == {}
    assert "nothing running" in sgs("status", cache=cache).stdout
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(env["SGS_ARCHIVE_DSN"], connect_timeout=2)


def test_a_half_dead_part_is_reported_and_restarted_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    assert sgs("up", "--parts", "slurm", cache=cache).returncode == 0
    monkeypatch.setenv("SGS_CACHE", str(cache))
    try:
        before = load_state()["slurm"].processes
        munged = next(record for record in before if record.name == "munged")
        munged.stop()
        assert sgs("status", cache=cache).returncode == 1
        assert sgs("up", "--parts", "slurm", cache=cache).returncode == 0
        assert not any(record.is_alive() for record in before)  # slurmctld and slurmd were not left behind
        after = load_state()["slurm"]
        assert all(after.alive()) and {r.pid for r in after.processes}.isdisjoint({r.pid for r in before})
        assert sgs("status", cache=cache).returncode == 0
    finally:
        sgs("down", cache=cache)


def test_dev_up_observability_prints_urls_and_scrapes_jaeger(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "bin").symlink_to(Path(os.environ.get("SGS_CACHE", "~/.cache/sgs")).expanduser() / "bin")
    started = sgs("up", "--parts", "prometheus,jaeger", cache=cache)
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        env = exported(sgs("env", cache=cache).stdout)
        assert env["SGS_TRACING_ENDPOINT"].startswith("http://127.0.0.1:")
        assert f"Prometheus (metrics, alerts): {env['SGS_PROMETHEUS_URL']}" in started.stdout
        assert "Jaeger (traces): http://127.0.0.1:" in started.stdout
        prometheus = PrometheusClient(env["SGS_PROMETHEUS_URL"])
        prometheus.wait_up("jaeger", timeout_s=60)
        operator = [t for t in prometheus.targets() if t["labels"]["job"] == "sgs-operator"]
        assert [t["labels"]["instance"] for t in operator] == [f"127.0.0.1:{env['SGS_OPERATOR_METRICS_PORT']}"]
    finally:
        stopped = sgs("down", cache=cache)
    assert stopped.returncode == 0, stopped.stderr


def test_the_sgs_part_runs_the_operator_and_bridges_judged_by_their_own_logs(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "bin").symlink_to(cache_root() / "bin")
    env = {**os.environ, "SGS_CACHE": str(cache)}
    env.pop("KUBECONFIG", None)

    def dev(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "sgs.cli.main", "dev", *args]
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=400, check=False)

    started = dev("up", "--parts", "pg,kube,sgs")
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("SGS_CACHE", str(cache))
            state = load_state()
        assert {"operator", "bridge-site-a", "bridge-site-b", "bridge-site-c"} <= set(state)
        assert state["bridge-site-c"].info["provider"] == "process"  # no Slurm part in this stack
        kubeconfig = exported(dev("env").stdout)["KUBECONFIG"]
        kubectl = [str(kubectl_path()), f"--kubeconfig={kubeconfig}"]
        bridge = state["bridge-site-a"]
        [record] = bridge.processes
        os.killpg(record.pid, signal.SIGKILL)  # a crashed bridge: its log keeps the old "registered" line
        wait_until(lambda: not record.is_alive(), what="the killed bridge to be gone", timeout_s=30)

        again = dev("up", "--parts", "pg,kube,sgs")

        assert again.returncode == 0, again.stdout + again.stderr
        assert "operator" in again.stdout and "already running" in again.stdout
        ready_line = "node sgs-site-a (site site-a, provider process) registered"
        assert Path(bridge.info["log"]).read_text().count(ready_line) == 2  # up waited for the new process's line
        nodes = subprocess.run([*kubectl, "get", "nodes", "-o", "name"], capture_output=True, text=True, check=True)
        assert set(nodes.stdout.split()) >= {"node/sgs-site-a", "node/sgs-site-b", "node/sgs-site-c"}
        subprocess.run([*kubectl, "apply", "-f", "crds/examples/sites.yaml"], capture_output=True, check=True)
        _sign_in_to_the_console(str(state["console"].info["url"]), kubeconfig)

        assert dev("down", "--parts", "sgs").returncode == 0
        webhook = subprocess.run(
            [*kubectl, "get", "validatingwebhookconfiguration", "sgs-operator.sgs.io", "--ignore-not-found"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert webhook.stdout == ""  # failurePolicy Fail: left behind, it would refuse every Run
    finally:
        dev("down")


def _sign_in_to_the_console(url: str, kubeconfig: str) -> None:
    """The dev stack's console asks for a token, refuses a bad one, takes the admin's and shows the Sites."""
    token = yaml.safe_load(Path(kubeconfig).read_text())["users"][0]["user"]["token"]
    with httpx.Client(base_url=url, timeout=30) as client:
        assert client.get("/runs").headers["location"].startswith("/signin")  # nothing without a sign-in
        refused = client.post("/signin", data={"token": "not-a-token", "next": "/runs"})
        assert "/runs" not in refused.headers.get("location", "")
        signed = client.post("/signin", data={"token": token, "next": "/sites"}, follow_redirects=True)
        assert signed.status_code == 200, signed.text[:500]
        assert "site-a" in signed.text and "No Site." not in signed.text

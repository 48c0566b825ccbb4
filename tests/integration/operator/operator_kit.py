"""The operator under test: a real `sgs operator` process against the real control plane and PostgreSQL.

Each test gets its own namespace, a POSIX Site whose store is a
temporary directory, and the example Pipeline compiled by `sgs compile`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml
from psycopg import sql
from sgs_bridge.launch import BridgeProcess

from sgs.testing import free_port
from sgs.testing.kube import KubePart
from sgs.testing.postgres import PostgresPart

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "examples" / "parallel_split"
TEST_BIN = Path(__file__).resolve().parent / "bin"
READY_MESSAGE = "sgs operator ready"
FAST_RETRY = {"max": 1, "backoff": 0.5, "jitter": 0.0}  # one retry, half a second later
SITE = "site-a"  # every test namespace's Site has this name; one bridge node serves them all
KEEP_FINISHED_JOBS = {"SGS_OPERATOR_FINISHED_JOBS": "keep"}  # for tests that inspect Jobs after they finished


def wait_for(check: Callable[[], Any], what: str, timeout_s: float = 60, interval_s: float = 0.25) -> Any:
    """Poll until ``check()`` returns something truthy; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what} (last: {last!r})")


class ArchiveService:
    """The archive service as a process on its own fresh database (no NATS: events wait in the outbox)."""

    def __init__(self, dsn: str, log: Path, admin: str) -> None:
        self.admin = admin
        self.url = f"http://127.0.0.1:{free_port()}"
        env = {**os.environ, "SGS_ARCHIVE_DSN": dsn, "SGS_ARCHIVE_ADMIN_TOKEN": admin}
        port = self.url.rsplit(":", 1)[1]
        argv = [sys.executable, "-m", "uvicorn", "--factory", "sgs_archive.app:create_app", "--port", port]
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
        wait_for(self._up, f"the archive at {self.url} ({log})", 60)

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"archive exited: {self.log.read_text()[-3000:]}")
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.admin}"}
        response = httpx.request(method, f"{self.url}{path}", headers=headers, timeout=30, **kwargs)
        assert response.status_code < 400, response.text
        return response.json()

    def placements(self) -> dict[tuple[str, int], tuple[str, str | None]]:
        rows = self.call("GET", "/placements", params={"limit": 100_000})
        return {(r["dimension"], r["value"]): (r["primary_site"], r["secondary_site"]) for r in rows}

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def new_database(postgres: PostgresPart, prefix: str) -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return postgres.dsn_for(name)


class OperatorProcess:
    """`sgs operator` as a subprocess: started, killed (-9) and restarted by the tests.

    Its name is its Lease and its identity in it, so a restart (same name) leads again at once; ``env`` adds
    or overrides variables, ``unset`` removes inherited ones (KUBECONFIG, to run it as a pod would). A fixture
    that starts one calls delete_webhook() when done: the webhook is failurePolicy Fail and outlives the
    operator, so a stale one would refuse every later Run and Pipeline."""

    def __init__(
        self,
        kube: KubePart,
        dsn: str,
        workdir: Path,
        env: dict[str, str] | None = None,
        unset: tuple[str, ...] = (),
    ) -> None:
        self.kube = kube
        self.dsn = dsn
        self.name = f"sgs-operator-{uuid.uuid4().hex[:6]}"
        self.extra_env = env or {}
        self.unset = unset
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.metrics_port = free_port()

    @property
    def log(self) -> Path:
        return self.workdir / f"operator-{self.starts}.log"

    @property
    def webhook_name(self) -> str:
        return self.extra_env.get("SGS_OPERATOR_WEBHOOK_NAME", f"{self.name}.sgs.io")

    def start(self, crash_at: str | None = None, timeout_s: float = 90, message: str = READY_MESSAGE) -> None:
        """Start it and wait until it logs ``message`` (a standby replica never logs READY_MESSAGE)."""
        self.starts += 1
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kube.kubeconfig),
            "SGS_OPERATOR_DSN": self.dsn,
            "SGS_OPERATOR_WEBHOOK_NAME": self.webhook_name,
            "SGS_OPERATOR_RECONCILE_INTERVAL": "0.5",
            "SGS_OPERATOR_METRICS_PORT": str(self.metrics_port),
            "SGS_OPERATOR_LEASE_NAME": self.name,
            "SGS_OPERATOR_LEADER_IDENTITY": self.name,
            **self.extra_env,
        }
        for key in ("SGS_OPERATOR_CRASH_AT", *self.unset):
            env.pop(key, None)
        if crash_at:
            env["SGS_OPERATOR_CRASH_AT"] = crash_at
        # Cluster-wide: kopf can miss a namespace created while it starts watching a pattern (seen here), and
        # test modules run one after another, so one operator at a time serves the test cluster.
        argv = [sys.executable, "-m", "sgs.cli.main", "operator", "-v"]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(lambda: self._logged(message), f"the operator to log {message!r} ({self.log})", timeout_s)

    def _logged(self, message: str) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"operator exited with {self.proc.returncode}:\n{self.log.read_text()[-4000:]}")
        return message in self.log.read_text(errors="replace")

    def delete_webhook(self) -> None:
        """Its ValidatingWebhookConfiguration stays when it stops (failurePolicy Fail): gone with the test."""
        self.kube.kubectl("delete", "validatingwebhookconfiguration", self.webhook_name, "--ignore-not-found")

    def wait_exit(self, timeout_s: float = 60) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout_s)

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.kill9()


@pytest.fixture(scope="module")
def operator_dsn(postgres: PostgresPart) -> Iterator[str]:
    name = f"operator_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield postgres.dsn_for(name)
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="module")
def operator_settings() -> dict[str, str]:
    """SGS_OPERATOR_* variables of the module's operator beyond the defaults: a module overrides this fixture."""
    return {}


@pytest.fixture(scope="module")
def operator(
    kube: KubePart,
    operator_dsn: str,
    tmp_path_factory: pytest.TempPathFactory,
    operator_settings: dict[str, str],
) -> Iterator[OperatorProcess]:
    """One operator per test module (cluster-wide; modules run one after another)."""
    proc = OperatorProcess(kube, operator_dsn, tmp_path_factory.mktemp("operator"), env=operator_settings)
    proc.start()
    yield proc
    proc.stop()
    proc.delete_webhook()


@pytest.fixture(scope="session")
def example_pipeline() -> dict[str, Any]:
    """The seed-002 parallel_split pipeline, compiled from its script by `sgs compile`."""
    result = subprocess.run(
        [sys.executable, "-m", "sgs.cli.main", "compile", f"{EXAMPLE / 'parallel_split.py'}:parallel_split"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    manifest: dict[str, Any] = yaml.safe_load(result.stdout)
    return manifest


class Cluster:
    """kubectl in one test namespace, plus the objects the tests make."""

    def __init__(self, kube: KubePart, namespace: str, store: Path, dsn: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self.store = store
        self.dsn = dsn

    def kubectl(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return self.kube.kubectl("-n", self.namespace, *args, check=check, input=input)

    def sgs(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The `sgs` CLI against this cluster."""
        env = {**os.environ, "KUBECONFIG": str(self.kube.kubeconfig)}
        argv = [sys.executable, "-m", "sgs.cli.main", *args]
        return subprocess.run(argv, env=env, check=True, capture_output=True, text=True, cwd=REPO)

    def apply(self, manifest: dict[str, Any], check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest), check=check)

    def get(self, kind: str, name: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.kubectl("get", kind, name, "-o", "json").stdout)
        return data

    def exists(self, kind: str, name: str) -> bool:
        return bool(self.kubectl("get", kind, name, "--ignore-not-found", "-o", "name").stdout.strip())

    def jobs(self, run: str | None = None) -> list[dict[str, Any]]:
        selector = ["-l", f"sgs.io/run={run}"] if run else ["-l", "sgs.io/run"]
        items: list[dict[str, Any]] = json.loads(self.kubectl("get", "jobs", *selector, "-o", "json").stdout)["items"]
        return items

    def pods(self, run: str) -> list[dict[str, Any]]:
        listing = self.kubectl("get", "pods", "-l", f"sgs.io/run={run}", "-o", "json").stdout
        items: list[dict[str, Any]] = json.loads(listing)["items"]
        return items

    def run_status(self, name: str) -> dict[str, Any]:
        status: dict[str, Any] = self.get("runs", name).get("status") or {}
        return status

    def wait_phase(self, run: str, phases: set[str], timeout_s: float = 120) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            status = self.run_status(run)
            return status if status.get("phase") in phases else None

        result: dict[str, Any] = wait_for(reached, f"run {run} to reach {sorted(phases)}", timeout_s)
        return result

    def wait_site_phase(self, name: str, phases: set[str], timeout_s: float = 60) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            status: dict[str, Any] = self.get("sites", name).get("status") or {}
            return status if status.get("phase") in phases else None

        result: dict[str, Any] = wait_for(reached, f"site {name} to reach {sorted(phases)}", timeout_s)
        return result

    def site(
        self, name: str = SITE, max_parallel: int = 100, node_selector: dict[str, str] | None = None
    ) -> dict[str, Any]:
        compute: dict[str, Any] = {"nodeSelector": node_selector} if node_selector else {}
        return {
            "apiVersion": "sgs.io/v1alpha1",
            "kind": "Site",
            "metadata": {"name": name},
            "spec": {
                "compute": {"kind": "kubernetes", "maxParallel": max_parallel, **compute},
                # The example inputs are a reference root: tasks may read them, never write there.
                "storage": {"kind": "posix", "path": str(self.store), "readOnlyPaths": [str(EXAMPLE / "inputs")]},
                "capacity": {"cores": 16, "storageTb": 1},
            },
        }

    def run(
        self,
        name: str,
        pipeline: str = "parallel-split",
        site: str = SITE,
        inputs: dict[str, Any] | None = None,
        **spec: Any,
    ) -> dict[str, Any]:
        if inputs is None:
            inputs = {
                port: {"uri": str(EXAMPLE / "inputs" / f"{port}.json")}
                for port in ("images", "master_dark", "master_flat", "control_params")
            }
        return {
            "apiVersion": "sgs.io/v1alpha1",
            "kind": "Run",
            "metadata": {"name": name},
            "spec": {"pipeline": pipeline, "site": site, "inputs": inputs, **spec},
        }

    def task_rows(self, run: str) -> list[dict[str, Any]]:
        uid = self.get("runs", run)["metadata"]["uid"]
        with psycopg.connect(self.dsn) as conn:
            cur = conn.execute(
                "SELECT task, state, attempt, job, reason, exit_code, message, requested, usage"
                " FROM sgs_task WHERE run_uid = %s ORDER BY task",
                (uid,),
            )
            names = [d.name for d in cur.description or []]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def attempt_rows(self, run: str) -> list[dict[str, Any]]:
        uid = self.get("runs", run)["metadata"]["uid"]
        with psycopg.connect(self.dsn) as conn:
            cur = conn.execute(
                "SELECT task, attempt, job, state, reason FROM sgs_task_attempt WHERE run_uid = %s"
                " ORDER BY task, attempt",
                (uid,),
            )
            names = [d.name for d in cur.description or []]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


@pytest.fixture(scope="session")
def bridge(kube: KubePart, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BridgeProcess]:
    """The virtual node of Site `site-a`: the bridge's process provider, the example programs on its PATH."""
    path = os.pathsep.join([str(EXAMPLE / "bin"), str(TEST_BIN), os.environ.get("PATH", "")])
    process = BridgeProcess(
        node_name="sgs-operator-test-node",
        site=SITE,
        kubeconfig=kube.kubeconfig,
        workdir=tmp_path_factory.mktemp("bridge"),
        poll_interval_s=0.2,
        env={"PATH": path},
    )
    with process:
        yield process


def make_cluster(kube: KubePart, operator: OperatorProcess, tmp_path: Path) -> Iterator[Cluster]:
    namespace = f"op-{uuid.uuid4().hex[:8]}"
    kube.kubectl("create", "namespace", namespace)
    wait_for(
        lambda: kube.kubectl("-n", namespace, "get", "sa", "default", "--ignore-not-found", "-o", "name").stdout,
        "the namespace's default ServiceAccount (pods are refused before it exists)",
    )
    store = tmp_path / "store"
    store.mkdir()
    yield Cluster(kube, namespace, store, operator.dsn)
    kube.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


@pytest.fixture
def cluster(kube: KubePart, operator: OperatorProcess, tmp_path: Path) -> Iterator[Cluster]:
    yield from make_cluster(kube, operator, tmp_path)


@pytest.fixture
def served(cluster: Cluster, bridge: BridgeProcess) -> Cluster:
    """A namespace whose Site is served by the bridge node."""
    cluster.apply(cluster.site(max_parallel=20))
    return cluster


def task_pipeline(name: str, steps: dict[str, tuple[str, float, str | None]]) -> dict[str, Any]:
    """A Pipeline of `optest_task` steps: name → (mode, ram GiB, upstream step or None)."""
    executables = []
    graph = []
    for step, (mode, ram, upstream) in steps.items():
        executables.append(
            {
                "name": step,
                "command": "optest_task",
                "inputs": [{"name": "mode"}, {"name": "input", "optional": True}],
                "outputs": [{"name": "out", "suffix": ".txt"}],
                "resources": {"cores": 1, "ram": ram, "walltime": 0.05},
            }
        )
        inputs: dict[str, Any] = {"mode": {"value": mode}}
        if upstream is not None:
            inputs["input"] = {"step": upstream, "output": "out"}
        graph.append({"name": step, "executable": step, "inputs": inputs})
    return {
        "apiVersion": "sgs.io/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": name},
        "spec": {"executables": executables, "steps": graph},
    }

"""The sgs components of the dev stack: the operator and one bridge node per dev Site, as `sgs` subprocesses.

They are started after the parts they need (PostgreSQL and the control plane), detached like the parts, and
judged ready from their own logs, read from where the log stood when they started: a log kept from an earlier
run (logs append) never makes a new process look ready.

Each dev Site gets a POSIX store under ``DEV_SITES_ROOT`` and the example Pipeline's inputs are copied to the
shared read-only reference directory there: those are the paths `crds/examples/sites.yaml` declares, so the
examples apply and run as they are.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from sgs.testing._process import ManagedProcess, free_port, wait_until
from sgs.testing.base import Part
from sgs.testing.kube import KubePart

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_DIR = REPO / "examples" / "parallel_split"
# Fixed, so that the example manifests can name it; /tmp because YAML cannot say "~".
DEV_SITES_ROOT = Path("/tmp/sgs-dev")
REFERENCE_DIR = DEV_SITES_ROOT / "reference"
SURVEYS_DIR = DEV_SITES_ROOT / "surveys"  # the operator's only survey root on the dev stack
EXAMPLE_SURVEY = SURVEYS_DIR / "wide-2027q1.csv"  # what crds/examples/dataplacement.yaml plans
OPERATOR_DATABASE = "sgs_operator"
OPERATOR_IDENTITY = "sgs-dev-operator"  # a fixed Lease identity: a restarted operator leads again at once
OPERATOR_READY = "sgs operator ready"
CONSOLE_READY = "sgs console on http"  # what `sgs console` prints before it serves
TRIGGER_READY = "sgs trigger ready"  # what sgs_trigger.service logs once it consumes (the core imports no deployable)
OPERATOR_WEBHOOK = "sgs-operator.sgs.io"
START_TIMEOUT_S = 120.0  # a cold kopf start on a loaded 2-core machine takes tens of seconds


def site_store(site: str) -> Path:
    return DEV_SITES_ROOT / site


def prepare_site_dirs(sites: tuple[str, ...]) -> None:
    """Each Site's store and the reference inputs (re-copied: an edited example input shows up at once)."""
    for site in sites:
        site_store(site).mkdir(parents=True, exist_ok=True)
    target = REFERENCE_DIR / "parallel_split"
    target.mkdir(parents=True, exist_ok=True)
    for source in sorted((EXAMPLE_DIR / "inputs").glob("*.json")):
        shutil.copyfile(source, target / source.name)
    if not EXAMPLE_SURVEY.is_file():
        write_example_survey(EXAMPLE_SURVEY)


def write_example_survey(path: Path) -> None:
    """A small synthetic survey (400 observations from 2027-01-01) for the example DataPlacement's window."""
    from sgs.placement.generator import generate_survey
    from sgs.placement.survey import build_survey, write_csv

    survey = generate_survey(wide=300, deep=100, sky_fields=29_000, start=datetime(2027, 1, 1, tzinfo=UTC))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(write_csv(build_survey([survey.row(i) for i in range(len(survey))])))
    tmp.replace(path)  # a half-written survey is never planned


def register_raw_type(archive_url: str, admin_token: str) -> None:
    """The dataset type a DataPlacement's replication rules name (raw data at both Sites); the same definition
    again answers 200, so every `up` may send it. Another definition already there (409) is the user's: kept."""
    import httpx

    try:
        answer = httpx.post(
            f"{archive_url}/dataset-types",
            json={"name": "raw", "dimensions": ["exposure"], "storage_class": "Fits"},
            headers={"Authorization": f"Bearer {admin_token}"},
            timeout=30,
        )
    except httpx.HTTPError as err:
        raise OSError(f"archive {archive_url}: registering dataset type raw: {err}") from err
    if answer.status_code not in (200, 201, 409):
        raise OSError(f"archive {archive_url}: registering dataset type raw: HTTP {answer.status_code} {answer.text}")


def placement_env(exports: Mapping[str, str]) -> dict[str, str]:
    """What the operator needs to plan DataPlacements on the stack: the archive and transfer service (when they
    run; their admin tokens: placements and rule owners are admin writes) and the one survey root."""
    env = {"SGS_OPERATOR_SURVEY_ROOTS": json.dumps([str(SURVEYS_DIR)])}
    if "SGS_ARCHIVE_URL" in exports and "SGS_ARCHIVE_ADMIN_TOKEN" in exports:
        env |= {
            "SGS_OPERATOR_ARCHIVE_URL": exports["SGS_ARCHIVE_URL"],
            "SGS_OPERATOR_ARCHIVE_TOKEN": exports["SGS_ARCHIVE_ADMIN_TOKEN"],
        }
    if "SGS_TRANSFER_URL" in exports and "SGS_TRANSFER_TOKEN" in exports:
        env |= {
            "SGS_OPERATOR_TRANSFER_URL": exports["SGS_TRANSFER_URL"],
            "SGS_OPERATOR_TRANSFER_TOKEN": exports["SGS_TRANSFER_TOKEN"],
        }
    return env


def operator_dsn(server_dsn: str, database: str = OPERATOR_DATABASE) -> str:
    """The operator's own database on the stack's PostgreSQL, created on first use."""
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
        if found is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    params = conninfo_to_dict(server_dsn)
    params["dbname"] = database
    return make_conninfo(**{key: str(value) for key, value in params.items() if value is not None})


class LoggedProcessPart(Part):
    """One `sgs ...` subprocess, ready once its log (since this start) holds ``ready_text``."""

    ready_text = ""

    def __init__(self, workdir: Path, env: Mapping[str, str]) -> None:
        super().__init__(workdir)
        self.env = dict(env)

    def argv(self) -> list[str]:
        raise NotImplementedError

    @property
    def log(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    def _start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        offset = self.log.stat().st_size if self.log.exists() else 0
        process = self._spawn(ManagedProcess(self.name, self.argv(), self.log, env=self.env, cwd=REPO))
        wait_until(
            lambda: self.ready_text in _read_from(self.log, offset),
            what=f"{self.name} to log {self.ready_text!r}",
            timeout_s=START_TIMEOUT_S,
            process=process,
        )


def _read_from(path: Path, offset: int) -> str:
    with path.open("rb") as handle:
        handle.seek(offset)
        return handle.read().decode(errors="replace")


def sgs_argv(*args: str) -> list[str]:
    # The interpreter running `sgs dev up` is the one with sgs installed (a venv need not be on PATH).
    return [sys.executable, "-m", "sgs.cli.main", *args]


class OperatorPart(LoggedProcessPart):
    """`sgs operator` serving every namespace, its task table in the stack's PostgreSQL."""

    name = "operator"
    ready_text = OPERATOR_READY

    def __init__(self, workdir: Path, env: Mapping[str, str], dsn: str, metrics_port: int | None) -> None:
        self.metrics_port = metrics_port or free_port()
        super().__init__(
            workdir,
            {
                **env,
                **placement_env(env),
                "SGS_OPERATOR_DSN": dsn,
                "SGS_OPERATOR_METRICS_PORT": str(self.metrics_port),
                "SGS_OPERATOR_WEBHOOK_NAME": OPERATOR_WEBHOOK,
                "SGS_OPERATOR_LEADER_IDENTITY": OPERATOR_IDENTITY,
                # Tasks at S3 Sites run under the wrapper: this installation's, as a Site's task image has its own
                # (the bridges run their pods on this machine, where a venv need not be on PATH).
                "SGS_OPERATOR_TASK_WRAPPER": json.dumps([sys.executable, "-m", "sgs.task", "exec"]),
            },
        )
        self.dsn = dsn
        self.cluster = "central"  # "remote": the second control plane's (sgs dev up --sites 2)

    def argv(self) -> list[str]:
        return sgs_argv("operator")

    def info(self) -> dict[str, Any]:
        return {
            "database": self.dsn,
            "url": f"http://127.0.0.1:{self.metrics_port}/metrics",
            "log": str(self.log),
            "webhook": OPERATOR_WEBHOOK,
            "cluster": self.cluster,  # which control plane it serves (its webhook is there)
        }


class BridgePart(LoggedProcessPart):
    """`sgs bridge`: the virtual node `sgs-<site>` of one dev Site, its pods run as processes or Slurm jobs."""

    name = "bridge"

    def __init__(self, workdir: Path, env: Mapping[str, str], site: str, provider: str) -> None:
        # The example programs are on the node's PATH, as they would be in a Site's task image.
        path = os.pathsep.join([str(EXAMPLE_DIR / "bin"), env.get("PATH", os.defpath)])
        super().__init__(workdir, {**env, "PATH": path})
        self.site = site
        self.provider = provider
        self.node = f"sgs-{site}"
        self.port = free_port()
        self.ready_text = f"node {self.node} (site {site}, provider {provider}) registered"

    def argv(self) -> list[str]:
        return sgs_argv(
            "bridge",
            f"--provider={self.provider}",
            f"--node-name={self.node}",
            f"--site={self.site}",
            f"--port={self.port}",
            f"--workdir={self.workdir / 'node'}",
            "--poll-interval=0.5",
        )

    def info(self) -> dict[str, Any]:
        return {
            "site": self.site,
            "node": self.node,
            "provider": self.provider,
            "endpoint": f"https://127.0.0.1:{self.port}",
            "store": str(site_store(self.site)),
            "log": str(self.log),
        }


class TriggerPart(LoggedProcessPart):
    """`sgs trigger`: Runs created when data arrives, from the stack's archive events and Pipelines."""

    name = "trigger"
    ready_text = TRIGGER_READY

    def __init__(self, workdir: Path, env: Mapping[str, str], nats_url: str, archive_url: str, token: str) -> None:
        self.metrics_port = free_port()
        super().__init__(
            workdir,
            {
                **env,
                "SGS_TRIGGER_NATS_URL": nats_url,
                "SGS_TRIGGER_ARCHIVE_URL": archive_url,
                "SGS_TRIGGER_ARCHIVE_TOKEN": token,
                "SGS_TRIGGER_METRICS_PORT": str(self.metrics_port),
            },
        )
        self.archive_url = archive_url

    def argv(self) -> list[str]:
        return sgs_argv("trigger")

    def info(self) -> dict[str, Any]:
        return {
            "archive": self.archive_url,
            "url": f"http://127.0.0.1:{self.metrics_port}/metrics",
            "log": str(self.log),
        }


# The services the console reads: (its settings' name, the stack's variables, the body of a reader token there).
CONSOLE_READS = (
    ("ARCHIVE", "SGS_ARCHIVE", {"role": "reader"}),
    ("TRANSFER", "SGS_TRANSFER", {"reader": True}),
)
CONSOLE_TOKEN_NAME = "dev-console"  # one name: each start of the console revokes the token the last one had
SERVICE_SECRETS = ("SGS_ARCHIVE_ADMIN_TOKEN", "SGS_ARCHIVE_TOKEN", "SGS_TRANSFER_ADMIN_TOKEN", "SGS_TRANSFER_TOKEN")


def issue_reader_token(url: str, admin_token: str, body: Mapping[str, Any]) -> str:
    """A fresh reader token named CONSOLE_TOKEN_NAME at a service (the archive or the transfer service; both
    answer the same /tokens API), the one issued before under that name revoked first."""
    import httpx

    headers = {"Authorization": f"Bearer {admin_token}"}
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=30, trust_env=False) as client:
            revoked = client.delete(f"/tokens/{CONSOLE_TOKEN_NAME}")
            issued = client.post("/tokens", json={"name": CONSOLE_TOKEN_NAME, **body})
    except httpx.HTTPError as err:
        raise OSError(f"{url}: issuing the console's reader token: {err}") from err
    for answer in (revoked, issued):
        if answer.status_code not in (201, 204, 404):
            raise OSError(f"{url}: issuing the console's reader token: HTTP {answer.status_code} {answer.text}")
    return str(issued.json()["token"])


def console_service_settings(env: Mapping[str, str]) -> dict[str, str]:
    """SGS_CONSOLE_<service>_URL/_TOKEN for each service the stack runs, with a reader token issued there by
    the stack's admin token: the console reads and can change nothing; a rule is suspended or resumed with the
    signed-in person's own transfer-service token (docs/console.md)."""
    settings: dict[str, str] = {}
    for service, variable, body in CONSOLE_READS:
        url = env.get(f"{variable}_URL")
        admin = env.get(f"{variable}_ADMIN_TOKEN") or env.get(f"{variable}_TOKEN")
        if url and admin:
            token = issue_reader_token(url, admin, body)
            settings |= {f"SGS_CONSOLE_{service}_URL": url, f"SGS_CONSOLE_{service}_TOKEN": token}
    return settings


class ConsolePart(LoggedProcessPart):
    """`sgs console` over the dev stack: the cluster, the operator's task records, the archive and transfers.

    Development only, it reads the cluster with the stack's admin kubeconfig, where a data centre gives it the
    read-only ``sgs-console`` role (docs/console.md); at the archive and the transfer service it holds only
    reader tokens, issued as it starts, and none of the stack's admin tokens is in its environment. People sign
    in with tokens of their own.
    """

    name = "console"
    ready_text = CONSOLE_READY

    def __init__(self, workdir: Path, env: Mapping[str, str], dsn: str) -> None:
        self.port = free_port()
        self.services = {key: env[key] for key in env if key.startswith(("SGS_ARCHIVE_", "SGS_TRANSFER_"))}
        settings = {
            "SGS_CONSOLE_KUBECONFIG": env["KUBECONFIG"],
            "SGS_CONSOLE_DSN": dsn,
            "SGS_CONSOLE_ENVIRONMENT": "development",
        }
        clean = {key: value for key, value in env.items() if key not in SERVICE_SECRETS}
        super().__init__(workdir, {**clean, **settings})

    def _start(self) -> None:
        # Issued here, not in __init__: `up` builds the part on every call, and only a console that starts
        # may revoke the token of the one before it.
        self.env |= console_service_settings(self.services)
        super()._start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        return sgs_argv("console", "--host=127.0.0.1", f"--port={self.port}", "--development")

    def info(self) -> dict[str, Any]:
        return {"url": self.url, "log": str(self.log)}


# ----------------------------------------------------------------------------------------------- a remote Site


class RemoteKubePart(KubePart):
    """The second control plane (part ``remote``): a data centre's own cluster, the central one's cluster Site.
    Its kubeconfig is exported as SGS_REMOTE_KUBECONFIG, so KUBECONFIG stays the central one's."""

    name = "kube-remote"

    def exports(self) -> dict[str, str]:
        return {"SGS_REMOTE_KUBECONFIG": str(self.kubeconfig)}


def remote_allowed(remote: Mapping[str, Any]) -> dict[str, str]:
    """The central operator may dial the remote API server (and no other) as a cluster Site's."""
    server = urlsplit(str(remote["server"]))
    return {"SGS_OPERATOR_ALLOWED_CLUSTER_SERVERS": json.dumps([f"{server.hostname}:{server.port}"])}


def remote_units(base: Path, env: Mapping[str, str], remote: Mapping[str, Any], server_dsn: str) -> list[Any]:
    """The remote cluster's own operator (its own task database) and the bridge node of its Site."""
    from sgs.dev.stack import REMOTE_SITE

    remote_env = {**env, "KUBECONFIG": str(remote["kubeconfig"])}
    dsn = operator_dsn(server_dsn, f"{OPERATOR_DATABASE}_remote")
    operator = OperatorPart(base / "operator-remote", remote_env, dsn, None)
    operator.cluster = "remote"
    bridge = BridgePart(base / f"bridge-{REMOTE_SITE}", remote_env, REMOTE_SITE, "process")
    return [("operator-remote", operator), (f"bridge-{REMOTE_SITE}", bridge)]


def remote_site_manifests(remote_kubeconfig: str, site: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(central, remote) manifests: the kubeconfig Secret and the cluster Site; the POSIX Site its cluster runs."""
    store = str(site_store(site))
    storage = {"kind": "posix", "path": store, "readOnlyPaths": [str(REFERENCE_DIR)]}
    capacity = {"cores": 16, "storageTb": 1}
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": f"{site}-kubeconfig", "namespace": "default"},
        "stringData": {"kubeconfig": remote_kubeconfig},
    }
    cluster_site = {
        "apiVersion": "sgs.io/v1alpha1",
        "kind": "Site",
        "metadata": {"name": site, "namespace": "default"},
        "spec": {
            "displayName": f"{site} (the dev stack's second control plane)",
            "compute": {"kind": "cluster", "kubeconfig": {"name": f"{site}-kubeconfig"}},
            "storage": storage,
            "capacity": capacity,
        },
    }
    local_site = {
        "apiVersion": "sgs.io/v1alpha1",
        "kind": "Site",
        "metadata": {"name": site, "namespace": "default"},
        "spec": {"compute": {"kind": "kubernetes", "maxParallel": 20}, "storage": storage, "capacity": capacity},
    }
    return [secret, cluster_site], [local_site]


def apply_remote_site(central: Mapping[str, Any], remote: Mapping[str, Any], site: str) -> None:
    from sgs.testing.binaries import kubectl_path

    kubectl = kubectl_path()
    if kubectl is None:
        raise OSError("kubectl is not built (sgs dev build kubectl)")
    central_manifests, remote_manifests = remote_site_manifests(Path(remote["kubeconfig"]).read_text(), site)
    for kube, manifests in ((central, central_manifests), (remote, remote_manifests)):
        listing = json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests})
        env = {**os.environ, "KUBECONFIG": str(kube["kubeconfig"])}
        subprocess.run(
            [str(kubectl), "apply", "-f", "-"], input=listing, env=env, check=True, capture_output=True, text=True
        )

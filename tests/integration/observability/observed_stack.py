"""The whole stack, observed: the operator and a bridge of its own against the real control plane, the archive,
the transfer service and the trigger service on PostgreSQL and NATS, scraped by the real Prometheus (and, when
asked, tracing to the real Jaeger). Shared by the PromQL check and the trace check (imported by name: test
folders are not packages).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from operator_kit import Cluster, OperatorProcess, make_cluster, wait_for
from sgs_bridge.launch import BridgeProcess, free_port
from transfer_kit import (
    ADMIN_TOKEN,
    ArchiveUnderTest,
    TransferUnderTest,
    archive_service,
    known_sites,
    posix_site,
    posix_store,
    transfer_service,
)
from trigger_kit import TriggerProcess

from sgs.model.site import Site
from sgs.telemetry import Tracing
from sgs.telemetry.dashboards import ALERTS
from sgs.testing.kube import KubePart
from sgs.testing.nats import NatsPart
from sgs.testing.postgres import PostgresPart
from sgs.testing.prometheus import PrometheusPart, ScrapeJob

HERE = Path(__file__).resolve().parent
SITE, OTHER = "site-obs", "site-obs-b"
JOBS = ("sgs-operator", "sgs-bridge", "sgs-archive", "sgs-transfer", "sgs-trigger")


@dataclass
class Observed:
    cluster: Cluster
    operator: OperatorProcess
    bridge: BridgeProcess
    archive: ArchiveUnderTest
    transfer: TransferUnderTest
    trigger: TriggerProcess
    sites: list[Site]
    prometheus: PrometheusPart
    token_file: Path

    def site(self) -> dict[str, Any]:
        """The bridge's Site, its store the directory the archive and transfer service know as that Site's, and
        that archive its archive (the triggered Runs' inputs are archive datasets)."""
        spec = self.cluster.site(SITE, max_parallel=20)
        spec["spec"]["storage"]["path"] = str(self.sites[0].spec.storage.path)
        spec["spec"]["archiveUrl"] = self.archive.url
        spec["spec"]["archiveCredentials"] = {"name": f"archive-{SITE}"}
        return spec

    def archive_secret(self) -> dict[str, Any]:
        token = base64.b64encode(self.archive.site_tokens[SITE].encode()).decode()
        return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"archive-{SITE}"}, "data": {"token": token}}


def tracing_env(tracing_endpoint: str | None) -> dict[str, str]:
    return {"SGS_TRACING_ENDPOINT": tracing_endpoint} if tracing_endpoint else {}


def bridge_env(tracing_endpoint: str | None) -> dict[str, str]:
    """The test tasks and the venv's `sgs` on the PATH tasks inherit; the trace store when the test traces."""
    path = os.pathsep.join([str(HERE / "bin"), str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return {"PATH": path, **tracing_env(tracing_endpoint)}


@contextlib.contextmanager
def observed_stack(
    kube: KubePart,
    operator: OperatorProcess,
    postgres: PostgresPart,
    nats_server: NatsPart,
    prometheus: PrometheusPart,
    workdir: Path,
    tracings: dict[str, Tracing] | None = None,
    tracing_endpoint: str | None = None,
) -> Iterator[Observed]:
    tracings = tracings or {}
    with archive_service(postgres, nats_server.url, tracings.get("sgs-archive")) as archive:
        archive.issue_site_tokens([SITE, OTHER])
        archive.dataset_type("obs", ["exposure", "detector"])
        root = workdir / "sites"
        sites = [posix_site(name, root, archive.url, {"tier": "primary"}) for name in (SITE, OTHER)]
        book = known_sites(sites, archive.site_tokens, posix_store)
        with transfer_service(
            archive.dsn, nats_server.url, archive.url, book, tracings.get("sgs-transfer"), embedded_worker=True
        ) as transfer:
            bridge = BridgeProcess(
                node_name=f"sgs-obs-{uuid.uuid4().hex[:6]}",
                site=SITE,
                kubeconfig=kube.kubeconfig,
                workdir=workdir / "bridge",
                metrics_port=free_port(),  # scraped there, as the chart's ServiceMonitor does
                poll_interval_s=0.2,
                env=bridge_env(tracing_endpoint),
            )
            # A stopped bridge's node stays (NotReady, untainted for a while): gone with the stack, or a later
            # module's pods for a Site of the same name could be scheduled onto it.
            trigger = TriggerProcess(
                kube, nats_server.url, archive.url, workdir, env=tracing_env(tracing_endpoint)
            ).start()
            stack = contextlib.ExitStack()
            stack.callback(trigger.stop)
            stack.callback(kube.kubectl, "delete", "node", bridge.node_name, "--ignore-not-found", check=False)
            with stack, bridge:
                token_file = workdir / "archive-token"
                token_file.write_text(ADMIN_TOKEN)
                prometheus.scrape(*scrape_jobs(operator, bridge, archive, transfer, trigger, token_file))
                prometheus.load_rules(sorted(ALERTS.glob("*.yaml")))
                for job in JOBS:
                    prometheus.wait_up(job, timeout_s=90)
                for cluster in make_cluster(kube, operator, workdir):
                    yield Observed(cluster, operator, bridge, archive, transfer, trigger, sites, prometheus, token_file)


def scrape_jobs(
    operator: OperatorProcess,
    bridge: BridgeProcess,
    archive: ArchiveUnderTest,
    transfer: TransferUnderTest,
    trigger: TriggerProcess,
    token_file: Path,
) -> list[ScrapeJob]:
    """Each component as the chart's ServiceMonitors scrape it: the bridge on its plain metrics port with the Site
    as a target label (the chart's relabelling), the archive with a token."""
    return [
        ScrapeJob("sgs-operator", targets={f"127.0.0.1:{operator.metrics_port}": {}}),
        ScrapeJob("sgs-bridge", targets={f"127.0.0.1:{bridge.metrics_port}": {"site": SITE}}),
        ScrapeJob("sgs-archive", targets={archive.url.removeprefix("http://"): {}}, bearer_token_file=token_file),
        ScrapeJob("sgs-transfer", targets={transfer.url.removeprefix("http://"): {}}),
        ScrapeJob("sgs-trigger", targets={f"127.0.0.1:{trigger.metrics_port}": {}}),
    ]


def registering_pipeline(name: str, fan_out: int, archive_url: str, token_file: Path) -> dict[str, Any]:
    """``fan_out`` tasks that each write a file and register it in the archive (`sgs archive ingest`, which
    sends the task's TRACEPARENT), then one that fails on purpose: a failed outcome for the metrics."""
    ports = [{"name": name} for name in ("exposure", "archive", "token_file", "site")]
    where = {"archive": {"value": archive_url}, "token_file": {"value": str(token_file)}, "site": {"value": SITE}}
    executables = [
        {
            "name": "obstest_register",
            "command": "obstest_register",
            "inputs": ports,
            "outputs": [{"name": "out", "suffix": ".fits"}],
            "resources": {"cores": 1, "ram": 0.25, "walltime": 0.05},
        },
        {
            "name": "optest_fail",
            "command": "obstest_register",
            "inputs": ports,
            "outputs": [{"name": "out", "suffix": ".fits"}],
            "resources": {"cores": 1, "ram": 0.25, "walltime": 0.05},
        },
    ]
    steps = [
        {
            "name": f"register{i}",
            "executable": "obstest_register",
            "inputs": {"exposure": {"value": str(i + 1)}, **where},
        }
        for i in range(fan_out)
    ]
    steps.append({"name": "fail", "executable": "optest_fail", "inputs": {"exposure": {"value": "fail"}, **where}})
    return {
        "apiVersion": "sgs.io/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": name},
        "spec": {"executables": executables, "steps": steps},
    }


def triggered_pipeline(name: str, collection: str) -> dict[str, Any]:
    """A Pipeline the trigger service starts once per registered `obs` exposure of ``collection``: its one task
    succeeds without touching the archive, so the triggered Runs add nothing to the registrations counted."""
    trigger = {
        "name": "each-exposure",
        "input": "exposures",
        "datasetType": "obs",
        "collections": [collection],
        "groupBy": ["exposure"],
        "complete": {"count": 1},
    }
    return {
        "apiVersion": "sgs.io/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": name},
        "spec": {
            "inputs": [{"name": "exposures"}],
            "executables": [
                {
                    "name": "obstest_look",
                    "command": "true",
                    "inputs": [{"name": "exposures"}],
                    "resources": {"cores": 1, "ram": 0.25, "walltime": 0.05},
                }
            ],
            "steps": [{"name": "look", "executable": "obstest_look", "inputs": {"exposures": {"input": "exposures"}}}],
            "triggers": [trigger],
        },
    }


def serve_trigger(observed: Observed, pipeline: str, collection: str) -> None:
    """Apply the triggered Pipeline and wait until the trigger service serves it (it logs each change)."""
    before = observed.trigger.log.read_text().count("serving ")
    observed.cluster.apply(triggered_pipeline(pipeline, collection))
    wait_for(lambda: observed.trigger.log.read_text().count("serving ") > before, "the trigger to serve it")


def triggered_runs(observed: Observed, pipeline: str) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = json.loads(observed.cluster.kubectl("get", "runs", "-o", "json").stdout)["items"]
    return [run for run in listed if run["spec"]["pipeline"] == pipeline]


def run_through(observed: Observed, run: str, pipeline: str, fan_out: int, timeout_s: float = 240) -> dict[str, Any]:
    """Apply the Site, the Pipeline and a Run; return the Run once it has ended (it fails: one task does)."""
    cluster = observed.cluster
    cluster.apply(observed.archive_secret())
    cluster.apply(observed.site())
    cluster.wait_site_phase(SITE, {"Ready"})
    cluster.apply(registering_pipeline(pipeline, fan_out, observed.archive.url, observed.token_file))
    wait_for(lambda: cluster.get("pipelines", pipeline).get("status", {}).get("phase") == "Ready", "Pipeline Ready")
    cluster.apply(cluster.run(run, pipeline=pipeline, site=SITE, inputs={}, retry={"max": 0}))
    status = cluster.wait_phase(run, {"Succeeded", "Failed"}, timeout_s=timeout_s)
    return {**status, "uid": cluster.get("runs", run)["metadata"]["uid"]}


def wait_alert(prometheus: PrometheusPart, name: str, labels: dict[str, str], timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        for alert in prometheus.alerts():
            wanted = {"alertname": name, **labels}
            if alert["state"] == "firing" and all(alert["labels"].get(k) == v for k, v in wanted.items()):
                return alert
        assert time.monotonic() < deadline, f"{name} {labels} not firing after {timeout_s:.0f} s"
        time.sleep(1.0)

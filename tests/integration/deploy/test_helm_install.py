"""`helm install` of charts/sgs on the test control plane: the chart's operator pod comes up on a bridge node and
reconciles a Run to success; prints helm install → operator pod Ready → operator leading (its Lease).

The node is the bridge's process provider, which runs a pod's command (`sgs operator`) as a host process and
ignores its image (no container runtime here) and its securityContext. Two things a kubelet gives every pod,
that provider does not: the KUBERNETES_SERVICE_* variables and the projected service-account token. The test
passes them through the chart's own extraEnv / extraVolumes: the API server's address, and a token Secret of the
chart's ServiceAccount (kubernetes.io/service-account-token, filled by the token controller: token, ca.crt,
namespace — the files of a pod's service-account directory). Everything else is the chart as rendered: its RBAC
(the pod acts only with the chart's ServiceAccount), its environment, its Secret for the DSN.

The archive runs too, in production mode, from the chart's Secret (DSN, admin token) and NATS URL: it must
start (production refuses weak tokens), answer /readyz and refuse an unauthenticated read. The transfer,
console and trigger services are disabled: they read the cluster through the in-cluster service-account
directory, which their settings cannot point elsewhere, so the process provider cannot serve them.

The CRDs are already installed by the control plane fixture (shared by every test), so `crds.install=false`
here; their templating is checked by test_chart.py's server-side dry run.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml
from chart_kit import CHART, helm
from operator_kit import EXAMPLE, TEST_BIN, Cluster, wait_for
from psycopg import sql
from sgs_bridge.launch import BridgeProcess

from sgs.testing import free_port
from sgs.testing.kube import KubePart
from sgs.testing.nats import NatsPart
from sgs.testing.postgres import PostgresPart

pytest_plugins = ["operator_kit"]  # example_pipeline, operator_dsn
pytestmark = pytest.mark.integration

SITE = "helm-site"
NODE = "sgs-helm-test-node"
SA_DIR = "/var/run/sgs/serviceaccount"


@pytest.fixture(scope="module")
def helm_bridge(kube: KubePart, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BridgeProcess]:
    """The node the release's pods and the Run's tasks run on: `sgs` and the example programs on its PATH,
    a HOME without ~/.kube/config (so the operator can only use the pod's service account)."""
    home = tmp_path_factory.mktemp("helm-home")
    path = os.pathsep.join([str(Path(sys.executable).parent), str(EXAMPLE / "bin"), str(TEST_BIN), os.environ["PATH"]])
    process = BridgeProcess(
        node_name=NODE,
        site=SITE,
        kubeconfig=kube.kubeconfig,
        workdir=tmp_path_factory.mktemp("helm-bridge"),
        poll_interval_s=0.2,
        env={"PATH": path, "HOME": str(home)},
    )
    with process:
        yield process


class Release:
    """One `helm install` in its own namespace (cluster-scoped names carry the release's name)."""

    def __init__(self, kube: KubePart, dsn: str, archive_dsn: str, nats_url: str) -> None:
        self.kube = kube
        self.dsn = dsn
        self.archive_dsn = archive_dsn
        self.nats_url = nats_url
        self.archive_token = secrets.token_urlsafe(32)
        self.archive_port = free_port()  # the process provider shares the host's network
        self.name = f"h{uuid.uuid4().hex[:6]}"
        self.namespace = f"helm-{self.name}"
        self.component = f"{self.name}-sgs-operator"  # <release>-sgs-<component>
        self.webhook_port = free_port()
        self.metrics_port = free_port()

    def kubectl(self, *args: str, check: bool = True, input: str | None = None) -> Any:
        return self.kube.kubectl("-n", self.namespace, *args, check=check, input=input)

    def prepare(self) -> None:
        """The namespace, the operator's Secret (DSN), and its ServiceAccount's token Secret.

        The ServiceAccount is made first with Helm's ownership metadata, which `helm install` adopts: the token
        controller fills a token Secret only for an account that exists."""
        self.kube.kubectl("create", "namespace", self.namespace)
        owned = {
            "labels": {"app.kubernetes.io/managed-by": "Helm"},
            "annotations": {"meta.helm.sh/release-name": self.name, "meta.helm.sh/release-namespace": self.namespace},
        }
        token_secret = f"{self.component}-token"
        objects = [
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": self.component, **owned}},
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": self.component},
                "stringData": {"dsn": self.dsn},
            },
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": f"{self.name}-sgs-archive"},
                "stringData": {"dsn": self.archive_dsn, "admin-token": self.archive_token},
            },
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "kubernetes.io/service-account-token",
                "metadata": {
                    "name": token_secret,
                    "annotations": {"kubernetes.io/service-account.name": self.component},
                },
            },
        ]
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects))
        wait_for(lambda: self._secret_data(token_secret).get("token"), "the token controller to fill the token")

    def _secret_data(self, name: str) -> dict[str, str]:
        secret = json.loads(self.kubectl("get", "secret", name, "-o", "json").stdout)
        return {key: base64.b64decode(value).decode() for key, value in (secret.get("data") or {}).items()}

    def values(self) -> dict[str, Any]:
        return {
            "site": {"name": SITE},
            "crds": {"install": False},
            "nats": {"url": self.nats_url},
            "archive": {
                "port": self.archive_port,
                "nodeSelector": {"sgs.io/site": SITE},
                "tolerations": [{"key": "virtual-kubelet.io/provider", "operator": "Exists", "effect": "NoSchedule"}],
                "resources": {"requests": {"cpu": "0", "memory": "64Mi"}, "limits": {"memory": "1Gi"}},
            },
            "transfer": {"enabled": False},
            "console": {"enabled": False},
            "trigger": {"enabled": False},
            "operator": {
                "namespaces": [self.namespace],
                "reconcileInterval": 0.5,
                "webhook": {"host": "127.0.0.1", "port": self.webhook_port},
                "metricsPort": self.metrics_port,
                "nodeSelector": {"sgs.io/site": SITE},
                # The node advertises this machine's cores, which the example's 2-core tasks take whole: the
                # operator pod (on the same node here) must not reserve a share of one.
                "resources": {"requests": {"cpu": "0", "memory": "64Mi"}, "limits": {"memory": "1Gi"}},
                "tolerations": [{"key": "virtual-kubelet.io/provider", "operator": "Exists", "effect": "NoSchedule"}],
                "extraEnv": [
                    {"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"},
                    {"name": "KUBERNETES_SERVICE_PORT", "value": str(self.kube.port)},
                    {"name": "SGS_OPERATOR_SERVICE_ACCOUNT_DIR", "value": SA_DIR},
                ],
                "extraVolumes": [{"name": "sa-token", "secret": {"secretName": f"{self.component}-token"}}],
                "extraVolumeMounts": [{"name": "sa-token", "mountPath": SA_DIR, "readOnly": True}],
            },
        }

    def install(self, values_file: Path) -> None:
        helm(
            "install", self.name, str(CHART), "--namespace", self.namespace, "--values", str(values_file),
            "--kubeconfig", str(self.kube.kubeconfig),
        )  # fmt: skip

    def operator_pods(self, component: str = "operator") -> list[dict[str, Any]]:
        selector = f"app.kubernetes.io/instance={self.name},app.kubernetes.io/component={component}"
        items: list[dict[str, Any]] = json.loads(self.kubectl("get", "pods", "-l", selector, "-o", "json").stdout)[
            "items"
        ]
        return items

    def ready_pod(self, component: str = "operator") -> str | None:
        for pod in self.operator_pods(component):
            conditions = (pod.get("status") or {}).get("conditions") or []
            if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
                name: str = pod["metadata"]["name"]
                return name
        return None

    def lease_holder(self) -> str | None:
        found = self.kubectl("get", "lease", self.component, "-o", "json", check=False)
        if found.returncode != 0:
            return None
        holder: str | None = json.loads(found.stdout)["spec"].get("holderIdentity")
        return holder

    def logs(self) -> str:
        pod = self.ready_pod()
        if pod is None:
            return "(no Ready operator pod)"
        found = self.kubectl("logs", pod, check=False)
        return str(found.stdout)[-4000:] + str(found.stderr)[-1000:]

    def uninstall(self) -> None:
        helm("uninstall", self.name, "--namespace", self.namespace, "--kubeconfig", str(self.kube.kubeconfig))
        # The operator registers its webhook itself (failurePolicy Fail) and leaves it when it stops.
        webhook = f"{self.component}.{self.namespace}.sgs.io"
        self.kube.kubectl("delete", "validatingwebhookconfiguration", webhook, "--ignore-not-found")
        self.kube.kubectl("delete", "namespace", self.namespace, "--wait=false", check=False)


@pytest.fixture(scope="module")
def archive_dsn(postgres: PostgresPart) -> Iterator[str]:
    name = f"archive_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield postgres.dsn_for(name)
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="module")
def release(
    kube: KubePart, operator_dsn: str, archive_dsn: str, nats_server: NatsPart, helm_bridge: BridgeProcess
) -> Iterator[Release]:
    if kube.external:
        pytest.skip("needs the control plane started here: the pod reaches the API server on its loopback port")
    release = Release(kube, operator_dsn, archive_dsn, nats_server.url)
    release.prepare()
    yield release
    release.uninstall()


def test_helm_install_runs_the_operator_which_reconciles_a_run(
    release: Release, example_pipeline: dict[str, Any], tmp_path: Path
) -> None:
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(release.values()))
    started = time.monotonic()
    release.install(values_file)
    installed = time.monotonic()
    pod = wait_for(release.ready_pod, "the chart's operator pod to be Ready", timeout_s=120)
    ready = time.monotonic()
    holder = wait_for(release.lease_holder, "the operator to take its Lease (leading)", timeout_s=120)
    leading = time.monotonic()
    assert holder == pod  # the chart names the Lease's holder after the pod (SGS_OPERATOR_LEADER_IDENTITY)
    print(
        f"\nhelm install {installed - started:.1f} s; install → operator pod Ready {ready - started:.1f} s; "
        f"→ operator leading {leading - started:.1f} s"
    )

    store = tmp_path / "store"
    store.mkdir()
    cluster = Cluster(release.kube, release.namespace, store, release.dsn)
    wait_for(
        lambda: cluster.kubectl("get", "sa", "default", "--ignore-not-found", "-o", "name").stdout,
        "the namespace's default ServiceAccount",
    )
    cluster.apply(cluster.site(name=SITE, max_parallel=20))
    cluster.apply(example_pipeline)
    cluster.apply(cluster.run("from-helm", site=SITE))
    run_started = time.monotonic()
    try:
        status = cluster.wait_phase("from-helm", {"Succeeded", "Failed"}, timeout_s=240)
    except AssertionError as error:
        state = cluster.kubectl("get", "runs,jobs,pods", "-o", "wide", check=False).stdout
        status_now = json.dumps(cluster.run_status("from-helm"), indent=1)[-3000:]
        raise AssertionError(f"{error}\n{state}\nstatus: {status_now}\noperator log:\n{release.logs()}") from None
    assert status["phase"] == "Succeeded", (status, release.logs())
    print(f"Run reconciled to Succeeded by the chart's operator in {time.monotonic() - run_started:.1f} s")


def test_the_chart_operator_acts_only_with_its_service_account(release: Release) -> None:
    """Its RBAC is the chart's: it may create Jobs; it may read a Secret by name (a Site's archive token), never
    list them, and it may not create pods itself."""
    account = f"system:serviceaccount:{release.namespace}:{release.component}"
    can = release.kube.kubectl("auth", "can-i", "create", "jobs", "--as", account, "-n", "default", check=False)
    answers = [
        release.kube.kubectl("auth", "can-i", verb, resource, "--as", account, "-n", "default", check=False)
        for verb, resource in (("list", "secrets"), ("create", "pods"))
    ]
    assert can.stdout.strip() == "yes", can.stdout
    assert [a.stdout.strip() for a in answers] == ["no", "no"], [a.stdout for a in answers]


def test_the_chart_archive_serves_in_production_from_its_secret(release: Release) -> None:
    """Started from the chart's environment alone (production: it refuses to start on a weak token)."""
    wait_for(lambda: release.ready_pod("archive"), "the chart's archive pod to be Ready", timeout_s=120)
    base = f"http://127.0.0.1:{release.archive_port}"

    def ready() -> bool:
        try:
            return httpx.get(f"{base}/readyz", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(ready, "the archive's /readyz", timeout_s=120)
    assert httpx.get(f"{base}/metrics", timeout=5).status_code == 401  # reads need a token in production
    authorised = httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {release.archive_token}"}, timeout=5)
    assert authorised.status_code == 200, authorised.text


def test_helm_upgrade_rolls_the_operator_and_the_new_one_leads(
    release: Release, example_pipeline: dict[str, Any], tmp_path: Path
) -> None:
    """A changed value rolls the Deployment: the old pod goes, the new one takes the Lease and runs a Run."""
    before = release.lease_holder()
    assert before is not None
    values = release.values()
    values["operator"]["reconcileInterval"] = 0.25
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    started = time.monotonic()
    helm(
        "upgrade", release.name, str(CHART), "--namespace", release.namespace, "--values", str(values_file),
        "--kubeconfig", str(release.kube.kubeconfig),
    )  # fmt: skip
    holder = wait_for(
        lambda: (h := release.lease_holder()) not in (None, before) and h, "a new operator pod to lead", timeout_s=180
    )
    print(f"\nhelm upgrade → the new operator pod leading: {time.monotonic() - started:.1f} s")
    pods = [p["metadata"]["name"] for p in release.operator_pods()]
    assert holder in pods
    store = tmp_path / "store"
    store.mkdir()
    cluster = Cluster(release.kube, release.namespace, store, release.dsn)
    # The new leader serves the webhook (failurePolicy Fail) once kopf has started, a moment after the Lease.
    wait_for(
        lambda: cluster.apply(cluster.run("after-upgrade", site=SITE), check=False).returncode == 0,
        "the new operator's webhook to admit a Run",
        timeout_s=120,
    )
    print(f"helm upgrade → admission served again: {time.monotonic() - started:.1f} s")
    assert cluster.wait_phase("after-upgrade", {"Succeeded", "Failed"}, timeout_s=240)["phase"] == "Succeeded"

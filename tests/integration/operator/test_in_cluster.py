"""The operator in a pod's shoes: only the service-account files and environment variables a pod gets (no
kubeconfig), RBAC from operators/sgs_operator/rbac.yaml, webhook and metrics on all interfaces, the webhook's CA
kept in a Secret (the same caBundle after a restart), and `failurePolicy: Fail` while no operator runs."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml
from operator_kit import Cluster, OperatorProcess, wait_for

from sgs.testing import free_port
from sgs.testing.kube import KubePart

pytest_plugins = ["operator_kit"]  # the operator fixtures (a conftest here would clash with mypy)
pytestmark = pytest.mark.integration

RBAC = Path(__file__).resolve().parents[3] / "operators" / "sgs_operator" / "rbac.yaml"
ACCOUNT = "sgs-operator"


def grant(kube: KubePart, namespace: str, suffix: str) -> None:
    """The ServiceAccount, the ClusterRole and Role of rbac.yaml, and their bindings."""
    kube.kubectl("-n", namespace, "create", "serviceaccount", ACCOUNT)
    documents = list(yaml.safe_load_all(RBAC.read_text()))
    for document in documents:
        if document["kind"] == "Role":
            document["metadata"]["namespace"] = namespace
    subject = [{"kind": "ServiceAccount", "name": ACCOUNT, "namespace": namespace}]
    role_ref = {"apiGroup": "rbac.authorization.k8s.io", "name": ACCOUNT}
    documents += [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": f"{ACCOUNT}-{suffix}"},
            "roleRef": {**role_ref, "kind": "ClusterRole"},
            "subjects": subject,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": ACCOUNT, "namespace": namespace},
            "roleRef": {**role_ref, "kind": "Role"},
            "subjects": subject,
        },
    ]
    kube.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(documents))


def pod_files(kube: KubePart, namespace: str, directory: Path) -> Path:
    """What the kubelet mounts at /var/run/secrets/kubernetes.io/serviceaccount: a bound token, CA, namespace."""
    directory.mkdir(parents=True)
    token = kube.kubectl("-n", namespace, "create", "token", ACCOUNT, "--duration=1h").stdout.strip()
    (directory / "token").write_text(token)
    (directory / "ca.crt").write_bytes((kube.pki / "ca.crt").read_bytes())
    (directory / "namespace").write_text(namespace)
    return directory


@pytest.fixture(scope="module")
def home(kube: KubePart) -> Iterator[str]:
    """The operator's own namespace (its Lease and CA Secret live there)."""
    if kube.external:
        pytest.skip("needs the control plane started here: its CA file and a token-issuing loopback API server")
    suffix = uuid.uuid4().hex[:6]
    namespace = f"sgs-system-{suffix}"
    kube.kubectl("create", "namespace", namespace)
    grant(kube, namespace, suffix)
    yield namespace
    kube.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
    kube.kubectl("delete", "clusterrolebinding", f"{ACCOUNT}-{suffix}", "--ignore-not-found", check=False)


@pytest.fixture(scope="module")
def operator(
    kube: KubePart, operator_dsn: str, home: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """`sgs operator` with a pod's environment: no KUBECONFIG, no ~/.kube/config, the service-account files."""
    workdir = tmp_path_factory.mktemp("in-cluster")
    env = {
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": str(kube.port),
        "SGS_OPERATOR_SERVICE_ACCOUNT_DIR": str(pod_files(kube, home, workdir / "serviceaccount")),
        "HOME": str(workdir),  # no ~/.kube/config to fall back on
        "SGS_OPERATOR_WEBHOOK_LISTEN": "0.0.0.0",
        "SGS_OPERATOR_WEBHOOK_PORT": str(free_port()),
        "SGS_OPERATOR_METRICS_ADDRESS": "0.0.0.0",
    }
    proc = OperatorProcess(kube, operator_dsn, workdir, env=env, unset=("KUBECONFIG",))
    proc.start()
    yield proc
    proc.stop()
    proc.delete_webhook()


def listening(proc: OperatorProcess) -> set[tuple[str, int]]:
    assert proc.proc is not None
    return {
        (c.laddr.ip, c.laddr.port) for c in psutil.Process(proc.proc.pid).net_connections("tcp") if c.status == "LISTEN"
    }


def webhook_config(kube: KubePart, proc: OperatorProcess) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(
        kube.kubectl("get", "validatingwebhookconfiguration", proc.webhook_name, "-o", "json").stdout
    )
    return found


def test_a_run_succeeds_on_the_pods_service_account_alone(
    kube: KubePart,
    operator: OperatorProcess,
    home: str,
    served: Cluster,
    example_pipeline: dict[str, Any],
) -> None:
    served.apply(example_pipeline)
    served.apply(served.run("in-cluster"))
    assert served.wait_phase("in-cluster", {"Succeeded", "Failed"}, timeout_s=180)["phase"] == "Succeeded"
    lease = json.loads(kube.kubectl("-n", home, "get", "lease", operator.name, "-o", "json").stdout)
    assert lease["spec"]["holderIdentity"] == operator.name
    assert "in-cluster" in operator.log.read_text()


def test_webhook_and_metrics_listen_on_the_configured_address(kube: KubePart, operator: OperatorProcess) -> None:
    webhook_port = int(operator.extra_env["SGS_OPERATOR_WEBHOOK_PORT"])
    sockets = listening(operator)
    assert ("0.0.0.0", webhook_port) in sockets and ("0.0.0.0", operator.metrics_port) in sockets, sockets
    url = webhook_config(kube, operator)["webhooks"][0]["clientConfig"]["url"]
    assert url.startswith(f"https://127.0.0.1:{webhook_port}/")  # what the API server dials: webhook_host


def test_the_webhook_ca_is_kept_in_a_secret_across_restarts(
    kube: KubePart, operator: OperatorProcess, home: str
) -> None:
    before = webhook_config(kube, operator)["webhooks"][0]["clientConfig"]["caBundle"]
    secret = json.loads(kube.kubectl("-n", home, "get", "secret", "sgs-operator-webhook-ca", "-o", "json").stdout)
    assert base64.b64decode(before) == base64.b64decode(secret["data"]["ca.crt"])
    operator.stop()
    operator.start()
    assert webhook_config(kube, operator)["webhooks"][0]["clientConfig"]["caBundle"] == before


def test_an_invalid_run_is_refused_while_no_operator_runs(cluster: Cluster, operator: OperatorProcess) -> None:
    """failurePolicy Fail, and the webhook left in place: nothing is admitted unchecked while the operator is down."""
    assert {w["failurePolicy"] for w in webhook_config(cluster.kube, operator)["webhooks"]} == {"Fail"}
    invalid = cluster.run("two-sources")
    invalid["spec"]["inputs"]["images"] = {"uri": "/data/a.json", "uris": ["/data/b.json"]}
    operator.kill9()
    try:
        result = cluster.apply(invalid, check=False)
        assert result.returncode != 0
        assert "failed calling webhook" in result.stderr
        assert cluster.kubectl("get", "runs", "two-sources", check=False).returncode != 0
    finally:
        operator.start()
    wait_for(lambda: cluster.apply(cluster.run("valid-again"), check=False).returncode == 0, "admission back")

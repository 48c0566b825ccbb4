"""`sgs trigger` as its ServiceAccount would run it, with exactly services/trigger/rbac.yaml: it watches
Pipelines and Sites and creates the Run of a complete group; the role lets it change nothing else."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from trigger_kit import Archive, Namespace, TriggerProcess, archive_service, eventually, pipeline

from sgs.testing.kube import KubePart
from sgs.testing.nats import NatsPart
from sgs.testing.postgres import PostgresPart

pytestmark = pytest.mark.integration

RBAC = Path(__file__).resolve().parents[3] / "services" / "trigger" / "rbac.yaml"
ACCOUNT = "sgs-trigger"


@pytest.fixture(scope="module")
def account(kube: KubePart, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A ServiceAccount bound to the ClusterRole of rbac.yaml, and a kubeconfig holding its token."""
    if kube.external:
        pytest.skip("needs the control plane started here: its CA and a token-issuing API server")
    suffix = uuid.uuid4().hex[:6]
    home = f"sgs-trigger-{suffix}"
    kube.kubectl("create", "namespace", home)
    kube.kubectl("-n", home, "create", "serviceaccount", ACCOUNT)
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": f"{ACCOUNT}-{suffix}"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": ACCOUNT},
        "subjects": [{"kind": "ServiceAccount", "name": ACCOUNT, "namespace": home}],
    }
    kube.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([*yaml.safe_load_all(RBAC.read_text()), binding]))
    token = kube.kubectl("-n", home, "create", "token", ACCOUNT, "--duration=1h").stdout.strip()
    config: dict[str, Any] = yaml.safe_load(kube.kubeconfig.read_text())
    config["users"] = [{"name": "sgs-admin", "user": {"token": token}}]
    path = tmp_path_factory.mktemp("account") / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    yield f"system:serviceaccount:{home}:{ACCOUNT}", path
    kube.kubectl("delete", "namespace", home, "--wait=false", check=False)
    kube.kubectl("delete", "clusterrolebinding", f"{ACCOUNT}-{suffix}", "--ignore-not-found", check=False)


@pytest.fixture(scope="module")
def archive(postgres: PostgresPart, nats_server: NatsPart) -> Iterator[Archive]:
    with archive_service(postgres, nats_server.url) as archive:
        archive.dataset_type("raw", ["instrument", "exposure"])
        yield archive


@pytest.fixture(scope="module")
def trigger(
    kube: KubePart,
    nats_server: NatsPart,
    archive: Archive,
    account: tuple[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[TriggerProcess]:
    service = TriggerProcess(kube, nats_server.url, archive.url, tmp_path_factory.mktemp("trigger"))
    service.env["KUBECONFIG"] = str(account[1])
    service.start()
    yield service
    service.stop()


def test_the_service_account_of_rbac_yaml_creates_the_run(
    kube: KubePart, trigger: TriggerProcess, archive: Archive
) -> None:
    ns = Namespace(kube, f"trig-rbac-{uuid.uuid4().hex[:6]}")
    try:
        ns.site("site-a")
        rule = {
            "name": "per-exposure",
            "input": "exposures",
            "datasetType": "raw",
            "groupBy": ["instrument", "exposure"],
            "complete": {"count": 1},
            "collections": [f"raw/{ns.name}"],
        }
        before = trigger.log.read_text().count("serving ")
        ns.create("pipelines", pipeline("nir", [rule]))
        eventually(lambda: trigger.log.read_text().count("serving ") > before, "the service to see the Pipeline")

        ids = archive.ingest("raw", f"raw/{ns.name}", [{"instrument": "NISP", "exposure": 1}], ["site-a"])

        runs = eventually(ns.runs, "the Run, created with the ServiceAccount's token")
        assert runs[0]["spec"]["inputs"]["exposures"]["datasetIds"] == ids
    finally:
        ns.close()


@pytest.mark.parametrize(
    ("verb", "resource", "allowed"),
    [
        ("create", "runs.sgs.io", "yes"),
        ("watch", "pipelines.sgs.io", "yes"),
        ("list", "sites.sgs.io", "yes"),
        ("delete", "runs.sgs.io", "no"),
        ("patch", "runs.sgs.io", "no"),
        ("update", "pipelines.sgs.io", "no"),
        ("get", "secrets", "no"),
        ("create", "jobs.batch", "no"),
    ],
)
def test_the_role_allows_what_the_service_needs_and_nothing_more(
    kube: KubePart, account: tuple[str, Path], verb: str, resource: str, allowed: str
) -> None:
    answer = kube.kubectl("auth", "can-i", verb, resource, "--all-namespaces", f"--as={account[0]}", check=False)
    assert answer.stdout.strip() == allowed, answer.stdout + answer.stderr

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from sgs.testing import wait_until
from sgs.testing.binaries import pinned_version
from sgs.testing.kube import KubePart, default_crd_files

pytestmark = pytest.mark.integration

WIDGET_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.smoke.sgs.dev"},
    "spec": {
        "group": "smoke.sgs.dev",
        "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["size"],
                                "properties": {"size": {"type": "integer", "minimum": 1}},
                            }
                        },
                    }
                },
            }
        ],
    },
}


@pytest.fixture
def namespace(kube: KubePart) -> Iterator[str]:
    name = f"smoke-{uuid.uuid4().hex[:8]}"
    kube.kubectl("create", "namespace", name)
    yield name
    kube.kubectl("delete", "namespace", name, "--wait=false", check=False)


def get_json(kube: KubePart, *args: str) -> Any:
    return json.loads(kube.kubectl("get", *args, "-o", "json").stdout)


def test_kubectl_version_reports_the_pinned_server(kube: KubePart) -> None:
    version = json.loads(kube.kubectl("version", "-o", "json").stdout)
    server = version["serverVersion"]["gitVersion"]
    if kube.external:
        assert re.fullmatch(r"v1\.\d+\.\d+.*", server)
    else:
        assert server == pinned_version("kube-apiserver")
        assert re.fullmatch(r"v1\.34\.\d+", server)


def job_manifest(name: str, namespace: str) -> str:
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    # Matches no node, so even on a real cluster the pod can only be Pending.
                    "nodeSelector": {"sgs.dev/smoke-no-such-node": "true"},
                    "containers": [{"name": "main", "image": "busybox", "command": ["true"]}],
                }
            },
        },
    }
    return yaml.safe_dump(job)


def job_pods(kube: KubePart, namespace: str, job: str) -> list[dict[str, Any]]:
    pods: list[dict[str, Any]] = get_json(kube, "pods", "-n", namespace, "-l", f"job-name={job}")["items"]
    return pods


def test_job_makes_a_pod_that_the_scheduler_cannot_place(kube: KubePart, namespace: str) -> None:
    kube.kubectl("apply", "-f", "-", input=job_manifest("smoke", namespace))
    wait_until(lambda: len(job_pods(kube, namespace, "smoke")) == 1, what="the Job's pod", timeout_s=60)
    pod = job_pods(kube, namespace, "smoke")[0]["metadata"]["name"]

    def failed_scheduling() -> bool:
        selector = f"reason=FailedScheduling,involvedObject.name={pod}"
        return bool(get_json(kube, "events", "-n", namespace, "--field-selector", selector)["items"])

    wait_until(failed_scheduling, what=f"a FailedScheduling event for {pod}", timeout_s=60)
    status = get_json(kube, "pod", "-n", namespace, pod)["status"]
    scheduled = [c for c in status["conditions"] if c["type"] == "PodScheduled"]
    assert status["phase"] == "Pending"
    assert [(c["status"], c["reason"]) for c in scheduled] == [("False", "Unschedulable")]


def test_deleting_a_job_garbage_collects_its_pods(kube: KubePart, namespace: str) -> None:
    kube.kubectl("apply", "-f", "-", input=job_manifest("doomed", namespace))
    wait_until(lambda: len(job_pods(kube, namespace, "doomed")) == 1, what="the Job's pod", timeout_s=60)
    kube.kubectl("delete", "job", "doomed", "-n", namespace, "--cascade=background", "--wait=false")
    wait_until(lambda: not job_pods(kube, namespace, "doomed"), what="the pods to be collected", timeout_s=60)


def test_custom_resource_with_an_invalid_field_is_rejected(kube: KubePart, namespace: str, tmp_path: Path) -> None:
    crd_file = tmp_path / "widget-crd.yaml"
    crd_file.write_text(yaml.safe_dump(WIDGET_CRD))
    assert kube.install_crds([crd_file]) == ["widgets.smoke.sgs.dev"]

    def widget(size: object) -> str:
        body = {"apiVersion": "smoke.sgs.dev/v1", "kind": "Widget", "metadata": {"name": f"w-{size}"}}
        return yaml.safe_dump({**body, "spec": {"size": size}})

    kube.kubectl("apply", "-n", namespace, "-f", "-", input=widget(3))
    wrong_type = kube.kubectl("apply", "-n", namespace, "-f", "-", input=widget("big"), check=False)
    too_small = kube.kubectl("apply", "-n", namespace, "-f", "-", input=widget(0), check=False)
    assert wrong_type.returncode != 0 and "spec.size" in wrong_type.stderr
    assert too_small.returncode != 0 and "spec.size" in too_small.stderr
    names = [w["metadata"]["name"] for w in get_json(kube, "widgets", "-n", namespace)["items"]]
    assert names == ["w-3"]


@pytest.mark.parametrize("crd_file", default_crd_files(), ids=lambda p: p.name)
def test_sgs_crds_are_installed_and_established(kube: KubePart, crd_file: Path) -> None:
    for doc in yaml.safe_load_all(crd_file.read_text()):
        if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
            crd = get_json(kube, "crd", doc["metadata"]["name"])
            established = [c for c in crd["status"]["conditions"] if c["type"] == "Established"]
            assert [c["status"] for c in established] == ["True"]


def test_an_existing_cluster_is_used_as_is(kube: KubePart, tmp_path: Path) -> None:
    """What the `kube` fixture does when KUBECONFIG is set: start nothing, install CRDs with kubectl."""
    crd = {**WIDGET_CRD, "metadata": {"name": "gadgets.smoke.sgs.dev"}}
    crd["spec"] = {**WIDGET_CRD["spec"], "names": {"kind": "Gadget", "plural": "gadgets", "singular": "gadget"}}
    crd_file = tmp_path / "gadget-crd.yaml"
    crd_file.write_text(yaml.safe_dump(crd))
    with KubePart.existing(kube.kubeconfig, crds=[crd_file]) as existing:
        assert existing.external and existing.server == kube.server and not existing.processes
        gadget = get_json(existing, "crd", "gadgets.smoke.sgs.dev")
    established = [c["status"] for c in gadget["status"]["conditions"] if c["type"] == "Established"]
    assert established == ["True"]
    assert kube.kubeconfig.is_file()  # leaving the existing cluster touched nothing of its files


def test_the_stack_kubectl_keeps_a_digits_only_label_a_string(kube: KubePart, namespace: str) -> None:
    """`sgs challenge` labels its objects with a random hex id; one like 065839 once reached the API server as a
    number (kubectl reads YAML 1.1, where PyYAML had left it unquoted) and the apply was refused."""
    from sgs.demo.stack import Kubectl

    kubectl = Kubectl(str(kube.kubeconfig), namespace)
    labels = {"sgs.io/challenge": "065839", "sgs.io/other": "1e5832"}
    kubectl.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ids", "labels": labels}})
    assert get_json(kube, "configmap", "ids", "-n", namespace)["metadata"]["labels"] == labels

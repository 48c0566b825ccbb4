"""The generated CRDs on a real API server: examples are accepted, bad fields are rejected by name,
and `kubectl get` shows the printer columns."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from sgs.testing.kube import KubePart

pytestmark = pytest.mark.integration
EXAMPLES = Path(__file__).parent.parent.parent / "crds" / "examples"


@pytest.fixture
def namespace(kube: KubePart) -> Iterator[str]:
    name = f"crd-{uuid.uuid4().hex[:8]}"
    kube.kubectl("create", "namespace", name)
    yield name
    kube.kubectl("delete", "namespace", name, "--wait=false", check=False)


def test_examples_are_accepted(kube: KubePart, namespace: str) -> None:
    for path in sorted(EXAMPLES.glob("*.yaml")):
        kube.kubectl("apply", "-n", namespace, "-f", str(path))
    names = kube.kubectl("get", "sites,pipelines,runs,dataplacements", "-n", namespace, "-o", "name").stdout.split()
    assert {f"site.sgs.io/site-{x}" for x in "abc"} <= set(names) and "pipeline.sgs.io/parallel-split" in names
    assert "run.sgs.io/parallel-split-001" in names and "dataplacement.sgs.io/wide-2027q1" in names


def test_printer_columns(kube: KubePart, namespace: str) -> None:
    kube.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / "run-parallel-split.yaml"))
    header = kube.kubectl("get", "runs", "-n", namespace).stdout.splitlines()[0].split()
    assert header == ["NAME", "PIPELINE", "SITE", "PHASE", "DONE", "AGE"]
    wide = kube.kubectl("get", "sgsrun", "-n", namespace, "-o", "wide").stdout.splitlines()[0].split()
    assert "PRIORITY" in wide


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"priority": 5000}, "spec.priority"),
        ({"maxParallel": 0}, "spec.maxParallel"),
        ({"suspend": "maybe"}, "spec.suspend"),
        ({"inputs": {"images": {"uri": 3}}}, "spec.inputs.images.uri"),
        ({"walltime": 3}, "walltime"),
    ],
)
def test_invalid_run_fields_are_rejected_by_name(
    kube: KubePart, namespace: str, patch: dict[str, object], field: str
) -> None:
    run = yaml.safe_load((EXAMPLES / "run-parallel-split.yaml").read_text())
    run["metadata"]["name"] = f"bad-{uuid.uuid4().hex[:6]}"
    run["spec"].update(patch)
    result = kube.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(run), check=False)
    assert result.returncode != 0
    assert field in result.stderr, result.stderr
    assert run["metadata"]["name"] not in kube.kubectl("get", "runs", "-n", namespace, "-o", "name").stdout


def test_invalid_executable_resources_are_rejected(kube: KubePart, namespace: str) -> None:
    pipeline = yaml.safe_load((EXAMPLES / "pipeline-parallel-split.yaml").read_text())
    pipeline["spec"]["executables"][0]["resources"]["cores"] = 0
    result = kube.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(pipeline), check=False)
    assert result.returncode != 0
    assert "spec.executables[0].resources.cores" in result.stderr, result.stderr

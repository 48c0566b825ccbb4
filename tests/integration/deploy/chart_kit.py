"""The Helm chart under test: helm (built from its Go module by tools/build-binaries.sh) and what it renders."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from sgs.testing.base import require_binary
from sgs.testing.binaries import BUILD_HINT, binary_path

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "sgs"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
SITES = sorted((REPO / "gitops" / "sites").glob("*/values.yaml"))
RELEASE = "sgs"
NAMESPACE = "sgs-system"


def helm_binary() -> Path:
    return require_binary(binary_path("helm"), "helm", BUILD_HINT)


def helm(*args: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(helm_binary()), *args], capture_output=True, text=True, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
    return result


def template_text(*values: Path, namespace: str = NAMESPACE, sets: tuple[str, ...] = ()) -> str:
    args = ["template", RELEASE, str(CHART), "--namespace", namespace]
    for path in values:
        args += ["--values", str(path)]
    for item in sets:
        args += ["--set", item]
    return helm(*args).stdout


def documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def render(*values: Path, namespace: str = NAMESPACE, sets: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    return documents(template_text(*values, namespace=namespace, sets=sets))


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    for doc in docs:
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    raise AssertionError(f"no {kind} {name} among {sorted((d['kind'], d['metadata']['name']) for d in docs)}")


def pod_specs(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(workload name, pod spec) of every Deployment, StatefulSet, DaemonSet and Job rendered."""
    kinds = {"Deployment", "StatefulSet", "DaemonSet", "Job"}
    return [(d["metadata"]["name"], d["spec"]["template"]["spec"]) for d in docs if d["kind"] in kinds]

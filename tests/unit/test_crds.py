"""The committed CRDs are exactly what the models generate, and each is a structural schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from sgs.crds import crd_for, stale_crds
from sgs.model import CUSTOM_RESOURCES, KubeObject, Pipeline, Run, Site

ROOT = Path(__file__).parent.parent.parent


def test_committed_crds_match_the_models() -> None:
    stale = stale_crds(ROOT / "crds")
    assert not stale, f"regenerate with `sgs crds`: {stale}"


def _untyped_nodes(node: dict[str, Any], path: str) -> list[str]:
    bad = [] if "type" in node else [path]
    for name, sub in node.get("properties", {}).items():
        bad += _untyped_nodes(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        bad += _untyped_nodes(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        bad += _untyped_nodes(node["additionalProperties"], f"{path}{{}}")
    return bad


@pytest.mark.parametrize("resource", CUSTOM_RESOURCES, ids=lambda r: r.plural)
def test_crd_schema_is_structural(resource: type[KubeObject]) -> None:
    crd = crd_for(resource)
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert _untyped_nodes(schema["properties"]["spec"], "spec") == []
    assert _untyped_nodes(schema["properties"]["status"], "status") == []
    text = yaml.safe_dump(crd)
    for forbidden in ("$ref", "anyOf", "allOf", "title:"):
        assert forbidden not in text
    assert crd["spec"]["versions"][0]["subresources"] == {"status": {}}


def test_run_printer_columns() -> None:
    columns = crd_for(Run)["spec"]["versions"][0]["additionalPrinterColumns"]
    assert [c["name"] for c in columns] == ["Pipeline", "Site", "Phase", "Done", "Priority", "Age"]


def test_schema_carries_constraints_and_descriptions() -> None:
    spec = crd_for(Pipeline)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    resources = spec["properties"]["executables"]["items"]["properties"]["resources"]
    assert resources["properties"]["cores"]["minimum"] == 1
    assert resources["properties"]["ram"]["exclusiveMinimum"] is True
    assert "GiB" in resources["properties"]["ram"]["description"]
    site = crd_for(Site)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert site["properties"]["compute"]["properties"]["kind"]["enum"] == ["kubernetes", "slurm", "local", "cluster"]
    assert "storage" in site["required"] and "capacity" in site["required"]


@pytest.mark.parametrize("path", sorted((ROOT / "crds" / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_examples_validate_against_the_models(path: Path) -> None:
    kinds = {r.model_fields["kind"].default: r for r in CUSTOM_RESOURCES}
    for doc in yaml.safe_load_all(path.read_text()):
        kinds[doc["kind"]].model_validate(doc)

"""CustomResourceDefinitions generated from the pydantic models (the models are the single source of truth).

Pydantic's JSON Schema is turned into a Kubernetes *structural* OpenAPI v3 schema: references inlined,
``anyOf [X, null]`` folded into ``nullable``, JSON-Schema-2020 exclusive bounds rewritten in the OpenAPI 3.0
form, titles and ``additionalProperties: false`` dropped (the API server prunes and, with kubectl's default
strict field validation, rejects unknown fields).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from sgs.model import CUSTOM_RESOURCES, GROUP, VERSION, KubeObject

_DROP = {"title", "default", "examples"}


def crd_for(resource: type[KubeObject]) -> dict[str, Any]:
    kind = resource.model_fields["kind"].default
    spec_type = resource.model_fields["spec"].annotation
    status_field = resource.model_fields["status"]
    schema = resource.model_json_schema(by_alias=True, mode="validation")
    defs = schema.get("$defs", {})
    props = schema["properties"]
    spec_schema = _structural(props["spec"], defs)
    status_schema = _structural(_strip_null(props["status"]), defs)
    status_schema.pop("nullable", None)
    assert spec_type is not None and status_field is not None
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{resource.plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": resource.plural,
                "singular": kind.lower(),
                "shortNames": list(resource.short_names),
                "categories": list(resource.categories),
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [_column(c) for c in resource.printer_columns],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": (resource.__doc__ or kind).strip().splitlines()[0],
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


def _column(column: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": column.name, "type": column.type, "jsonPath": column.json_path}
    if column.description:
        out["description"] = column.description
    if column.priority:
        out["priority"] = column.priority
    return out


def _strip_null(node: dict[str, Any]) -> dict[str, Any]:
    options = node.get("anyOf")
    if options and len(options) == 2 and {"type": "null"} in options:
        other = next(o for o in options if o != {"type": "null"})
        merged = {**{k: v for k, v in node.items() if k != "anyOf"}, **other, "nullable": True}
        return merged
    return node


def _structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    node = _strip_null(node)
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        extra = {k: v for k, v in node.items() if k != "$ref"}
        return _structural({**target, **extra}, defs)
    if "allOf" in node and len(node["allOf"]) == 1:
        extra = {k: v for k, v in node.items() if k != "allOf"}
        return _structural({**node["allOf"][0], **extra}, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "properties":
            out[key] = {name: _structural(sub, defs) for name, sub in value.items()}
        elif key == "items":
            out[key] = _structural(value, defs)
        elif key == "additionalProperties":
            if isinstance(value, dict):
                out[key] = _structural(value, defs)
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            out[bound] = value
            out[key] = True
        elif key == "anyOf":
            raise ValueError(f"union type not expressible in a structural schema: {value}")
        else:
            out[key] = value
    if "properties" in out and "type" not in out:
        out["type"] = "object"
    return out


def render(resource: type[KubeObject]) -> str:
    return yaml.safe_dump(crd_for(resource), sort_keys=False, width=120)


def crd_path(directory: Path, resource: type[KubeObject]) -> Path:
    return directory / f"{resource.plural}.{GROUP}.yaml"


def write_crds(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for resource in CUSTOM_RESOURCES:
        path = crd_path(directory, resource)
        path.write_text(render(resource))
        written.append(path)
    return written


def stale_crds(directory: Path) -> list[Path]:
    """CRD files that differ from what the models generate (missing files count)."""
    stale = []
    for resource in CUSTOM_RESOURCES:
        path = crd_path(directory, resource)
        if not path.is_file() or path.read_text() != render(resource):
            stale.append(path)
    return stale

"""Finding a pipeline from a command-line reference and turning it into a manifest.

A reference is ``package.module:function``, ``path/to/file.py:function``, a module or file holding exactly one
``@pipeline``, or a Pipeline manifest (``.yaml``/``.yml``/``.json``).
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from pathlib import Path
from typing import Any

import yaml

from sgs.dsl.package import DslError
from sgs.dsl.trace import PipelineFunction
from sgs.model.base import ObjectMeta
from sgs.model.pipeline import Pipeline, PipelineSpec

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


def load_pipeline(reference: str) -> Pipeline:
    """The Pipeline a reference names: compiled from Python, or read from a manifest file."""
    path = Path(reference)
    if path.suffix in MANIFEST_SUFFIXES:
        return read_manifest(path)
    fn = find_pipeline_function(reference)
    return Pipeline(metadata=ObjectMeta(name=k8s_name(fn.name)), spec=fn.spec())


def find_pipeline_function(reference: str) -> PipelineFunction:
    target, _, attr = reference.partition(":")
    module = _import(target)
    if attr:
        fn = getattr(module, attr, None)
        if not isinstance(fn, PipelineFunction):
            raise DslError(f"{reference}: {attr!r} is not a @pipeline function in {target}")
        return fn
    found = [v for v in vars(module).values() if isinstance(v, PipelineFunction)]
    if len(found) != 1:
        names = sorted(f.name for f in found)
        raise DslError(f"{reference}: expected exactly one @pipeline, found {names or 'none'}; name one with :func")
    return found[0]


def _import(target: str) -> Any:
    if target.endswith(".py") or "/" in target:
        path = Path(target).resolve()
        if not path.is_file():
            raise DslError(f"{target}: no such pipeline file")
        name = re.sub(r"\W", "_", path.stem)
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise DslError(f"{target}: cannot be imported")
        module = importlib.util.module_from_spec(spec)
        # The pipeline's own directory holds its package definition (``from ialtest_package import ...``).
        sys.path.insert(0, str(path.parent))
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as err:
        raise DslError(f"{target}: no such module ({err})") from err


def k8s_name(name: str) -> str:
    """A DNS-1123 object name from a Python identifier (``nir_pipeline`` → ``nir-pipeline``)."""
    text = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    return text[:253] or "pipeline"


def read_manifest(path: Path) -> Pipeline:
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict) or data.get("kind") != "Pipeline":
        raise DslError(f"{path}: not a Pipeline manifest")
    return Pipeline.model_validate(data)


def dump_manifest(obj: Pipeline) -> str:
    """Deterministic YAML: field order follows the model, defaults omitted, so the text round-trips exactly."""
    data = obj.model_dump(mode="json", by_alias=True, exclude_none=True, exclude_defaults=True)
    data = {"apiVersion": obj.api_version, "kind": obj.kind, **data}
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=120, allow_unicode=True)


def spec_from_manifest_text(text: str) -> PipelineSpec:
    return Pipeline.model_validate(yaml.safe_load(text)).spec

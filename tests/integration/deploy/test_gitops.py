"""gitops/: the Argo CD ApplicationSet and the Flux HelmRelease + per-cluster overlays, one release per data centre.

Neither Argo CD's nor Flux's CRDs are installed here, so both are checked against minimal schemas of our own
(pydantic models, unknown fields refused) covering the fields these files use — not the projects' full
schemas. Then every Site's values go through the chart the way each tool would pass them (the ApplicationSet's
valueFiles with the element substituted; the overlay's HelmRelease valuesFiles after `kubectl kustomize`): both
give the same manifests, and two Sites' values differ only in Site keys."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml
from chart_kit import CHART, REPO, SITES, documents, helm
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from sgs.testing.base import require_binary
from sgs.testing.binaries import BUILD_HINT, kubectl_path

pytestmark = pytest.mark.integration

GITOPS = REPO / "gitops"
SITE_KEYS = {"site", "bridges"}  # what may differ between data centres (values.yaml's "Site keys")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)


# --- Argo CD ApplicationSet (argoproj.io/v1alpha1), the fields used here --------------------------------------
class HelmSource(Strict):
    release_name: str
    value_files: list[str]


class Source(Strict):
    repo_url: str = Field(alias="repoURL", pattern=r"^https://")
    target_revision: str
    path: str | None = None
    ref: str | None = None
    helm: HelmSource | None = None


class Destination(Strict):
    server: str
    namespace: str


class Automated(Strict):
    prune: bool
    self_heal: bool


class SyncPolicy(Strict):
    automated: Automated
    sync_options: list[str]


class AppSpec(Strict):
    project: str
    sources: list[Source] = Field(min_length=1)
    destination: Destination
    sync_policy: SyncPolicy


class TemplateMeta(Strict):
    name: str
    labels: dict[str, str] = {}


class AppTemplate(Strict):
    metadata: TemplateMeta
    spec: AppSpec


class ListGenerator(Strict):
    elements: list[dict[str, str]] = Field(min_length=1)


class Generator(Strict):
    list: ListGenerator


class AppSetSpec(Strict):
    go_template: bool
    go_template_options: list[str]
    generators: list[Generator] = Field(min_length=1, max_length=1)
    template: AppTemplate


class Meta(Strict):
    name: str
    namespace: str
    labels: dict[str, str] = {}


class ApplicationSet(Strict):
    api_version: Literal["argoproj.io/v1alpha1"]
    kind: Literal["ApplicationSet"]
    metadata: Meta
    spec: AppSetSpec


# --- Flux (helm.toolkit.fluxcd.io/v2 HelmRelease, source.toolkit.fluxcd.io/v1 GitRepository) --------------------
class SourceRef(Strict):
    kind: Literal["GitRepository", "HelmRepository", "OCIRepository"]
    name: str
    namespace: str


class ChartSpec(Strict):
    chart: str
    reconcile_strategy: Literal["ChartVersion", "Revision"]
    source_ref: SourceRef
    values_files: list[str]


class Chart(Strict):
    spec: ChartSpec


class CrdPolicy(Strict):
    crds: Literal["Skip", "Create", "CreateReplace"]
    create_namespace: bool | None = None


class HelmReleaseSpec(Strict):
    interval: str = Field(pattern=r"^[0-9]+(s|m|h)$")
    release_name: str
    chart: Chart
    install: CrdPolicy
    upgrade: CrdPolicy


class HelmRelease(Strict):
    api_version: Literal["helm.toolkit.fluxcd.io/v2"]
    kind: Literal["HelmRelease"]
    metadata: Meta
    spec: HelmReleaseSpec


class GitRef(Strict):
    branch: str


class GitRepositorySpec(Strict):
    interval: str
    url: str = Field(pattern=r"^https://")
    ref: GitRef


class GitRepository(Strict):
    api_version: Literal["source.toolkit.fluxcd.io/v1"]
    kind: Literal["GitRepository"]
    metadata: Meta
    spec: GitRepositorySpec


# ------------------------------------------------------------------------------------------------------ helpers
def application_set() -> ApplicationSet:
    return ApplicationSet.model_validate(yaml.safe_load((GITOPS / "argocd" / "applicationset.yaml").read_text()))


def substitute(text: str, element: dict[str, str]) -> str:
    """Argo CD's goTemplate for the `{{.key}}` form these files use; a key the element lacks is an error."""
    return re.sub(r"\{\{\s*\.(\w+)\s*\}\}", lambda m: element[m.group(1)], text)


def argo_value_files(element: dict[str, str]) -> list[Path]:
    """The chart's values files for one element: `$values/` is the root of the `ref: values` source."""
    app = application_set().spec.template.spec
    chart_source = next(s for s in app.sources if s.helm is not None)
    assert chart_source.helm is not None and chart_source.path == "charts/sgs"
    assert any(s.ref == "values" and s.repo_url == chart_source.repo_url for s in app.sources)
    return [REPO / substitute(f, element).removeprefix("$values/") for f in chart_source.helm.value_files]


def flux_objects(site: str) -> list[dict[str, Any]]:
    kubectl = require_binary(kubectl_path(), "kubectl", BUILD_HINT)
    built = subprocess.run(
        [str(kubectl), "kustomize", str(GITOPS / "flux" / "clusters" / site)], capture_output=True, text=True
    )
    assert built.returncode == 0, built.stderr
    return documents(built.stdout)


def flux_release(site: str) -> HelmRelease:
    objects = flux_objects(site)
    release = HelmRelease.model_validate(next(o for o in objects if o["kind"] == "HelmRelease"))
    for other in objects:
        if other["kind"] == "GitRepository":
            GitRepository.model_validate(other)
    return release


def template(release: str, namespace: str, files: list[Path]) -> str:
    args = ["template", release, str(CHART), "--namespace", namespace]
    for path in files:
        assert path.is_file(), path
        args += ["--values", str(path)]
    return helm(*args).stdout


def site_names() -> list[str]:
    return [path.parent.name for path in SITES]


# -------------------------------------------------------------------------------------------------------- tests
def test_the_application_set_has_one_element_per_site() -> None:
    elements = application_set().spec.generators[0].list.elements
    assert sorted(e["site"] for e in elements) == site_names()
    assert all(e["server"].startswith("https://") for e in elements)


def test_the_minimal_schemas_refuse_a_misspelled_field() -> None:
    """The schemas can fail: an unknown field in the ApplicationSet or the HelmRelease is refused."""
    document = yaml.safe_load((GITOPS / "argocd" / "applicationset.yaml").read_text())
    document["spec"]["template"]["spec"]["syncPolicy"]["automatd"] = {}
    with pytest.raises(ValueError, match="automatd"):
        ApplicationSet.model_validate(document)
    release = next(o for o in flux_objects(site_names()[0]) if o["kind"] == "HelmRelease")
    release["spec"]["chart"]["spec"]["valueFiles"] = []  # Flux spells it valuesFiles
    with pytest.raises(ValueError, match="valueFiles"):
        HelmRelease.model_validate(release)


@pytest.mark.parametrize("site", [p.parent.name for p in SITES])
def test_argo_and_flux_render_the_same_release_for_a_site(site: str) -> None:
    element = next(e for e in application_set().spec.generators[0].list.elements if e["site"] == site)
    app = application_set().spec.template.spec
    chart_source = next(s for s in app.sources if s.helm is not None)
    assert chart_source.helm is not None
    argo = template(chart_source.helm.release_name, app.destination.namespace, argo_value_files(element))

    release = flux_release(site)
    assert release.metadata.labels == {"sgs.io/site": site}
    spec = release.spec.chart.spec
    assert spec.chart == "./charts/sgs" and spec.values_files[-1] == f"gitops/sites/{site}/values.yaml"
    flux = template(release.spec.release_name, release.metadata.namespace, [REPO / f for f in spec.values_files])
    assert argo == flux
    labelled = {d["metadata"].get("labels", {}).get("sgs.io/site") for d in documents(argo)}
    assert labelled == {site}


def test_sites_differ_only_in_site_keys() -> None:
    values = {path.parent.name: yaml.safe_load(path.read_text()) for path in SITES}
    first, *others = values
    assert others, "at least two data centres"
    for other in others:
        keys = set(values[first]) | set(values[other])
        differing = {k for k in keys if values[first].get(k) != values[other].get(k)}
        assert differing <= SITE_KEYS, (first, other, differing - SITE_KEYS)
        assert values[first]["site"]["name"] != values[other]["site"]["name"]


def test_the_chart_ci_values_per_data_centre_are_the_gitops_ones() -> None:
    for path in SITES:
        assert (CHART / "ci" / f"{path.parent.name}-values.yaml").read_text() == path.read_text(), path

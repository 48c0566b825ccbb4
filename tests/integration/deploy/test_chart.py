"""charts/sgs: `helm lint --strict`, `helm template` for every ci/*-values.yaml (byte-identical between runs),
misspelled keys refused at every level, RBAC equal to the deployables' own rbac.yaml files, the restricted Pod
Security Standard, and a server-side dry run of every rendering on the real kube-apiserver (with the namespace
set to warn on restricted violations, so the API server's PodSecurity admission judges each pod template)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_kit import (
    CHART,
    CI_VALUES,
    RELEASE,
    REPO,
    documents,
    find,
    helm,
    pod_specs,
    render,
    template_text,
)

from sgs.chart import stale_chart_files
from sgs.testing.kube import KubePart

pytestmark = pytest.mark.integration

RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim"}
RESTRICTED_VOLUMES |= {"projected", "secret"}
MONITORING = "monitoring.coreos.com/v1"


def test_the_ci_values_cover_minimal_ha_metrics_and_every_data_centre() -> None:
    names = {path.name.removesuffix("-values.yaml") for path in CI_VALUES}
    sites = {path.parent.name for path in (REPO / "gitops" / "sites").glob("*/values.yaml")}
    assert {"minimal", "ha", "metrics"} <= names and sites and sites <= names, (names, sites)


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_helm_lint_strict(values: Path) -> None:
    result = helm("lint", "--strict", str(CHART), "--values", str(values), check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_template_is_byte_identical_between_runs(values: Path) -> None:
    first = template_text(values)
    assert first == template_text(values)
    assert "kind: Deployment" in first


def test_template_time_is_printed() -> None:
    """`helm template` of the HA values, the figure the README quotes."""
    started = time.perf_counter()
    runs = 5
    for _ in range(runs):
        template_text(CHART / "ci" / "ha-values.yaml")
    each = (time.perf_counter() - started) / runs
    print(f"\nhelm template (ha values): {each * 1000:.0f} ms per run")
    assert each < 10


@pytest.mark.parametrize(
    ("setting", "key"),
    [
        ("operater.replicas=2", "operater"),  # top level
        ("operator.replcas=2", "replcas"),  # a deployable's key
        ("operator.webhook.prot=9443", "prot"),  # two levels down
        ("metrics.serviceMonitor.intervall=10s", "intervall"),  # three levels down
    ],
)
def test_a_misspelled_key_is_refused(setting: str, key: str) -> None:
    result = helm("template", RELEASE, str(CHART), "--set", setting, check=False)
    assert result.returncode != 0
    assert f"additional properties '{key}' not allowed" in result.stderr, result.stderr


def test_a_misspelled_bridge_key_is_refused() -> None:
    result = helm(
        "template", RELEASE, str(CHART), "--set", "bridges[0].name=a", "--set", "bridges[0].partiton=x", check=False
    )
    assert result.returncode != 0 and "partiton" in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("setting", "field"),
    [
        ("environment=staging", "environment"),
        ("operator.finishedJobs=sometimes", "finishedJobs"),
        ("operator.metricsPort=70000", "metricsPort"),
        ("image.digest=latest", "digest"),
        ("bridges[0].name=Not_A_Label", "name"),
    ],
)
def test_a_bad_value_is_refused_naming_the_field(setting: str, field: str) -> None:
    result = helm("template", RELEASE, str(CHART), "--set", setting, check=False)
    assert result.returncode != 0 and field in result.stderr, result.stderr


def test_the_schema_and_crd_copies_are_generated_from_the_sources() -> None:
    assert stale_chart_files(CHART) == [], "run `sgs crds`"
    schema = yaml.safe_load((CHART / "values.schema.json").read_text())

    def closed(node: Any, path: str) -> Iterator[str]:
        if isinstance(node, dict):
            if "properties" in node and node.get("additionalProperties") is not False:
                yield path
            for key, value in node.items():
                yield from closed(value, f"{path}.{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                yield from closed(value, f"{path}[{index}]")

    assert list(closed(schema, "$")) == []


def test_the_templated_crds_are_the_generated_ones_kept_on_uninstall() -> None:
    docs = render(CHART / "ci" / "minimal-values.yaml")
    crds = [d for d in docs if d["kind"] == "CustomResourceDefinition"]
    generated = {p.name: yaml.safe_load(p.read_text()) for p in (REPO / "crds").glob("*.yaml")}
    assert sorted(f"{c['metadata']['name']}.yaml" for c in crds) == sorted(generated)
    for crd in crds:
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert crd["spec"] == generated[f"{crd['metadata']['name']}.yaml"]["spec"]
    assert not [d for d in render(sets=("crds.install=false",)) if d["kind"] == "CustomResourceDefinition"]
    dropped = render(sets=("crds.keep=false",))
    assert all("annotations" not in d["metadata"] for d in dropped if d["kind"] == "CustomResourceDefinition")


def _rules(path: Path, kind: str, name: str) -> list[dict[str, Any]]:
    for doc in yaml.safe_load_all(path.read_text()):
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            rules: list[dict[str, Any]] = doc["rules"]
            return rules
    raise AssertionError(f"{path}: no {kind} {name}")


def test_rbac_is_the_deployables_own() -> None:
    """The chart grants exactly what the deployables' rbac.yaml files (applied by their own tests) grant."""
    docs = render(CHART / "ci" / "minimal-values.yaml")
    operator_rbac = REPO / "operators" / "sgs_operator" / "rbac.yaml"
    console_rbac = REPO / "services" / "console" / "sgs_console" / "rbac.yaml"
    trigger_rbac = REPO / "services" / "trigger" / "rbac.yaml"
    pairs = [
        (find(docs, "ClusterRole", f"{RELEASE}-trigger"), _rules(trigger_rbac, "ClusterRole", "sgs-trigger")),
        (find(docs, "ClusterRole", f"{RELEASE}-operator"), _rules(operator_rbac, "ClusterRole", "sgs-operator")),
        (find(docs, "Role", f"{RELEASE}-operator"), _rules(operator_rbac, "Role", "sgs-operator")),
        (find(docs, "ClusterRole", f"{RELEASE}-console"), _rules(console_rbac, "ClusterRole", "sgs-console")),
        (
            find(docs, "ClusterRole", f"{RELEASE}-console-viewer"),
            _rules(console_rbac, "ClusterRole", "sgs-console-viewer"),
        ),
        (
            find(docs, "ClusterRole", f"{RELEASE}-console-operator"),
            _rules(console_rbac, "ClusterRole", "sgs-console-operator"),
        ),
    ]
    for chart_role, own in pairs:
        assert chart_role["rules"] == own, chart_role["metadata"]["name"]


def test_every_deployable_has_its_own_service_account_and_only_the_archive_has_no_token() -> None:
    docs = render(CHART / "ci" / "sdc-fr-values.yaml")
    accounts = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ServiceAccount"}
    for name, spec in pod_specs(docs):
        account = spec["serviceAccountName"]
        assert account in accounts, name
    assert accounts[f"{RELEASE}-archive"]["automountServiceAccountToken"] is False
    bound = {s["name"] for d in docs if d["kind"].endswith("RoleBinding") for s in d["subjects"]}
    assert f"{RELEASE}-archive" not in bound


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_every_pod_meets_the_restricted_pod_security_standard(values: Path) -> None:
    for name, spec in pod_specs(render(values)):
        assert not (spec.get("hostNetwork") or spec.get("hostPID") or spec.get("hostIPC")), name
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        for volume in spec.get("volumes") or []:
            assert set(volume) - {"name"} <= RESTRICTED_VOLUMES, (name, volume)
        for container in spec["containers"] + spec.get("initContainers", []):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, (name, container["name"])
            assert context["capabilities"]["drop"] == ["ALL"] and "add" not in context["capabilities"]
            assert context.get("privileged") is not True and context["readOnlyRootFilesystem"] is True
            assert all("hostPort" not in port for port in container.get("ports") or [])
            assert container["resources"].get("limits", {}).get("memory"), (name, container["name"])


def test_pdbs_only_where_more_than_one_replica() -> None:
    minimal = [d for d in render(CHART / "ci" / "minimal-values.yaml") if d["kind"] == "PodDisruptionBudget"]
    ha = {d["metadata"]["name"] for d in render(CHART / "ci" / "ha-values.yaml") if d["kind"] == "PodDisruptionBudget"}
    assert minimal == []  # a PDB over one replica would block every node drain
    components = ("operator", "archive", "transfer", "transfer-worker", "console", "trigger")
    expected = {f"{RELEASE}-{c}" for c in components}
    assert ha == expected


def test_metrics_objects_only_when_enabled() -> None:
    kinds = {d["kind"] for d in render(CHART / "ci" / "minimal-values.yaml")}
    assert not kinds & {"ServiceMonitor", "PrometheusRule"}
    docs = render(CHART / "ci" / "metrics-values.yaml")
    monitors = {d["metadata"]["name"] for d in docs if d["kind"] == "ServiceMonitor"}
    components = ("operator", "archive", "transfer", "trigger", "bridge-lyon-slurm")
    assert monitors == {f"{RELEASE}-{c}" for c in components}
    alerts = list((CHART / "files" / "alerts").glob("*.yaml"))
    dashboards = list((CHART / "files" / "dashboards").glob("*.json"))
    rules = [d for d in docs if d["kind"] == "PrometheusRule"]
    assert len(rules) == (1 if alerts else 0)
    configmaps = [d for d in docs if d["kind"] == "ConfigMap" and "grafana_dashboard" in d["metadata"]["labels"]]
    assert len(configmaps) == len(dashboards)


def test_a_bridge_is_scraped_on_its_metrics_port_labelled_with_its_site() -> None:
    """Service → container port → `--metrics-port` line up, the ServiceMonitor selects that Service only and
    relabels its target with the bridge's Site (what the dashboards' $site and SgsSiteDown group by), and the
    NetworkPolicy lets the monitoring namespace reach that port."""
    docs = render(CHART / "ci" / "metrics-values.yaml")
    name = f"{RELEASE}-bridge-lyon-slurm"
    service = find(docs, "Service", name)
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 9100, "targetPort": "metrics"}]
    pod = find(docs, "Deployment", name)["spec"]["template"]
    assert all(pod["metadata"]["labels"][k] == v for k, v in service["spec"]["selector"].items())
    container = pod["spec"]["containers"][0]
    assert {"name": "metrics", "containerPort": 9100} in container["ports"]
    assert "--metrics-port=9100" in container["command"]
    monitor = find(docs, "ServiceMonitor", name)
    assert monitor["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    assert service["metadata"]["labels"]["app.kubernetes.io/component"] == "bridge-lyon-slurm"
    [endpoint] = monitor["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("metrics", "/metrics")
    assert endpoint["relabelings"] == [{"action": "replace", "targetLabel": "site", "replacement": "site-fr"}]
    others = [d for d in docs if d["kind"] == "ServiceMonitor" and d["metadata"]["name"] != name]
    assert others and all("relabelings" not in e for d in others for e in d["spec"]["endpoints"])
    policy = find(docs, "NetworkPolicy", name)
    by_port = {rule["ports"][0]["port"]: rule for rule in policy["spec"]["ingress"]}
    assert "from" not in by_port["kubelet"]  # the API server is no pod: from anywhere, as before
    monitoring = {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    assert by_port["metrics"]["from"] == [{"namespaceSelector": monitoring}]


def test_a_bridge_serves_metrics_on_9090_unless_told(tmp_path: Path) -> None:
    values = tmp_path / "bridge.yaml"
    values.write_text(yaml.safe_dump({"site": {"name": "site-a"}, "bridges": [{"name": "b"}]}))
    docs = render(values)
    assert find(docs, "Service", f"{RELEASE}-bridge-b")["spec"]["ports"][0]["port"] == 9090
    container = find(docs, "Deployment", f"{RELEASE}-bridge-b")["spec"]["template"]["spec"]["containers"][0]
    assert "--metrics-port=9090" in container["command"]
    kinds = {d["kind"] for d in docs}
    assert "ServiceMonitor" not in kinds  # metrics.enabled is off by default


def test_a_slurm_bridge_in_container_mode_mounts_its_image_stores_read_only_and_stays_restricted() -> None:
    docs = render(CHART / "ci" / "sdc-fr-values.yaml")
    spec = find(docs, "Deployment", f"{RELEASE}-bridge-sdc-fr-slurm")["spec"]["template"]["spec"]
    bridge = spec["containers"][0]
    assert bridge["command"][-2:] == ["--container-runtime=crun", "--image-store=/srv/sgs/images"]
    assert {"name": "image-store-0", "mountPath": "/srv/sgs/images", "readOnly": True} in bridge["volumeMounts"]
    claim = {"name": "image-store-0", "persistentVolumeClaim": {"claimName": "sgs-images", "readOnly": True}}
    assert claim in spec["volumes"]  # (the restricted checks above and the server-side dry run cover this file)


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (("bridges[0].provider=process", "bridges[0].containerRuntime=crun"), "privileged Pod Security level"),
        (("bridges[0].containerRuntime=crun",), "needs imageStores"),
        (("bridges[0].imageStores[0].claimName=images", "bridges[0].imageStores[0].path=srv"), "path"),
        (("bridges[0].containerRuntime=docker",), "containerRuntime"),
    ],
)
def test_container_mode_is_refused_where_it_cannot_run_restricted(sets: tuple[str, ...], message: str) -> None:
    args = ["--set", "site.name=site-a", "--set", "bridges[0].name=b"]
    for item in sets:
        args += ["--set", item]
    result = helm("template", RELEASE, str(CHART), *args, check=False)
    assert result.returncode != 0 and message in result.stderr, result.stderr


def test_settings_map_onto_the_deployables_environment() -> None:
    """Each value reaches the variable its deployable reads (names from the settings classes)."""
    from sgs_archive.settings import ArchiveSettings
    from sgs_console.settings import ConsoleSettings
    from sgs_operator.placements import PlacementSettings
    from sgs_operator.settings import OperatorSettings
    from sgs_transfer.settings import TransferSettings
    from sgs_trigger.settings import TriggerSettings

    docs = render(CHART / "ci" / "sdc-fr-values.yaml")
    classes: dict[str, list[Any]] = {
        "operator": [OperatorSettings, PlacementSettings],
        "archive": [ArchiveSettings],
        "transfer": [TransferSettings],
        "transfer-worker": [TransferSettings],
        "console": [ConsoleSettings],
        "trigger": [TriggerSettings],
    }
    for component, settings in classes.items():
        container = find(docs, "Deployment", f"{RELEASE}-{component}")["spec"]["template"]["spec"]["containers"][0]
        prefix = settings[0].model_config["env_prefix"]
        known = {f"{prefix}{field}".upper() for cls in settings for field in cls.model_fields}
        names = [item["name"] for item in container["env"] if item["name"].startswith(prefix)]
        assert names and set(names) <= known, (component, sorted(set(names) - known))
    archive = find(docs, "Deployment", f"{RELEASE}-archive")["spec"]["template"]["spec"]["containers"][0]
    env = {item["name"]: item for item in archive["env"]}
    assert env["SGS_ARCHIVE_ENVIRONMENT"]["value"] == "production"  # production unless said otherwise
    assert env["SGS_ARCHIVE_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": f"{RELEASE}-archive",
        "key": "admin-token",
    }


# ----------------------------------------------------------------------------------------------- the API server


@pytest.fixture(scope="module")
def dry_run_namespace(kube: KubePart) -> Iterator[str]:
    """A namespace that warns on anything the restricted Pod Security Standard forbids."""
    name = f"chart-{uuid.uuid4().hex[:8]}"
    kube.kubectl("create", "namespace", name)
    kube.kubectl("label", "namespace", name, "pod-security.kubernetes.io/warn=restricted")
    yield name
    kube.kubectl("delete", "namespace", name, "--wait=false", check=False)


def _monitoring_problems(doc: dict[str, Any]) -> list[str]:
    """The Prometheus Operator's kinds, checked by hand: its CRDs are not installed on the test control plane.

    A minimal check of our own of the fields the chart uses (not the operator's full schema)."""
    spec = doc.get("spec", {})
    if doc["kind"] == "ServiceMonitor":
        ok = spec.get("selector", {}).get("matchLabels") and all(e.get("port") for e in spec.get("endpoints", []))
        return [] if ok and spec.get("endpoints") else [f"ServiceMonitor {doc['metadata']['name']}: selector/endpoints"]
    if doc["kind"] == "PrometheusRule":
        groups = spec.get("groups") or []
        bad = [g for g in groups if not g.get("name") or not g.get("rules")]
        return [f"PrometheusRule: groups without name or rules: {bad}"] if bad or not groups else []
    return [f"unexpected {doc['kind']}"]


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_server_side_dry_run_accepts_every_rendering(kube: KubePart, dry_run_namespace: str, values: Path) -> None:
    docs = render(values, namespace=dry_run_namespace)
    monitoring = [d for d in docs if d["apiVersion"] == MONITORING]
    assert [p for d in monitoring for p in _monitoring_problems(d)] == []
    rest = [d for d in docs if d["apiVersion"] != MONITORING]
    # Cluster-scoped names carry the release name: give this run its own, so parallel runs do not collide.
    result = kube.kubectl(
        "apply", "--dry-run=server", "--validate=strict", "-f", "-", input=yaml.safe_dump_all(rest), check=False
    )
    assert result.returncode == 0, result.stderr
    assert "would violate PodSecurity" not in result.stderr, result.stderr
    assert result.stdout.count("(server dry run)") == len(rest)


def test_server_side_dry_run_refuses_a_broken_rendering(kube: KubePart, dry_run_namespace: str) -> None:
    """The check can fail: a Deployment with a field the API does not know is refused by strict validation."""
    docs = documents(template_text(CHART / "ci" / "minimal-values.yaml", namespace=dry_run_namespace))
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    result = kube.kubectl(
        "apply", "--dry-run=server", "--validate=strict", "-f", "-", input=yaml.safe_dump(deployment), check=False
    )
    assert result.returncode != 0 and "imagePullPolcy" in result.stderr, result.stderr


def test_server_side_dry_run_reports_a_pod_security_violation(kube: KubePart, dry_run_namespace: str) -> None:
    """The PodSecurity check can fail too: a hostPath volume added through extraVolumes is reported."""
    sets = ("archive.extraVolumes[0].name=host", "archive.extraVolumes[0].hostPath.path=/var/run")
    docs = render(CHART / "ci" / "minimal-values.yaml", namespace=dry_run_namespace, sets=sets)
    archive = find(docs, "Deployment", f"{RELEASE}-archive")
    result = kube.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(archive), check=False)
    assert "would violate PodSecurity" in result.stderr and "hostPath" in result.stderr, result.stderr

"""Pipelines, Runs and Sites at the door: the validating webhook refuses what the CRD schema cannot, naming the
field — broken graphs, code named as a dynamic-resources function, paths outside the Site's declared roots, a
node selector fighting the Site's own label; valid Pipelines become Ready; a Run on a missing or invalid
Pipeline, or whose paths its Site refuses, says why it does not start."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from operator_kit import EXAMPLE, Cluster, OperatorProcess, wait_for

pytest_plugins = ["operator_kit"]  # the operator fixtures (a conftest here would clash with mypy)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def operator_settings() -> dict[str, str]:
    """The administrator allows no dynamic-resources function, though sgs installs one (fits-header)."""
    return {"SGS_OPERATOR_DYNAMIC_FUNCTIONS": "[]"}


def dynamic_pipeline(name: str, function: str) -> dict[str, Any]:
    """`payload` writes a file; `sized` takes its resources from `function` applied to that file."""

    def executable(exe: str, resources: dict[str, Any]) -> dict[str, Any]:
        return {
            "name": exe,
            "command": "optest_task",
            "inputs": [{"name": "mode"}, {"name": "input", "optional": True}],
            "outputs": [{"name": "out"}],
            "resources": resources,
        }

    return {
        "apiVersion": "sgs.io/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": name},
        "spec": {
            "executables": [
                executable("payload", {}),
                executable("sized", {"dynamic": {"input": "input", "function": function}}),
            ],
            "steps": [
                {"name": "payload", "executable": "payload", "inputs": {"mode": {"value": "write:#!/bin/sh\nid"}}},
                {
                    "name": "sized",
                    "executable": "sized",
                    "inputs": {"mode": {"value": "ok"}, "input": {"step": "payload", "output": "out"}},
                },
            ],
        },
    }


def test_example_pipeline_becomes_ready(cluster: Cluster, example_pipeline: dict[str, Any]) -> None:
    cluster.apply(example_pipeline)

    status = wait_for(
        lambda: (
            cluster.get("pipelines", "parallel-split").get("status", {}).get("phase") == "Ready"
            and cluster.get("pipelines", "parallel-split")["status"]
        ),
        "the Pipeline to be Ready",
    )

    assert status["tasksPerRun"] == 4  # split, correct_dark, correct_flat, combine
    table = cluster.kubectl("get", "pipelines").stdout
    assert "READY" in table.upper() and "parallel-split" in table


def test_kubectl_apply_refuses_a_broken_graph_naming_the_field(
    cluster: Cluster, example_pipeline: dict[str, Any]
) -> None:
    broken = copy.deepcopy(example_pipeline)
    broken["metadata"]["name"] = "broken"
    combine = next(s for s in broken["spec"]["steps"] if s["name"] == "ialtest_combine_images")
    combine["inputs"]["inputlist"] = {"step": "no_such_step", "output": "x"}

    result = cluster.apply(broken, check=False)

    assert result.returncode != 0
    assert "spec.steps[4].inputs.inputlist" in result.stderr
    assert "unknown step 'no_such_step'" in result.stderr
    assert cluster.kubectl("get", "pipelines", "broken", check=False).returncode != 0  # nothing half-written


def test_kubectl_apply_refuses_a_run_input_with_two_sources(cluster: Cluster) -> None:
    run = cluster.run("two-sources")
    run["spec"]["inputs"]["images"] = {"uri": "/data/a.json", "uris": ["/data/b.json"]}

    result = cluster.apply(run, check=False)

    assert result.returncode != 0
    assert "spec.inputs.images" in result.stderr
    assert "exactly one of uri, uris, query or datasetIds (got uri, uris)" in result.stderr


def test_kubectl_apply_refuses_a_run_query_that_does_not_parse_naming_the_field(cluster: Cluster) -> None:
    run = cluster.run("bad-query")
    run["spec"]["inputs"]["images"] = {"query": "exposure IN (71..74", "datasetType": "nir_raw"}

    result = cluster.apply(run, check=False)

    assert result.returncode != 0
    assert "spec.inputs.images.query: not a dimension expression" in result.stderr
    assert cluster.kubectl("get", "runs", "bad-query", check=False).returncode != 0  # nothing half-written


def test_run_of_a_missing_pipeline_waits_with_a_condition(cluster: Cluster) -> None:
    cluster.apply(cluster.site())
    cluster.apply(cluster.run("orphan", pipeline="not-there"))

    status = cluster.wait_phase("orphan", {"Pending"})
    condition = wait_for(
        lambda: next(
            (c for c in cluster.run_status("orphan").get("conditions", []) if c["type"] == "PipelineReady"), None
        ),
        "the PipelineReady condition",
    )

    assert status["phase"] == "Pending"
    assert condition["status"] == "False"
    assert condition["reason"] == "PipelineNotFound"
    assert "not-there" in condition["message"]
    assert cluster.jobs("orphan") == []


# ----------------------------------------------------------------------------------------------- dynamic functions


def test_a_pipeline_naming_code_as_its_dynamic_function_is_refused_naming_the_field(cluster: Cluster) -> None:
    # What `ComputingResources(dynamic=("input", os.system))` compiled to: the operator used to import and call it.
    result = cluster.apply(dynamic_pipeline("exploit", "posix:system"), check=False)

    assert result.returncode != 0
    assert "spec.executables[1].resources.dynamic.function: 'posix:system' is a module:qualname" in result.stderr
    assert "entry point of group 'sgs.dynamic_resources'" in result.stderr
    assert cluster.kubectl("get", "pipelines", "exploit", check=False).returncode != 0


@pytest.mark.parametrize(
    ("function", "why"),
    [
        ("no-such-function", "'no-such-function' is not a dynamic-resources function installed with the operator"),
        ("fits-header", "'fits-header' is installed but not allowed by the operator's administrator (allowed: none)"),
    ],
)
def test_a_pipeline_naming_a_function_the_operator_does_not_allow_is_refused(
    cluster: Cluster, function: str, why: str
) -> None:
    result = cluster.apply(dynamic_pipeline("unallowed", function), check=False)

    assert result.returncode != 0
    assert f"spec.executables[1].resources.dynamic.function: {why}" in result.stderr
    assert cluster.kubectl("get", "pipelines", "unallowed", check=False).returncode != 0


# ----------------------------------------------------------------------------------------------- storage roots


def refusal(cluster: Cluster, run: dict[str, Any]) -> str:
    result = cluster.apply(run, check=False)
    assert result.returncode != 0, f"admitted: {run['spec']}"
    assert cluster.kubectl("get", "runs", run["metadata"]["name"], check=False).returncode != 0
    return result.stderr


def test_a_run_input_outside_the_sites_roots_is_refused(cluster: Cluster) -> None:
    cluster.apply(cluster.site())
    run = cluster.run("hostname")
    run["spec"]["inputs"]["images"] = {"uri": "/etc/hostname"}

    stderr = refusal(cluster, run)

    roots = f"{cluster.store} (storage path), {EXAMPLE / 'inputs'} (read-only)"
    assert f"spec.inputs.images.uri: /etc/hostname is outside Site site-a's storage roots ({roots})" in stderr


def test_an_output_prefix_outside_the_storage_path_is_refused(cluster: Cluster) -> None:
    cluster.apply(cluster.site())

    stderr = refusal(cluster, cluster.run("elsewhere", outputPrefix="/var/lib/x"))

    assert f"spec.outputPrefix: /var/lib/x is outside Site site-a's storage path {cluster.store}" in stderr


def test_an_output_prefix_under_a_read_only_root_is_refused(cluster: Cluster) -> None:
    cluster.apply(cluster.site())

    stderr = refusal(cluster, cluster.run("into-refs", outputPrefix=str(EXAMPLE / "inputs" / "out")))

    assert "spec.outputPrefix:" in stderr and "(Runs write only under it)" in stderr


def test_a_dot_dot_path_is_judged_where_it_leads(cluster: Cluster) -> None:
    cluster.apply(cluster.site())
    run = cluster.run("traversal")
    sneaky = f"{cluster.store}/../../../../../../../../etc/hostname"
    run["spec"]["inputs"]["master_dark"] = {"uris": [str(EXAMPLE / "inputs" / "master_dark.json"), sneaky]}

    stderr = refusal(cluster, run)

    assert f"spec.inputs.master_dark.uris[1]: {sneaky} (resolves to /etc/hostname) is outside" in stderr
    assert "uris[0]" not in stderr


def test_a_symlink_out_of_the_root_is_judged_where_it_points(cluster: Cluster) -> None:
    cluster.apply(cluster.site())
    (cluster.store / "etc").symlink_to("/etc")
    run = cluster.run("symlink")
    run["spec"]["inputs"]["control_params"] = {"uri": f"file://{cluster.store}/etc/hostname"}

    stderr = refusal(cluster, run)

    assert f"spec.inputs.control_params.uri: {cluster.store}/etc/hostname (resolves to /etc/hostname)" in stderr


def test_a_run_without_a_site_is_refused_when_no_site_of_the_namespace_holds_its_paths(cluster: Cluster) -> None:
    cluster.apply(cluster.site())
    run = cluster.run("unplaced", inputs={"images": {"uri": "/etc/hostname"}})
    del run["spec"]["site"]

    assert "spec.inputs.images.uri: /etc/hostname is outside Site site-a's storage roots" in refusal(cluster, run)


def test_paths_are_checked_again_against_the_site_the_run_starts_at(
    cluster: Cluster, example_pipeline: dict[str, Any], tmp_path: Path
) -> None:
    cluster.apply(example_pipeline)
    outside = tmp_path / "not-a-root" / "images.json"
    outside.parent.mkdir()
    outside.write_text("{}")
    run = cluster.run("late-site")
    run["spec"]["inputs"]["images"] = {"uri": str(outside)}
    cluster.apply(run)  # admitted: its Site does not exist yet

    cluster.apply(cluster.site())
    blocked = wait_for(
        lambda: next(
            (c for c in cluster.run_status("late-site").get("conditions", []) if c["type"] == "InputsReady"), None
        ),
        "the Run's InputsReady condition",
    )

    assert cluster.run_status("late-site")["phase"] == "Pending"
    assert (blocked["status"], blocked["reason"]) == ("False", "PathOutsideRoots")
    assert f"spec.inputs.images.uri: {outside} is outside Site site-a's storage roots" in blocked["message"]
    assert cluster.jobs("late-site") == []


# ----------------------------------------------------------------------------------------------- Sites


def test_a_site_selecting_nodes_of_another_site_is_refused(cluster: Cluster) -> None:
    result = cluster.apply(cluster.site(node_selector={"sgs.io/site": "site-b"}), check=False)

    assert result.returncode != 0
    assert "spec.compute.nodeSelector[sgs.io/site]: 'site-b' is not this Site's name" in result.stderr
    assert cluster.kubectl("get", "sites", "site-a", check=False).returncode != 0
    assert cluster.apply(cluster.site(node_selector={"sgs.io/site": "site-a", "zone": "b"})).returncode == 0


def test_a_site_whose_storage_root_is_relative_is_refused(cluster: Cluster) -> None:
    site = cluster.site()
    site["spec"]["storage"]["readOnlyPaths"] = ["refs"]

    result = cluster.apply(site, check=False)

    assert result.returncode != 0
    assert "spec.storage.readOnlyPaths[0]: 'refs' is not an absolute path" in result.stderr


def test_an_update_that_keeps_the_paths_is_not_judged_again_but_a_new_path_is(cluster: Cluster) -> None:
    cluster.apply(cluster.site())
    cluster.apply(cluster.run("steady"))  # its inputs lie under the Site's read-only root
    narrowed = cluster.site()
    narrowed["spec"]["storage"]["readOnlyPaths"] = []
    cluster.apply(narrowed)

    suspended = cluster.kubectl("patch", "runs", "steady", "--type=merge", "-p", '{"spec": {"suspend": true}}')
    moved = cluster.kubectl(
        "patch", "runs", "steady", "--type=merge", "-p", '{"spec": {"outputPrefix": "/var/lib/x"}}', check=False
    )

    assert suspended.returncode == 0  # an operator can still suspend (or re-prioritise) it
    assert moved.returncode != 0
    assert "spec.outputPrefix: /var/lib/x is outside Site site-a's storage path" in moved.stderr
    assert "spec.inputs.images.uri" in moved.stderr  # judged against the Site as it is now


# ----------------------------------------------------------------------------------------------- updates


def test_an_update_that_keeps_a_pipelines_spec_is_admitted_under_rules_since_narrowed(
    cluster: Cluster, operator: OperatorProcess, tmp_path: Path
) -> None:
    """A Pipeline admitted while fits-header was allowed can still be labelled and deleted once the operator
    allows none (as its own finalizer and annotation patches must be); changing its spec is judged anew."""
    operator.stop()
    wider = OperatorProcess(
        cluster.kube,
        operator.dsn,
        tmp_path,
        env={"SGS_OPERATOR_DYNAMIC_FUNCTIONS": '["fits-header"]', "SGS_OPERATOR_WEBHOOK_NAME": operator.webhook_name},
    )
    try:
        wider.start()
        cluster.apply(dynamic_pipeline("sized", "fits-header"))
    finally:
        wider.stop()
        operator.start()

    labelled = cluster.kubectl("label", "pipelines", "sized", "team=nir", check=False)
    edited = dynamic_pipeline("sized", "fits-header")
    edited["spec"]["executables"][0]["command"] = "optest_other"
    changed = cluster.apply(edited, check=False)
    deleted = cluster.kubectl("delete", "pipelines", "sized", "--timeout=60s", check=False)

    assert labelled.returncode == 0, labelled.stderr
    assert changed.returncode != 0
    assert "spec.executables[1].resources.dynamic.function" in changed.stderr
    assert deleted.returncode == 0, deleted.stderr

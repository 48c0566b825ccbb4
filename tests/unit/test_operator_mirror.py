"""Cluster Sites, the pure parts: the kubeconfig a Site's Secret holds (what is allowed), and the copy of a Run
(names, labels, the spec that flows down, the status that flows up)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml
from pydantic import ValidationError
from sgs_operator.mirror import (
    ORIGIN_LABEL,
    ORIGIN_UID_LABEL,
    RunMirror,
    Target,
    mirrored_pipeline_name,
    mirrored_status,
    never_started,
    remote_run,
    spec_changes,
    unreachable_since,
    unreachable_status,
    wants_permit,
)
from sgs_operator.remote import KubeconfigError, checked_kubeconfig, secret_text, server_allowed

from sgs.model.site import Compute, ComputeKind, KubeconfigRef

ALLOWED = ["sdc-fr.example.org:6443", "127.0.0.1"]
NOW = datetime(2027, 1, 1, 12, 0, tzinfo=UTC)


def kubeconfig(server: str = "https://sdc-fr.example.org:6443", **user: Any) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "c", "cluster": {"server": server, "certificate-authority-data": "Q0E="}}],
            "users": [{"name": "u", "user": user or {"token": "t0ken"}}],
            "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
            "current-context": "x",
        }
    )


@pytest.mark.parametrize(
    ("server", "ok"),
    [
        ("https://sdc-fr.example.org:6443", True),
        ("https://SDC-FR.example.org:6443/", True),
        ("https://sdc-fr.example.org:443", False),  # the entry names a port: only that one
        ("https://127.0.0.1:38011", True),  # a host alone: any port
        ("http://127.0.0.1:38011", False),  # plain http never
        ("https://sdc-fr.example.org.evil.net:6443", False),
        ("https://10.0.0.1:6443", False),
        ("not a url", False),
    ],
)
def test_only_the_servers_the_administrator_names_are_allowed(server: str, ok: bool) -> None:
    assert server_allowed(server, ALLOWED) is ok


def test_an_allowed_kubeconfig_is_reduced_to_its_current_context() -> None:
    config = checked_kubeconfig(kubeconfig(), ALLOWED, "spec.compute.kubeconfig")
    assert config["current-context"] == "site"
    assert config["clusters"][0]["cluster"]["server"] == "https://sdc-fr.example.org:6443"
    assert config["users"][0]["user"] == {"token": "t0ken"}


def test_a_server_not_allowed_is_refused_naming_it_and_the_setting() -> None:
    with pytest.raises(KubeconfigError) as caught:
        checked_kubeconfig(kubeconfig("https://elsewhere.example.com"), ALLOWED, "spec.compute.kubeconfig")
    assert caught.value.reason == "ServerNotAllowed"
    assert "https://elsewhere.example.com" in str(caught.value) and "sdc-fr.example.org:6443" in str(caught.value)
    with pytest.raises(KubeconfigError, match="SGS_OPERATOR_ALLOWED_CLUSTER_SERVERS is empty"):
        checked_kubeconfig(kubeconfig(), [], "spec.compute.kubeconfig")


@pytest.mark.parametrize(
    ("user", "field"),
    [
        ({"exec": {"command": "/bin/sh", "args": ["-c", "id"]}}, "exec"),
        ({"auth-provider": {"name": "oidc"}}, "auth-provider"),
        ({"tokenFile": "/var/run/secrets/kubernetes.io/serviceaccount/token"}, "tokenFile"),
        ({"client-certificate": "/etc/sgs/operator.crt", "client-key": "/etc/sgs/operator.key"}, "client-certificate"),
        ({"username": "admin", "password": "x"}, "username"),
    ],
)
def test_credentials_that_run_code_or_read_the_operators_files_are_refused(user: dict[str, Any], field: str) -> None:
    with pytest.raises(KubeconfigError) as caught:
        checked_kubeconfig(kubeconfig(**user), ALLOWED, "spec.compute.kubeconfig")
    assert caught.value.reason == "KubeconfigRefused"
    assert f"users[u].user.{field}: refused" in str(caught.value)


def test_cluster_fields_that_name_files_or_skip_verification_are_refused() -> None:
    text = kubeconfig().replace("certificate-authority-data: Q0E=", "insecure-skip-tls-verify: true")
    with pytest.raises(KubeconfigError, match=r"clusters\[c\].cluster.insecure-skip-tls-verify: refused"):
        checked_kubeconfig(text, ALLOWED, "spec.compute.kubeconfig")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("{{{", "not YAML"),
        ("- a list", "not a kubeconfig"),
        (kubeconfig().replace("current-context: x", "current-context: y"), "current-context 'y'"),
    ],
)
def test_a_kubeconfig_that_is_not_one_says_so(text: str, fragment: str) -> None:
    with pytest.raises(KubeconfigError, match=fragment) as caught:
        checked_kubeconfig(text, ALLOWED, "spec.compute.kubeconfig")
    assert caught.value.reason == "KubeconfigInvalid"


def test_a_missing_secret_or_key_is_named() -> None:
    with pytest.raises(KubeconfigError, match="Secret ns/kc not found") as missing:
        secret_text(None, "ns", "kc", "kubeconfig")
    assert missing.value.reason == "SecretNotFound"
    with pytest.raises(KubeconfigError, match="has no key 'kubeconfig'") as no_key:
        secret_text({"data": {"other": "eA=="}}, "ns", "kc", "kubeconfig")
    assert no_key.value.reason == "SecretKeyMissing"
    encoded = base64.b64encode(b"apiVersion: v1").decode()
    assert secret_text({"data": {"kubeconfig": encoded}}, "ns", "kc", "kubeconfig") == "apiVersion: v1"


def test_cluster_fields_go_with_kind_cluster_only() -> None:
    with pytest.raises(ValidationError, match="kind cluster needs kubeconfig"):
        Compute(kind=ComputeKind.CLUSTER)
    with pytest.raises(ValidationError, match="go with kind cluster"):
        Compute(kind=ComputeKind.KUBERNETES, kubeconfig=KubeconfigRef(name="kc"))
    assert Compute(kind=ComputeKind.CLUSTER, kubeconfig=KubeconfigRef(name="kc")).kubeconfig is not None


CENTRAL: dict[str, Any] = {
    "metadata": {"name": "ps-1", "namespace": "survey", "uid": "uid-1", "generation": 3},
    "spec": {"pipeline": "parallel-split", "site": "sdc-fr", "inputs": {"a": {"uri": "/x"}}, "priority": 5},
}
TARGET = Target("sdc-fr", "survey-fr", "ps-1", "fr-local")


def test_the_copy_has_the_central_name_the_origin_and_uid_labels_and_the_remote_site() -> None:
    pipeline = mirrored_pipeline_name("parallel-split", "ab" * 32)
    assert pipeline == "parallel-split-abababab" + "ab"
    copy = remote_run(CENTRAL, TARGET, pipeline, "cluster-uid", "survey")
    assert copy["metadata"]["name"] == "ps-1" and copy["metadata"]["namespace"] == "survey-fr"
    assert copy["metadata"]["labels"][ORIGIN_LABEL] == "cluster-uid"
    assert copy["metadata"]["labels"][ORIGIN_UID_LABEL] == "uid-1"
    assert copy["spec"] == {**CENTRAL["spec"], "site": "fr-local", "pipeline": pipeline}


def test_only_the_fields_that_may_change_while_running_flow_down() -> None:
    remote = {**CENTRAL["spec"], "site": "fr-local", "pipeline": "p-1", "priority": 1}
    assert spec_changes({**CENTRAL["spec"], "suspend": True}, remote) == {"priority": 5, "suspend": True}
    assert spec_changes({**CENTRAL["spec"], "inputs": {}}, {**remote, "priority": 5}) == {}


def test_the_copys_status_goes_up_with_our_site_conditions_and_unreachable_keeps_it() -> None:
    remote: dict[str, Any] = {
        "metadata": {"uid": "remote-uid"},
        "status": {
            "phase": "Running",
            "site": "fr-local",
            "tasks": {"total": 10, "succeeded": 4},
            "progress": "4/10",
            "taskTable": "postgresql sgs_task run_uid=remote-uid",
            "failedTasks": [{"task": "t", "attempt": 1, "reason": "Error"}],
            "conditions": [
                {
                    "type": "SiteReady",
                    "status": "True",
                    "reason": "SiteNamed",
                    "lastTransitionTime": "2027-01-01T00:00:00Z",
                },
                {
                    "type": "Complete",
                    "status": "False",
                    "reason": "Running",
                    "lastTransitionTime": "2027-01-01T00:00:00Z",
                },
            ],
        },
    }
    status = mirrored_status(remote, TARGET, {}, "dispatched to sdc-fr (spec.site)", NOW)
    assert status["phase"] == "Running" and status["site"] == "sdc-fr" and status["progress"] == "4/10"
    assert status["failedTasks"] == remote["status"]["failedTasks"]
    assert status["remote"]["uid"] == "remote-uid" and status["taskTable"].startswith("site sdc-fr: ")
    by_type = {c["type"]: c for c in status["conditions"]}
    assert by_type["SiteReady"]["reason"] == "Mirrored" and "survey-fr/ps-1" in by_type["SiteReady"]["message"]
    assert by_type["SiteUnreachable"]["status"] == "False"
    assert by_type["Complete"]["lastTransitionTime"] == "2027-01-01T00:00:00Z"  # theirs, as they wrote it

    later = datetime(2027, 1, 1, 12, 5, tzinfo=UTC)
    down = unreachable_status(status, TARGET, "ClientConnectorError: refused", later)
    cut = {c["type"]: c for c in down["conditions"]}["SiteUnreachable"]
    assert cut["status"] == "True" and cut["lastTransitionTime"] == "2027-01-01T12:05:00Z"
    assert "phase" not in down  # the last mirrored phase stays
    again = unreachable_status({**status, **down}, TARGET, "still refused", datetime(2027, 1, 1, 12, 9, tzinfo=UTC))
    assert {c["type"]: c for c in again["conditions"]}["SiteUnreachable"][
        "lastTransitionTime"
    ] == "2027-01-01T12:05:00Z"


def _copy(permit: str | None, reason: str | None) -> dict[str, Any]:
    annotations = {} if permit is None else {"sgs.io/start-permit": permit}
    conditions = [] if reason is None else [{"type": "StartPermit", "status": "False", "reason": reason}]
    return {"metadata": {"annotations": annotations}, "status": {"conditions": conditions}}


def test_a_copy_is_granted_only_when_it_asks_and_was_not_granted_yet() -> None:
    assert wants_permit(_copy("awaiting", "Requested"))
    assert not wants_permit(_copy("awaiting", None))  # queued there: not asking yet
    assert not wants_permit(_copy("granted", "Requested"))  # its operator has not seen the grant yet
    assert not wants_permit(_copy(None, "Requested"))  # not a fenced copy


@pytest.mark.parametrize(
    ("remote", "never"),
    [
        (None, True),  # no copy seen: one made meanwhile is fenced and never granted
        ({"fenced": True}, True),
        ({"fenced": True, "permitted": "2026-12-03T10:00:00Z"}, False),  # granted: it may have run
        ({"fenced": False}, False),  # made before the fence: it may have run
        ({}, False),
    ],
)
def test_only_a_fenced_copy_never_granted_counts_as_never_started(remote: dict[str, Any] | None, never: bool) -> None:
    assert never_started({"remote": remote}) is never


@pytest.mark.parametrize("started", ["running", "retrying", "succeeded", "failed"])
def test_a_never_granted_copy_whose_counts_show_a_task_run_counts_as_started(started: str) -> None:
    fenced = {"remote": {"fenced": True}}
    assert never_started({**fenced, "tasks": {"total": 4, "waiting": 2, "ready": 2}})
    assert not never_started({**fenced, "tasks": {"total": 4, "ready": 3, started: 1}})
    assert not never_started({"remote": None, "tasks": {"total": 4, started: 1}})


def _left_mirror() -> tuple[RunMirror, dict[str, Any]]:
    """A mirror whose body (as kopf last delivered it) says the Site has been unreachable for 200 s, its copy fenced
    and never granted."""
    since = "2027-01-01T11:56:40Z"
    unreachable = {"type": "SiteUnreachable", "status": "True", "lastTransitionTime": since}
    remote = {"site": "sdc-fr", "namespace": "sgs", "name": "r1", "fenced": True}
    status = {"phase": "Pending", "remote": remote, "conditions": [unreachable]}
    body = {"metadata": {"namespace": "sgs", "name": "r1", "uid": "u1"}, "status": status}
    none: Any = None
    mirror = RunMirror(none, none, "centre", body, "sdc-fr", none, ("p", "d", {}), "chosen", none, 120.0)
    return mirror, status


def test_redispatch_is_due_only_on_a_step_that_found_the_site_unreachable() -> None:
    mirror, previous = _left_mirror()
    target = Target("sdc-fr", "sgs", "r1", "sdc-fr")
    early = datetime(2027, 1, 1, 11, 58, 10, tzinfo=UTC)  # 90 s into the outage: due in 30 s, the pause's end
    mirror._judge_redispatch(previous, unreachable_status(previous, target, "refused", early), early)
    assert mirror.redispatch_due is None and mirror.redispatch_in == 30.0
    mirror._judge_redispatch(previous, unreachable_status(previous, target, "refused", NOW), NOW)
    assert mirror.redispatch_due == datetime(2027, 1, 1, 11, 56, 40, tzinfo=UTC) and mirror.redispatch_in is None
    # the link is back: this step read the copy (and may have granted it) while the body still says unreachable
    back = mirrored_status({"metadata": {"annotations": {}}, "status": {}}, target, previous, "chosen", NOW)
    mirror._judge_redispatch(previous, back, NOW)
    assert mirror.redispatch_due is None


def test_a_grant_this_mirror_wrote_stops_a_redispatch_before_the_body_shows_it() -> None:
    mirror, previous = _left_mirror()
    mirror.granted = True  # _grant_if_asked ran; kopf has not delivered the status.remote.permitted yet
    target = Target("sdc-fr", "sgs", "r1", "sdc-fr")
    mirror._judge_redispatch(previous, unreachable_status(previous, target, "refused", NOW), NOW)
    assert mirror.redispatch_due is None


def test_the_outage_starts_when_site_unreachable_turned_true() -> None:
    since = "2026-12-03T10:00:05Z"
    true = {"conditions": [{"type": "SiteUnreachable", "status": "True", "lastTransitionTime": since}]}
    false = {"conditions": [{"type": "SiteUnreachable", "status": "False", "lastTransitionTime": since}]}
    assert unreachable_since(true) == datetime(2026, 12, 3, 10, 0, 5, tzinfo=UTC)
    assert unreachable_since(false) is None and unreachable_since({}) is None

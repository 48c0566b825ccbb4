"""`sgs dev up --sites 2`: the second control plane's wiring (pure parts; the live stack is an integration test)."""

from __future__ import annotations

import json
from pathlib import Path

from sgs_operator.remote import checked_kubeconfig

from sgs.dev.components import RemoteKubePart, remote_allowed, remote_site_manifests
from sgs.dev.stack import parse_parts
from sgs.model.site import ComputeKind, SiteSpec


def test_remote_starts_with_the_control_planes_and_keeps_kubeconfig_the_central_one(tmp_path: Path) -> None:
    assert parse_parts("sgs,remote,kube,pg") == ["pg", "kube", "remote", "sgs"]
    part = RemoteKubePart(tmp_path / "kube-remote")
    assert part.exports() == {"SGS_REMOTE_KUBECONFIG": str(tmp_path / "kube-remote" / "kubeconfig")}


def test_the_central_operator_allows_exactly_the_remote_api_server() -> None:
    allowed = remote_allowed({"server": "https://127.0.0.1:41234"})
    assert json.loads(allowed["SGS_OPERATOR_ALLOWED_CLUSTER_SERVERS"]) == ["127.0.0.1:41234"]


def test_the_manifests_are_a_valid_cluster_site_whose_secret_the_operator_accepts() -> None:
    kubeconfig = (
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: k, cluster: {server: 'https://127.0.0.1:41234', certificate-authority-data: Q0E=}}]\n"
        "users: [{name: u, user: {token: t}}]\ncontexts: [{name: c, context: {cluster: k, user: u}}]\n"
    )
    central, remote = remote_site_manifests(kubeconfig, "site-r")
    secret, cluster_site = central
    assert secret["metadata"]["name"] == cluster_site["spec"]["compute"]["kubeconfig"]["name"]
    spec = SiteSpec.model_validate(cluster_site["spec"])
    assert spec.compute.kind is ComputeKind.CLUSTER
    allowed = json.loads(remote_allowed({"server": "https://127.0.0.1:41234"})["SGS_OPERATOR_ALLOWED_CLUSTER_SERVERS"])
    assert checked_kubeconfig(secret["stringData"]["kubeconfig"], allowed, "secret")["current-context"] == "site"
    (local,) = remote
    assert local["metadata"]["name"] == "site-r" and SiteSpec.model_validate(local["spec"]).storage.path

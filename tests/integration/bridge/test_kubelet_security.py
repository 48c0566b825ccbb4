"""The bridge's kubelet API authenticates its caller like a kubelet (client certificate from the cluster CA, then a
SubjectAccessReview), and a pod's host directory (Secret files, scratch) does not outlive the pod."""

from __future__ import annotations

import base64
import ssl
from pathlib import Path

import httpx
import pytest
from bridge_kit import PROCESS_SITE, Cluster, pod_manifest, pod_template
from prometheus_client.parser import text_string_to_metric_families
from sgs_bridge.launch import BridgeProcess

from sgs.kube.pki import Authority, Issued
from sgs.testing import wait_until
from sgs.testing.kube import KubePart

pytest_plugins = ["bridge_kit"]  # the bridge fixtures (a conftest here would clash with mypy)
pytestmark = pytest.mark.integration


def kubelet_get(bridge: BridgeProcess, path: str, client: Issued | None, tmp_path: Path) -> httpx.Response:
    """GET on the bridge's kubelet port, presenting ``client`` (or no certificate at all)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the bridge's own serving certificate is self-signed, as a kubelet's
    if client is not None:
        cert, key = client.write(tmp_path / "client.crt", tmp_path / "client.key")
        context.load_cert_chain(cert, key)
    return httpx.get(f"https://127.0.0.1:{bridge.port}{path}", verify=context, timeout=10)


def test_the_api_servers_kubelet_client_certificate_is_let_in(
    kube: KubePart, process_bridge: BridgeProcess, tmp_path: Path
) -> None:
    """The control for the refusals below: the identity the API server uses (`kubectl logs`) is allowed."""
    apiserver = Issued.load(kube.pki / "kubelet-client.crt", kube.pki / "kubelet-client.key")
    response = kubelet_get(process_bridge, "/healthz", apiserver, tmp_path)
    assert (response.status_code, response.text) == (200, "ok")


def test_a_caller_without_a_client_certificate_is_refused(process_bridge: BridgeProcess, tmp_path: Path) -> None:
    with pytest.raises(httpx.TransportError):
        kubelet_get(process_bridge, "/metrics", None, tmp_path)


def test_a_certificate_from_another_ca_is_refused(process_bridge: BridgeProcess, tmp_path: Path) -> None:
    forged = Authority.create("not-the-cluster-ca").issue_client("kube-apiserver-kubelet-client", ["system:masters"])
    with pytest.raises(httpx.TransportError):
        kubelet_get(process_bridge, "/metrics", forged, tmp_path)


def test_a_cluster_user_without_node_rights_is_forbidden(
    kube: KubePart, cluster: Cluster, process_bridge: BridgeProcess, tmp_path: Path
) -> None:
    """Authenticated is not authorised: a valid cluster certificate of a user with no nodes/proxy right gets 403,
    and no log of any pod."""
    cluster.apply(pod_manifest("secretive", pod_template(PROCESS_SITE, "echo the-secret-line")))
    cluster.wait_phase("secretive", {"Succeeded"})
    intruder = kube.authority().issue_client("intruder", ["developers"])
    response = kubelet_get(process_bridge, f"/containerLogs/{cluster.namespace}/secretive/main", intruder, tmp_path)
    assert response.status_code == 403
    assert "user=intruder" in response.text and "subresource=proxy" in response.text
    assert "the-secret-line" not in response.text
    assert cluster.kubectl("logs", "secretive").strip() == "the-secret-line"  # the API server's way still works


def test_a_pods_directory_goes_with_the_pod(cluster: Cluster, process_bridge: BridgeProcess) -> None:
    """Secret files and scratch are removed once the pod has ended (its log stays for `kubectl logs`), and the
    whole directory once the pod is deleted."""
    token = base64.b64encode(b"s3cr3t").decode()
    cluster.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"}, "data": {"token": token}})
    script = 'test "$(cat "$CREDS/token")" = s3cr3t && echo x > "$TMPDIR/x" && echo done'
    spec = pod_template(PROCESS_SITE, script, env=[{"name": "CREDS", "value": "/sgs/creds"}])
    spec["volumes"].append({"name": "creds", "secret": {"secretName": "creds"}})
    spec["containers"][0]["volumeMounts"].append({"name": "creds", "mountPath": "/sgs/creds"})
    cluster.apply(pod_manifest("holder", spec))
    pod = cluster.wait_phase("holder", {"Succeeded", "Failed"})
    assert pod["status"]["phase"] == "Succeeded", (pod["status"], cluster.kubectl("logs", "holder"))
    pod_dir = process_bridge.workdir / "pods" / pod["metadata"]["uid"]
    wait_until(lambda: not (pod_dir / "volumes").exists(), what="the ended pod's volumes removed", timeout_s=15)
    assert cluster.kubectl("logs", "holder").strip() == "done"
    cluster.kubectl("delete", "pod", "holder", "--wait=true", "--timeout=60s")
    wait_until(lambda: not pod_dir.exists(), what="the deleted pod's directory removed", timeout_s=15)


def test_a_pod_deleted_while_the_bridge_was_down_is_cleaned_up_on_restart(
    kube: KubePart, cluster: Cluster, tmp_path: Path
) -> None:
    def bridge() -> BridgeProcess:
        return BridgeProcess(
            node_name="sgs-bridge-cleanup",
            site="bridge-cleanup",
            kubeconfig=kube.kubeconfig,
            workdir=tmp_path / "bridge",
            poll_interval_s=0.3,
        )

    first = bridge().start()
    try:
        cluster.apply(pod_manifest("left", pod_template("bridge-cleanup", "sleep 300")))
        pod = cluster.wait_phase("left", {"Running"})
        pod_dir = tmp_path / "bridge" / "pods" / pod["metadata"]["uid"]
        assert pod_dir.is_dir()
    finally:
        first.kill()
    cluster.kubectl("delete", "pod", "left", "--grace-period=0", "--force")
    with bridge() as second:
        wait_until(lambda: not pod_dir.exists(), what="the orphaned pod directory removed", timeout_s=30)
        assert second.process is not None and second.process.poll() is None


def metric_families(text: str) -> dict[str, str]:
    """Family name → type, as Prometheus reads the exposition."""
    return {family.name: family.type for family in text_string_to_metric_families(text)}


def test_the_metrics_port_serves_the_kubelet_ports_metrics_over_plain_http(
    kube: KubePart, process_bridge: BridgeProcess, tmp_path: Path
) -> None:
    """What a Prometheus in the cluster scrapes (the chart's ServiceMonitor): the same families as the kubelet
    port's /metrics, with no certificate, and the bridge's own series among them."""
    apiserver = Issued.load(kube.pki / "kubelet-client.crt", kube.pki / "kubelet-client.key")
    kubelet = kubelet_get(process_bridge, "/metrics", apiserver, tmp_path)
    plain = httpx.get(f"http://127.0.0.1:{process_bridge.metrics_port}/metrics", timeout=10)
    assert kubelet.status_code == plain.status_code == 200
    assert plain.headers["content-type"] == kubelet.headers["content-type"]
    families = metric_families(plain.text)
    assert families == metric_families(kubelet.text)
    bridge_families = {name for name in families if name.startswith("sgs_bridge_")}
    assert {"sgs_bridge_pods", "sgs_bridge_node_ready", "sgs_bridge_submit_seconds"} <= bridge_families
    assert f'sgs_bridge_node_ready{{provider="process",site="{PROCESS_SITE}"}} 1.0' in plain.text


def test_the_metrics_port_serves_nothing_but_metrics(cluster: Cluster, process_bridge: BridgeProcess) -> None:
    """No certificate asked, so nothing else: a pod's log stays behind the kubelet port's authentication."""
    cluster.apply(pod_manifest("chatty", pod_template(PROCESS_SITE, "echo a-private-line")))
    cluster.wait_phase("chatty", {"Succeeded"})
    base = f"http://127.0.0.1:{process_bridge.metrics_port}"
    for path in (f"/containerLogs/{cluster.namespace}/chatty/main", "/healthz", "/"):
        response = httpx.get(base + path, timeout=10)
        assert response.status_code == 404, (path, response.status_code)
        assert "a-private-line" not in response.text
    assert cluster.kubectl("logs", "chatty").strip() == "a-private-line"

"""A real Kubernetes control plane: etcd + kube-apiserver + kube-controller-manager + kube-scheduler.

Binaries come from tools/build-binaries.sh (pinned releases built from Go modules). Everything is on free
loopback ports with a fresh PKI in the work directory; clients authenticate with an admin bearer token
(group system:masters) written into `kubeconfig`. The API server reaches kubelets with a client certificate
from the cluster CA (user `kube-apiserver-kubelet-client`, bound to `system:kubelet-api-admin`), as kubeadm
sets it up. There are no nodes: pods stay Pending with a FailedScheduling event until a (virtual) kubelet
registers one.

`KubePart.existing(kubeconfig)` wraps a cluster someone else runs (kind, k3d, a site): nothing starts.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import secrets
import ssl
import subprocess
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Self

import httpx
import yaml

from sgs.kube.pki import Authority, new_key, private_pem, public_pem, write_pem
from sgs.testing._process import ManagedProcess, PartError, free_port, wait_until
from sgs.testing.base import Part, require_binary
from sgs.testing.binaries import BUILD_HINT, binary_path, kubectl_path

REPO_CRDS = Path(__file__).resolve().parents[2] / "crds"
SERVICE_CIDR = "10.0.0.0/24"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
CONTROLLERS = (
    "job-controller",
    "cronjob-controller",
    "ttl-after-finished-controller",
    "garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "deployment-controller",
    "replicaset-controller",
)
CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
KUBELET_CLIENT_USER = "kube-apiserver-kubelet-client"
RBAC = "rbac.authorization.k8s.io"
APISERVER_HOSTS = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
    "127.0.0.1",
    "10.0.0.1",
)


class KubectlError(subprocess.CalledProcessError):
    """A failed kubectl call whose message carries what kubectl said (a bare CalledProcessError hides it)."""

    def __str__(self) -> str:
        return f"{super().__str__()}\n{self.stderr or self.stdout}"


class KubePart(Part):
    """A node-less control plane; `.kubeconfig` (admin) and `.server` (https URL) once started."""

    name = "kube"

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        crds: Iterable[Path] | None = None,
        keep: bool = False,
        scheduler: bool = True,
    ) -> None:
        super().__init__(workdir, keep=keep)
        self.external = False
        self.scheduler = scheduler  # without it pods stay Pending, unscheduled and never retried
        self.kubeconfig = self.workdir / "kubeconfig"
        self.port = free_port()
        self.server = f"https://127.0.0.1:{self.port}"
        self.crd_files = list(crds) if crds is not None else default_crd_files()
        self._ports = {name: free_port() for name in ("etcd", "etcd-peer", "controller-manager", "scheduler")}
        self._token = secrets.token_hex(24)

    @classmethod
    def existing(cls, kubeconfig: Path, *, crds: Iterable[Path] | None = None) -> Self:
        """A cluster that is already running (KUBECONFIG): start() only installs the CRDs."""
        part = cls(kubeconfig.parent, crds=crds, keep=True)
        part.external = True
        part.kubeconfig = kubeconfig
        part.server = server_of(kubeconfig)
        return part

    @property
    def pki(self) -> Path:
        return self.workdir / "pki"

    def info(self) -> dict[str, Any]:
        return {"server": self.server, "kubeconfig": str(self.kubeconfig), "external": self.external}

    def exports(self) -> dict[str, str]:
        return {"KUBECONFIG": str(self.kubeconfig)}

    def kubectl(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run kubectl (the pinned build, else the one on PATH) against this cluster."""
        binary = require_binary(kubectl_path(), "kubectl", BUILD_HINT)
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        done = subprocess.run(
            [str(binary), *args], env=env, input=input, capture_output=True, text=True, check=False, timeout=120
        )
        if check and done.returncode != 0:
            raise KubectlError(done.returncode, done.args, done.stdout, done.stderr)
        return done

    def api(self) -> httpx.Client:
        """An HTTP client for the API server (own control plane only: token auth, our CA)."""
        if self.external:
            raise PartError("kube: api() needs the control plane started here; use kubectl() for an existing one")
        context = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        headers = {"Authorization": f"Bearer {self._token}"}
        return httpx.Client(base_url=self.server, verify=context, headers=headers, timeout=30)

    def authority(self) -> Authority:
        """The cluster CA (own control plane only): tests issue client certificates from it."""
        return Authority.load(self.pki / "ca.crt", self.pki / "ca.key")

    def compact(self) -> None:
        """Compact etcd's history up to now (the API server does it every 5 minutes): older versions are gone."""
        if self.external:
            raise PartError("kube: compact() needs the control plane started here")
        etcd = f"http://127.0.0.1:{self._ports['etcd']}/v3"
        revision = httpx.post(f"{etcd}/kv/range", json={"key": base64.b64encode(b"/").decode()}, timeout=10)
        current = revision.json()["header"]["revision"]
        response = httpx.post(f"{etcd}/kv/compaction", json={"revision": current, "physical": True}, timeout=30)
        if response.status_code != 200:
            raise PartError(f"kube: etcd compaction refused ({response.status_code}): {response.text}")

    def stop_apiserver(self) -> None:
        """Stop the API server alone (etcd and its data stay): clients get refused connections until
        start_apiserver(), as when a data centre's control plane goes down."""
        if self.external:
            raise PartError("kube: stop_apiserver() needs the control plane started here")
        for process in [p for p in self.processes if p.name == "kube-apiserver"]:
            process.stop()
            self.processes.remove(process)

    def start_apiserver(self) -> None:
        """Start the API server again, on the same port with the same PKI (tokens issued stay valid)."""
        if any(p.name == "kube-apiserver" for p in self.processes):
            return
        self._start_apiserver()

    def kubeconfig_for(self, server: str) -> str:
        """The admin kubeconfig with another server URL (a relay in front of this API server)."""
        config = yaml.safe_load(self.kubeconfig.read_text())
        for cluster in config["clusters"]:
            cluster["cluster"]["server"] = server
        return str(yaml.safe_dump(config, sort_keys=False))

    def install_crds(self, files: Iterable[Path], *, timeout_s: float = 60) -> list[str]:
        """Apply every CustomResourceDefinition in `files` and wait until each is Established."""
        documents = [doc for path in files for doc in _yaml_documents(path)]
        crds = [doc for doc in documents if doc.get("kind") == "CustomResourceDefinition"]
        if not crds:
            return []
        if self.external:
            self._kubectl_apply_crds(crds, timeout_s)
        else:
            self._api_apply_crds(crds, timeout_s)
        return [crd["metadata"]["name"] for crd in crds]

    def _start(self) -> None:
        if self.external:
            self.install_crds(self.crd_files)
            return
        self._write_pki()
        self._write_kubeconfig()
        self._start_etcd()
        self._start_apiserver()
        self._start_controller_manager()
        if self.scheduler:
            self._start_scheduler()
        self._wait_default_service_account()
        self._bind_kubelet_client()
        self.install_crds(self.crd_files)

    def _stop_processes(self) -> None:
        if not self.external:
            super()._stop_processes()

    # --- PKI and credentials -------------------------------------------------------------------

    def _write_pki(self) -> None:
        tokens = self.pki / "tokens.csv"
        if tokens.is_file() and (self.pki / "kubelet-client.crt").is_file():
            # A restart over kept data keeps its CA, keys and admin token: tokens already issued stay valid.
            self._token = tokens.read_text().split(",", 1)[0]
            return
        if tokens.is_file():
            # Kept from before the API server had a kubelet client certificate (and the CA key was not kept):
            # a new PKI, the same admin token.
            self._token = tokens.read_text().split(",", 1)[0]
        ca = Authority.create("sgs-dev-ca")
        ca.write(self.pki / "ca.crt", self.pki / "ca.key")
        ca.issue_server("kube-apiserver", APISERVER_HOSTS).write(self.pki / "apiserver.crt", self.pki / "apiserver.key")
        ca.issue_client(KUBELET_CLIENT_USER).write(self.pki / "kubelet-client.crt", self.pki / "kubelet-client.key")
        sa_key = new_key()  # signs service-account tokens (ES256)
        write_pem(self.pki / "sa.key", private_pem(sa_key), private=True)
        write_pem(self.pki / "sa.pub", public_pem(sa_key))
        write_pem(tokens, f'{self._token},admin,admin,"system:masters"\n'.encode(), private=True)

    def _write_kubeconfig(self) -> None:
        ca_data = (self.pki / "ca.crt").read_bytes()

        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "sgs-dev",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority-data": base64.b64encode(ca_data).decode(),
                    },
                }
            ],
            "users": [{"name": "sgs-admin", "user": {"token": self._token}}],
            "contexts": [{"name": "sgs-dev", "context": {"cluster": "sgs-dev", "user": "sgs-admin"}}],
            "current-context": "sgs-dev",
        }
        self.kubeconfig.write_text(yaml.safe_dump(config, sort_keys=False))
        self.kubeconfig.chmod(0o600)

    # --- daemons -------------------------------------------------------------------------------

    def _start_etcd(self) -> None:
        binary = require_binary(binary_path("etcd"), "etcd", BUILD_HINT)
        client = f"http://127.0.0.1:{self._ports['etcd']}"
        peer = f"http://127.0.0.1:{self._ports['etcd-peer']}"
        argv = [
            str(binary),
            "--name=default",
            f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=default={peer}",
            "--unsafe-no-fsync",  # a throw-away store: fsync would dominate start-up and test time
            "--log-level=warn",
        ]
        process = self._spawn(ManagedProcess("etcd", argv, self.log_dir / "etcd.log"))
        wait_until(lambda: _http_ok(f"{client}/health"), what="etcd /health", timeout_s=30, process=process)

    def _start_apiserver(self) -> None:
        binary = require_binary(binary_path("kube-apiserver"), "kube-apiserver", BUILD_HINT)
        argv = [
            str(binary),
            f"--etcd-servers=http://127.0.0.1:{self._ports['etcd']}",
            "--bind-address=127.0.0.1",
            # Without it the apiserver looks for a default route to pick its address, and fails.
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.port}",
            f"--cert-dir={self.pki}",
            f"--tls-cert-file={self.pki / 'apiserver.crt'}",
            f"--tls-private-key-file={self.pki / 'apiserver.key'}",
            f"--client-ca-file={self.pki / 'ca.crt'}",
            f"--token-auth-file={self.pki / 'tokens.csv'}",
            # How it proves itself to kubelets (logs, exec): a client certificate from the cluster CA.
            f"--kubelet-client-certificate={self.pki / 'kubelet-client.crt'}",
            f"--kubelet-client-key={self.pki / 'kubelet-client.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={self.pki / 'sa.pub'}",
            f"--service-account-signing-key-file={self.pki / 'sa.key'}",
            "--authorization-mode=RBAC",
            "--allow-privileged=true",
            "--profiling=false",
            # PodTemplates (which nothing here uses) are watched straight from etcd, not its watch cache: after
            # compact(), a watch from an older version gets the 410 Gone a long-lived cluster gives.
            "--watch-cache-sizes=podtemplates#0",
        ]
        process = self._spawn(ManagedProcess("kube-apiserver", argv, self.log_dir / "kube-apiserver.log"))
        wait_until(self._apiserver_ready, what="kube-apiserver /readyz", timeout_s=90, process=process)

    def _start_controller_manager(self) -> None:
        binary = require_binary(binary_path("kube-controller-manager"), "kube-controller-manager", BUILD_HINT)
        port = self._ports["controller-manager"]
        argv = [
            str(binary),
            f"--kubeconfig={self.kubeconfig}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            f"--controllers={','.join(CONTROLLERS)}",
            f"--service-account-private-key-file={self.pki / 'sa.key'}",
            f"--root-ca-file={self.pki / 'ca.crt'}",
            "--use-service-account-credentials=false",
            "--profiling=false",
        ]
        log = self.log_dir / "kube-controller-manager.log"
        process = self._spawn(ManagedProcess("kube-controller-manager", argv, log))
        wait_until(
            lambda: _http_ok(f"https://127.0.0.1:{port}/healthz", insecure=True),
            what="kube-controller-manager /healthz",
            timeout_s=60,
            process=process,
        )

    def _start_scheduler(self) -> None:
        binary = require_binary(binary_path("kube-scheduler"), "kube-scheduler", BUILD_HINT)
        port = self._ports["scheduler"]
        argv = [
            str(binary),
            f"--kubeconfig={self.kubeconfig}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            "--profiling=false",
        ]
        process = self._spawn(ManagedProcess("kube-scheduler", argv, self.log_dir / "kube-scheduler.log"))
        wait_until(
            lambda: _http_ok(f"https://127.0.0.1:{port}/healthz", insecure=True),
            what="kube-scheduler /healthz",
            timeout_s=60,
            process=process,
        )

    # --- readiness -----------------------------------------------------------------------------

    def _apiserver_ready(self) -> bool:
        try:
            with self.api() as api:
                return api.get("/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    def _wait_default_service_account(self) -> None:
        # Pods are refused until the ServiceAccount controller made `default` in their namespace.
        def exists() -> bool:
            with self.api() as api:
                return api.get("/api/v1/namespaces/default/serviceaccounts/default").status_code == 200

        wait_until(exists, what="the default ServiceAccount", timeout_s=30)

    def _bind_kubelet_client(self) -> None:
        """Let the API server's kubelet client user do what it asks of kubelets (kubeadm's binding)."""
        binding = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "sgs:kube-apiserver-kubelet-client"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:kubelet-api-admin",
            },
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": KUBELET_CLIENT_USER}],
        }
        with self.api() as api:
            response = api.post("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", json=binding)
            if response.status_code not in (201, 409):
                raise PartError(f"kube: kubelet client binding refused ({response.status_code}): {response.text}")

    # --- CRDs ----------------------------------------------------------------------------------

    def _api_apply_crds(self, crds: list[dict[str, Any]], timeout_s: float) -> None:
        with self.api() as api:
            for crd in crds:
                name = crd["metadata"]["name"]
                response = api.patch(
                    f"{CRD_PATH}/{name}",
                    params={"fieldManager": "sgs-dev", "force": "true"},
                    content=json.dumps(crd),
                    headers={"Content-Type": "application/apply-patch+yaml"},
                )
                if response.status_code >= 400:
                    raise PartError(f"kube: CRD {name} refused ({response.status_code}): {response.text[:2000]}")
            deadline = time.monotonic() + timeout_s
            for crd in crds:
                name = crd["metadata"]["name"]
                wait_until(
                    functools.partial(_crd_established, api, name),
                    what=f"CRD {name} to be Established",
                    timeout_s=max(1.0, deadline - time.monotonic()),
                )

    def _kubectl_apply_crds(self, crds: list[dict[str, Any]], timeout_s: float) -> None:
        manifest = yaml.safe_dump_all(crds)
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=manifest)
        names = [f"crd/{crd['metadata']['name']}" for crd in crds]
        self.kubectl("wait", "--for=condition=Established", f"--timeout={int(timeout_s)}s", *names)


def default_crd_files() -> list[Path]:
    """The generated sgs CRDs in the checkout's crds/ (none yet is fine)."""
    return sorted(REPO_CRDS.glob("*.yaml")) if REPO_CRDS.is_dir() else []


def server_of(kubeconfig: Path) -> str:
    """The API server URL of the kubeconfig's current context."""
    config = yaml.safe_load(kubeconfig.read_text()) or {}
    contexts = {c["name"]: c.get("context", {}) for c in config.get("contexts") or []}
    clusters = {c["name"]: c.get("cluster", {}) for c in config.get("clusters") or []}
    context = contexts.get(config.get("current-context", ""), {})
    server = clusters.get(context.get("cluster", ""), {}).get("server")
    if not server:
        raise PartError(f"kube: {kubeconfig} has no server for its current-context")
    return str(server)


def _crd_established(api: httpx.Client, name: str) -> bool:
    crd: Mapping[str, Any] = api.get(f"{CRD_PATH}/{name}").json()
    conditions = crd.get("status", {}).get("conditions") or []
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)


def _yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if isinstance(doc, dict)]


def _http_ok(url: str, *, insecure: bool = False) -> bool:
    # The components' own health ports serve self-signed loopback certs: nothing to verify there.
    try:
        return httpx.get(url, verify=not insecure, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False

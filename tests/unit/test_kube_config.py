"""Where sgs.kube finds credentials: an explicit kubeconfig, $KUBECONFIG, then a pod's service account; bound
tokens are re-read as the kubelet rotates them; a missing file is named in the error."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from sgs.kube.config import ConfigError, TokenFile, in_cluster, load, locate


def service_account(directory: Path, token: str = "t0k3n") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "token").write_text(token)
    (directory / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    (directory / "namespace").write_text("sgs-system\n")
    return directory


POD_ENV = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}


def test_an_explicit_kubeconfig_comes_first_then_kubeconfig_then_the_service_account(tmp_path: Path) -> None:
    account = service_account(tmp_path / "sa")
    listed = tmp_path / "listed"
    listed.write_text("{}")
    assert locate(tmp_path / "given", account, {**POD_ENV, "KUBECONFIG": str(listed)}) == tmp_path / "given"
    assert locate(None, account, {**POD_ENV, "KUBECONFIG": f"{tmp_path / 'missing'}:{listed}"}) == listed
    assert locate(None, account, POD_ENV) is None  # in-cluster


def test_a_kubeconfig_variable_naming_no_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        locate(None, tmp_path, {"KUBECONFIG": str(tmp_path / "nope")})


def test_in_cluster_reads_the_pods_files_and_environment(tmp_path: Path) -> None:
    config = in_cluster(service_account(tmp_path / "sa"), {**POD_ENV, "KUBERNETES_SERVICE_HOST": "fd00::1"})
    assert config.server == "https://[fd00::1]:443"
    assert config.in_cluster and config.refreshes and config.namespace == "sgs-system"
    assert config.ca_file == tmp_path / "sa" / "ca.crt"

    async def headers() -> dict[str, str]:
        return await config.auth_headers()

    assert asyncio.run(headers()) == {"Authorization": "Bearer t0k3n"}


def test_a_rotated_token_is_read_again(tmp_path: Path) -> None:
    account = service_account(tmp_path / "sa")
    token = TokenFile(account / "token", reread_s=0.0)
    assert token.current() == "t0k3n"
    (account / "token").write_text("r0tated")
    assert token.current() == "r0tated"


def test_a_missing_token_names_the_file(tmp_path: Path) -> None:
    account = service_account(tmp_path / "sa")
    (account / "token").unlink()
    with pytest.raises(ConfigError, match=str(account / "token")):
        in_cluster(account, POD_ENV)
    with pytest.raises(ConfigError, match="no Kubernetes credentials"):
        asyncio.run(load(None, service_account_dir=account, environ={"HOME": str(tmp_path), **POD_ENV}))


def test_the_cli_reports_bad_credentials_in_one_line(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "sgs.cli.main", "run", "priority", "x", "5", "--kubeconfig", str(tmp_path / "no")]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "error: run default/x: kubeconfig" in result.stderr and "Traceback" not in result.stderr

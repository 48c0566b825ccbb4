"""`sgs archive ingest --upload`: plain files go to the Site's store at their deterministic keys before they are
registered; a missing Sites file or an unknown Site is refused naming the option. `sgs dev up` refuses to start a
service before the parts it uses."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sgs.cli.main import app
from sgs.dev import stack

runner = CliRunner()

SITES = """
apiVersion: sgs.io/v1alpha1
kind: Site
metadata: {name: site-a}
spec: {storage: {kind: posix, path: a}, capacity: {cores: 1, storageTb: 1}}
"""
INGEST = ["archive", "ingest", "--type", "raw", "--run", "raw/n1", "--data-id", "instrument=VIS", "--upload"]
UNREACHABLE = ["--url", "http://127.0.0.1:9"]  # discard port: nothing listens


def test_upload_needs_a_sites_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SGS_SITES_FILE", raising=False)
    (tmp_path / "x.fits").write_bytes(b"raw")
    refused = runner.invoke(app, [*INGEST, str(tmp_path / "x.fits"), "--site", "site-a", *UNREACHABLE])
    assert refused.exit_code == 2 and "--sites" in refused.output, refused.output


def test_upload_to_a_site_the_sites_file_lacks_is_refused(tmp_path: Path) -> None:
    (tmp_path / "sites.yaml").write_text(SITES)
    (tmp_path / "x.fits").write_bytes(b"raw")
    args = [*INGEST, str(tmp_path / "x.fits"), "--site", "site-z", "--sites", str(tmp_path / "sites.yaml")]
    refused = runner.invoke(app, [*args, *UNREACHABLE])
    assert refused.exit_code == 2 and "site-z" in refused.output and "--site" in refused.output, refused.output


def test_upload_writes_the_file_at_its_deterministic_key(tmp_path: Path) -> None:
    (tmp_path / "sites.yaml").write_text(SITES)
    content = os.urandom(10_000)
    (tmp_path / "x_e7_d1.fits").write_bytes(content)
    args = [*INGEST, str(tmp_path / "x_e7_d1.fits"), "--site", "site-a", "--sites", str(tmp_path / "sites.yaml")]
    done = runner.invoke(app, [*args, *UNREACHABLE])
    assert done.exit_code == 1 and "cannot reach the archive" in done.output, done.output  # uploaded, not registered
    stored = list((tmp_path / "a" / "raw").rglob("*.fits"))
    assert len(stored) == 1 and stored[0].read_bytes() == content
    # raw/<id[0:2]>/<id[2:4]>/<id>.fits
    relative = stored[0].relative_to(tmp_path / "a").parts
    assert relative[1] == stored[0].stem[:2] and relative[2] == stored[0].stem[2:4]


def test_dev_up_refuses_a_service_before_the_parts_it_uses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SGS_CACHE", str(tmp_path))
    reports: list[tuple[str, str]] = []
    with pytest.raises(RuntimeError, match=r"transfer: needs pg, nats, archive running first"):
        stack.up(["transfer"], lambda unit, message: reports.append((unit, message)))
    assert reports and reports[0][0] == "transfer" and reports[0][1].startswith("FAILED")
    assert stack.load_state() == {}

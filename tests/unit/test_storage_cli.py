"""`sgs storage` on two POSIX Sites of a Sites file: copy (verified), list, verify, keys; errors exit non-zero."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from typer.testing import CliRunner

from sgs.cli.main import app
from sgs.storage import PosixStore, checksum_bytes, replica_key

runner = CliRunner()

SITES = """
apiVersion: sgs.io/v1alpha1
kind: Site
metadata: {name: site-a}
spec: {storage: {kind: posix, path: a}, capacity: {cores: 1, storageTb: 1}}
---
apiVersion: sgs.io/v1alpha1
kind: Site
metadata: {name: site-b}
spec: {storage: {kind: posix, path: b}, capacity: {cores: 1, storageTb: 1}}
"""


def test_copy_list_and_verify_between_sites(tmp_path: Path) -> None:
    sites = tmp_path / "sites.yaml"
    sites.write_text(SITES)
    data = os.urandom(3 << 20)
    sums = PosixStore("site-a", tmp_path / "a").put_bytes("raw/x.fits", data)
    copied = runner.invoke(app, ["storage", "cp", "site-a:raw/x.fits", "site-b", "--sites", str(sites)])
    assert copied.exit_code == 0, copied.output
    assert f"adler32 {sums.adler32} sha256 {sums.sha256}" in copied.output
    assert checksum_bytes((tmp_path / "b" / "raw" / "x.fits").read_bytes()) == sums

    listed = runner.invoke(app, ["storage", "ls", "site-b:raw/", "--sites", str(sites)])
    assert listed.exit_code == 0 and "raw/x.fits" in listed.output and "3,145,728" in listed.output

    # adler32 written without leading zeros is still the same checksum
    expected = ["--size", str(sums.size), "--adler32", f"{int(sums.adler32):x}", "--sha256", sums.sha256]
    good = runner.invoke(app, ["storage", "verify", "site-b:raw/x.fits", *expected, "--sites", str(sites)])
    assert good.exit_code == 0, good.output
    wrong = [*expected[:-1], "0" * 64]
    bad = runner.invoke(app, ["storage", "verify", "site-b:raw/x.fits", *wrong, "--sites", str(sites)])
    assert bad.exit_code == 1 and "sha256" in bad.output


def test_a_copy_that_does_not_match_the_expected_checksums_is_refused(tmp_path: Path) -> None:
    sites = tmp_path / "sites.yaml"
    sites.write_text(SITES)
    PosixStore("site-a", tmp_path / "a").put_bytes("raw/x.fits", b"actual content")
    other = checksum_bytes(b"something else")
    wrong = ["--size", str(other.size), "--adler32", str(other.adler32), "--sha256", other.sha256]
    refused = runner.invoke(app, ["storage", "cp", "site-a:raw/x.fits", "site-b:y", *wrong, "--sites", str(sites)])
    assert refused.exit_code == 1 and "checksums do not match" in refused.output
    assert not (tmp_path / "b" / "y").exists()


def test_unknown_sites_bad_keys_and_the_replica_key(tmp_path: Path) -> None:
    sites = tmp_path / "sites.yaml"
    sites.write_text(SITES)
    unknown = runner.invoke(app, ["storage", "ls", "site-z", "--sites", str(sites)])
    assert unknown.exit_code == 2 and "site-z: no such Site" in unknown.output
    escape = runner.invoke(app, ["storage", "cp", "site-a:../../etc/passwd", "site-b", "--sites", str(sites)])
    assert escape.exit_code == 1 and "must be relative" not in escape.output and "'..'" in escape.output
    dataset_id = uuid.uuid4()
    key = runner.invoke(app, ["storage", "key", "nir_stack", str(dataset_id), "--suffix", ".fits"])
    assert key.exit_code == 0 and key.output.strip() == replica_key("nir_stack", dataset_id, ".fits")

"""The Sites loader on a Sites file: Site and Secret manifests, resolved credentials, per-Site errors."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sgs.storage import PosixStore, S3Store
from sgs.storage.sites import SitesFileError, SiteStores, load_sites_file, resolve

SITES = """
apiVersion: sgs.io/v1alpha1
kind: Site
metadata: {name: sdc-fr, labels: {tier: primary, country: FR}}
spec:
  storage: {kind: s3, endpoint: "http://127.0.0.1:9000", bucket: sgs, credentials: {name: sdc-fr-s3}}
  archiveUrl: http://127.0.0.1:8000
  capacity: {cores: 64, storageTb: 10}
  maintenance:
  - {start: "2027-03-01T06:00:00Z", end: "2027-03-02T18:00:00Z", reason: storage upgrade}
---
apiVersion: v1
kind: Secret
metadata: {name: sdc-fr-s3}
data: {accessKey: ACCESS}
stringData: {secretKey: not-so-secret}
---
apiVersion: sgs.io/v1alpha1
kind: Site
metadata: {name: sdc-it}
spec:
  storage: {kind: posix, path: stores/sdc-it}
  capacity: {cores: 16, storageTb: 1}
""".replace("ACCESS", base64.b64encode(b"fr-access").decode())


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sites.yaml"
    path.write_text(text)
    return path


def test_sites_with_credentials_labels_maintenance_and_archive(tmp_path: Path) -> None:
    sites = load_sites_file(write(tmp_path, SITES))
    assert sorted(sites.sites) == ["sdc-fr", "sdc-it"] and sites.errors == {}
    fr = sites["sdc-fr"]
    assert fr.credentials is not None
    assert (fr.credentials.access_key, fr.credentials.secret_key) == ("fr-access", "not-so-secret")
    assert "not-so-secret" not in repr(fr.credentials)
    assert fr.labels == {"tier": "primary", "country": "FR"} and fr.archive_url == "http://127.0.0.1:8000"
    window = fr.maintenance_at(datetime(2027, 3, 1, 12, tzinfo=UTC))
    assert window is not None and window.reason == "storage upgrade"
    assert fr.maintenance_at(datetime(2027, 3, 3, tzinfo=UTC)) is None
    store = fr.store()
    assert isinstance(store, S3Store) and store.bucket == "sgs" and not store.client._base_url.is_https
    local = sites["sdc-it"].store()
    assert isinstance(local, PosixStore) and local.root == (tmp_path / "stores" / "sdc-it").resolve()


def test_a_broken_site_is_reported_and_does_not_hide_the_others(tmp_path: Path) -> None:
    text = SITES.replace("name: sdc-fr-s3}\ndata", "name: other}\ndata")
    text += """---
apiVersion: sgs.io/v1alpha1
kind: Site
metadata: {name: sdc-de}
spec:
  storage: {kind: s3, bucket: sgs}
  capacity: {cores: 1, storageTb: 1}
"""
    sites = load_sites_file(write(tmp_path, text))
    assert list(sites.sites) == ["sdc-it"]
    assert sites.errors["sdc-fr"] == "spec.storage.credentials: Secret default/sdc-fr-s3 not found"
    assert "s3 storage needs endpoint and bucket" in sites.errors["sdc-de"]
    with pytest.raises(KeyError, match=r"sdc-fr: spec\.storage\.credentials"):
        sites["sdc-fr"]


def test_a_secret_without_the_named_key_is_an_error_naming_it() -> None:
    site = {
        "metadata": {"name": "s", "namespace": "ns"},
        "spec": {
            "storage": {"kind": "s3", "endpoint": "h:1", "bucket": "b", "credentials": {"name": "k"}},
            "capacity": {"cores": 1, "storageTb": 1},
        },
    }
    secret = {"metadata": {"name": "k", "namespace": "ns"}, "stringData": {"accessKey": "a"}}
    assert resolve([site], [secret]).errors == {"s": "spec.storage.credentials: Secret ns/k has no secretKey"}
    elsewhere = {**secret, "metadata": {"name": "k", "namespace": "other"}}
    assert "not found" in resolve([site], [elsewhere]).errors["s"]


@pytest.mark.parametrize(
    ("text", "reason"),
    [("kind: Pod\n", "got 'Pod'"), ("- a\n", "got None"), ("a: [\n", "cannot read it as YAML")],
)
def test_what_is_not_a_sites_file_is_refused(tmp_path: Path, text: str, reason: str) -> None:
    with pytest.raises(SitesFileError, match=reason):
        load_sites_file(write(tmp_path, text))


def test_site_stores_are_shared_and_renewed_when_the_storage_changes(tmp_path: Path) -> None:
    path = write(tmp_path, SITES)
    stores = SiteStores(load_sites_file(path), connections=4)
    fr, it = stores["sdc-fr"], stores["sdc-it"]
    assert stores["sdc-fr"] is fr
    stores.update(load_sites_file(path))
    assert stores["sdc-fr"] is fr and stores["sdc-it"] is it  # nothing changed: same stores, same pools
    write(tmp_path, SITES.replace("not-so-secret", "rotated"))
    stores.update(load_sites_file(path))
    assert stores["sdc-fr"] is not fr and stores["sdc-it"] is it
    write(tmp_path, SITES.split("---")[0])
    stores.update(load_sites_file(path))
    with pytest.raises(KeyError, match=r"sdc-fr: spec\.storage\.credentials"):
        stores["sdc-fr"]
    with pytest.raises(KeyError, match="sdc-it: no such Site"):
        stores["sdc-it"]


def test_the_archive_token_comes_from_the_secret_the_site_names() -> None:
    site = {
        "metadata": {"name": "s", "namespace": "ns"},
        "spec": {
            "storage": {"kind": "posix", "path": "/x"},
            "capacity": {"cores": 1, "storageTb": 1},
            "archiveCredentials": {"name": "s-archive"},
        },
    }
    secret = {"metadata": {"name": "s-archive", "namespace": "ns"}, "stringData": {"token": "sgs_site_token"}}
    loaded = resolve([site], [secret]).sites["s"]
    assert loaded.archive_token == "sgs_site_token"
    assert "sgs_site_token" not in repr(loaded)
    assert resolve([site], []).errors == {"s": "spec.archiveCredentials: Secret ns/s-archive not found"}
    empty = {**secret, "stringData": {"other": "x"}}
    assert resolve([site], [empty]).errors == {"s": "spec.archiveCredentials: Secret ns/s-archive has no token"}

"""The Sites loader against the real API server: Site resources and their Secrets, read once and watched."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from sgs.kube import KubeClient
from sgs.storage import S3Store
from sgs.storage.site_watch import SitesWatch, load_sites_from_cluster, sites_path
from sgs.storage.sites import Sites
from sgs.testing.kube import KubePart
from sgs.testing.minio import MinioPart

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


@pytest.fixture
async def namespace(kube: KubePart) -> AsyncIterator[str]:
    name = f"sites-{uuid.uuid4().hex[:8]}"
    kube.kubectl("create", "namespace", name)
    yield name
    kube.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
async def client(kube: KubePart) -> AsyncIterator[KubeClient]:
    connected = await KubeClient.connect(kube.kubeconfig)
    yield connected
    await connected.close()


def site_body(name: str, minio: MinioPart, secret: str, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "sgs.io/v1alpha1",
        "kind": "Site",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "storage": {
                "kind": "s3",
                "endpoint": minio.endpoint,
                "bucket": minio.bucket,
                "secure": False,
                "credentials": {"name": secret},
            },
            "archiveUrl": f"http://archive.{name}:8000",
            "capacity": {"cores": 8, "storageTb": 1},
            "maintenance": [{"start": "2027-03-01T06:00:00Z", "end": "2027-03-02T06:00:00Z", "reason": "disks"}],
        },
    }


def secret_body(name: str, access_key: str, secret_key: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "stringData": {"accessKey": access_key, "secretKey": secret_key},
    }


async def until(check: Callable[[], bool], what: str, timeout_s: float = 20) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not check():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_sites_and_their_secrets_are_read_from_the_cluster(
    client: KubeClient, namespace: str, minio_sites: list[MinioPart]
) -> None:
    minio = minio_sites[0]
    secrets = f"/api/v1/namespaces/{namespace}/secrets"
    await client.create(secrets, secret_body("fr-s3", minio.access_key, minio.secret_key))
    await client.create(sites_path(namespace), site_body("sdc-fr", minio, "fr-s3", tier="primary"))
    await client.create(sites_path(namespace), site_body("sdc-de", minio, "missing-secret"))

    sites = await load_sites_from_cluster(client, namespace)
    assert list(sites.sites) == ["sdc-fr"]
    assert sites.errors == {"sdc-de": f"spec.storage.credentials: Secret {namespace}/missing-secret not found"}
    fr = sites["sdc-fr"]
    assert fr.labels == {"tier": "primary"} and fr.archive_url == "http://archive.sdc-fr:8000"
    assert fr.resource.spec.maintenance[0].reason == "disks"
    store = fr.store()
    assert isinstance(store, S3Store)
    key = f"site-watch/{uuid.uuid4().hex}"
    sums = store.put_bytes(key, b"reached with the Secret's keys")
    assert store.stat(key).size == sums.size
    store.delete(key)


async def test_the_watch_follows_sites_and_rotated_secrets(
    client: KubeClient, namespace: str, minio_sites: list[MinioPart]
) -> None:
    minio = minio_sites[1]
    secrets = f"/api/v1/namespaces/{namespace}/secrets"
    await client.create(secrets, secret_body("s3", minio.access_key, "wrong-key"))
    await client.create(sites_path(namespace), site_body("sdc-it", minio, "s3"))
    snapshots: list[Sites] = []
    watch = SitesWatch(client, namespace, on_change=snapshots.append, resync_s=0.5)
    stopped = asyncio.Event()
    task = asyncio.create_task(watch.run(stopped))
    try:
        await asyncio.wait_for(watch.synced.wait(), 20)
        assert list(watch.current.sites) == ["sdc-it"]

        await client.create(sites_path(namespace), site_body("sdc-es", minio, "s3", country="ES"))
        await until(lambda: "sdc-es" in watch.current, "the new Site")
        assert watch.current["sdc-es"].labels == {"country": "ES"}

        rotated = secret_body("s3", minio.access_key, minio.secret_key)
        await client.merge_patch(f"{secrets}/s3", {"stringData": rotated["stringData"]})
        await until(lambda: watch.current["sdc-it"].credentials.secret_key == minio.secret_key, "the new key")  # type: ignore[union-attr]
        assert watch.current["sdc-it"].store().exists("nothing-here") is False  # the new key is accepted

        await client.delete(f"{sites_path(namespace)}/sdc-es")
        await until(lambda: "sdc-es" not in watch.current, "the deleted Site to go")
        assert [sorted(s.sites) for s in snapshots][-1] == ["sdc-it"]
    finally:
        stopped.set()
        await asyncio.wait_for(task, 10)

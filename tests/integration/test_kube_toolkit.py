"""The core's Kubernetes toolkit (sgs.kube) against the real API server: paged LIST, a watch from a compacted
version (410 Gone) listed again, lines longer than aiohttp's readline takes, and errors with the API's reason."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from sgs.kube import JSON, KubeClient, KubeError, Watch
from sgs.testing.kube import KubePart

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


class Names:
    """A cache of object names, and the event kinds seen."""

    def __init__(self) -> None:
        self.names: set[str] = set()
        self.kinds: list[str] = []
        self.sizes: dict[str, int] = {}

    def replace(self, items: list[JSON]) -> None:
        self.names = {item["metadata"]["name"] for item in items}

    def apply(self, kind: str, obj: JSON) -> None:
        self.kinds.append(kind)
        name = obj["metadata"]["name"]
        self.sizes[name] = len(json.dumps(obj))
        if kind == "DELETED":
            self.names.discard(name)
        else:
            self.names.add(name)


async def until(check: Callable[[], bool], what: str, timeout_s: float = 15) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not check():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


@pytest.fixture
async def namespace(kube: KubePart) -> AsyncIterator[str]:
    name = f"toolkit-{uuid.uuid4().hex[:8]}"
    kube.kubectl("create", "namespace", name)
    yield name
    kube.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
async def client(kube: KubePart) -> AsyncIterator[KubeClient]:
    connected = await KubeClient.connect(kube.kubeconfig)
    yield connected
    await connected.close()


async def make_configmap(client: KubeClient, namespace: str, name: str, **annotations: str) -> None:
    body: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}
    if annotations:
        body["metadata"]["annotations"] = annotations
    await client.create(f"/api/v1/namespaces/{namespace}/configmaps", body)


async def test_a_list_is_read_page_by_page(client: KubeClient, namespace: str) -> None:
    for index in range(5):
        await make_configmap(client, namespace, f"cm-{index}")
    names = Names()
    watch = Watch(client, f"/api/v1/namespaces/{namespace}/configmaps", names, page_size=2)
    await watch.list_all()
    assert {f"cm-{i}" for i in range(5)} <= names.names  # kube-root-ca.crt is there too


async def test_a_watch_from_a_compacted_version_lists_again(kube: KubePart, client: KubeClient, namespace: str) -> None:
    """etcd compacted past the version a watch resumes from: the server answers 410 Gone, and the watch lists."""
    path = f"/api/v1/namespaces/{namespace}/podtemplates"  # watched from etcd itself (see KubePart.compact)
    await client.create(path, template("old"))
    names = Names()
    watch = Watch(client, path, names, retry_s=0.1)
    version = await watch.list_all()
    await client.create(path, template("new"))
    await client.create(path, template("newer"))
    kube.compact()  # everything before "newer" is gone, "new" included
    stopped = asyncio.Event()
    running = asyncio.create_task(watch.run(stopped, resume_from=version))
    try:
        await until(lambda: watch.lists == 2, "a LIST after 410 Gone")
        assert names.names == {"old", "new", "newer"}
        assert names.kinds == []  # "new" came with the LIST, not replayed from a version etcd no longer has
        await client.create(path, template("later"))
        await until(lambda: "later" in names.names, "the watch after the new LIST")
    finally:
        stopped.set()
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


def template(name: str) -> JSON:
    container = {"name": "main", "image": "none"}
    return {
        "apiVersion": "v1",
        "kind": "PodTemplate",
        "metadata": {"name": name},
        "template": {"spec": {"containers": [container]}},
    }


async def test_an_event_longer_than_a_readline_buffer_arrives_whole(client: KubeClient, namespace: str) -> None:
    names = Names()
    watch = Watch(client, f"/api/v1/namespaces/{namespace}/configmaps", names)
    version = await watch.list_all()
    stopped = asyncio.Event()
    running = asyncio.create_task(watch.run(stopped, resume_from=version))
    try:
        await make_configmap(client, namespace, "large", note="x" * 200_000)  # aiohttp's readline stops at 128 KiB
        await until(lambda: "large" in names.names, "the large object's event")
    finally:
        stopped.set()
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    assert names.sizes["large"] > 200_000


async def test_an_error_carries_the_api_servers_reason(client: KubeClient, namespace: str) -> None:
    assert await client.get_or_none(f"/api/v1/namespaces/{namespace}/configmaps/missing") is None
    with pytest.raises(KubeError) as raised:
        await make_configmap(client, namespace, "Not_Valid")
    assert raised.value.status == 422 and raised.value.reason == "Invalid"
    assert "Not_Valid" in raised.value.message

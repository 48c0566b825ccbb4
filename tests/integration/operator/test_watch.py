"""The operator's lean watch against the real API server: a watch the server ends is resumed, not re-listed."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable

import pytest
from sgs_operator.kube import Kube
from sgs_operator.naming import LABEL_RUN
from sgs_operator.observe import PodSeen
from sgs_operator.watch import RunObjects, pod_objects, watch_of

from sgs.testing.kube import KubePart

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]
RUN = "watch-test"


async def until(check: Callable[[], bool], what: str, timeout_s: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not check():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def make_pod(kube: KubePart, namespace: str, name: str) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {LABEL_RUN: RUN}},
        "spec": {"containers": [{"name": "main", "image": "none"}]},  # no node here: it stays Pending
    }
    kube.kubectl("apply", "-f", "-", input=json.dumps(pod))


def pods_of_run(objects: RunObjects[PodSeen], namespace: str) -> set[str]:
    return set(objects.by_run.get((namespace, RUN), {}))


async def test_a_watch_the_server_ends_is_resumed_from_its_version_without_a_new_list(kube: KubePart) -> None:
    namespace = f"watch-{uuid.uuid4().hex[:8]}"
    kube.kubectl("create", "namespace", namespace)
    client = await Kube.connect(str(kube.kubeconfig), pool_size=4)
    objects = pod_objects([namespace])
    stopped = asyncio.Event()
    watch = watch_of(client, objects, watch_timeout_s=1)
    following = asyncio.create_task(watch.run(stopped))
    try:
        make_pod(kube, namespace, "before")
        await until(lambda: pods_of_run(objects, namespace) == {"before"}, "the first pod")
        await until(lambda: watch.watches >= 3, "the server to end two watches (1 s each)")
        make_pod(kube, namespace, "after")
        kube.kubectl("delete", "pod", "before", "-n", namespace, "--grace-period=0", "--force")
        await until(lambda: pods_of_run(objects, namespace) == {"after"}, "the resumed watch to see both changes")
        assert objects.lists == 1, f"{objects.lists} LISTs: an ended watch was re-listed instead of resumed"
    finally:
        stopped.set()
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)
        await client.close()
        kube.kubectl("delete", "namespace", namespace, "--wait=false", check=False)

"""A Run whose executable names an image, on a Site whose bridge runs images with crun: the task runs in the
image (as its user, writing to the Run's directory), and the archive's lineage of its product names the image by
the manifest digest it ran, not by its tag. An executable whose image no store holds fails the Run's task with
the bridge's reason."""

from __future__ import annotations

import base64
import secrets
import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from operator_kit import ArchiveService, Cluster, new_database, wait_for
from sgs_bridge.launch import BridgeProcess

from sgs.images import default_cache_dir
from sgs.testing.images import debian_image
from sgs.testing.kube import KubePart
from sgs.testing.postgres import PostgresPart

pytest_plugins = ["operator_kit"]
pytestmark = pytest.mark.integration

ADMIN = "sgs_" + secrets.token_urlsafe(32)
SITE = "site-crun"
# Runs in the image's python3 (Debian's; the host's venv is not there): writes who and where it is to --out.
TASK = (
    'python3 -c \'import os, sys; out = [a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--out=")][0]; '
    'open(out, "w").write("uid %d debian %s" % (os.getuid(), open("/etc/debian_version").read()))\''
)


@pytest.fixture(scope="module")
def image_digest() -> str:
    if shutil.which("crun") is None:
        pytest.fail("crun is not installed (tools/ci-setup.sh installs it)")
    return debian_image()[1]


@pytest.fixture(scope="module")
def crun_bridge(kube: KubePart, image_digest: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BridgeProcess]:
    bridge = BridgeProcess(
        node_name="sgs-operator-crun-node",
        site=SITE,
        kubeconfig=kube.kubeconfig,
        workdir=tmp_path_factory.mktemp("bridge-crun"),
        poll_interval_s=0.2,
        extra_args=["--container-runtime=crun", f"--image-store={default_cache_dir()}"],
    )
    with bridge:
        yield bridge


@pytest.fixture(scope="module")
def archive(postgres: PostgresPart, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArchiveService]:
    service = ArchiveService(new_database(postgres, "crunarchive"), tmp_path_factory.mktemp("archive") / "a.log", ADMIN)
    service.call("POST", "/dataset-types", json={"name": "crun_product", "dimensions": [], "storage_class": "Text"})
    yield service
    service.stop()


def _site(cluster: Cluster, archive: ArchiveService) -> dict[str, Any]:
    token = archive.call("POST", "/tokens", json={"name": f"{cluster.namespace}-{SITE}", "site": SITE})["token"]
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "archive-token"},
            "data": {"token": base64.b64encode(token.encode()).decode()},
        }
    )
    site = cluster.site(SITE, max_parallel=4)
    site["spec"]["archiveUrl"] = archive.url
    site["spec"]["archiveCredentials"] = {"name": "archive-token"}
    return site


def _pipeline(name: str, image: str) -> dict[str, Any]:
    executable = {
        "name": "make",
        "image": image,
        "command": TASK,
        "inputs": [{"name": "seed"}],
        "outputs": [{"name": "out", "suffix": ".txt", "datasetType": "crun_product"}],
        "resources": {"cores": 1, "ram": 0.25, "walltime": 0.05},
    }
    step = {"name": "make", "executable": "make", "inputs": {"seed": {"value": "1"}}}
    return {
        "apiVersion": "sgs.io/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": name},
        "spec": {"inputs": [], "executables": [executable], "steps": [step]},
    }


def test_a_task_runs_in_its_image_and_its_product_s_lineage_names_the_digest(
    cluster: Cluster, crun_bridge: BridgeProcess, archive: ArchiveService, image_digest: str
) -> None:
    cluster.apply(_site(cluster, archive))
    cluster.apply(_pipeline("in-image", "debian:bookworm"))
    cluster.apply(cluster.run("contained", pipeline="in-image", site=SITE, inputs={}))
    status = cluster.wait_phase("contained", {"Succeeded", "Failed"}, timeout_s=180)
    assert status["phase"] == "Succeeded", cluster.attempt_rows("contained")
    product = cluster.store / cluster.namespace / "contained" / "make" / "out.txt"
    assert product.read_text().startswith("uid 10001 debian 12.")  # the image's user and system, not the host's
    assert product.stat().st_uid == 0  # on the host: the bridge's user, as in process mode
    wait_for(
        lambda: any(
            c["type"] == "OutputsRegistered" and c["status"] == "True"
            for c in cluster.run_status("contained").get("conditions", [])
        ),
        "the product to be registered",
        timeout_s=120,
    )
    page = archive.call("POST", "/datasets/query", json={"dataset_type": "crun_product", "where": "", "limit": 10})
    [dataset] = [d for d in page["items"] if str(d["run"]).startswith(f"{cluster.namespace}/contained/")]
    lineage = archive.call("GET", f"/datasets/{dataset['id']}/lineage", params={"direction": "up", "depth": 1})
    provenance = next(n for n in lineage["nodes"] if n["id"] == dataset["id"])["provenance"]
    assert provenance["image"] == f"debian@{image_digest}"  # the digest it ran, not the tag


def test_an_image_no_store_holds_fails_the_task_with_the_bridge_s_reason(
    cluster: Cluster, crun_bridge: BridgeProcess, archive: ArchiveService
) -> None:
    cluster.apply(_site(cluster, archive))
    cluster.apply(_pipeline("elsewhere", "ghcr.io/elsewhere/tool:1"))
    # Retries allowed, yet none made: the node would refuse the same pod again.
    cluster.apply(cluster.run("refused", pipeline="elsewhere", site=SITE, inputs={}, retry={"max": 3}))
    status = cluster.wait_phase("refused", {"Succeeded", "Failed"}, timeout_s=180)
    assert status["phase"] == "Failed"
    rows = cluster.task_rows("refused")
    message = str(rows[0]["message"])
    assert "image 'ghcr.io/elsewhere/tool:1' is in none of this node's image stores" in message, rows
    assert [(a["attempt"], a["reason"]) for a in cluster.attempt_rows("refused")] == [(0, "ImageNotFound")]


def test_a_run_pinned_to_a_release_runs_every_task_in_it_whatever_its_executables_name(
    cluster: Cluster, crun_bridge: BridgeProcess, archive: ArchiveService, image_digest: str
) -> None:
    release = f"debian@{image_digest}"
    cluster.apply(_site(cluster, archive))
    cluster.apply(_pipeline("named-elsewhere", "ghcr.io/elsewhere/tool:1"))  # in no store: the release replaces it
    cluster.apply(cluster.run("pinned", pipeline="named-elsewhere", site=SITE, inputs={}, release=release))
    status = cluster.wait_phase("pinned", {"Succeeded", "Failed"}, timeout_s=180)
    assert status["phase"] == "Succeeded", cluster.attempt_rows("pinned")
    assert status["release"] == release
    job = cluster.jobs("pinned")[0] if cluster.jobs("pinned") else None
    if job is not None:  # finished Jobs may already be gone: the product and its lineage say it too
        assert job["spec"]["template"]["spec"]["containers"][0]["image"] == release
    product = cluster.store / cluster.namespace / "pinned" / "make" / "out.txt"
    assert product.read_text().startswith("uid 10001 debian 12.")

    def provenance() -> dict[str, Any] | None:
        query = {"dataset_type": "crun_product", "where": "", "limit": 50}
        page = archive.call("POST", "/datasets/query", json=query)
        found = [d for d in page["items"] if str(d["run"]).startswith(f"{cluster.namespace}/pinned/")]
        if not found:
            return None
        lineage = archive.call("GET", f"/datasets/{found[0]['id']}/lineage", params={"direction": "up", "depth": 1})
        node: dict[str, Any] = next(n for n in lineage["nodes"] if n["id"] == found[0]["id"])["provenance"]
        return node

    assert wait_for(provenance, "the product's lineage", timeout_s=120)["image"] == release


def test_a_pinned_release_on_a_node_that_runs_no_image_fails_unverified_and_a_tag_is_refused(
    cluster: Cluster, bridge: BridgeProcess, image_digest: str
) -> None:
    """The process-mode node runs the command on the host: it cannot show it ran the release, so the task fails
    (once: another attempt would not either) instead of registering outputs under a release they are not of."""
    cluster.apply(cluster.site())
    cluster.apply(_pipeline("on-host", "debian:bookworm"))
    release = f"debian@{image_digest}"
    cluster.apply(cluster.run("unverified", pipeline="on-host", inputs={}, release=release, retry={"max": 2}))
    status = cluster.wait_phase("unverified", {"Succeeded", "Failed"}, timeout_s=120)
    assert status["phase"] == "Failed"
    [(attempt, reason)] = [(a["attempt"], a["reason"]) for a in cluster.attempt_rows("unverified")]
    assert (attempt, reason) == (0, "ReleaseNotVerified")
    assert "ran no image" in str(cluster.task_rows("unverified")[0]["message"])

    refused = cluster.apply(
        cluster.run("tagged", pipeline="on-host", inputs={}, release="debian:bookworm"), check=False
    )
    assert refused.returncode != 0 and "spec.release" in refused.stderr, refused.stderr

"""A task's lineage names the image by the manifest digest its node ran, not by its tag."""

from __future__ import annotations

import pytest
from sgs_operator.observe import JobSeen, outcome, pod_entry
from sgs_operator.registration import pinned_image

DIGEST = "sha256:" + "5a" * 32


def _status(image_id: str) -> dict[str, object]:
    terminated = {"exitCode": 0, "reason": "Completed"}
    return {"phase": "Succeeded", "containerStatuses": [{"imageID": image_id, "state": {"terminated": terminated}}]}


@pytest.mark.parametrize(
    ("image_id", "seen"),
    [
        (DIGEST, DIGEST),
        (f"docker-pullable://ghcr.io/sgs/nir@{DIGEST}", DIGEST),
        ("", ""),
        ("sha256:short", ""),
        ("sgs://job-1", ""),
    ],
)
def test_the_pod_s_image_id_becomes_the_outcome_s_digest(image_id: str, seen: str) -> None:
    pod = pod_entry("p", {}, {"job-name": "j"}, _status(image_id))
    assert pod.image_id == seen
    job = JobSeen("j", "t", 0, "Complete", "", "")
    assert outcome(job, pod).image_id == seen


@pytest.mark.parametrize(
    ("image", "pinned"),
    [
        ("ghcr.io/sgs/nir:0.1.0", f"ghcr.io/sgs/nir@{DIGEST}"),
        ("localhost:5000/nir", f"localhost:5000/nir@{DIGEST}"),
        ("localhost:5000/nir:1", f"localhost:5000/nir@{DIGEST}"),
        (f"nir@sha256:{'0' * 64}", f"nir@{DIGEST}"),
    ],
)
def test_pinned_image_drops_the_tag_for_the_digest(image: str, pinned: str) -> None:
    assert pinned_image(image, DIGEST) == pinned
    assert pinned_image(image, "") == image

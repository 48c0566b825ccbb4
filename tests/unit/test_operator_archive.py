"""The operator's archive path without servers: archive inputs become their replicas' paths at the chosen Site
(confined to its roots), Sites are weighed by the bytes the archive says they hold (S3 Sites too), a succeeded
task's outbox rows carry checksums and the input paths each output derives from, and a Site's archive URL is
checked before any token is sent to it."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sgs_operator import placement
from sgs_operator.archive import ArchiveUnsetError, check_archive_url
from sgs_operator.inputs import Found, InputsBlockedError, Resolution, values_of
from sgs_operator.registration import output_facts, run_collection
from sgs_operator.storage import Roots

from sgs.model.pipeline import PipelineSpec
from sgs.model.site import SiteSpec
from sgs.planner import Planner
from sgs.storage import checksum_file


def posix_site(root: Path) -> SiteSpec:
    return SiteSpec.model_validate(
        {"storage": {"kind": "posix", "path": str(root)}, "capacity": {"cores": 4, "storageTb": 1}}
    )


def s3_site() -> SiteSpec:
    return SiteSpec.model_validate(
        {"storage": {"kind": "s3", "endpoint": "minio:9000", "bucket": "b"}, "capacity": {"cores": 4, "storageTb": 1}}
    )


def found(position: int, replicas: dict[str, tuple[str, int]]) -> Found:
    return Found("images", position, uuid.uuid4(), "nir_raw", {"exposure": position}, replicas)


def test_each_input_becomes_the_path_of_its_replica_at_the_site(tmp_path: Path) -> None:
    files = [tmp_path / f"raw{i}.fits" for i in range(2)]
    for f in files:
        f.write_text("x")
    resolution = Resolution([found(i, {"a": (f.as_uri(), 1), "b": ("s3://b/k", 1)}) for i, f in enumerate(files)])

    rows = resolution.at_site("a", Roots.of("a", posix_site(tmp_path)))

    assert [r.path for r in rows] == [str(f) for f in files]
    assert values_of(list(reversed(rows))) == {"images": [str(f) for f in files]}  # in resolution order


def test_an_input_without_a_replica_at_the_site_blocks_the_run_naming_it(tmp_path: Path) -> None:
    missing = found(1, {"b": ("file:///elsewhere/x", 5)})
    resolution = Resolution([found(0, {"a": ((tmp_path / "x").as_uri(), 1)}), missing])

    with pytest.raises(InputsBlockedError) as info:
        resolution.at_site("a", Roots.of("a", posix_site(tmp_path)))

    assert info.value.reason == "InputsNotAtSite"
    assert f"1 input dataset(s) have no available replica at a: nir_raw {missing.dataset_id}" in str(info.value)


def test_a_replica_outside_the_sites_roots_is_never_read(tmp_path: Path) -> None:
    # The archive's URI is data anyone with a Site token wrote: it must not open the host's files to a task.
    resolution = Resolution([found(0, {"a": ("file:///etc/passwd", 1)})])

    with pytest.raises(InputsBlockedError) as info:
        resolution.at_site("a", Roots.of("a", posix_site(tmp_path / "store")))

    assert info.value.reason == "InputReplicaUnusable"
    assert "spec.inputs.images" in str(info.value) and "/etc/passwd" in str(info.value)


def test_sites_are_weighed_by_the_bytes_the_archive_says_they_hold(tmp_path: Path) -> None:
    resolution = Resolution(
        [found(0, {"posix": ("file:///p/0", 10), "s3": ("s3://b/0", 10)}), found(1, {"s3": ("s3://b/1", 30)})]
    )
    sites = {"posix": posix_site(tmp_path), "s3": s3_site()}

    held = resolution.held_bytes()
    choice = placement.choose_site(sites, dict.fromkeys(sites, "Ready"), {}, "ns", held)

    assert held == {"posix": 10, "s3": 40}
    assert choice.name == "s3" and choice.reason == placement.REASON_DATA
    assert "(40 B;" in choice.message and "posix 10 B" in choice.message


def test_a_succeeded_tasks_outbox_rows_carry_checksums_and_lineage_inputs(tmp_path: Path) -> None:
    spec = PipelineSpec.model_validate(
        {
            "inputs": [{"name": "images"}, {"name": "dark"}],
            "executables": [
                {
                    "name": "cal",
                    "command": "calibrate --fast",
                    "inputs": [{"name": "image"}, {"name": "dark"}],
                    "outputs": [
                        {"name": "calibrated", "datasetType": "nir_cal"},
                        {"name": "darkmap", "lineage": ["dark"], "register": False},
                    ],
                }
            ],
            "steps": [
                {
                    "name": "cal",
                    "executable": "cal",
                    "inputs": {"image": {"input": "images"}, "dark": {"input": "dark"}},
                }
            ],
        }
    )
    planner = Planner(spec, "r", {"images": ["/in/a", "/in/b"], "dark": "/in/dark"})
    task = planner.tasks["cal"]
    outputs = {"calibrated": str(tmp_path / "c.fits"), "darkmap": str(tmp_path / "d.fits")}
    Path(outputs["calibrated"]).write_bytes(b"calibrated")

    rows = output_facts(task, outputs, planner.task_inputs("cal"), ["calibrate", "--fast"], "img:1", "abc")

    calibrated, darkmap = rows
    assert calibrated.facts["inputs"] == ["/in/a", "/in/b", "/in/dark"]
    assert darkmap.facts["inputs"] == ["/in/dark"]  # its lineage names only the dark
    sums = checksum_file(Path(outputs["calibrated"]))
    assert (calibrated.facts["size"], calibrated.facts["sha256"]) == (sums.size, str(sums.sha256))
    assert "sha256" not in darkmap.facts  # not registered: never read
    assert calibrated.facts["command"] == "calibrate --fast" and calibrated.facts["image"] == "img:1"
    assert calibrated.facts["spec"]["datasetType"] == "nir_cal"


def test_a_recreated_run_gets_its_own_collection() -> None:
    assert run_collection("ns", "r", "1234567890") != run_collection("ns", "r", "abcdef0123")
    assert run_collection("ns", "r", "1234567890") == "ns/r/12345678"


@pytest.mark.parametrize(
    "url",
    ["ftp://archive", "archive:8400", "http://user:pw@archive", "http://archive/?token=x", "http:///nohost"],
)
def test_a_site_archive_url_that_is_not_plain_http_is_refused_naming_the_field(url: str) -> None:
    with pytest.raises(ArchiveUnsetError, match=r"spec\.archiveUrl"):
        check_archive_url(url)


def test_a_plain_archive_url_is_kept_without_its_trailing_slash() -> None:
    assert check_archive_url("https://archive.sdc-fr:8400/") == "https://archive.sdc-fr:8400"


def test_inputs_all_of_one_observation_name_it_and_mixed_ones_none() -> None:
    def of(*observations: object) -> Resolution:
        return Resolution(
            [Found("images", i, uuid.uuid4(), "nir_raw", {"observation": o}) for i, o in enumerate(observations)]
        )

    assert of(7, 7, 7).observation() == 7
    assert of(7, 8).observation() is None
    assert of("7").observation() is None  # not an observation id
    assert of(True).observation() is None
    assert Resolution([found(0, {})]).observation() is None  # no observation dimension

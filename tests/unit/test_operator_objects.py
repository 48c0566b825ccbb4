"""Tasks at an S3 Site without a shared directory, without servers: archive inputs stay their replicas' s3:// URIs
(in the Site's bucket only), a task's Job runs its command under `sgs task exec` with a manifest naming each object
and the file the command sees for it, the Site's keys come by secretKeyRef, nothing is mounted read-write, an
oversized manifest is refused with the reason, and the wrapper's exit statuses are explained."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from sgs_operator.inputs import Found, InputsBlockedError, Resolution
from sgs_operator.jobs import RunRef, SitePlacement
from sgs_operator.launch import MANIFEST_LIMIT, ObjectManifest, task_job
from sgs_operator.objects import BucketRunStorage, SiteBucket, runs_on_objects, wrapper_outcome
from sgs_operator.observe import Outcome
from sgs_operator.records import InputRow
from sgs_operator.registration import replica_uri
from sgs_operator.storage import Roots, StorageError

from sgs.model.checksum import Checksums
from sgs.model.pipeline import PipelineSpec
from sgs.model.site import SiteSpec
from sgs.planner import Planner
from sgs.storage import S3Store
from sgs.task import SCRATCH_REFERENCE, TaskManifest

WRAPPER = ["/venv/bin/python", "-m", "sgs.task", "exec"]
RUN = RunRef("survey", "ns", "0123-uid", 0)


def s3_site(**storage: Any) -> SiteSpec:
    return SiteSpec.model_validate(
        {
            "storage": {"kind": "s3", "endpoint": "127.0.0.1:9000", "bucket": "sgs-a", "secure": False, **storage},
            "capacity": {"cores": 4, "storageTb": 1},
        }
    )


def bucket_storage(site: SiteSpec) -> BucketRunStorage:
    bucket = SiteBucket.of("site-a", site)
    store = S3Store.connect("site-a", bucket.endpoint, bucket.bucket, None, None, secure=False)  # connects lazily
    return BucketRunStorage(bucket, store, Roots.of("site-a", site), "ns/survey")


def stack_planner(images: list[str]) -> Planner:
    spec = PipelineSpec.model_validate(
        {
            "inputs": [{"name": "images"}],
            "executables": [
                {
                    "name": "stack",
                    "command": "optest_task --fast",
                    "inputs": [{"name": "mode"}, {"name": "input"}],
                    "outputs": [{"name": "out", "suffix": ".txt"}],
                }
            ],
            "steps": [
                {
                    "name": "stack",
                    "executable": "stack",
                    "inputs": {"mode": {"value": "ok"}, "input": {"input": "images"}},
                }
            ],
        }
    )
    return Planner(spec, "survey", {"images": images})


def job_of(storage: BucketRunStorage, planner: Planner) -> dict[str, Any]:
    task = planner.tasks["stack"]
    return task_job(RUN, SitePlacement("site-a"), storage, planner, task, "img:1", "/sgs/tmp", WRAPPER)


def container(job: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = job["spec"]["template"]["spec"]["containers"][0]
    return found


def test_only_an_s3_site_without_a_shared_path_stages_through_its_bucket() -> None:
    assert runs_on_objects(s3_site(), None)
    assert not runs_on_objects(s3_site(path="/shared"), None)  # a shared directory: as a POSIX Site
    assert not runs_on_objects(s3_site(), "/shared/out")


def test_archive_inputs_at_an_s3_site_are_their_replicas_uris_in_the_sites_bucket() -> None:
    found = Found("images", 0, uuid.uuid4(), "raw", {}, {"site-a": ("s3://sgs-a/raw/x.fits", 5)})

    (row,) = Resolution([found]).at_site("site-a", Roots("site-a", None), bucket="sgs-a")

    assert row.path == "s3://sgs-a/raw/x.fits" and row.size == 5


@pytest.mark.parametrize(
    ("bucket", "said"),
    [("sgs-a", "is not in the Site's bucket s3://sgs-a"), (None, "is an object, and this Site's tasks read files")],
)
def test_an_object_elsewhere_or_at_a_site_reading_files_is_unusable(bucket: str | None, said: str) -> None:
    found = Found("images", 0, uuid.uuid4(), "raw", {}, {"site-a": ("s3://other/raw/x.fits", 5)})

    with pytest.raises(InputsBlockedError) as info:
        Resolution([found]).at_site("site-a", Roots("site-a", None), bucket=bucket)

    assert info.value.reason == "InputReplicaUnusable" and said in str(info.value)


def test_a_task_runs_under_the_wrapper_with_each_object_a_file_of_its_scratch() -> None:
    site = s3_site(credentials={"name": "site-a-s3"})
    storage = bucket_storage(site)
    planner = stack_planner(["s3://sgs-a/raw/71.txt", "s3://sgs-a/raw/72.txt"])

    main = container(job_of(storage, planner))

    argv = [*main["command"], *main["args"]]
    assert argv[: len(WRAPPER) + 1] == [*WRAPPER, "--"]
    assert argv[len(WRAPPER) + 1 :] == [
        "optest_task",
        "--fast",
        "--mode=ok",
        f"--input={SCRATCH_REFERENCE}/in/input.json",
        f"--out={SCRATCH_REFERENCE}/out/out.txt",
    ]
    env = {e["name"]: e for e in main["env"]}
    manifest = TaskManifest.parse(env["SGS_TASK_MANIFEST"]["value"], "test")
    assert (manifest.site, manifest.endpoint, manifest.bucket, manifest.secure) == (
        "site-a",
        "127.0.0.1:9000",
        "sgs-a",
        False,
    )
    assert [(i.key, i.local) for i in manifest.inputs] == [
        ("raw/71.txt", "in/input/00000-71.txt"),
        ("raw/72.txt", "in/input/00001-72.txt"),
    ]
    assert [(x.local, x.items) for x in manifest.lists] == [("in/input.json", [i.local for i in manifest.inputs])]
    assert [(o.local, o.key, o.list) for o in manifest.outputs] == [("out/out.txt", "ns/survey/stack/out.txt", False)]
    assert env["SGS_S3_ACCESS_KEY"] == {
        "name": "SGS_S3_ACCESS_KEY",
        "valueFrom": {"secretKeyRef": {"name": "site-a-s3", "key": "accessKey"}},
    }
    assert env["SGS_S3_SECRET_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "site-a-s3", "key": "secretKey"}
    assert env["SGS_OUTPUT_OUT"]["value"] == f"{SCRATCH_REFERENCE}/out/out.txt"
    assert [m["mountPath"] for m in main["volumeMounts"]] == ["/sgs/tmp"]  # nothing of the Site is mounted
    assert storage.outputs("stack", planner.tasks["stack"].executable) == {"out": "s3://sgs-a/ns/survey/stack/out.txt"}


def test_anonymous_buckets_get_no_key_variables() -> None:
    main = container(job_of(bucket_storage(s3_site()), stack_planner(["s3://sgs-a/raw/71.txt"])))

    assert not {"SGS_S3_ACCESS_KEY", "SGS_S3_SECRET_KEY"} & {e["name"] for e in main["env"]}


def test_a_list_item_that_is_no_object_of_the_bucket_is_refused_naming_it() -> None:
    planner = stack_planner(["s3://sgs-a/raw/71.txt", "/etc/passwd"])

    with pytest.raises(StorageError, match=r"input input\[1\]: '/etc/passwd' is not an object of s3://sgs-a"):
        job_of(bucket_storage(s3_site()), planner)


def test_a_manifest_over_the_variable_limit_fails_the_task_with_the_reason() -> None:
    images = [f"s3://sgs-a/raw/{'x' * 200}-{i}.fits" for i in range(MANIFEST_LIMIT // 400)]

    with pytest.raises(StorageError, match="over the 98,304 an environment variable may hold"):
        job_of(bucket_storage(s3_site()), stack_planner(images))


def test_the_wrappers_exit_statuses_are_explained_and_others_left_alone() -> None:
    bad_input = wrapper_outcome(Outcome("Error", 65, "exit code 65", None))
    own = wrapper_outcome(Outcome("Error", 3, "exit code 3", None))

    assert "checksums differ" in bad_input.message and bad_input.exit_code == 65
    assert own.message == "exit code 3"


def test_replicas_are_recorded_by_their_own_uri() -> None:
    assert replica_uri("s3://sgs-a/ns/r/stack/out.txt") == "s3://sgs-a/ns/r/stack/out.txt"
    assert replica_uri("/store/ns/r/stack/out.txt") == "file:///store/ns/r/stack/out.txt"


def test_list_outputs_must_name_objects_of_the_bucket(monkeypatch: pytest.MonkeyPatch) -> None:
    storage = bucket_storage(s3_site())
    listing = json.dumps(["s3://sgs-a/ns/survey/split/out.json.d/00000.txt", "/etc/passwd"]).encode()
    # The one fault faked here: the object's content (reading it from MinIO is the integration test's part).
    monkeypatch.setattr(storage.store, "read_bytes", lambda key: listing)

    with pytest.raises(StorageError, match=r"list output out\[1\]: '/etc/passwd' is not an object of s3://sgs-a"):
        storage.read_lists({"out": "s3://sgs-a/ns/survey/split/out.json"}, ["out"])


def test_a_fan_in_of_several_mapped_outputs_is_staged_as_a_list_of_lists() -> None:
    storage = bucket_storage(s3_site())
    planner = stack_planner([])
    manifest = ObjectManifest(storage)

    given = manifest.input("input", [["s3://sgs-a/a/x.json", "s3://sgs-a/a/y.json"], ["s3://sgs-a/b/x.json"]])

    assert given == f"{SCRATCH_REFERENCE}/in/input.json"
    (listed,) = manifest.lists
    assert listed.items == [
        ["in/input/00000-00000-x.json", "in/input/00000-00001-y.json"],
        ["in/input/00001-00000-x.json"],
    ]
    assert [i.key for i in manifest.inputs] == ["a/x.json", "a/y.json", "b/x.json"]
    assert planner.tasks  # the planner accepts an empty list input


def test_archive_inputs_are_checked_against_the_archives_checksums_others_against_the_objects() -> None:
    storage = bucket_storage(s3_site())
    sums = {"size": 5, "adler32": "05c801f0", "sha256": "a" * 64}
    storage.know_inputs(
        [
            InputRow("images", 0, str(uuid.uuid4()), "raw", {}, "site-a", "s3://sgs-a/raw/71.txt", 5, sums),
            InputRow("images", 1, str(uuid.uuid4()), "raw", {}, "site-a", "s3://sgs-a/raw/72.txt", 5, None),
        ]
    )
    main = container(job_of(storage, stack_planner(["s3://sgs-a/raw/71.txt", "s3://sgs-a/raw/72.txt"])))

    env = {e["name"]: e.get("value") for e in main["env"]}
    first, second = TaskManifest.parse(env["SGS_TASK_MANIFEST"] or "", "test").inputs
    assert first.checksums == Checksums.model_validate(sums)
    assert second.checksums is None  # no archive checksums: the wrapper checks those recorded with the object

"""The deterministic replica layout and the key rules every store applies."""

from __future__ import annotations

import uuid

import pytest

from sgs.model.dataset import dataset_uuid
from sgs.storage import InvalidKeyError, check_key, replica_key, suffix_of


def test_a_dataset_has_one_key_everywhere_and_sharded_by_its_id() -> None:
    dataset_id = dataset_uuid("nir_stack", '["NISP-SIM", 1]', "nir-obs000001")
    key = replica_key("nir_stack", dataset_id, ".fits")
    assert key == replica_key("nir_stack", dataset_id, ".fits")
    text = str(dataset_id)
    assert key == f"nir_stack/{text[:2]}/{text[2:4]}/{text}.fits"
    assert check_key(key) == key


def test_other_runs_of_the_same_data_id_get_other_keys() -> None:
    one = dataset_uuid("nir_stack", '["NISP-SIM", 1]', "run-1")
    two = dataset_uuid("nir_stack", '["NISP-SIM", 1]', "run-2")
    assert replica_key("nir_stack", one) != replica_key("nir_stack", two)


def test_shards_spread_evenly() -> None:
    shards = {replica_key("raw", uuid.uuid5(uuid.NAMESPACE_OID, str(i))).split("/")[1] for i in range(5000)}
    assert len(shards) == 256


@pytest.mark.parametrize(
    ("dataset_type", "suffix"), [("../etc", ""), ("raw", "/x"), ("raw", ".fits/../../x"), ("raw", "fits")]
)
def test_layout_refuses_names_that_would_escape(dataset_type: str, suffix: str) -> None:
    with pytest.raises(ValueError):
        replica_key(dataset_type, uuid.uuid4(), suffix)


@pytest.mark.parametrize(
    "key",
    [
        "",
        "/etc/passwd",
        "../outside",
        "a/../../b",
        "a/./b",
        "a//b",
        "a/",
        ".hidden",
        "a/.sgs-partial-x",
        "a\\b",
        "a\x00b",
        "a\nb",
        "x" * 1025,
    ],
)
def test_keys_outside_a_store_or_reserved_are_refused(key: str) -> None:
    with pytest.raises(InvalidKeyError):
        check_key(key)


def test_suffixes() -> None:
    assert suffix_of("image.fits") == ".fits"
    assert suffix_of("/a/b/cat.fits.gz") == ".fits.gz"
    assert suffix_of("README") == ""
    assert suffix_of("weird.na me") == ""

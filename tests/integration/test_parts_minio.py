import base64
import hashlib
import io
import os

import pytest
from minio.error import S3Error

from sgs.testing.minio import MinioPart

pytestmark = pytest.mark.integration


def sha256_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def test_three_sites_each_with_their_own_bucket(minio_sites: list[MinioPart]) -> None:
    assert len({part.endpoint for part in minio_sites}) == 3
    for part in minio_sites:
        assert [b.name for b in part.client().list_buckets()] == [part.bucket]


def test_put_get_stat_with_server_checked_checksum(minio_sites: list[MinioPart]) -> None:
    site = minio_sites[0]
    data = os.urandom(3 * 2**20 + 17)
    client = site.client()
    client.put_object(
        site.bucket,
        "raw/exp-1.fits",
        io.BytesIO(data),
        len(data),
        metadata={"x-amz-checksum-sha256": sha256_b64(data)},
    )
    stat = client.stat_object(site.bucket, "raw/exp-1.fits", extra_headers={"x-amz-checksum-mode": "ENABLED"})
    response = client.get_object(site.bucket, "raw/exp-1.fits")
    try:
        fetched = response.read()
    finally:
        response.close()
        response.release_conn()
    assert stat.size == len(data)
    assert stat.metadata is not None
    assert stat.metadata["x-amz-checksum-sha256"] == sha256_b64(data)
    assert stat.etag == hashlib.md5(data).hexdigest()
    assert fetched == data


def test_a_wrong_checksum_is_refused_and_nothing_is_stored(minio_sites: list[MinioPart]) -> None:
    site = minio_sites[1]
    data = b"payload that does not match its checksum"
    client = site.client()
    with pytest.raises(S3Error):
        client.put_object(
            site.bucket,
            "corrupt.bin",
            io.BytesIO(data),
            len(data),
            metadata={"x-amz-checksum-sha256": sha256_b64(b"something else")},
        )
    with pytest.raises(S3Error) as missing:
        client.stat_object(site.bucket, "corrupt.bin")
    assert missing.value.code in {"NoSuchKey", "NoSuchObject"}

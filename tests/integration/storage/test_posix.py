"""POSIX-only behaviour: a writer killed mid-write leaves no partial file under the final name; links that
lead out of the store's root are refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sgs.storage import InvalidKeyError, PosixStore, checksum_bytes

pytestmark = pytest.mark.integration

WRITER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from sgs.storage import PosixStore

    store = PosixStore("site-a", Path(sys.argv[1]))
    with store.writer(sys.argv[2]) as writer:
        for index in range(10_000):
            writer.write(os.urandom(1 << 20))
            if index == 3:
                print("writing", flush=True)
            time.sleep(0.01)
        writer.commit()
    """
)


def _kill_mid_write(root: Path, key: str) -> None:
    process = subprocess.Popen([sys.executable, "-c", WRITER, str(root), key], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "writing"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL


def test_a_writer_killed_mid_write_leaves_nothing_under_the_final_name(tmp_path: Path) -> None:
    store = PosixStore("site-a", tmp_path / "store")
    _kill_mid_write(store.root, "raw/ab/cd/new.fits")
    assert not store.exists("raw/ab/cd/new.fits")
    assert list(store.list()) == []
    partials = [p for p in (store.root / "raw/ab/cd").iterdir()]
    assert len(partials) == 1 and partials[0].name.startswith(".sgs-partial-")
    assert store.clean_partials(3600) == 0  # young: could belong to a live writer
    assert store.clean_partials(0) == 1
    assert list((store.root / "raw/ab/cd").iterdir()) == []


def test_a_writer_killed_while_replacing_an_object_leaves_the_old_one_intact(tmp_path: Path) -> None:
    store = PosixStore("site-a", tmp_path / "store")
    old = os.urandom(4096)
    sums = store.put_bytes("raw/obj.fits", old)
    _kill_mid_write(store.root, "raw/obj.fits")
    assert checksum_bytes(store.read_bytes("raw/obj.fits")) == sums
    assert [o.key for o in store.list()] == ["raw/obj.fits"]


def test_links_leading_out_of_the_root_are_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("not yours")
    store = PosixStore("site-a", tmp_path / "store")
    store.root.mkdir()
    (store.root / "escape").symlink_to(outside)
    (store.root / "secret-link").symlink_to(outside / "secret")
    with pytest.raises(InvalidKeyError, match="outside"):
        store.stat("escape/secret")
    with pytest.raises(InvalidKeyError), store.open("secret-link"):
        pass
    with pytest.raises(InvalidKeyError):
        store.put_bytes("escape/new/file", b"planted")
    with pytest.raises(InvalidKeyError):
        store.delete("escape/secret")
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
    assert [o.key for o in store.list()] == []  # links are not followed when listing


def test_the_root_itself_may_be_a_link(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "alias").symlink_to(real)
    store = PosixStore("site-a", tmp_path / "alias")
    store.put_bytes("a/b", b"x")
    assert (real / "a" / "b").read_bytes() == b"x"
    assert store.key_of(store.uri("a/b")) == "a/b"


def test_a_long_non_ascii_name_gets_a_temporary_name_within_the_byte_limit(tmp_path: Path) -> None:
    store = PosixStore("site-a", tmp_path / "store")
    key = "raw/" + "é" * 120  # 240 bytes: with the temporary prefix it would pass 255
    store.put_bytes(key, b"x")
    assert [o.key for o in store.list()] == [key]

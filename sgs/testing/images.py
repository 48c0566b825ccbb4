"""The smallest image for tests of the bridge's container mode: the sgs images' Debian rootfs as one layer.

`debian:bookworm` in the image cache (``<cache>/debian/<rootfs key>/oci``, where the bridge's ``--image-store``
finds it): the mmdebstrap rootfs every sgs image starts from (python3, no venv), the images' non-root user
10001 and pinned timestamps, so its manifest digest is the same on every machine. Built once per machine
(~1 min for the layer, after the rootfs), then reused.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from sgs.images.build import ImageBuilder, _created, _locked, default_cache_dir, manifest_digest_and_size

NAME, TAG = "debian", "bookworm"
USER = "10001:10001"
ENV = ("PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8", "HOME=/tmp")
ENTRYPOINT = ("sh", "-c")
CMD = ("echo hello from the image",)


def debian_image(cache_dir: Path | None = None) -> tuple[Path, str]:
    """The image's OCI layout and manifest digest (built if missing)."""
    builder = ImageBuilder(cache_dir=cache_dir or default_cache_dir())
    entry = builder.cache_dir / NAME / builder.rootfs_key()
    layout = entry / "oci"
    record = entry / "build.json"
    with _locked(entry.with_suffix(".lock")):
        if record.is_file():
            return layout, str(json.loads(record.read_text())["digest"])
        started = time.monotonic()
        rootfs = builder.rootfs()
        shutil.rmtree(entry, ignore_errors=True)
        entry.mkdir(parents=True)
        created = _created()
        image = f"{layout}:{TAG}"
        builder._umoci("init", "--layout", layout)
        builder._umoci("new", "--image", image)
        builder._umoci(
            "raw",
            "add-layer",
            "--image",
            image,
            f"--history.created={created}",
            "--history.created_by=mmdebstrap --variant=essential bookworm",
            rootfs,
        )
        config = [f"--config.env={item}" for item in ENV]
        config += ["--clear=config.entrypoint", *(f"--config.entrypoint={item}" for item in ENTRYPOINT)]
        config += ["--clear=config.cmd", *(f"--config.cmd={item}" for item in CMD)]
        builder._umoci(
            "config",
            "--image",
            image,
            f"--created={created}",
            f"--history.created={created}",
            "--history.created_by=sgs.testing.images",
            "--os=linux",
            "--architecture=amd64",
            f"--config.user={USER}",
            "--config.workingdir=/tmp",
            *config,
        )
        builder._umoci("gc", "--layout", layout)
        digest, size = manifest_digest_and_size(layout)
        seconds = round(time.monotonic() - started, 1)
        record.write_text(json.dumps({"digest": digest, "size": size, "seconds": seconds}))
        return layout, digest

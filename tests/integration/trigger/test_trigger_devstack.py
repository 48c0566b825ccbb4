"""`sgs dev up` with the archive runs the trigger service beside the operator, judged by its own log."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sgs.dev.stack import load_state
from sgs.testing.binaries import cache_root

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_dev_up_with_the_archive_starts_the_trigger_service(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "bin").symlink_to(cache_root() / "bin")
    env = {**os.environ, "SGS_CACHE": str(cache)}
    env.pop("KUBECONFIG", None)

    def dev(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "sgs.cli.main", "dev", *args]
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=400, check=False)

    started = dev("up", "--parts", "pg,nats,kube,archive,sgs")
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("SGS_CACHE", str(cache))
            state = load_state()
        assert "trigger" in state and state["trigger"].part == "sgs"
        assert "sgs trigger ready" in Path(state["trigger"].info["log"]).read_text()
        assert state["trigger"].info["archive"] == state["archive"].exports["SGS_ARCHIVE_URL"]
    finally:
        dev("down")

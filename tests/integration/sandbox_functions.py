"""Dynamic-resources functions that misbehave, for the sandbox tests (imported inside the sandbox)."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any


def size_from_text(path: str) -> dict[str, Any]:
    """cores = the number in the file."""
    return {"cores": int(Path(path).read_text())}


def report_environment(path: str) -> dict[str, Any]:
    raise RuntimeError(f"env={sorted(os.environ)} cwd={Path.cwd()} uid={os.getuid()}")


def connect_home(path: str) -> dict[str, Any]:
    """Tries the TCP port written in the file (on 127.0.0.1)."""
    with socket.create_connection(("127.0.0.1", int(Path(path).read_text())), timeout=2):
        return {"cores": 1}


def hang(path: str) -> dict[str, Any]:
    time.sleep(3600)
    return {}


def hog(path: str) -> dict[str, Any]:
    hoard = bytearray(4 * 2**30)  # beyond the sandbox's address space
    return {"cores": len(hoard)}


def die(path: str) -> dict[str, Any]:
    os._exit(7)


def not_a_mapping(path: str) -> Any:
    return ["cores", 2]

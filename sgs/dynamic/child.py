"""The sandbox side of ``sgs.dynamic.sandbox``: confine this process, then run one function on each file.

Started as ``python -I -m sgs.dynamic.child`` with the request on stdin; answers one JSON line per file on
stdout, after a first line saying what isolation it achieved. Nothing of the caller's is imported before the
confinement but this module and the standard library.
"""

from __future__ import annotations

import ctypes
import importlib
import json
import os
import resource
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38
NOBODY = 65534
OPEN_FILES = 256
FILE_SIZE = 64 * 1024 * 1024


def main() -> int:
    request = json.loads(sys.stdin.buffer.read(1 << 20))
    isolation = confine(int(request["cpu_s"]), int(request["memory_bytes"]))
    try:
        function = load(str(request["target"]), str(request["location"]))
    except Exception as err:
        emit({"sandbox": isolation, "fatal": f"cannot load {request['target']}: {_describe(err)}"})
        return 1
    emit({"sandbox": isolation})
    for fd in request["fds"]:
        emit(call(function, f"/dev/fd/{int(fd)}"))
    return 0


def confine(cpu_s: int, memory_bytes: int) -> dict[str, str]:
    """Limits, then no network, then no root, then no way back (setuid programs stop working)."""
    for limit, value in (
        (resource.RLIMIT_CPU, cpu_s),
        (resource.RLIMIT_AS, memory_bytes),
        (resource.RLIMIT_NOFILE, OPEN_FILES),
        (resource.RLIMIT_FSIZE, FILE_SIZE),
        (resource.RLIMIT_CORE, 0),
    ):
        resource.setrlimit(limit, (value, value))
    libc = ctypes.CDLL(None, use_errno=True)
    network = "shared"
    user = "unchanged"
    if os.geteuid() == 0:
        if libc.unshare(CLONE_NEWNET) == 0:
            network = "isolated"
        user = _become_nobody(libc)
    if network == "shared" and libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) == 0:
        network = "isolated"
    libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    return {"network": network, "user": user}


def _become_nobody(libc: ctypes.CDLL) -> str:
    """Drop root, unless nobody could not read this Python's own modules (an interpreter under /root)."""
    unreadable = next((p for p in _import_dirs() if not _readable_by_all(p)), None)
    if unreadable is not None:
        return f"unchanged ({unreadable} is not readable by nobody)"
    try:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    except OSError as err:
        return f"unchanged ({err.strerror})"
    libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)  # a uid change hides /proc/self/fd (the files) from ourselves
    return "nobody"


def _import_dirs() -> list[Path]:
    return [Path(p) for p in sys.path if Path(p).is_dir()]


def _readable_by_all(path: Path) -> bool:
    """Every directory from / down to ``path`` searchable by others, and ``path`` listable."""
    need = stat.S_IROTH | stat.S_IXOTH
    for directory in (path.absolute(), *path.absolute().parents):
        if directory.stat().st_mode & need != need:
            return False
        need = stat.S_IXOTH
    return True


def load(target: str, location: str) -> Callable[[str], Any]:
    if location and location not in sys.path:
        sys.path.append(location)  # where the caller found the entry point (its sys.path may be longer)
    module, _, qualname = target.partition(":")
    found: Any = importlib.import_module(module)
    for part in qualname.split("."):
        found = getattr(found, part)
    if not callable(found):
        raise TypeError(f"{target} is not callable")
    return found  # type: ignore[no-any-return]


def call(function: Callable[[str], Any], path: str) -> dict[str, Any]:
    try:
        result = function(path)
    except BaseException as err:  # whatever it raised (exit included) is this file's answer, not our end
        return {"error": _describe(err)}
    if not isinstance(result, dict) or not all(isinstance(k, str) for k in result):
        return {"error": f"returned {type(result).__name__}, not a mapping of resource names to numbers"}
    bad = sorted(k for k, v in result.items() if isinstance(v, bool) or not isinstance(v, int | float))
    if bad:
        return {"error": f"returned non-numbers for {bad[:6]}"}
    return {"resources": result}


def emit(answer: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()


def _describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"[:500]


if __name__ == "__main__":
    sys.exit(main())

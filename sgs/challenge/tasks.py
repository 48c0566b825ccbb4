"""The Dummy Pipeline's programs: ``python -m sgs.challenge.tasks MODE --port=value ...``.

Each checks what it can see from inside its task and exits non-zero with one line naming what is wrong, so a
broken feature fails its task and the challenge's row names it. Standard library only: they run at the Site.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


class TaskCheckError(Exception):
    """What the task saw is not what the feature promises; the message says what."""


def _args(argv: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for arg in argv:
        name, sep, value = arg.removeprefix("--").partition("=")
        if not arg.startswith("--") or not sep:
            raise TaskCheckError(f"not --name=value: {arg!r}")
        found[name] = value
    return found


def _write(path: str, value: object) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(value, sort_keys=True))


def _private_tmpdir() -> str:
    tmp = os.environ.get("TMPDIR")
    if not tmp:
        raise TaskCheckError("TMPDIR is not set")
    path = Path(tmp)
    if not path.is_dir():
        raise TaskCheckError(f"TMPDIR {tmp} is not a directory")
    if path.resolve() in (Path("/tmp").resolve(), Path("/var/tmp").resolve()):
        raise TaskCheckError(f"TMPDIR {tmp} is the shared temporary directory, not a private one")
    # At an S3 Site the task wrapper stages the task's own inputs and outputs in $TMPDIR/sgs-task: that is private
    # to the pod too, so it is not a leftover of another task.
    leftovers = sorted(p.name for p in path.iterdir() if p.name != "sgs-task")
    if leftovers:
        raise TaskCheckError(f"TMPDIR {tmp} is not empty at start: {leftovers[:5]}")
    (path / "challenge-marker").write_text(str(os.getpid()))
    return str(path.resolve())


def split(args: dict[str, str]) -> None:
    """The runtime list (``--runtimes=0.2,0.5``) as one file per item and the JSON list of them (fan-out)."""
    runtimes = [float(v) for v in args["runtimes"].split(",") if v]
    out = Path(args["items"])
    folder = out.parent / "items"
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for index, seconds in enumerate(runtimes):
        _write(str(folder / f"item{index}.json"), {"index": index, "seconds": seconds})
        names.append(f"items/item{index}.json")
    _write(str(out), names)


def work(args: dict[str, str]) -> None:
    """One fanned-out item: sleeps its runtime in a private TMPDIR and says which."""
    item = json.loads(Path(args["item"]).read_text())
    tmpdir = _private_tmpdir()
    time.sleep(float(item["seconds"]))
    _write(args["result"], {"index": item["index"], "tmpdir": tmpdir, "attempt": os.environ.get("SGS_ATTEMPT")})


def gather(args: dict[str, str]) -> None:
    """The fan-in: every item's result, each from its own TMPDIR."""
    paths = json.loads(Path(args["results"]).read_text())
    results = [json.loads(Path(p).read_text()) for p in paths]
    expected = int(args["expected"])
    indices = sorted(r["index"] for r in results)
    if indices != list(range(expected)):
        raise TaskCheckError(f"fan-in got items {indices}, expected 0..{expected - 1}")
    tmpdirs = {r["tmpdir"] for r in results}
    if len(tmpdirs) != len(results):
        raise TaskCheckError(f"{len(results)} tasks shared {len(tmpdirs)} TMPDIR(s): not private")
    _write(args["summary"], {"items": expected, "tmpdirs": len(tmpdirs)})


def flaky(args: dict[str, str]) -> None:
    """Fails its first attempt, succeeds on a retry."""
    attempt = os.environ.get("SGS_ATTEMPT")
    if attempt is None:
        raise TaskCheckError("SGS_ATTEMPT is not set: cannot tell a retry from a first attempt")
    if attempt == "0":
        print("failing the first attempt on purpose", file=sys.stderr)
        raise SystemExit(3)
    _write(args["result"], {"attempt": attempt})


def sizes(args: dict[str, str]) -> None:
    """An upstream product holding the resources of the next task (dynamic resources)."""
    _write(args["sizes"], {"ram": float(args["ram"])})


def hungry(args: dict[str, str]) -> None:
    """Holds ``--mib`` MiB for a while: killed when its memory limit is smaller."""
    block = bytearray(int(args["mib"]) * 1024 * 1024)
    for offset in range(0, len(block), 4096):  # touch every page: resident, not just reserved
        block[offset] = 1
    time.sleep(float(args.get("hold", "1.5")))
    _write(args["result"], {"mib": int(args["mib"]), "attempt": os.environ.get("SGS_ATTEMPT")})


def gpu(args: dict[str, str]) -> None:
    """Sees the GPU(s) it was given."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES") or os.environ.get("NVIDIA_VISIBLE_DEVICES")
    if not visible or visible in ("none", "void", "NoDevFiles"):
        raise TaskCheckError("no GPU visible to the task (CUDA_VISIBLE_DEVICES / NVIDIA_VISIBLE_DEVICES unset)")
    _write(args["result"], {"devices": visible})


def arrived(args: dict[str, str]) -> None:
    """A triggered Run's task: the arrived datasets' files (a JSON list file) are there and readable."""
    paths = json.loads(Path(args["arrivals"]).read_text())
    if not paths:
        raise TaskCheckError("the triggered Run was given no arrived dataset")
    sizes = [Path(p).stat().st_size for p in paths]
    _write(args["result"], {"arrivals": len(paths), "bytes": sum(sizes)})


def reproduce(args: dict[str, str]) -> None:
    """The cross-Site check's processing of one field (the same input at both Sites): a calibrated catalogue
    (compared byte for byte, by its checksum) and summary statistics (compared within a relative tolerance)."""
    field = json.loads(Path(args["field"]).read_text())
    sources = sorted(field["sources"], key=lambda s: s["id"])
    if not sources:
        raise TaskCheckError("the field holds no source")
    scale = 10 ** (-0.4 * float(args["zeropoint"]))
    calibrated = [{**s, "flux": s["counts"] * scale} for s in sources]
    _write(args["catalogue"], {"field": field.get("field"), "sources": calibrated})
    fluxes = [s["flux"] for s in calibrated]
    total = sum(fluxes)
    mean = total / len(fluxes)
    rms = (sum((f - mean) ** 2 for f in fluxes) / len(fluxes)) ** 0.5
    _write(args["statistics"], {"sources": len(fluxes), "total_flux": total, "mean_flux": mean, "rms_flux": rms})


MODES = {f.__name__: f for f in (split, work, gather, flaky, sizes, hungry, gpu, arrived, reproduce)}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in MODES:
        print(f"usage: python -m sgs.challenge.tasks {{{','.join(MODES)}}} --port=value ...", file=sys.stderr)
        return 2
    try:
        MODES[argv[0]](_args(argv[1:]))
    except TaskCheckError as err:
        print(f"challenge check failed: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

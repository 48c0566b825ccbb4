"""The Dummy Pipeline suite: one small Pipeline per feature, and the verdicts (pure: no I/O, no clock).

Every feature is its own Pipeline and Run, so the Runs go in parallel and each row's time is its Run's own. The
programs are ``sgs.challenge.tasks``; what a task can check from inside (a private TMPDIR, its attempt, a GPU), it
checks, failing its task with a line that names the fault; what only the outside can see (the retry happened, the
Run succeeded, the archive holds the products with lineage) the runner checks.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sgs.model.pipeline import PipelineSpec

LABEL = "sgs.io/challenge"  # on every object the challenge makes: its id
PRODUCT_TYPE = "challenge_summary"  # the dataset type of the registered fan-in product
ARRIVAL_TYPE = "challenge_arrival"  # the dataset type whose arrival fires the trigger check's Pipeline
ARRIVAL_INSTRUMENT = "SGS-CHALLENGE"
RUNTIMES = (0.2, 0.4, 0.6, 0.3)  # the fanned-out items' runtimes, seconds
SMALL_RAM_GIB = 0.25  # a hungry task's memory before dynamic resources or an OOM retry
HUNGRY_MIB = 400  # what a hungry task holds: more than SMALL_RAM_GIB, less than twice it
DYNAMIC_RAM_GIB = 1.0  # what the upstream product of the dynamic-resources check asks for


# The cross-Site check (`sgs challenge SITE-A SITE-B`): its products' dataset types and how each is compared,
# None: byte for byte (the archive's sha256 of each Site's replica), a float: numbers within that relative tolerance.
CATALOGUE_TYPE = "challenge_catalogue"
STATISTICS_TYPE = "challenge_statistics"
COMPARED: dict[str, float | None] = {CATALOGUE_TYPE: None, STATISTICS_TYPE: 1e-9}
ZEROPOINT = 25.0  # the reproduce task's photometric zero point (a literal of the Pipeline: part of its digest)
FIELD_SOURCES = 200
PERTURBATION = 1e-12  # the relative change `--perturb SITE` makes to that Site's input counts


class Status(StrEnum):
    PASS = "pass"
    FAIL = "FAIL"
    SKIP = "skipped"


@dataclass(frozen=True)
class Row:
    feature: str
    status: Status
    seconds: float | None = None
    detail: str = ""


@dataclass(frozen=True)
class Check:
    """One feature: the Pipeline its Run runs (``None``: checked without a Run of its own)."""

    key: str
    feature: str
    pipeline: PipelineSpec | None = None
    needs: str | None = None  # a capability of the Site: "gpu"
    retry: Mapping[str, Any] = field(default_factory=dict)


def _exe(
    name: str,
    python: str,
    mode: str,
    inputs: Sequence[str],
    outputs: Sequence[str],
    *,
    resources: Mapping[str, Any] | None = None,
    retry: Mapping[str, Any] | None = None,
    register: Sequence[str] = (),
    types: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    exe: dict[str, Any] = {
        "name": name,
        "command": f"{python} -m sgs.challenge.tasks {mode}",
        "inputs": [{"name": n} for n in inputs],
        "outputs": [
            {
                "name": n,
                "suffix": ".json",
                "register": n in register,
                **({"datasetType": (types or {}).get(n, PRODUCT_TYPE)} if n in register else {}),
            }
            for n in outputs
        ],
        "resources": {"cores": 1, "ram": 0.5, "walltime": 0.05, **(resources or {})},
    }
    if retry is not None:
        exe["retry"] = dict(retry)
    return exe


def _step(
    name: str, executable: str, inputs: Mapping[str, Mapping[str, Any]], scope: str | None = None
) -> dict[str, Any]:
    step: dict[str, Any] = {"name": name, "executable": executable, "inputs": {k: dict(v) for k, v in inputs.items()}}
    if scope is not None:
        step["scope"] = scope
    return step


def _value(value: object) -> dict[str, str]:
    return {"value": str(value)}


NO_RETRY = {"max": 0}


def fanout_pipeline(python: str, runtimes: Sequence[float] = RUNTIMES, register: bool = True) -> PipelineSpec:
    """split → one ``work`` per runtime (each in its own TMPDIR) → ``gather`` (the fan-in), its summary registered."""
    return PipelineSpec.model_validate(
        {
            "executables": [
                _exe("split", python, "split", ["runtimes"], ["items"], retry=NO_RETRY),
                _exe("work", python, "work", ["item"], ["result"], retry=NO_RETRY),
                _exe(
                    "gather",
                    python,
                    "gather",
                    ["results", "expected"],
                    ["summary"],
                    retry=NO_RETRY,
                    register=("summary",) if register else (),
                ),
            ],
            "steps": [
                _step("split", "split", {"runtimes": _value(",".join(str(r) for r in runtimes))}),
                {
                    "name": "fan",
                    "map": {
                        "over": "item",
                        "params": ["item"],
                        "outputs": [{"name": "result", "from": {"step": "fan.work", "output": "result"}}],
                    },
                    "inputs": {"item": {"step": "split", "output": "items"}},
                },
                _step("fan.work", "work", {"item": {"input": "item"}}, scope="fan"),
                _step(
                    "gather",
                    "gather",
                    {"results": {"step": "fan", "output": "result"}, "expected": _value(len(runtimes))},
                ),
            ],
            "outputs": [{"name": "summary", "from": {"step": "gather", "output": "summary"}}],
        }
    )


def retry_pipeline(python: str) -> PipelineSpec:
    """One task that fails its first attempt; one retry allowed, right away."""
    retry = {"max": 1, "backoff": 0}
    return PipelineSpec.model_validate(
        {
            "executables": [_exe("flaky", python, "flaky", [], ["result"], retry=retry)],
            "steps": [_step("flaky", "flaky", {})],
        }
    )


def dynamic_pipeline(python: str) -> PipelineSpec:
    """``sizes`` writes {ram: 1.0}; ``hungry`` (static ram 0.25 GiB, no retry) holds 400 MiB: it succeeds only if
    its memory came from the upstream product."""
    return PipelineSpec.model_validate(
        {
            "executables": [
                _exe("sizes", python, "sizes", ["ram"], ["sizes"], retry=NO_RETRY),
                _exe(
                    "hungry",
                    python,
                    "hungry",
                    ["sizes", "mib"],
                    ["result"],
                    resources={"ram": SMALL_RAM_GIB, "dynamic": {"input": "sizes"}},
                    retry=NO_RETRY,
                ),
            ],
            "steps": [
                _step("sizes", "sizes", {"ram": _value(DYNAMIC_RAM_GIB)}),
                _step("hungry", "hungry", {"sizes": {"step": "sizes", "output": "sizes"}, "mib": _value(HUNGRY_MIB)}),
            ],
        }
    )


def oom_pipeline(python: str) -> PipelineSpec:
    """``hungry`` at 0.25 GiB holds 400 MiB: killed, then retried with twice the memory (memoryMultiplier 2)."""
    retry = {"max": 1, "backoff": 0, "memoryMultiplier": 2}
    return PipelineSpec.model_validate(
        {
            "executables": [
                _exe("hungry", python, "hungry", ["mib"], ["result"], resources={"ram": SMALL_RAM_GIB}, retry=retry)
            ],
            "steps": [_step("hungry", "hungry", {"mib": _value(HUNGRY_MIB)})],
        }
    )


def gpu_pipeline(python: str) -> PipelineSpec:
    return PipelineSpec.model_validate(
        {
            "executables": [_exe("gpu", python, "gpu", [], ["result"], resources={"gpus": 1}, retry=NO_RETRY)],
            "steps": [_step("gpu", "gpu", {})],
        }
    )


def trigger_pipeline(python: str, observation: int) -> PipelineSpec:
    """A Pipeline nobody runs by hand: its trigger fires when one ``challenge_arrival`` dataset of this
    challenge's own observation number becomes available (at any Site of the challenge's namespace)."""
    return PipelineSpec.model_validate(
        {
            "inputs": [{"name": "arrivals"}],
            "executables": [_exe("arrived", python, "arrived", ["arrivals"], ["result"], retry=NO_RETRY)],
            "steps": [_step("arrived", "arrived", {"arrivals": {"input": "arrivals"}})],
            "triggers": [
                {
                    "name": "arrival",
                    "input": "arrivals",
                    "datasetType": ARRIVAL_TYPE,
                    "where": f"instrument = '{ARRIVAL_INSTRUMENT}' AND observation = {observation}",
                    "groupBy": ["observation"],
                    "complete": {"count": 1},
                }
            ],
        }
    )


def checks(python: str) -> list[Check]:
    """The suite, in the order of the table."""
    return [
        Check("fanout", "fan-out over a runtime list + fan-in", fanout_pipeline(python)),
        Check("tmpdir", "private TMPDIR per task"),  # judged from the fan-out Run's tasks
        Check("retry", "failed task retried", retry_pipeline(python)),
        Check("dynamic", "dynamic resources from upstream product", dynamic_pipeline(python)),
        Check("oom", "OOM kill retried with more memory", oom_pipeline(python)),
        Check("gpu", "GPU task", gpu_pipeline(python), needs="gpu"),
        Check("lineage", "outputs registered with lineage"),
        Check("replication", "replication to a second Site"),
        Check("trigger", "trigger: data arrival starts a Run"),
    ]


# ------------------------------------------------------------------------------------------------ verdicts


def run_row(feature: str, run: Mapping[str, Any] | None, *, timed_out: bool = False) -> Row:
    """A feature's row from its Run's final object: pass when Succeeded, else the failed tasks' reasons."""
    if run is None:
        return Row(feature, Status.FAIL, None, "Run not created")
    status = run.get("status") or {}
    seconds = run_seconds(run)
    phase = status.get("phase", "Pending")
    if phase == "Succeeded":
        return Row(feature, Status.PASS, seconds, f"{status.get('progress', '')} tasks")
    if timed_out:
        return Row(feature, Status.FAIL, seconds, f"timed out in phase {phase}: {_conditions(status)}")
    failed = status.get("failedTasks") or []
    why = "; ".join(f"{f['task']}: {f['reason']} {f.get('message', '')}".strip() for f in failed[:3])
    return Row(feature, Status.FAIL, seconds, why or f"phase {phase}: {_conditions(status)}")


def _conditions(status: Mapping[str, Any]) -> str:
    false = [c for c in status.get("conditions") or [] if c.get("status") == "False"]
    return "; ".join(f"{c['type']} {c.get('reason', '')}: {c.get('message', '')}"[:200] for c in false) or "no reason"


def run_seconds(run: Mapping[str, Any]) -> float | None:
    from datetime import datetime

    status = run.get("status") or {}
    start = status.get("startTime") or (run.get("metadata") or {}).get("creationTimestamp")
    end = status.get("completionTime")
    if not (start and end):
        return None
    parse = datetime.fromisoformat
    return (parse(end.replace("Z", "+00:00")) - parse(start.replace("Z", "+00:00"))).total_seconds()


def exit_code(rows: Sequence[Row]) -> int:
    """Non-zero when any row failed; skipped rows (a Site without GPUs) do not fail the challenge."""
    return 1 if any(r.status is Status.FAIL for r in rows) else 0


def render(rows: Sequence[Row]) -> str:
    """The pass/fail table as plain text (one line a feature), for terminals, logs and tests alike."""
    width = max(len(r.feature) for r in rows)
    lines = [f"{'feature':<{width}}  {'result':<7}  {'time':>7}  detail"]
    for r in rows:
        seconds = f"{r.seconds:6.1f}s" if r.seconds is not None else "      -"
        lines.append(f"{r.feature:<{width}}  {r.status.value:<7}  {seconds}  {r.detail}")
    failed = [r.feature for r in rows if r.status is Status.FAIL]
    lines.append(f"FAILED: {', '.join(failed)}" if failed else "all features passed")
    return "\n".join(lines)


def reproduce_pipeline(python: str) -> PipelineSpec:
    """One task over the input ``field`` (a file each Site holds, the same bytes at both): a catalogue and its
    statistics, both registered, of the dataset types :data:`COMPARED` says how to compare."""
    return PipelineSpec.model_validate(
        {
            "inputs": [{"name": "field"}],
            "executables": [
                _exe(
                    "reproduce",
                    python,
                    "reproduce",
                    ["field", "zeropoint"],
                    ["catalogue", "statistics"],
                    retry=NO_RETRY,
                    register=("catalogue", "statistics"),
                    types={"catalogue": CATALOGUE_TYPE, "statistics": STATISTICS_TYPE},
                )
            ],
            "steps": [_step("reproduce", "reproduce", {"field": {"input": "field"}, "zeropoint": _value(ZEROPOINT)})],
            "outputs": [
                {"name": "catalogue", "from": {"step": "reproduce", "output": "catalogue"}},
                {"name": "statistics", "from": {"step": "reproduce", "output": "statistics"}},
            ],
        }
    )


def field_input(seed: int, perturbation: float = 0.0) -> bytes:
    """The cross-Site check's input: a field of sources with counts, the same bytes for the same seed (a
    ``perturbation`` changes every count by that relative amount: the self-test of the comparison)."""
    import random

    draw = random.Random(seed)
    sources = [
        {
            "id": index,
            "ra": round(draw.uniform(150.0, 151.0), 6),
            "dec": round(draw.uniform(2.0, 3.0), 6),
            "counts": draw.lognormvariate(8.0, 1.0) * (1.0 + perturbation),
        }
        for index in range(FIELD_SOURCES)
    ]
    return json.dumps({"field": seed, "sources": sources}, sort_keys=True).encode()


def numbers_differ(a: object, b: object, rtol: float, where: str = "") -> str | None:
    """Where two JSON documents differ beyond ``rtol`` (numbers) or at all (anything else); None when they
    agree. The first difference only, as ``key.path: a vs b``."""
    if isinstance(a, bool) or isinstance(b, bool) or not (isinstance(a, int | float) and isinstance(b, int | float)):
        if isinstance(a, dict) and isinstance(b, dict):
            if set(a) != set(b):
                return f"{where or '.'}: keys {sorted(set(a) ^ set(b))} in one only"
            for key in sorted(a):
                found = numbers_differ(a[key], b[key], rtol, f"{where}.{key}")
                if found:
                    return found
            return None
        if isinstance(a, list) and isinstance(b, list):
            if len(a) != len(b):
                return f"{where or '.'}: {len(a)} vs {len(b)} items"
            for index, (x, y) in enumerate(zip(a, b, strict=True)):
                found = numbers_differ(x, y, rtol, f"{where}[{index}]")
                if found:
                    return found
            return None
        return None if type(a) is type(b) and a == b else f"{where or '.'}: {a!r} vs {b!r}"
    if math.isclose(float(a), float(b), rel_tol=rtol, abs_tol=0.0):
        return None
    relative = abs(float(a) - float(b)) / max(abs(float(a)), abs(float(b)))
    return f"{where or '.'}: {a!r} vs {b!r} (relative {relative:.1e} > {rtol:.0e})"

"""Launcher fan-out: a split, N ~30 ms processes, a gather, on 2 slots — `sgs run --local` against an `xargs -P2`
floor of the same commands, and against cwltool and Parsl (threads and HighThroughputExecutor) in the same run.

Every tool runs the same three programs (small sh scripts written here): ``fanout_split`` makes the N items,
``fanout_work`` waits ~30 ms and writes its item, ``fanout_gather`` counts the products; each run is checked
(N products counted) so no tool is timed on work it skipped. Times are wall-clock from starting the tool's
command to its exit, start-up included, as a user sees them (bytecode caches written by a warm-up run first).
Rounds alternate the tools; each tool's ratio is taken to the floor of the same round and the medians are
printed, with the load average (the machine is shared).
Target (issue #20): sgs ≤ 1.15 × the floor at 1,000 tasks. Issue #20 measured sgs 3.55×, cwltool 1.5×,
Parsl threads 1.17×, Parsl HTEX 1.67×.

The peers come from PyPI into their own virtual environment (``--peers``, default ~/.cache/sgs/bench-peers),
made on first use; never into the project's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from tempfile import TemporaryDirectory

TARGET_RATIO = 1.15
WORK_SECONDS = 0.03
PEER_PACKAGES = ["cwltool", "parsl"]
DEFAULT_PEERS = Path.home() / ".cache" / "sgs" / "bench-peers"

PROGRAMS = {
    "fanout_split": """#!/bin/sh
# fanout_split --n=N (--items=LIST.json | --dir=DIR): the N items, as a JSON list or as N empty files
for arg; do case "$arg" in
    --n=*) n="${arg#--n=}";;
    --items=*) items="${arg#--items=}";;
    --dir=*) dir="${arg#--dir=}";;
esac; done
if [ -n "$dir" ]; then mkdir -p "$dir" && cd "$dir" && seq 0 $((n - 1)) | xargs touch; exit; fi
seq 0 $((n - 1)) | awk '{ printf "%s\\"%s\\"", (NR > 1 ? "," : "["), $1 } END { print "]" }' > "$items"
""",
    "fanout_work": f"""#!/bin/sh
# fanout_work --item=I --out=PATH: ~{WORK_SECONDS * 1000:.0f} ms of waiting, then the item into PATH
for arg; do case "$arg" in --item=*) item="${{arg#--item=}}";; --out=*) out="${{arg#--out=}}";; esac; done
sleep {WORK_SECONDS}
printf '%s\\n' "${{item##*/}}" > "$out"
""",
    "fanout_gather": """#!/bin/sh
# fanout_gather --count=PATH [--inputs=LIST.json] [FILE...]: how many products there are, into PATH
listed=0
for arg; do case "$arg" in
    --count=*) count="${arg#--count=}";;
    --inputs=*) listed=$(tr ',' '\\n' < "${arg#--inputs=}" | grep -c '"');;
    *) [ -f "$arg" ] && listed=$((listed + 1));;
esac; done
echo "$listed" > "$count"
""",
}

SGS_PIPELINE = """
from sgs.dsl import ComputingResources, Executable, Input, Output, RetryPolicy, parallel, pipeline

one_core = ComputingResources(cores=1, ram=0.25, walltime=0.1)
split = Executable(command="fanout_split", inputs=[Input("n")], outputs=[Output("items", suffix=".json")],
                   resources=one_core)
work = Executable(command="fanout_work", inputs=[Input("item")], outputs=[Output("out")], resources=one_core,
                  retry=RetryPolicy(max=0))
gather = Executable(command="fanout_gather", inputs=[Input("inputs")], outputs=[Output("count")],
                    resources=one_core)


@parallel(iterable="item")
def each(item):
    return work(item=item)


@pipeline(outputs=("count",))
def fanout(n):
    return gather(inputs=each(item=split(n=n)))
"""

CWL_WORKFLOW = {
    "cwlVersion": "v1.2",
    "class": "Workflow",
    "requirements": {"ScatterFeatureRequirement": {}},
    "inputs": {"n": "int"},
    "outputs": {"count": {"type": "File", "outputSource": "gather/count"}},
    "steps": {
        "split": {
            "in": {"n": "n"},
            "out": ["items"],
            "run": {
                "class": "CommandLineTool",
                "baseCommand": ["fanout_split", "--dir=items"],
                "inputs": {"n": {"type": "int", "inputBinding": {"prefix": "--n=", "separate": False}}},
                "outputs": {"items": {"type": "File[]", "outputBinding": {"glob": "items/*"}}},
            },
        },
        "work": {
            "in": {"item": "split/items"},
            "scatter": "item",
            "out": ["out"],
            "run": {
                "class": "CommandLineTool",
                "baseCommand": ["fanout_work", "--out=out"],
                "inputs": {"item": {"type": "File", "inputBinding": {"prefix": "--item=", "separate": False}}},
                "outputs": {"out": {"type": "File", "outputBinding": {"glob": "out"}}},
            },
        },
        "gather": {
            "in": {"outs": "work/out"},
            "out": ["count"],
            "run": {
                "class": "CommandLineTool",
                "baseCommand": ["fanout_gather", "--count=count"],
                "inputs": {"outs": {"type": "File[]", "inputBinding": {"position": 1}}},
                "outputs": {"count": {"type": "File", "outputBinding": {"glob": "count"}}},
            },
        },
    },
}

PARSL_SCRIPT = """
import json, sys
import parsl
from parsl.app.app import bash_app
from parsl.config import Config

kind, n, root = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if kind == "threads":
    from parsl.executors.threads import ThreadPoolExecutor
    executor = ThreadPoolExecutor(max_threads=2)
else:
    from parsl.executors import HighThroughputExecutor
    from parsl.providers import LocalProvider
    executor = HighThroughputExecutor(
        max_workers_per_node=2, cores_per_worker=1, address="127.0.0.1", loopback_address="127.0.0.1",
        provider=LocalProvider(init_blocks=1, min_blocks=1, max_blocks=1),
    )
parsl.load(Config(executors=[executor], run_dir=root + "/runinfo", usage_tracking=0))

@bash_app
def split(n, items):
    return f"fanout_split --n={n} --items={items}"

@bash_app
def work(item, out):
    return f"fanout_work --item={item} --out={out}"

@bash_app
def gather(count, outs):
    return f"fanout_gather --count={count} " + " ".join(outs)

split(n, root + "/items.json").result()
outs = [f"{root}/out/{item}" for item in json.load(open(root + "/items.json"))]
for future in [work(item, out) for item, out in zip(range(n), outs)]:
    future.result()
gather(root + "/count", outs).result()
parsl.dfk().cleanup()
"""


def write_programs(bin_dir: Path) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name, text in PROGRAMS.items():
        path = bin_dir / name
        path.write_text(text)
        path.chmod(0o755)


def ensure_peers(venv: Path) -> Path:
    """The peers' interpreter; the virtual environment is made (and the peers installed) on first use."""
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import cwltool, parsl"]
    if python.exists() and subprocess.run(probe, capture_output=True, check=False).returncode == 0:
        return python
    print(f"installing {', '.join(PEER_PACKAGES)} into {venv} (once) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *PEER_PACKAGES], check=True)
    return python


class Bench:
    def __init__(self, root: Path, count: int, peers: Path | None) -> None:
        self.root = root
        self.count = count
        self.peers = peers
        self.bin = root / "bin"
        write_programs(self.bin)
        (root / "fanout.py").write_text(SGS_PIPELINE)
        (root / "fanout.cwl").write_text(json.dumps(CWL_WORKFLOW))
        (root / "parsl_fanout.py").write_text(PARSL_SCRIPT)
        self.env = {**os.environ, "PATH": f"{self.bin}{os.pathsep}{os.environ['PATH']}"}
        # As on a user's machine: modules are compiled once and their bytecode kept (an agent's environment may
        # say otherwise, which would make sgs, installed editable from source, recompile itself on every run).
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)

    def warm_up(self, tools: dict[str, Callable[[Path], Path]]) -> None:
        """One tiny run of each Python tool first, so no round pays for writing bytecode caches."""
        for name, tool in tools.items():
            if name != "xargs -P2":
                work = self.root / "warm-up"
                work.mkdir()
                count, self.count = self.count, 2
                try:
                    tool(work)
                finally:
                    self.count = count
                    shutil.rmtree(work, ignore_errors=True)

    def tools(self) -> dict[str, Callable[[Path], Path]]:
        tools: dict[str, Callable[[Path], Path]] = {"xargs -P2": self.floor, "sgs run --local": self.sgs}
        if self.peers is not None:
            tools["cwltool --parallel"] = self.cwltool
            tools["parsl threads"] = lambda work: self.parsl(work, "threads")
            tools["parsl htex"] = lambda work: self.parsl(work, "htex")
        return tools

    def timed(self, name: str, tool: Callable[[Path], Path], round_no: int) -> float:
        work = self.root / f"{name.split()[0]}-{name.split()[-1]}-{round_no}"
        work.mkdir()
        begin = time.perf_counter()
        count_file = tool(work)
        elapsed = time.perf_counter() - begin
        counted = int(count_file.read_text().strip())
        if counted != self.count:
            raise RuntimeError(f"{name}: gathered {counted} products, not {self.count}")
        shutil.rmtree(work, ignore_errors=True)
        return elapsed

    def _run(self, argv: list[str], cwd: Path, extra_path: Path | None = None) -> None:
        env = self.env if extra_path is None else {**self.env, "PATH": f"{self.env['PATH']}{os.pathsep}{extra_path}"}
        done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} exited {done.returncode}: {(done.stderr or done.stdout)[-2000:]}")

    def floor(self, work: Path) -> Path:
        last = self.count - 1
        script = (
            f"fanout_split --n={self.count} --items=items.json && mkdir out && "
            f"seq 0 {last} | xargs -P 2 -I{{}} fanout_work --item={{}} --out=out/{{}} && "
            "fanout_gather --count=count out/*"
        )
        self._run(["sh", "-c", script], work)
        return work / "count"

    def sgs(self, work: Path) -> Path:
        sgs = Path(sys.executable).parent / "sgs"
        fanout = f"{self.root / 'fanout.py'}:fanout"
        argv = [str(sgs), "run", "--local", fanout, "--input", f"n={self.count}", "--cores=2", "--no-progress"]
        self._run([*argv, "--workdir", str(work / "run"), "--run-id", "fanout"], work)
        return work / "run" / "tasks" / "gather" / "count"

    def cwltool(self, work: Path) -> Path:
        assert self.peers is not None
        cwltool = self.peers.parent / "cwltool"
        (work / "job.json").write_text(json.dumps({"n": self.count}))
        argv = [str(cwltool), "--quiet", "--parallel", "--outdir", str(work / "out"), "--tmpdir-prefix"]
        self._run([*argv, str(work / "tmp") + "/", str(self.root / "fanout.cwl"), str(work / "job.json")], work)
        return work / "out" / "count"

    def parsl(self, work: Path, kind: str) -> Path:
        assert self.peers is not None
        (work / "out").mkdir()
        argv = [str(self.peers), str(self.root / "parsl_fanout.py"), kind, str(self.count), str(work)]
        self._run(argv, work, extra_path=self.peers.parent)  # HTEX starts its interchange and workers from PATH
        return work / "count"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--peers", type=Path, default=DEFAULT_PEERS, help="virtual environment of the peers")
    parser.add_argument("--no-peers", action="store_true", help="only the floor and sgs")
    parser.add_argument("--only", action="append", default=[], help="run only tools whose name holds this")
    args = parser.parse_args()
    peers = None if args.no_peers else ensure_peers(args.peers)
    with TemporaryDirectory(prefix="sgs-bench-fanout-") as tmp:
        bench = Bench(Path(tmp), args.tasks, peers)
        tools = bench.tools()
        if args.only:
            tools = {k: v for k, v in tools.items() if k == "xargs -P2" or any(o in k for o in args.only)}
        bench.warm_up(tools)
        seconds: dict[str, list[float]] = {name: [] for name in tools}
        ratios: dict[str, list[float]] = {name: [] for name in tools}
        loads: list[float] = []
        for round_no in range(args.rounds):
            order = list(tools) if round_no % 2 == 0 else list(reversed(tools))
            for name in order:
                seconds[name].append(bench.timed(name, tools[name], round_no))
            floor = seconds["xargs -P2"][-1]
            for name in tools:
                ratios[name].append(seconds[name][-1] / floor)
            loads.append(os.getloadavg()[0])
            row = "  ".join(f"{name} {seconds[name][-1]:.1f}s ({ratios[name][-1]:.2f}x)" for name in tools)
            print(f"round {round_no + 1}: load {loads[-1]:.2f}  {row}", flush=True)
    print(f"\n{args.tasks} tasks of ~{WORK_SECONDS * 1000:.0f} ms on 2 slots, medians of {args.rounds} rounds")
    print(f"{'tool':<20} {'seconds':>8} {'x floor':>8}")
    for name in tools:
        print(f"{name:<20} {statistics.median(seconds[name]):>8.1f} {statistics.median(ratios[name]):>8.2f}")
    sgs_ratio = statistics.median(ratios["sgs run --local"])
    verdict = "meets" if sgs_ratio <= TARGET_RATIO else f"misses by {sgs_ratio - TARGET_RATIO:.2f}"
    print(f"launcher_fanout: sgs {sgs_ratio:.2f}x the xargs floor (target <= {TARGET_RATIO}x: {verdict}); ", end="")
    print(f"load average {statistics.median(loads):.2f} (1 min, median of rounds)")
    summary = {name: round(statistics.median(ratios[name]), 3) for name in tools}
    print(json.dumps({"tasks": args.tasks, "ratios": summary, "load": round(statistics.median(loads), 2)}))


if __name__ == "__main__":
    main()

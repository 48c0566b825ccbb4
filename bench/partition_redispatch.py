"""A partition of a cluster Site: time to SiteUnreachable and to re-dispatch of the Runs that never started
there, with at most one live copy per Run (issue 21's partition figures).

Real control planes on this machine: the central one with `sgs operator` (a subprocess, as deployed) and two
remote ones, each a cluster Site of the central namespace reached through its own TcpLink (a relay the bench
cuts: a real partition). The remote clusters run no operator — their Sites are marked Ready by hand — so no
copy ever asks for its start permit: every Run sent to them "never started", the case re-dispatch is for.

``--runs`` central Runs with spec.site unset all go to site-0 (free slots tie, then by name); the link to site-0
is cut; each Run must show SiteUnreachable, then Redispatched to site-1 after ``--after`` seconds
(SGS_OPERATOR_REDISPATCH_AFTER_S; the operator's default is 120), its copy made there. Then the link returns and
the Site's orphan collection deletes the copies left at site-0.

Targets (issue 21): link loss → SiteUnreachable ≤ 60 s; → re-dispatch ≤ 120 s after detection (configurable);
MultiKueue keeps a lost worker's workloads for 15 minutes by default; at most one remote copy per Run that may
run (the left copies are fenced: never granted, so they cannot run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from cluster_dispatch import NAMESPACE, apply_cluster_site, create, gather_limited, pipeline
from rich.console import Console
from sgs_operator.mirror import ORIGIN_UID_LABEL, runs_path

from sgs.kube import JSON, KubeClient
from sgs.testing.kube import KubePart
from sgs.testing.link import TcpLink
from sgs.testing.postgres import PostgresPart

DETECT_TARGET_S = 60.0
REDISPATCH_TARGET_S = 120.0
MULTIKUEUE_DEFAULT_S = 15 * 60.0
console = Console(width=120)


def unplaced_run(name: str) -> JSON:
    return {
        "apiVersion": "sgs.io/v1alpha1",
        "kind": "Run",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"pipeline": "one"},
    }


def remote_site(name: str, store: str) -> JSON:
    return {
        "apiVersion": "sgs.io/v1alpha1",
        "kind": "Site",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "compute": {"kind": "kubernetes"},
            "storage": {"kind": "posix", "path": store},
            "capacity": {"cores": 100, "storageTb": 1},
        },
    }


def condition(run: JSON, kind: str) -> dict[str, Any]:
    found = [c for c in (run.get("status") or {}).get("conditions") or [] if c.get("type") == kind]
    return found[0] if found else {}


def start_operator(kube: KubePart, dsn: str, allowed: list[str], after_s: float, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "KUBECONFIG": str(kube.kubeconfig),
        "SGS_OPERATOR_DSN": dsn,
        "SGS_OPERATOR_WEBHOOK_NAME": "sgs-operator-bench.sgs.io",
        "SGS_OPERATOR_ALLOWED_CLUSTER_SERVERS": json.dumps(allowed),
        "SGS_OPERATOR_REDISPATCH_AFTER_S": str(after_s),
    }
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "sgs.cli.main", "operator"], env=env, stdout=out, stderr=out)
    deadline = time.monotonic() + 180
    while "sgs operator ready" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"operator did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    return proc


async def central_runs(central: KubeClient) -> list[JSON]:
    listing = await central.get(runs_path(NAMESPACE))
    items: list[JSON] = listing.get("items") or []
    return items


async def copies_by_uid(remote: KubeClient) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in (await remote.get(runs_path(NAMESPACE))).get("items") or []:
        uid = item["metadata"]["labels"][ORIGIN_UID_LABEL]
        counts[uid] = counts.get(uid, 0) + 1
    return counts


async def wait_all(check: Any, what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        await asyncio.sleep(0.2)


async def measure(central_kube: KubePart, remotes: list[KubePart], link: TcpLink, args: argparse.Namespace) -> None:
    central = await KubeClient.connect(central_kube.kubeconfig)
    near, far = [await KubeClient.connect(k.kubeconfig) for k in remotes]
    try:
        await gather_limited(
            16, (create(central, runs_path(NAMESPACE), unplaced_run(f"p-{i}")) for i in range(args.runs))
        )

        async def all_at_site_0() -> bool:
            runs = await central_runs(central)
            fenced = [r for r in runs if ((r.get("status") or {}).get("remote") or {}).get("fenced")]
            return len(fenced) == args.runs and all(r["status"]["site"] == "site-0" for r in fenced)

        await wait_all(all_at_site_0, f"{args.runs} fenced copies at site-0", 300)
        console.print(f"{args.runs} Runs at site-0, each one fenced copy there; cutting the link")
        cut_at = time.time()
        link.cut()
        unreachable: dict[str, float] = {}
        moved: dict[str, float] = {}
        deadline = time.monotonic() + args.after + 300
        while len(moved) < args.runs:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(moved)} of {args.runs} Runs re-dispatched")
            now = time.time()
            for run in await central_runs(central):
                name = run["metadata"]["name"]
                if condition(run, "SiteUnreachable").get("status") == "True":
                    unreachable.setdefault(name, now - cut_at)
                if condition(run, "Redispatched").get("status") == "True":
                    unreachable.setdefault(name, now - cut_at)  # shown and gone within one poll
                    moved.setdefault(name, now - cut_at)
            await asyncio.sleep(0.2)
        uids = {r["metadata"]["uid"] for r in await central_runs(central)}

        async def all_copied_at_site_1() -> bool:
            return bool(len(await copies_by_uid(far)) == args.runs)

        await wait_all(all_copied_at_site_1, "the copies at site-1", 120)
        at_far = await copies_by_uid(far)
        duplicates = sum(n - 1 for n in at_far.values()) + len(set(at_far) - uids)
        healed_at = time.monotonic()
        link.heal()

        async def left_copies_gone() -> bool:
            return not await copies_by_uid(near)

        await wait_all(left_copies_gone, "the orphan collection at site-0", 120)
        gc_s = time.monotonic() - healed_at
    finally:
        for client in (central, near, far):
            await client.close()
    detect = sorted(unreachable.values())
    after_detect = sorted(moved[name] - unreachable[name] for name in moved)
    console.print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    console.print(
        f"link loss → SiteUnreachable: median {statistics.median(detect):.1f} s, max {detect[-1]:.1f} s "
        f"(target ≤ {DETECT_TARGET_S:.0f} s: ratio {detect[-1] / DETECT_TARGET_S:.2f})"
    )
    console.print(
        f"SiteUnreachable → re-dispatched: median {statistics.median(after_detect):.1f} s, max {after_detect[-1]:.1f}"
        f" s with {args.after:.0f} s configured (target ≤ {REDISPATCH_TARGET_S:.0f} s: ratio "
        f"{after_detect[-1] / REDISPATCH_TARGET_S:.2f}; MultiKueue's default {MULTIKUEUE_DEFAULT_S:.0f} s: ratio "
        f"{after_detect[-1] / MULTIKUEUE_DEFAULT_S:.2f}); overhead beyond the setting: "
        f"{after_detect[-1] - args.after:.1f} s"
    )
    console.print(
        f"copies per Run at the new Site: duplicates {duplicates} (target 0); left copies granted: 0 by design"
    )
    console.print(f"link back → the left copies deleted by the orphan collection: {gc_s:.1f} s")


def prepare(central: KubePart, remotes: list[KubePart], links: list[TcpLink], store: str) -> None:
    for kube in [central, *remotes]:
        kube.kubectl("create", "namespace", NAMESPACE)
    for i, (kube, link) in enumerate(zip(remotes, links, strict=True)):
        name = f"site-{i}"
        kube.kubectl("apply", "-f", "-", input=json.dumps(remote_site(name, store)))
        # No operator there: its Site is marked Ready by hand, what that operator would write.
        status = json.dumps({"status": {"phase": "Ready"}})
        kube.kubectl("-n", NAMESPACE, "patch", "site", name, "--subresource=status", "--type=merge", "-p", status)
        apply_cluster_site(central, name, kube.kubeconfig_for(f"https://{link.address}"), store)
    central.kubectl("-n", NAMESPACE, "apply", "-f", "-", input=json.dumps(pipeline()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--after", type=float, default=120.0, help="SGS_OPERATOR_REDISPATCH_AFTER_S")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="sgs-bench-partition-"))
    (workdir / "store").mkdir()
    central = KubePart(workdir / "central", scheduler=False)
    remotes = [KubePart(workdir / f"remote-{i}", scheduler=False) for i in range(2)]
    with (
        PostgresPart(workdir / "pg") as postgres,
        central,
        remotes[0],
        remotes[1],
        TcpLink(remotes[0].port) as link0,
        TcpLink(remotes[1].port) as link1,
    ):
        prepare(central, remotes, [link0, link1], str(workdir / "store"))
        allowed = [link0.address, link1.address]
        proc = start_operator(central, postgres.dsn, allowed, args.after, workdir / "operator.log")
        try:
            asyncio.run(measure(central, remotes, link0, args))
        finally:
            proc.terminate()
            proc.wait(60)
    console.print(f"work directory: {workdir}")


if __name__ == "__main__":
    started = datetime.now()
    main()
    console.print(f"bench took {(datetime.now() - started).total_seconds():.0f} s")

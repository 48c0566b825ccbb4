"""The console in Chromium at scale: a 100,000-task Run's page (first render) and a deep task-table page under
1 s, the Runs list with 1,000 Runs under 0.5 s, and the console server's memory while 10 browsers follow a Run
that is progressing.

Real parts: a control plane and PostgreSQL (started here, or $KUBECONFIG), the console as its own process
(`sgs console`), Debian's Chromium driven by Playwright. The Run's 100,002 task records are written with COPY into
the schema the operator creates (its TaskStore), and its status is patched as the operator would; a "running"
Run is simulated by changing 1,000 records and the status counts every second. Times are navigation start to the
load event (the page is usable: HTML parsed, styles and script loaded), median of --repeat loads. The ratio
printed is figure / target; memory is reported with its ratio to the idle console's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import psycopg
import yaml
from playwright.sync_api import Page, sync_playwright
from sgs_operator.records import TaskStore

from sgs.kube import KubeClient
from sgs.testing import free_port
from sgs.testing.kube import KubePart
from sgs.testing.postgres import PostgresPart

REPO = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
NAMESPACE = "console-bench"
WIDTH = 50_000  # two body steps of a 50,000-wide map + split + combine = 100,002 tasks


def example_pipeline() -> dict[str, Any]:
    script = REPO / "examples" / "parallel_split" / "parallel_split.py"
    out = subprocess.run(
        [sys.executable, "-m", "sgs.cli.main", "compile", f"{script}:parallel_split"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    manifest: dict[str, Any] = yaml.safe_load(out)
    return manifest


def run_manifest(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "sgs.io/v1alpha1",
        "kind": "Run",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"pipeline": "parallel-split", "site": "site-a", "inputs": {"images": {"uri": "/data/x.json"}}},
    }


def status_for(total: int, succeeded: int, running: int) -> dict[str, Any]:
    return {
        "status": {
            "phase": "Running",
            "site": "site-a",
            "tasks": {
                "total": total,
                "succeeded": succeeded,
                "running": running,
                "waiting": total - succeeded - running,
            },
            "progress": f"{succeeded}/{total}",
        }
    }


async def create_runs(kubeconfig: Path, count: int) -> str:
    """``count`` Runs (the first is the big one); its uid."""
    kube = await KubeClient.connect(kubeconfig)
    base = f"/apis/sgs.io/v1alpha1/namespaces/{NAMESPACE}/runs"
    try:
        await kube.create(f"/apis/sgs.io/v1alpha1/namespaces/{NAMESPACE}/pipelines", example_pipeline())
        big = await kube.create(base, run_manifest("big-run", {"size": "100k"}))
        await kube.merge_patch(f"{base}/big-run/status", status_for(2 * WIDTH + 2, 0, 0))
        semaphore = asyncio.Semaphore(16)

        async def one(i: int) -> None:
            async with semaphore:
                name = f"run-{i:04d}"
                await kube.create(base, run_manifest(name, {"batch": str(i % 10)}))
                await kube.merge_patch(f"{base}/{name}/status", status_for(10, i % 11, 0))

        await asyncio.gather(*(one(i) for i in range(1, count)))
        return str(big["metadata"]["uid"])
    finally:
        await kube.close()


async def write_records(dsn: str, uid: str) -> None:
    store = await TaskStore.open(dsn)  # the operator's own schema
    await store.ensure_run(uid, NAMESPACE, "big-run", "parallel-split", "bench", example_pipeline()["spec"])
    await store.close()
    names = ["ialtest_split_images", "ialtest_combine_images"]
    names += [f"correct.ialtest_correct_dark[{i}]" for i in range(WIDTH)]
    names += [f"correct.ialtest_correct_flat[{i}]" for i in range(WIDTH)]
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        with cur.copy(
            "COPY sgs_task (run_uid, task, state, attempt, record, job, executable, requested) FROM STDIN"
        ) as copy:
            for task in names:
                record = f'{{"id": "{task}", "state": "Waiting", "attempt": 0}}'
                copy.write_row(
                    (
                        uid,
                        task,
                        "Waiting",
                        0,
                        record,
                        None,
                        task.split("[")[0].split(".")[-1],
                        '{"cores": 1, "ram": 1.0}',
                    )
                )
        conn.commit()


def load_time_s(page: Page, url: str) -> float:
    page.goto(url, wait_until="load")
    timing = page.evaluate(
        "() => { const t = performance.getEntriesByType('navigation')[0]; return t.loadEventEnd - t.startTime; }"
    )
    return float(timing) / 1000


def measure(page: Page, url: str, repeat: int) -> float:
    load_time_s(page, url)  # warm: the first load also compiles templates and opens pools
    return statistics.median(load_time_s(page, url) for _ in range(repeat))


def sign_in(page: Page, base: str, token: str) -> None:
    page.goto(base + "/signin")
    page.fill("textarea[name=token]", token)
    page.click("button[type=submit]")
    page.wait_for_url("**/runs")


def progress(dsn: str, uid: str, kubeconfig: Path, stop_at: float) -> None:
    """Every second: 1,000 more tasks succeed (records and status), as a running Run's would."""
    done = 0
    total = 2 * WIDTH + 2

    async def patch(succeeded: int) -> None:
        kube = await KubeClient.connect(kubeconfig)
        try:
            path = f"/apis/sgs.io/v1alpha1/namespaces/{NAMESPACE}/runs/big-run/status"
            await kube.merge_patch(path, status_for(total, succeeded, 50))
        finally:
            await kube.close()

    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < stop_at:
            conn.execute(
                "UPDATE sgs_task SET state = 'Succeeded' WHERE run_uid = %s AND task IN"
                " (SELECT task FROM sgs_task WHERE run_uid = %s AND state = 'Waiting' ORDER BY task LIMIT 1000)",
                (uid, uid),
            )
            done += 1000
            asyncio.run(patch(done))
            time.sleep(1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--follow-s", type=float, default=30.0)
    parser.add_argument("--browsers", type=int, default=10)
    args = parser.parse_args()
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"console-bench-{uuid.uuid4().hex[:6]}"
    work.mkdir(parents=True)
    preset = os.environ.get("KUBECONFIG")
    kube = KubePart.existing(Path(preset)) if preset else KubePart(work / "kube")
    pg = PostgresPart(work / "pg")
    kube.start()
    pg.start()
    console: subprocess.Popen[bytes] | None = None
    try:
        kube.kubectl("create", "namespace", NAMESPACE)
        with psycopg.connect(pg.dsn, autocommit=True) as conn:
            conn.execute("CREATE DATABASE console_bench")
        dsn = pg.dsn_for("console_bench")
        started = time.monotonic()
        uid = asyncio.run(create_runs(kube.kubeconfig, args.runs))
        asyncio.run(write_records(dsn, uid))
        print(
            f"setup: {args.runs} Runs, {2 * WIDTH + 2} task records in {time.monotonic() - started:.1f} s", flush=True
        )
        port = free_port()
        env = {
            **os.environ,
            "SGS_CONSOLE_ENVIRONMENT": "development",
            "SGS_CONSOLE_KUBECONFIG": str(kube.kubeconfig),
            "SGS_CONSOLE_DSN": dsn,
            "SGS_CONSOLE_POLL_INTERVAL_S": "2",
        }
        log = (work / "console.log").open("wb")
        console = subprocess.Popen(
            [sys.executable, "-m", "sgs.cli.main", "console", "--port", str(port)], env=env, stdout=log, stderr=log
        )
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while "sgs console ready" not in (work / "console.log").read_text():
            if time.monotonic() > deadline or console.poll() is not None:
                raise SystemExit(f"the console did not start:\n{(work / 'console.log').read_text()}")
            time.sleep(0.2)
        token = yaml.safe_load(kube.kubeconfig.read_text())["users"][0]["user"]["token"]
        process = psutil.Process(console.pid)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_context().new_page()
            sign_in(page, base, token)
            run_url = f"{base}/runs/{NAMESPACE}/big-run"
            figures = {
                "Run page, 100,002 tasks (first render)": (measure(page, run_url, args.repeat), 1.0),
                "task-table page 501 of 1,001 (keyset)": (
                    measure(page, f"{run_url}/tasks?after=correct.ialtest_correct_flat%5B0%5D", args.repeat),
                    1.0,
                ),
                f"Runs list with {args.runs} Runs": (measure(page, f"{base}/runs", args.repeat), 0.5),
                f"Runs list, {args.runs} Runs sorted by progress": (
                    measure(page, f"{base}/runs?sort=progress&order=desc", args.repeat),
                    0.5,
                ),
            }
            load = os.getloadavg()
            for name, (value, target) in figures.items():
                print(f"{name}: {value * 1000:.0f} ms (target < {target * 1000:.0f} ms, ratio {value / target:.2f})")
            idle_rss = process.memory_info().rss
            followers = []
            for _ in range(args.browsers):
                follower = browser.new_context().new_page()
                sign_in(follower, base, token)
                follower.goto(run_url)
                followers.append(follower)
            stop_at = time.monotonic() + args.follow_s
            samples: list[int] = []
            import threading

            mover = threading.Thread(target=progress, args=(dsn, uid, kube.kubeconfig, stop_at), daemon=True)
            mover.start()
            while time.monotonic() < stop_at:
                for follower in followers:
                    follower.wait_for_timeout(50)  # let each page's poll timers run
                samples.append(process.memory_info().rss)
            mover.join()
            changed = followers[0].locator("#run-progress").inner_text()
            browser.close()
        mib = 1024 * 1024
        print(
            f"console RSS while {args.browsers} browsers follow the running Run for {args.follow_s:.0f} s: "
            f"peak {max(samples) / mib:.0f} MiB, median {statistics.median(samples) / mib:.0f} MiB "
            f"(idle {idle_rss / mib:.0f} MiB, ratio {max(samples) / idle_rss:.2f}); last progress seen: "
            f"{changed.strip()}"
        )
        print(f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    finally:
        if console is not None:
            console.terminate()
            console.wait(15)
        pg.stop()
        kube.stop()


if __name__ == "__main__":
    main()

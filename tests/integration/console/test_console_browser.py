"""The console in a real browser against the real stack: pages open, a Run is followed live from Pending to
Succeeded, a failed task is retried from the page and runs again, a priority change re-ranks a Site's queue,
and people without the rights are refused with the API server's own words."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from console_kit import Person, new_run_name, sign_in
from operator_kit import Cluster, task_pipeline, wait_for
from playwright.sync_api import Browser, expect

pytest_plugins = ["operator_kit", "console_kit"]  # fixtures (a conftest here would clash with mypy)
pytestmark = pytest.mark.integration

LIVE_S = 120_000  # ms Playwright waits for a page to change by itself


def test_a_run_is_followed_live_from_pending_to_succeeded(
    served: Cluster, example_pipeline: dict[str, Any], people: dict[str, Person]
) -> None:
    alice = people["alice"]
    served.apply(example_pipeline)
    name = new_run_name("follow")
    served.apply(served.run(name, suspend=True))  # held, so the first render is before any task ran
    page = alice.open(f"/runs/{served.namespace}/{name}")
    expect(page.locator("#run-summary h1 .phase")).to_have_text(re.compile("Pending|Suspended"))
    alice.shot("run-pending")
    page.evaluate("window.sgsMarker = 'same page'")  # a reload would lose it

    page.click("#resume")
    assert "resumed" in alice.notice()
    expect(page.locator("#suspend")).to_be_visible()  # the page offers the other action, without a reload
    expect(page.locator("#resume")).to_be_hidden()
    expect(page.locator("#run-summary h1 .phase")).to_have_text("Succeeded", timeout=LIVE_S)
    assert page.evaluate("window.sgsMarker") == "same page"
    expect(page.locator("#run-progress")).to_contain_text("10/10")
    expect(page.locator("#task-table tbody tr")).to_have_count(10)
    graph = page.locator("svg.graph")
    expect(graph.locator("a.step")).to_have_count(4)  # split, dark, flat, combine: never one box per task
    expect(graph).to_contain_text("4 tasks: 4 succeeded")
    expect(page.locator("#events-table")).to_contain_text("ConsoleResume")
    alice.shot("run-succeeded")

    graph.locator('a.step[data-step="correct.ialtest_correct_dark"]').click()
    expect(page.locator("#task-table tbody tr")).to_have_count(4)
    page.locator("#task-table a", has_text="correct.ialtest_correct_dark[0]").click()
    expect(page.locator("#attempts tbody tr")).to_have_count(1)
    page.locator("[data-log]").first.click()
    expect(page.locator("#log-text")).not_to_have_text(re.compile("loading|Choose"), timeout=30_000)
    # The operator deletes a succeeded task's Job (finished_jobs=delete), and its pod's log with it: the page
    # says so instead of failing. A failed task's log is read in the retry test.
    log_status = page.locator("#log-text").get_attribute("data-status")
    if log_status != "200":
        assert log_status == "404", page.locator("#log-text").inner_text()
        expect(page.locator("#log-text")).to_contain_text("is gone (its log went with it)")
    expect(page.locator("#outputs")).to_contain_text("corrected_image")
    alice.shot("task-detail")


def test_every_page_opens(served: Cluster, example_pipeline: dict[str, Any], people: dict[str, Person]) -> None:
    alice = people["alice"]
    served.apply(example_pipeline)
    for path, heading in [
        ("/runs", "Runs"),
        ("/pipelines", "Pipelines"),
        ("/sites", "Sites"),
        ("/transfers", "Transfers and rules"),
        ("/archive", "Archive"),
        ("/placement", "Placement"),
    ]:
        page = alice.open(path)
        expect(page.locator("main h1").first).to_have_text(heading)
        alice.shot("page" + path.replace("/", "-"))
    page = alice.open("/sites")
    site = page.locator('section.site[data-site="site-a"]').first
    expect(site.locator("table.nodes")).to_contain_text("Ready")
    page = alice.open(f"/pipelines/{served.namespace}/parallel-split")
    expect(page.locator("svg.graph")).to_contain_text("ialtest_correct_dark")
    alice.shot("pipeline")


def test_a_failed_task_is_retried_from_the_page_and_runs_again(served: Cluster, people: dict[str, Person]) -> None:
    alice = people["alice"]
    marker = served.store / "allow-b"
    served.apply(task_pipeline("flaky", {"a": ("ok", 0.25, None), "b": (f"fail-unless:{marker}", 0.25, "a")}))
    name = new_run_name("retry")
    served.apply(served.run(name, pipeline="flaky", inputs={}, retry={"max": 0}))
    page = alice.open(f"/runs/{served.namespace}/{name}")
    expect(page.locator("#run-summary h1 .phase")).to_have_text("Failed", timeout=LIVE_S)
    expect(page.locator('#task-table tr[data-task="b"]')).to_contain_text("Failed")
    alice.shot("retry-failed-before")

    Path(marker).write_text("yes")
    page.click("#retry-failed")
    assert "retry failed tasks (request #1)" in alice.notice()
    expect(page.locator("#run-summary h1 .phase")).to_have_text("Succeeded", timeout=LIVE_S)
    expect(page.locator('#task-table tr[data-task="b"]')).to_contain_text("Succeeded")
    expect(page.locator('#task-table tr[data-task="b"] td').nth(2)).to_have_text("1")  # a second attempt ran
    expect(page.locator("#events-table")).to_contain_text("ConsoleRetryFailed")
    expect(page.locator("#events-table")).to_contain_text("alice")
    alice.shot("retry-failed-after")
    page.locator('#task-table tr[data-task="b"] td a').first.click()
    expect(page.locator("#attempts tbody tr")).to_have_count(2)
    page.locator("[data-log]").first.click()  # attempt 0's log, through the API server and the bridge
    expect(page.locator("#log-text")).to_contain_text("is missing", timeout=30_000)
    alice.shot("retry-failed-log")
    attempts = [(a["task"], a["attempt"], a["reason"]) for a in served.attempt_rows(name)]
    assert attempts == [("a", 0, "Completed"), ("b", 0, "Error"), ("b", 1, "Completed")]


def test_a_priority_change_reranks_the_site_queue(served: Cluster, people: dict[str, Person]) -> None:
    alice = people["alice"]
    served.apply(served.site(max_parallel=1))  # one slot: the queue decides who runs
    # The first Run's tasks hold the slot until the test lets them go: a fixed sleep raced the browser steps
    # on a slow machine (the first Run could finish before the second was even re-ranked).
    release = served.store / f"release-{new_run_name('slot')}"
    served.apply(task_pipeline("slow", {f"t{i}": (f"wait-for:{release}", 0.25, None) for i in range(8)}))
    served.apply(task_pipeline("short", {f"t{i}": ("sleep:1", 0.25, None) for i in range(3)}))
    first, second = new_run_name("first"), new_run_name("second")
    served.apply(served.run(first, pipeline="slow", inputs={}))
    wait_for(lambda: served.run_status(first).get("phase") == "Running", "the first Run to start")
    served.apply(served.run(second, pipeline="short", inputs={}))
    page = alice.open("/sites")
    queue = page.locator('section.site[data-site="site-a"] table.queue tbody tr')
    expect(queue.first).to_have_attribute("data-run", first)
    alice.shot("queue-before")

    page = alice.open(f"/runs/{served.namespace}/{second}")
    page.fill("#priority-value", "500")
    page.click("#set-priority")
    assert "priority 0 → 500" in alice.notice()
    expect(page.locator("#run-priority")).to_have_text("500")
    page = alice.open("/sites")
    expect(queue.first).to_have_attribute("data-run", second, timeout=30_000)
    alice.shot("queue-after")
    Path(release).write_text("go")  # the first Run's running task ends: the freed slot goes to the second
    # The re-ranked Run takes the slot: it finishes while the first still waits.
    done = served.wait_phase(second, {"Succeeded"}, timeout_s=120)
    assert done["phase"] == "Succeeded"
    assert served.run_status(first).get("phase") == "Running"
    served.wait_phase(first, {"Succeeded"}, timeout_s=120)


def test_people_without_the_rights_are_refused_with_a_clear_message(
    served: Cluster,
    example_pipeline: dict[str, Any],
    people: dict[str, Person],
    browser: Browser,
    console_url: str,
    identities: dict[str, str],
    screenshots: Path,
) -> None:
    served.apply(example_pipeline)
    name = new_run_name("guarded")
    served.apply(served.run(name, suspend=True))
    bob = people["bob"]
    page = bob.open(f"/runs/{served.namespace}/{name}")  # a viewer sees the Run ...
    page.click("#resume")  # ... but may not change it: the API server's RBAC says so, in its words
    message = bob.notice()
    assert "refused by the API server (403 Forbidden)" in message
    assert 'User "system:serviceaccount:sgs-console-test:bob" cannot patch resource "runs"' in message
    bob.shot("refused-bob")
    assert served.get("runs", name)["spec"]["suspend"] is True

    carol = sign_in(browser, console_url, "carol", identities["carol"], screenshots)
    try:
        page = carol.open("/runs")
        expect(page.locator("#message")).to_contain_text("carol may not list runs.sgs.io in any namespace")
        response = page.request.get(f"{console_url}/runs/{served.namespace}/{name}")
        assert response.status == 403
        carol.shot("refused-carol")
        assert carol.errors == []
    finally:
        carol.page.context.close()


def test_forged_sessions_and_cross_site_posts_are_refused(
    served: Cluster, console_url: str, people: dict[str, Person]
) -> None:
    alice = people["alice"]
    name = new_run_name("csrf")
    served.apply(task_pipeline("noop", {"a": ("ok", 0.25, None)}))
    served.apply(served.run(name, pipeline="noop", inputs={}, suspend=True))
    cookies = {c["name"]: c["value"] for c in alice.page.context.cookies()}
    action = f"{console_url}/runs/{served.namespace}/{name}/actions/resume"
    with httpx.Client(cookies=cookies, follow_redirects=False, timeout=10) as client:
        refused = client.post(action, data={"csrf": "not-the-token"}, headers={"Accept": "application/json"})
        assert refused.status_code == 403 and "CSRF" in refused.json()["message"]
    with httpx.Client(cookies={"sgs_console": "forged" + cookies["sgs_console"][6:]}, timeout=10) as client:
        assert client.post(action, data={}, headers={"Accept": "application/json"}).status_code == 401
        assert client.get(f"{console_url}/runs", follow_redirects=False).status_code == 303
    with httpx.Client(timeout=10) as client:
        assert client.get(f"{console_url}/runs/fragment").status_code == 303  # every page needs a sign-in
    time.sleep(0.2)
    assert served.get("runs", name)["spec"]["suspend"] is True

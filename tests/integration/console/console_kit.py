"""The console under test: served in this process against the real control plane, operator, bridge and
PostgreSQL of the operator tests, driven by Playwright in Debian's Chromium (never a downloaded browser).

People are ServiceAccounts with the console's shipped roles (sgs_console/rbac.yaml): alice may steer Runs, bob
may only look, carol has no right at all; the console itself reads with its own ServiceAccount, bound to the
read-only ``sgs-console`` ClusterRole. Screenshots go to ``<basetemp>/console-screenshots`` (or
``$SGS_CONSOLE_SCREENSHOTS``); every page's JavaScript errors and console errors fail the test.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, sync_playwright
from sgs_console.app import create_app
from sgs_console.settings import ConsoleSettings

from sgs.testing.kube import KubePart
from sgs.testing.services import ServiceThread

REPO = Path(__file__).resolve().parents[3]
RBAC = REPO / "services" / "console" / "sgs_console" / "rbac.yaml"
CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium keeps dialling Google's hosts, which this network refuses.
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
NAMESPACE = "sgs-console-test"
REFUSAL_LOGGED = re.compile(r"Failed to load resource: the server responded with a status of 40[134]")
PEOPLE = {"alice": "sgs-console-operator", "bob": "sgs-console-viewer", "carol": None}


def token_for(kube: KubePart, account: str) -> str:
    return kube.kubectl("-n", NAMESPACE, "create", "token", account, "--duration=2h").stdout.strip()


def kubeconfig_for(kube: KubePart, token: str, path: Path) -> Path:
    """A kubeconfig of the test cluster for one token (the console's own identity)."""
    admin = yaml.safe_load(kube.kubeconfig.read_text())
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": admin["clusters"],
        "users": [{"name": "console", "user": {"token": token}}],
        "contexts": [{"name": "console", "context": {"cluster": admin["clusters"][0]["name"], "user": "console"}}],
        "current-context": "console",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


@pytest.fixture(scope="session")
def identities(kube: KubePart) -> dict[str, str]:
    """Tokens of the console's own ServiceAccount and of the people, with the shipped roles bound."""
    kube.kubectl("create", "namespace", NAMESPACE, check=False)
    kube.kubectl("apply", "-f", str(RBAC))
    tokens: dict[str, str] = {}
    for account, role in {"console": "sgs-console", **PEOPLE}.items():
        kube.kubectl("-n", NAMESPACE, "create", "serviceaccount", account, check=False)
        if role is not None:
            binding = f"sgs-console-test-{account}"
            kube.kubectl("delete", "clusterrolebinding", binding, "--ignore-not-found")
            kube.kubectl(
                "create",
                "clusterrolebinding",
                binding,
                f"--clusterrole={role}",
                f"--serviceaccount={NAMESPACE}:{account}",
            )
        tokens[account] = token_for(kube, account)
    return tokens


@pytest.fixture(scope="module")
def console_url(
    kube: KubePart, operator_dsn: str, identities: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The console, reading with its own ServiceAccount and the operator's task records."""
    config = kubeconfig_for(kube, identities["console"], tmp_path_factory.mktemp("console") / "kubeconfig")
    settings = ConsoleSettings(
        environment="development",
        kubeconfig=config,
        dsn=operator_dsn,
        poll_interval_s=0.5,
        access_ttl_s=0,
        page_size=50,
        archive_url=os.environ.get("SGS_CONSOLE_TEST_ARCHIVE_URL"),
    )
    with ServiceThread(create_app(settings), "console") as service:
        yield service.url


# Module scope, not session: Playwright's sync API keeps an event loop running in this thread while it is open,
# and the async tests that run after this module need the thread's loop free.
@pytest.fixture(scope="module")
def playwright_session() -> Iterator[Playwright]:
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: tools/ci-setup.sh installs Debian's chromium (apt-get install chromium)")
    with sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="module")
def browser(playwright_session: Playwright) -> Iterator[Browser]:
    chromium = playwright_session.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    yield chromium
    chromium.close()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chosen = os.environ.get("SGS_CONSOLE_SCREENSHOTS")
    folder = Path(chosen) if chosen else tmp_path_factory.getbasetemp() / "console-screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nsgs: console screenshots in {folder}")
    return folder


@dataclass
class Person:
    """One signed-in browser context; ``errors`` collects JavaScript errors and console errors."""

    name: str
    page: Page
    base: str
    shots: Path
    errors: list[str] = field(default_factory=list)

    def open(self, path: str) -> Page:
        self.page.goto(self.base + path)
        return self.page

    def shot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def notice(self) -> str:
        box = self.page.locator("#notice")
        box.wait_for(state="visible")
        return str(box.inner_text())


def sign_in(
    browser: Browser, base: str, name: str, token: str, shots: Path, transfer_token: str | None = None
) -> Person:
    """A browser signed in with a Kubernetes token (and, to act on rules, the person's transfer-service token)."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    person = Person(name, page, base, shots)

    def on_console(message: ConsoleMessage) -> None:
        # Chromium logs every 4xx answer as "Failed to load resource": a refusal the test asks for (403 to a
        # person without the right, 404 of a deleted Run) is the page working, not a script error; 5xx counts.
        if message.type == "error" and not REFUSAL_LOGGED.match(message.text):
            person.errors.append(f"console: {message.text} ({message.location})")

    page.on("console", on_console)
    page.on("pageerror", lambda error: person.errors.append(f"page error: {error}"))
    page.goto(base + "/signin")
    page.fill("textarea[name=token]", token)
    if transfer_token is not None:
        page.fill("input[name=transfer_token]", transfer_token)
    page.click("button[type=submit]")
    page.wait_for_url("**/runs")
    return person


@pytest.fixture
def people(
    browser: Browser, console_url: str, identities: dict[str, str], screenshots: Path
) -> Iterator[dict[str, Person]]:
    signed = {name: sign_in(browser, console_url, name, identities[name], screenshots) for name in ("alice", "bob")}
    yield signed
    for person in signed.values():
        person.page.context.close()
        assert person.errors == [], f"{person.name}'s browser saw JavaScript errors: {person.errors}"


def new_run_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def value_of(obj: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        obj = obj.get(key) or {}
    return obj

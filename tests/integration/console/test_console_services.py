"""The console's service pages in a real browser against the real archive (PostgreSQL) and the real transfer
service (PostgreSQL + NATS JetStream, copying between POSIX Sites), and a DataPlacement planned by the real
operator: the archive's dimension-expression search, a dataset's replicas and its lineage up and down as a
graph, rules (one STUCK, with its reason), transfer states and bandwidth, placement shares and the sky map. Each
page is checked against what the services answer to the same question. Rules are suspended and resumed from the
page with the signed-in person's own transfer-service token; another person's token is refused by the transfer
service in its own words, and a person who gave none is told how to act."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from console_kit import Person, kubeconfig_for, sign_in
from operator_kit import Cluster, OperatorProcess, make_cluster, wait_for
from playwright.sync_api import Browser, expect
from sgs_console.app import create_app
from sgs_console.settings import ConsoleSettings
from transfer_kit import (
    ADMIN_TOKEN,
    ArchiveUnderTest,
    TransferUnderTest,
    archive_service,
    checksums,
    known_sites,
    posix_site,
    posix_store,
    put_source,
    transfer_service,
)

from sgs.model.site import Site
from sgs.placement.generator import generate_survey
from sgs.placement.survey import write_csv
from sgs.testing.kube import KubePart
from sgs.testing.nats import NatsPart
from sgs.testing.postgres import PostgresPart
from sgs.testing.services import ServiceThread

pytest_plugins = ["operator_kit", "console_kit"]  # fixtures (a conftest here would clash with mypy)
pytestmark = pytest.mark.integration

SITES = {"site-a": {"tier": "primary"}, "site-b": {"tier": "primary"}, "site-c": {"tier": "secondary"}}
T = TypeVar("T")
PLACEMENT_SITES = {"sdc-fr": 900, "sdc-it": 600, "sdc-de": 300}  # cores: the placement's target shares
RAW_RUN = "raw/console"
PRODUCT_RUN = "products/console"
STUCK_REASON = "3 copies asked, 2 Sites match (site-a, site-b); 4 copies stuck — 4 to site-b: source: "
BAD_SOURCE = "outside site-a's store"  # the calexps' URIs point nowhere the worker may read: their copies stick


@dataclass
class Holdings:
    """What the module put in the archive and the transfer service, by role."""

    raws: dict[tuple[int, int], str]  # (exposure, detector) → dataset id
    calexps: dict[tuple[int, int], str]
    coadd: str
    copy_rule: str
    stuck_rule: str
    steer_rule: str


@pytest.fixture(scope="module")
def archive(postgres: PostgresPart, nats_server: NatsPart) -> Iterator[ArchiveUnderTest]:
    with archive_service(postgres, nats_server.url) as archive:
        archive.issue_site_tokens([*SITES, *PLACEMENT_SITES])
        archive.dataset_type("raw", ["exposure", "detector"])
        archive.dataset_type("calexp", ["exposure", "detector"])
        archive.dataset_type("coadd", ["tile", "band", "skypix"])
        yield archive


@pytest.fixture(scope="module")
def sites(archive: ArchiveUnderTest, tmp_path_factory: pytest.TempPathFactory) -> list[Site]:
    root = tmp_path_factory.mktemp("sites")
    named = {**SITES, **{name: {"survey": "euclid"} for name in PLACEMENT_SITES}}
    return [posix_site(name, root, archive.url, labels) for name, labels in named.items()]


@pytest.fixture(scope="module")
def transfer(archive: ArchiveUnderTest, nats_server: NatsPart, sites: list[Site]) -> Iterator[TransferUnderTest]:
    book = known_sites(sites, archive.site_tokens, posix_store)
    with transfer_service(archive.dsn, nats_server.url, archive.url, book, embedded_worker=True) as transfer:
        yield transfer


@pytest.fixture(scope="module")
def transfer_tokens(transfer: TransferUnderTest) -> dict[str, str]:
    """Each person's own transfer-service token (named after them), and the console's reader token."""
    tokens = {name: transfer.call("POST", "/tokens", (201,), json={"name": name})["token"] for name in ("alice", "bob")}
    tokens["console"] = transfer.call("POST", "/tokens", (201,), json={"name": "console", "reader": True})["token"]
    return tokens


def lineage(inputs: list[str], executable: str) -> dict[str, Any]:
    return {"inputs": inputs, "executable": executable, "version": "1.0", "config_digest": "sha256:console-test"}


@pytest.fixture(scope="module")
def holdings(
    archive: ArchiveUnderTest, transfer: TransferUnderTest, sites: list[Site], transfer_tokens: dict[str, str]
) -> Holdings:
    """4 raw exposures with real files at site-a, a calexp made from each, one coadd from the 4 calexps; a rule
    copying the raws to both primaries, a calexp rule that cannot be met (STUCK), and a coadd rule to steer."""
    store = posix_store(next(s for s in sites if s.metadata.name == "site-a"))
    archive.collection(RAW_RUN)
    archive.collection(PRODUCT_RUN)
    keys = [(exposure, detector) for exposure in (100, 101) for detector in (1, 2)]
    raws: list[dict[str, Any]] = []
    for exposure, detector in keys:
        dataset_id = uuid.uuid4()
        content = f"raw {exposure} {detector} ".encode() * 20_000  # ~0.4 MB: a copy takes measurable time
        uri = put_source(store, "raw", dataset_id, content)
        data_id = {"instrument": "VIS", "exposure": exposure, "detector": detector}
        replica = {"site": "site-a", "uri": uri, **checksums(content)}
        raws.append(
            {"id": str(dataset_id), "dataset_type": "raw", "data_id": data_id, "run": RAW_RUN, "replicas": [replica]}
        )
    archive.ok("POST", "/datasets/ingest", json={"datasets": raws})
    raw_ids = {key: d["id"] for key, d in zip(keys, raws, strict=True)}
    calexps = [
        {
            "dataset_type": "calexp",
            "data_id": {"instrument": "VIS", "exposure": e, "detector": d},
            "run": PRODUCT_RUN,
            "task": f"calibrate-{e}-{d}",
            "replicas": [{"site": "site-a", "uri": f"file:///calexp/{e}/{d}.fits", **checksums(f"c{e}{d}".encode())}],
            "lineage": lineage([raw_ids[(e, d)]], "vis_calibrate"),
        }
        for e, d in keys
    ]
    calexp_ids = dict(zip(keys, archive.ok("POST", "/datasets/ingest", json={"datasets": calexps})["ids"], strict=True))
    coadd = {
        "dataset_type": "coadd",
        "data_id": {"tile": 102345, "band": "VIS", "skypix": 7},
        "run": PRODUCT_RUN,
        "replicas": [{"site": "site-a", "uri": "file:///coadd/102345.fits", **checksums(b"coadd")}],
        "lineage": lineage(list(calexp_ids.values()), "mer_coadd"),
    }
    (coadd_id,) = archive.ok("POST", "/datasets/ingest", json={"datasets": [coadd]})["ids"]

    alice = transfer_tokens["alice"]
    copy = {"collections": [RAW_RUN], "copies": 2, "site_expression": "tier=primary"}
    stuck = {"dataset_type": "calexp", "collections": [PRODUCT_RUN], "copies": 3, "site_expression": "tier=primary"}
    steer = {"dataset_type": "coadd", "collections": [PRODUCT_RUN], "copies": 1, "site_expression": "site-a"}
    rules = [transfer.call("POST", "/rules", (201,), token=alice, json=body)["id"] for body in (copy, stuck, steer)]
    done = transfer.wait_rule(rules[0], ("OK",), timeout_s=90)
    assert done["locks"] == {"ok": 8, "replicating": 0, "stuck": 0}, done

    def all_stuck() -> bool:  # the copies stick one by one: the reason counts 1, 2, 3, then 4 of them
        reason = transfer.rule(rules[1])["reason"] or ""
        return reason.startswith(STUCK_REASON) and BAD_SOURCE in reason

    wait_for(all_stuck, "the 4 calexp copies to get stuck", 60)
    transfer.wait_rule(rules[2], ("OK",))
    return Holdings(raw_ids, calexp_ids, coadd_id, *rules)


@pytest.fixture(scope="module")
def console_url(
    kube: KubePart,
    identities: dict[str, str],
    archive: ArchiveUnderTest,
    transfer: TransferUnderTest,
    transfer_tokens: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """The console with its own identities only: a read-only ServiceAccount, an archive reader token and a
    transfer-service reader token (so every rule change it passes on is the signed-in person's)."""
    reader = archive.ok("POST", "/tokens", (201,), json={"name": "console", "role": "reader"})["token"]
    config = kubeconfig_for(kube, identities["console"], tmp_path_factory.mktemp("console") / "kubeconfig")
    settings = ConsoleSettings(
        environment="development",
        kubeconfig=config,
        poll_interval_s=0.5,
        access_ttl_s=0,
        archive_url=archive.url,
        archive_token=reader,
        transfer_url=transfer.url,
        transfer_token=transfer_tokens["console"],
    )
    with ServiceThread(create_app(settings), "console") as service:
        yield service.url


@pytest.fixture
def people(
    browser: Browser,
    console_url: str,
    identities: dict[str, str],
    transfer_tokens: dict[str, str],
    screenshots: Path,
) -> Iterator[dict[str, Person]]:
    """alice and bob, each signed in with their Kubernetes token and their own transfer-service token."""
    signed = {
        name: sign_in(browser, console_url, name, identities[name], screenshots, transfer_tokens[name])
        for name in ("alice", "bob")
    }
    yield signed
    for person in signed.values():
        person.page.context.close()
        assert person.errors == [], f"{person.name}'s browser saw JavaScript errors: {person.errors}"


def same_soon(on_page: Callable[[], T], at_service: Callable[[], T], timeout_s: float = 30) -> T:
    """What the live page shows equals what the service answers, within a few polls; that value."""
    deadline = time.monotonic() + timeout_s
    while True:
        wanted, shown = at_service(), on_page()
        if shown == wanted:
            return shown
        assert time.monotonic() < deadline, f"the page shows {shown!r}, the service holds {wanted!r}"
        time.sleep(0.25)


def rule_row(page: Any, rule_id: str) -> Any:
    return page.locator(f'#rules tr[data-rule="{rule_id}"]')


# ------------------------------------------------------------------------------------------ the archive


def test_the_archive_search_finds_what_the_archive_holds(
    holdings: Holdings, archive: ArchiveUnderTest, people: dict[str, Person]
) -> None:
    alice = people["alice"]
    page = alice.open("/archive")
    expect(page.locator("#archive-search select[name=dataset_type]")).to_contain_text("coadd")
    page.select_option("#archive-search select[name=dataset_type]", "raw")
    page.fill("#archive-search input[name=where]", "exposure = 100 AND detector IN (1, 2)")
    page.click("#archive-search button[type=submit]")
    rows = page.locator("#datasets tbody tr")
    wanted = archive.ok(
        "GET", "/datasets", params={"dataset_type": "raw", "where": "exposure = 100 AND detector IN (1, 2)"}
    )
    assert len(wanted["items"]) == 2
    expect(rows).to_have_count(2)
    for item in wanted["items"]:
        expect(page.locator("#datasets")).to_contain_text(item["id"][:8])
    expect(page.locator("#datasets")).to_contain_text("exposure=100")
    alice.shot("archive-search")

    page.fill("#archive-search input[name=where]", "exposure >")  # the archive's own words, naming the field
    page.click("#archive-search button[type=submit]")
    expect(page.locator("#archive-error")).to_contain_text("where")
    expect(page.locator("#archive-error")).to_contain_text("expected a value")
    alice.shot("archive-search-refused")

    page.select_option("#archive-search select[name=dataset_type]", "calexp")
    page.fill("#archive-search input[name=where]", "")
    page.fill("#archive-search input[name=collection]", PRODUCT_RUN)
    page.click("#archive-search button[type=submit]")
    expect(rows).to_have_count(len(holdings.calexps))


def test_a_dataset_page_shows_its_replicas_and_its_lineage_up_and_down(
    holdings: Holdings, archive: ArchiveUnderTest, people: dict[str, Person]
) -> None:
    alice = people["alice"]
    raw = holdings.raws[(100, 1)]
    page = alice.open(f"/archive/datasets/{raw}")
    replicas = {r["site"]: r for r in archive.replicas(raw)}
    assert set(replicas) == {"site-a", "site-b"}  # the copy rule made the second
    expect(page.locator("#replicas tbody tr")).to_have_count(2)
    for site, replica in replicas.items():
        row = page.locator("#replicas tbody tr", has_text=site)
        expect(row).to_contain_text(replica["state"])
        expect(row).to_contain_text(replica["adler32"])
    graph = page.locator("#lineage svg.graph")
    expect(graph.locator("g.node")).to_have_count(3)  # the raw, its calexp (down 1), the coadd (down 2)
    expect(graph).to_contain_text("calexp")
    expect(graph).to_contain_text("coadd")
    alice.shot("dataset-raw")

    calexp = holdings.calexps[(100, 1)]
    page = alice.open(f"/archive/datasets/{calexp}")
    expect(page.locator("main h1")).to_contain_text("calexp")
    expect(page.locator("#lineage-counts")).to_have_text("1 up, 1 down")
    expect(graph.locator("g.node")).to_have_count(3)
    expect(graph.locator("g.node.root")).to_contain_text("calexp")
    expect(graph.locator("path.edge")).to_have_count(2)
    alice.shot("dataset-calexp")

    page = alice.open(f"/archive/datasets/{holdings.coadd}")
    up = archive.ok("GET", f"/datasets/{holdings.coadd}/lineage", params={"direction": "up", "depth": 5})
    assert len(up["nodes"]) == 9  # itself, 4 calexps, 4 raws
    expect(page.locator("#lineage-counts")).to_have_text("8 up, 0 down")
    expect(graph.locator("g.node")).to_have_count(9)
    expect(graph.locator("path.edge")).to_have_count(8)
    alice.shot("dataset-coadd")
    graph.locator(f'a[href="/archive/datasets/{raw}"]').click()  # a node opens its dataset
    expect(page.locator("main h1")).to_contain_text("raw")
    expect(page).to_have_url(re.compile(f"/archive/datasets/{raw}$"))

    missing = page.request.get(f"{alice.base}/archive/datasets/{uuid.uuid4()}")
    assert missing.status == 404 and "no dataset" in missing.text().lower()


# ------------------------------------------------------------------------------------------ transfers and rules


def test_the_transfers_page_shows_states_stuck_reasons_and_bandwidth(
    holdings: Holdings, transfer: TransferUnderTest, people: dict[str, Person]
) -> None:
    alice = people["alice"]
    page = alice.open("/transfers")
    states = ("QUEUED", "ACTIVE", "DONE", "STUCK", "CANCELLED")

    def shown() -> dict[str, int]:
        return {s: int(page.locator(f'#transfer-counts a[data-state="{s}"] b').inner_text()) for s in states}

    # The stuck copies are retried (ACTIVE for a moment): the live page and the service agree within a poll.
    counts = same_soon(shown, lambda: {s: transfer.call("GET", "/transfers/counts").get(s, 0) for s in states})
    assert counts["DONE"] == 4 and counts["STUCK"] + counts["ACTIVE"] + counts["QUEUED"] == 4, counts
    rules = transfer.call("GET", "/rules", params={"limit": 1000})["items"]
    expect(page.locator("#rules tbody tr")).to_have_count(len(rules))
    by_state = Counter(r["state"] for r in rules)
    expect(page.locator("#rule-states")).to_have_text(" · ".join(f"{k} {v}" for k, v in sorted(by_state.items())))

    stuck = rule_row(page, holdings.stuck_rule)
    expect(stuck.locator(".rule-state")).to_have_text("STUCK")
    reason = same_soon(
        lambda: stuck.locator(".rule-reason").inner_text(), lambda: transfer.rule(holdings.stuck_rule)["reason"]
    )
    assert reason.startswith(STUCK_REASON) and BAD_SOURCE in reason
    stuck_now = same_soon(
        lambda: page.locator("#stuck tbody tr").count(),
        lambda: len(transfer.call("GET", "/transfers", params={"state": "STUCK"})["items"]),
    )
    assert stuck_now > 0
    expect(page.locator("#stuck tbody tr").first).to_contain_text(BAD_SOURCE)
    expect(page.locator("#stuck tbody tr").first).to_contain_text("site-a → site-b")
    copy = rule_row(page, holdings.copy_rule)
    expect(copy.locator(".rule-state")).to_have_text("OK")
    expect(copy.locator(".locks")).to_have_text("8 / 0 / 0")
    expect(copy).to_contain_text(RAW_RUN)
    expect(page.locator('#transfer-sites tr[data-site="site-b"] .bandwidth')).to_contain_text(
        re.compile(r"[\d.]+ MB/s")
    )
    expect(page.locator('#transfer-sites tr[data-site="site-c"] .bandwidth')).to_have_text("—")
    expect(page.locator('#transfers tbody tr[data-state="DONE"]')).to_have_count(4)
    expect(page.locator("#rules-read-only")).to_have_count(0)  # alice gave her transfer-service token
    alice.shot("transfers")

    page = alice.open("/transfers?state=DONE")
    expect(page.locator('#transfer-counts a[data-state="DONE"]')).to_have_class(re.compile("here"))
    expect(page.locator("#transfers tbody tr")).to_have_count(4)
    refused = page.request.get(f"{alice.base}/transfers?state=done;drop")
    assert refused.status == 422


def test_a_rule_is_suspended_and_resumed_from_the_page_with_the_persons_own_token(
    holdings: Holdings, transfer: TransferUnderTest, people: dict[str, Person]
) -> None:
    alice = people["alice"]
    page = alice.open("/transfers")
    page.evaluate("window.sgsMarker = 'same page'")  # a reload would lose it
    row = rule_row(page, holdings.steer_rule)
    expect(row.locator(".rule-state")).to_have_text("OK")
    row.locator("button.rule-suspend").click()
    assert (
        f"alice: rule {holdings.steer_rule[:8]} suspended at the transfer service (now SUSPENDED: suspended by alice)"
        in alice.notice()
    )
    expect(row.locator(".rule-state")).to_have_text("SUSPENDED")
    expect(row.locator(".rule-reason")).to_have_text("suspended by alice")  # the transfer service's own record
    assert page.evaluate("window.sgsMarker") == "same page"
    held = transfer.rule(holdings.steer_rule)
    assert held["state"] == "SUSPENDED" and held["reason"] == "suspended by alice"
    alice.shot("rule-suspended")

    row.locator("button.rule-resume").click()
    expect(page.locator("#notice")).to_contain_text("resumed at the transfer service")
    expect(row.locator(".rule-state")).to_have_text(re.compile("OK|REPLICATING"))
    expect(row.locator("button.rule-suspend")).to_be_visible()
    assert transfer.wait_rule(holdings.steer_rule, ("OK",))["reason"] is None
    alice.shot("rule-resumed")


def test_a_person_without_the_right_is_refused_a_rule_change(
    holdings: Holdings,
    transfer: TransferUnderTest,
    transfer_tokens: dict[str, str],
    people: dict[str, Person],
    browser: Browser,
    console_url: str,
    identities: dict[str, str],
    screenshots: Path,
) -> None:
    bob = people["bob"]
    page = bob.open("/transfers")
    row = rule_row(page, holdings.steer_rule)
    row.locator("button.rule-suspend").click()  # alice's rule: bob's token does not own it
    message = bob.notice()
    assert (
        "refused by the transfer service (403): path.rule_id: token 'bob' may not change a rule owned by 'alice'"
        in message
    )
    expect(row.locator(".rule-state")).to_have_text("OK")
    assert transfer.rule(holdings.steer_rule)["state"] == "OK"
    bob.shot("rule-refused-bob")

    # Signed in without a transfer-service token: the buttons are off and say why; a forged POST is refused.
    viewer = sign_in(browser, console_url, "bob-read-only", identities["bob"], screenshots)
    try:
        page = viewer.open("/transfers")
        expect(page.locator("#rules-read-only")).to_contain_text("sign in again with your transfer-service token")
        expect(rule_row(page, holdings.steer_rule).locator("button")).to_be_disabled()
        csrf = page.locator("body").get_attribute("data-csrf") or ""
        answer = page.request.post(
            f"{console_url}/transfers/rules/{holdings.steer_rule}/suspend",
            headers={"Accept": "application/json", "X-CSRF-Token": csrf},
        )
        assert answer.status == 403
        assert "sign in with your transfer-service token" in answer.json()["message"]
        viewer.shot("rule-read-only")
        assert viewer.errors == []
    finally:
        viewer.page.context.close()

    # The console's own token reads and cannot change a rule: it has no powers of its own there.
    refused = transfer.call("POST", f"/rules/{holdings.steer_rule}/suspend", (403,), token=transfer_tokens["console"])
    assert "reader token" in refused["detail"][0]["msg"]
    assert transfer.rule(holdings.steer_rule)["state"] == "OK"


# ------------------------------------------------------------------------------------------ placement


@pytest.fixture(scope="module")
def survey_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("surveys")


@pytest.fixture(scope="module")
def operator_settings(archive: ArchiveUnderTest, transfer: TransferUnderTest, survey_root: Path) -> dict[str, str]:
    """The module's operator plans DataPlacements into this module's archive and makes their rules at its
    transfer service (admin tokens: placements and rule owners are admin writes)."""
    return {
        "SGS_OPERATOR_ARCHIVE_URL": archive.url,
        "SGS_OPERATOR_ARCHIVE_TOKEN": ADMIN_TOKEN,
        "SGS_OPERATOR_TRANSFER_URL": transfer.url,
        "SGS_OPERATOR_TRANSFER_TOKEN": ADMIN_TOKEN,
        "SGS_OPERATOR_SURVEY_ROOTS": json.dumps([str(survey_root)]),
    }


@pytest.fixture
def cluster(kube: KubePart, operator: OperatorProcess, tmp_path: Path) -> Iterator[Cluster]:
    yield from make_cluster(kube, operator, tmp_path)


def placement_site(cluster: Cluster, name: str, cores: int) -> dict[str, Any]:
    return {
        "apiVersion": "sgs.io/v1alpha1",
        "kind": "Site",
        "metadata": {"name": name, "labels": {"survey": "euclid"}},
        "spec": {
            "storage": {"kind": "posix", "path": str(cluster.store)},
            "capacity": {"cores": cores, "storageTb": cores / 10},
        },
    }


def planned(cluster: Cluster, name: str) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        status: dict[str, Any] = cluster.get("dataplacements", name).get("status") or {}
        return status if status.get("phase") in ("Planned", "Failed") else None

    status: dict[str, Any] = wait_for(reached, f"dataplacement {name} to be planned", 180)
    assert status["phase"] == "Planned", status
    return status


def percent(value: float, digits: int = 1) -> str:
    return f"{100 * value:,.{digits}f} %"


def test_the_placement_page_shows_a_real_plan_shares_vs_target_and_tiles_on_the_sky(
    holdings: Holdings, cluster: Cluster, archive: ArchiveUnderTest, survey_root: Path, people: dict[str, Person]
) -> None:
    # A sparse whole-sky survey (the field grid sized for 1,200 fields), planned by the real operator over three
    # Sites of 900, 600 and 300 cores: target shares 50 / 33.3 / 16.7 %.
    start = datetime.now(UTC).replace(microsecond=0)
    survey = survey_root / f"{cluster.namespace}.csv"
    observations = generate_survey(wide=1200, deep=200, per_day=30, start=start)
    survey.write_text(write_csv(observations))
    for name, cores in PLACEMENT_SITES.items():
        cluster.apply(placement_site(cluster, name, cores))
    cluster.apply(
        {
            "apiVersion": "sgs.io/v1alpha1",
            "kind": "DataPlacement",
            "metadata": {"name": "wide"},
            "spec": {
                "siteSelector": {"matchLabels": {"survey": "euclid"}},
                "windowStart": (start - timedelta(days=1)).isoformat(),
                "windowEnd": (start + timedelta(days=90)).isoformat(),
                "source": {"surveyPlan": str(survey)},
            },
        }
    )
    status = planned(cluster, "wide")
    assert status["observations"] == len(observations) and {s["site"] for s in status["shares"]} == set(PLACEMENT_SITES)

    alice = people["alice"]
    page = alice.open("/placement")
    section = page.locator('section.placement[data-placement="wide"]')
    expect(section.locator("h2")).to_contain_text(f"{cluster.namespace}/wide")
    expect(section.locator("h2 .phase")).to_have_text("Planned")
    expect(section.locator(".facts")).to_contain_text(f"{status['observations']:,}")
    expect(section.locator(".facts")).to_contain_text(percent(status["tilesCoherent"]))
    expect(section.locator("table.shares tbody tr")).to_have_count(len(PLACEMENT_SITES))
    for share in status["shares"]:
        row = section.locator(f'table.shares tr[data-site="{share["site"]}"]')
        expect(row.locator(".primary")).to_have_text(f"{share['primary']:,}")
        expect(row.locator(".secondary")).to_have_text(f"{share['secondary']:,}")
        expect(row.locator(".share")).to_have_text(percent(share["share"]))
        expect(row.locator(".target")).to_have_text(percent(share["target"]))
        expect(row.locator(".tiles")).to_have_text(f"{share['tiles']:,}")
    expect(section.locator('table.shares tr[data-site="sdc-fr"] .target')).to_have_text("50.0 %")
    expect(section.locator(".conditions")).to_contain_text("Planned True")

    # The sky map draws the archive's tile placements: one path per primary Site, as many tiles as it holds.
    rows = archive.ok("GET", "/placements", params={"dimension": "tile", "limit": 100_000})
    by_site = Counter(str(r["primary_site"]) for r in rows)
    assert set(by_site) == set(PLACEMENT_SITES) and sum(by_site.values()) == status["tiles"]
    sky = page.locator("#skymap")
    expect(sky.locator("svg.sky path.tiles")).to_have_count(len(PLACEMENT_SITES))
    for site, tiles in by_site.items():
        expect(sky.locator(f'path.tiles[data-site="{site}"]')).to_have_attribute("data-tiles", str(tiles))
        expect(sky.locator(f'.legend[data-site="{site}"]')).to_have_text(f"{site} ({tiles:,})")
    alice.shot("placement")

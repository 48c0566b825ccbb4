"""DataPlacement on the real API server: the operator plans a survey file over the namespace's Sites, writes the
archive's placement table (a real archive service on real PostgreSQL), makes the replication rules at a real
transfer service, and reports shares, coherence and churn in status; a re-plan keeps frozen observations; bad
input is refused naming the line or field, and a survey plan outside the allowed roots is never read."""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from operator_kit import ArchiveService, Cluster, OperatorProcess, make_cluster, new_database, wait_for
from sgs_transfer.app import create_app as create_transfer
from sgs_transfer.settings import TransferSettings
from sgs_transfer.sites import KnownSite, SiteBook

from sgs.model.site import Site
from sgs.placement.generator import generate_survey
from sgs.placement.survey import build_survey, write_csv
from sgs.testing.kube import KubePart
from sgs.testing.nats import NatsPart
from sgs.testing.postgres import PostgresPart
from sgs.testing.services import ServiceThread

pytest_plugins = ["operator_kit"]
pytestmark = pytest.mark.integration

ADMIN = "sgs_" + secrets.token_urlsafe(32)  # production refuses short or guessable admin tokens


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {"allowed": tmp_path_factory.mktemp("surveys"), "elsewhere": tmp_path_factory.mktemp("private")}


@pytest.fixture(scope="module")
def archive(postgres: PostgresPart, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArchiveService]:
    service = ArchiveService(
        new_database(postgres, "placement"), tmp_path_factory.mktemp("archive") / "archive.log", ADMIN
    )
    yield service
    service.stop()


@pytest.fixture(scope="module")
def transfer(
    postgres: PostgresPart, nats_server: NatsPart, archive: ArchiveService, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The transfer service (its rules API and evaluator), knowing the Sites the tests place on."""
    root = tmp_path_factory.mktemp("transfer-sites")
    sites = []
    for name in ("sdc-fr", "sdc-it", "sdc-de"):
        (root / name).mkdir()
        spec = {"storage": {"kind": "posix", "path": str(root / name)}, "capacity": {"cores": 8, "storageTb": 1}}
        sites.append(KnownSite(Site.model_validate({"metadata": {"name": name}, "spec": spec})))
    settings = TransferSettings(
        dsn=new_database(postgres, "transfer"),
        nats_url=nats_server.url,
        namespace=f"t{uuid.uuid4().hex[:10]}",
        admin_token=ADMIN,
        archive_url=archive.url,
        archive_token=ADMIN,
    )
    server = ServiceThread(create_transfer(settings, SiteBook(sites)), "transfer").start()
    wait_for(lambda: httpx.get(f"{server.url}/readyz", timeout=2).status_code == 200, "the transfer service", 60)
    yield server.url
    server.stop()


def rules_of(transfer: str, owner: str) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {ADMIN}"}
    page = httpx.get(f"{transfer}/rules", params={"owner": owner, "limit": 1000}, headers=headers, timeout=30)
    assert page.status_code == 200, page.text
    items: list[dict[str, Any]] = page.json()["items"]
    return items


@pytest.fixture(scope="module")
def operator(
    kube: KubePart,
    operator_dsn: str,
    archive: ArchiveService,
    transfer: str,
    roots: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    """This module's operator knows the archive, the transfer service and the one directory survey plans may
    come from."""
    extra = {
        "SGS_OPERATOR_ARCHIVE_URL": archive.url,
        "SGS_OPERATOR_ARCHIVE_TOKEN": ADMIN,
        "SGS_OPERATOR_TRANSFER_URL": transfer,
        "SGS_OPERATOR_TRANSFER_TOKEN": ADMIN,
        "SGS_OPERATOR_SURVEY_ROOTS": f'["{roots["allowed"]}"]',
    }
    saved = {key: os.environ.get(key) for key in extra}
    os.environ.update(extra)
    proc = OperatorProcess(kube, operator_dsn, tmp_path_factory.mktemp("operator"))
    try:
        proc.start()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    yield proc
    proc.stop()
    proc.delete_webhook()  # failurePolicy Fail: a webhook left behind would refuse the next module's Runs


@pytest.fixture
def cluster(kube: KubePart, operator: OperatorProcess, tmp_path: Path) -> Iterator[Cluster]:
    yield from make_cluster(kube, operator, tmp_path)


def site(cluster: Cluster, name: str, cores: int, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "sgs.io/v1alpha1",
        "kind": "Site",
        "metadata": {"name": name, "labels": {"survey": "euclid"}},
        "spec": {
            "storage": {"kind": "posix", "path": str(cluster.store)},
            "capacity": {"cores": cores, "storageTb": cores / 10},
            **spec,
        },
    }


def placement(name: str, survey: Path, **spec: Any) -> dict[str, Any]:
    start = datetime.now(UTC).replace(microsecond=0)
    return {
        "apiVersion": "sgs.io/v1alpha1",
        "kind": "DataPlacement",
        "metadata": {"name": name},
        "spec": {
            "siteSelector": {"matchLabels": {"survey": "euclid"}},
            "windowStart": (start - timedelta(days=1)).isoformat(),
            "windowEnd": (start + timedelta(days=90)).isoformat(),
            "source": {"surveyPlan": str(survey)},
            **spec,
        },
    }


def status_of(cluster: Cluster, name: str, phases: set[str], generation: int | None = None) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        found = cluster.get("dataplacements", name)
        status: dict[str, Any] = found.get("status") or {}
        current = generation is None or status.get("observedGeneration") == generation
        return status if status.get("phase") in phases and current else None

    result: dict[str, Any] = wait_for(reached, f"dataplacement {name} to reach {sorted(phases)}", 120)
    return result


def write_survey(path: Path, shift_every: int = 0) -> list[int]:
    start = datetime.now(UTC).replace(microsecond=0)
    survey = generate_survey(wide=300, deep=100, sky_fields=29_000, start=start)
    rows = [survey.row(i) for i in range(len(survey))]
    if shift_every:
        rows = [
            r.model_copy(update={"time": r.time + timedelta(days=2)}) if i % shift_every == 3 else r
            for i, r in enumerate(rows)
        ]
    path.write_text(write_csv(build_survey(rows)))
    return [r.id for r in rows]


def test_a_dataplacement_plans_the_survey_into_status_the_archive_and_rules_and_replans_keeping_frozen_ones(
    cluster: Cluster, archive: ArchiveService, transfer: str, roots: dict[str, Path]
) -> None:
    survey = roots["allowed"] / f"{cluster.namespace}.csv"
    ids = write_survey(survey)
    for name, cores in (("sdc-fr", 900), ("sdc-it", 600), ("sdc-de", 300)):
        cluster.apply(site(cluster, name, cores))
    # The rules select raw datasets: the transfer service refuses a rule for a type the archive lacks.
    archive.call("POST", "/dataset-types", json={"name": "raw", "dimensions": ["exposure"], "storage_class": "Fits"})
    cluster.apply(placement("wide", survey))

    status = status_of(cluster, "wide", {"Planned"})

    assert status["observations"] == 400 and status["frozen"] == 0 and status["tiles"] > 400
    shares = {s["site"]: s for s in status["shares"]}
    assert set(shares) == {"sdc-fr", "sdc-it", "sdc-de"}
    assert sum(s["primary"] for s in shares.values()) == 400
    assert shares["sdc-fr"]["target"] == pytest.approx(0.5) and abs(shares["sdc-fr"]["share"] - 0.5) < 0.05
    assert status["secondaryEqualsPrimary"] == 0 and 0 < status["tilesCoherent"] <= 1
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Planned"]["status"] == "True" and conditions["Archived"]["status"] == "True"
    assert conditions["RulesApplied"]["status"] == "True", conditions["RulesApplied"]
    owner = f"placement.{cluster.namespace}.wide"
    rules = rules_of(transfer, owner)
    assert len(rules) == status["rules"] > 0
    assert all(r["copies"] == 2 and r["dataset_type"] == "raw" and " | " in r["site_expression"] for r in rules)
    covered = {int(v) for r in rules for v in r["where"].removeprefix("observation IN (").rstrip(")").split(", ")}
    assert covered == set(ids)
    rows = archive.placements()
    observed = {value: sites for (dimension, value), sites in rows.items() if dimension == "observation"}
    assert set(observed) >= set(ids)
    assert all(primary != secondary for primary, secondary in observed.values())
    table = cluster.kubectl("get", "dp", "wide").stdout
    assert "Planned" in table and "400" in table

    # Observation 7's raw data arrives: it is frozen. Then the survey changes (5 % rescheduled) and sdc-de grows.
    where = observed[7]
    raw = {
        "dataset_type": "raw",
        "data_id": {"instrument": "VIS", "exposure": 70, "observation": 7},
        "run": "raw/placement-test",
        "replicas": [
            {"site": where[0], "uri": f"file:///{where[0]}/raw/7", "size": 1, "adler32": "00620062", "sha256": "a" * 64}
        ],
    }
    archive.call("POST", "/datasets/ingest", json={"datasets": [raw]})
    write_survey(survey, shift_every=20)
    cluster.apply(site(cluster, "sdc-de", 900))
    updated = placement("wide", survey)
    updated["spec"]["policy"] = {"weights": {"churn": 0.5}}  # cheap moves: the new shares win
    cluster.apply(updated)

    again = status_of(cluster, "wide", {"Planned"}, generation=2)

    assert again["frozen"] == 1 and again["frozenMoved"] == 0
    assert archive.placements()[("observation", 7)] == where
    assert 0 < again["churn"] < 0.5  # sdc-de's share grew: some observations move, most stay
    assert again["digest"] != status["digest"]
    after = rules_of(transfer, owner)  # exactly the new plan's rules: stale ones deleted, none twice
    assert len(after) == again["rules"]
    listed = [int(v) for r in after for v in r["where"].removeprefix("observation IN (").rstrip(")").split(", ")]
    assert sorted(listed) == sorted(ids)


def test_bad_input_is_refused_naming_the_line_or_field(cluster: Cluster, roots: dict[str, Path]) -> None:
    cluster.apply(site(cluster, "sdc-fr", 900))
    duplicate = roots["allowed"] / f"{cluster.namespace}-dup.csv"
    duplicate.write_text(
        "id,time,ra,dec,tiles\n1,2030-01-01T00:00:00Z,10,-30,5\n2,2030-01-01T01:00:00Z,10,-30,6\n"
        "1,2030-01-01T02:00:00Z,10,-30,7\n"
    )
    cluster.apply(placement("dup", duplicate))
    failed = status_of(cluster, "dup", {"Failed"})
    (planned,) = [c for c in failed["conditions"] if c["type"] == "Planned"]
    assert planned["reason"] == "SurveyInvalid"
    assert "line 4: id: duplicate observation id 1 (first on line 2)" in planned["message"]

    empty = site(cluster, "sdc-xx", 0, weight=2)
    empty["spec"]["capacity"] = {"cores": 0, "storageTb": 0}
    cluster.apply(empty)
    good = roots["allowed"] / f"{cluster.namespace}-ok.csv"
    write_survey(good)
    cluster.apply(placement("zero", good))
    zero = status_of(cluster, "zero", {"Failed"})
    message = next(c["message"] for c in zero["conditions"] if c["type"] == "Planned")
    assert "capacity: zero cores and storage with weight 2 > 0" in message
    cluster.kubectl("delete", "sites", "sdc-xx")

    past = placement("past", good)
    past["spec"]["windowStart"] = "2020-01-01T00:00:00Z"
    past["spec"]["windowEnd"] = "2020-03-01T00:00:00Z"
    refused = cluster.apply(past, check=False)
    assert refused.returncode != 0
    assert "spec.windowEnd: 2020-03-01T00:00:00+00:00 is in the past" in refused.stderr
    assert cluster.kubectl("get", "dataplacements", "past", check=False).returncode != 0


def test_a_survey_plan_outside_the_allowed_roots_is_never_read(cluster: Cluster, roots: dict[str, Path]) -> None:
    cluster.apply(site(cluster, "sdc-fr", 900))
    secret = roots["elsewhere"] / "survey.csv"
    write_survey(secret)
    sneaky = roots["allowed"] / ".." / roots["elsewhere"].name / "survey.csv"  # traversal out of the root
    for name, source in (
        ("outside", str(secret)),
        ("traversal", str(sneaky)),
        ("remote", "http://example.invalid/s.csv"),
    ):
        body = placement(name, secret)
        body["spec"]["source"]["surveyPlan"] = source
        cluster.apply(body)
        failed = status_of(cluster, name, {"Failed"})
        (planned,) = [c for c in failed["conditions"] if c["type"] == "Planned"]
        assert planned["reason"] == "SourceRefused", planned
        assert "is not under an allowed" in planned["message"]

"""`sgs dev up`'s console holds reader tokens only: issued as it starts, with the stack's admin tokens, by the
real archive and the real transfer service; a restart revokes the last start's tokens; none of the stack's admin
tokens is in the console's environment; and the console it starts reads the transfer service's rules with its
reader token, which cannot change one."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from operator_kit import wait_for
from transfer_kit import (
    ADMIN_TOKEN,
    ArchiveUnderTest,
    TransferUnderTest,
    archive_service,
    known_sites,
    posix_site,
    transfer_service,
)

from sgs.dev.components import CONSOLE_TOKEN_NAME, ConsolePart
from sgs.testing.kube import KubePart
from sgs.testing.nats import NatsPart
from sgs.testing.postgres import PostgresPart

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def services(
    postgres: PostgresPart, nats_server: NatsPart, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ArchiveUnderTest, TransferUnderTest]]:
    root = tmp_path_factory.mktemp("sites")
    with archive_service(postgres, nats_server.url) as archive:
        archive.issue_site_tokens(["site-a"])
        archive.dataset_type("raw", ["exposure"])
        book = known_sites([posix_site("site-a", root, archive.url)], archive.site_tokens)
        with transfer_service(archive.dsn, nats_server.url, archive.url, book) as transfer:
            yield archive, transfer


def stack_env(kube: KubePart, archive: ArchiveUnderTest, transfer: TransferUnderTest) -> dict[str, str]:
    """What `sgs dev up` hands the sgs units: the exports of the parts, admin tokens among them."""
    return {
        **os.environ,
        "KUBECONFIG": str(kube.kubeconfig),
        "SGS_ARCHIVE_URL": archive.url,
        "SGS_ARCHIVE_ADMIN_TOKEN": ADMIN_TOKEN,
        "SGS_ARCHIVE_TOKEN": ADMIN_TOKEN,
        "SGS_TRANSFER_URL": transfer.url,
        "SGS_TRANSFER_TOKEN": ADMIN_TOKEN,
    }


def environment_of(pid: int) -> dict[str, str]:
    pairs = [item.split("=", 1) for item in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in item]
    return dict(pairs)


def test_the_dev_console_reads_with_reader_tokens_issued_at_its_start_and_holds_no_admin_token(
    kube: KubePart, services: tuple[ArchiveUnderTest, TransferUnderTest], postgres: PostgresPart, tmp_path: Path
) -> None:
    archive, transfer = services
    rule = {"dataset_type": "raw", "copies": 1, "site_expression": "site-a"}
    made = transfer.call("POST", "/rules", (201,), json=rule)["id"]
    tokens: list[dict[str, str]] = []
    for start in (1, 2):  # `sgs dev up` after `sgs dev down --parts sgs`: a new console, new tokens
        console = ConsolePart(tmp_path / f"console-{start}", stack_env(kube, archive, transfer), postgres.dsn)
        console.start()
        try:
            environ = environment_of(console.processes[0].record.pid)  # type: ignore[union-attr]
            assert ADMIN_TOKEN not in environ.values()
            tokens.append({k: environ[f"SGS_CONSOLE_{k}_TOKEN"] for k in ("ARCHIVE", "TRANSFER")})
            signed_in_reads_rules(console.url, kube, made)
        finally:
            console.stop()

    first, second = tokens
    assert first["TRANSFER"] != second["TRANSFER"] and first["ARCHIVE"] != second["ARCHIVE"]
    listed = {t["name"]: t for t in transfer.call("GET", "/tokens")}
    assert listed[CONSOLE_TOKEN_NAME]["reader"] is True and listed[CONSOLE_TOKEN_NAME]["admin"] is False
    assert {t["name"]: t["role"] for t in archive.ok("GET", "/tokens")}[CONSOLE_TOKEN_NAME] == "reader"
    # The last start's tokens are revoked; the new ones read and change nothing.
    transfer.call("GET", "/rules", (401,), token=first["TRANSFER"])
    assert archive.client.get("/dataset-types", headers=bearer(first["ARCHIVE"])).status_code == 401
    transfer.call("GET", "/rules", (200,), token=second["TRANSFER"])
    refused = transfer.call("POST", f"/rules/{made}/suspend", (403,), token=second["TRANSFER"])
    assert "is a reader token: it may not change rules" in refused["detail"][0]["msg"]
    assert transfer.rule(made)["state"] != "SUSPENDED"
    assert archive.client.get("/dataset-types", headers=bearer(second["ARCHIVE"])).status_code == 200
    wrote = archive.client.post(
        "/dataset-types",
        headers=bearer(second["ARCHIVE"]),
        json={"name": "calexp", "dimensions": ["exposure"], "storage_class": "Fits"},
    )
    assert wrote.status_code == 403, wrote.text


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def answers(client: httpx.Client, path: str) -> bool:
    try:
        return client.get(path).status_code == 200
    except httpx.TransportError:
        return False


def signed_in_reads_rules(url: str, kube: KubePart, rule_id: str) -> None:
    """Signed in with the cluster's admin token (as the dev-stack console test does), the transfers page lists
    the rule: the console read it with its reader token."""
    token = yaml.safe_load(kube.kubeconfig.read_text())["users"][0]["user"]["token"]
    with httpx.Client(base_url=url, timeout=30, trust_env=False) as client:
        # `sgs console` prints its address just before uvicorn listens there.
        wait_for(lambda: answers(client, "/healthz"), f"the console at {url}", 30)
        signed = client.post("/signin", data={"token": token, "next": "/transfers"}, follow_redirects=True)
        assert signed.status_code == 200, signed.text[:500]
        assert f'data-rule="{rule_id}"' in signed.text, signed.text[:2000]

"""The demo's replication: rules at the transfer service copy each observation's products to its secondary Site.

One rule per (product type, secondary Site): ``dataset_type=nir_stack, where="observation IN (1, 4)", copies=1,
site_expression="sdc-fr"`` — the observations the placement solver gave that secondary. The transfer service
evaluates a rule against what the archive already holds, then against every ``sgs.dataset.registered`` event;
its worker copies (streamed, checksummed, re-read at the destination) and registers the copy at the archive with
the destination Site's token. Rules are found again by their selector, so a re-run creates none twice (and, the
copies being there, makes none). The report's figures are read back from the transfer service (rules, their
transfers) and from the archive (when each product arrived), never from the demo's own bookkeeping.

:class:`EmbeddedTransfer` runs the service for ``sgs demo``: its own database on the demo's PostgreSQL, the
demo's NATS, an embedded worker, and the demo's POSIX Sites from a Sites file (the loader the service uses for
MinIO Sites and for a cluster's Site resources).
"""

from __future__ import annotations

import secrets
import statistics
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import httpx
from rich.table import Table

from sgs.demo.survey import DemoSite, PlannedObservation

if TYPE_CHECKING:
    from sgs.demo.http_archive import HttpArchive
    from sgs.testing.postgres import PostgresPart
    from sgs.testing.services import ServiceThread

# The final products each observation's secondary Site gets a copy of (runner.PRODUCT_TYPES names them).
REPLICATED_TYPES = ("nir_stack", "nir_catalog")
RULE_OWNER = "sgs-demo"
TRANSFER_DB = "sgs_transfer"
TRANSFER_NAMESPACE = "sgs-demo"
TOKEN_PREFIX = "demo-transfer-"
READY_TIMEOUT_S = 60.0
RULES_TIMEOUT_S = 300.0
PAGE = 10_000


class TransferError(RuntimeError):
    """The transfer service refused a call or did not come up; the message says which and why."""


@dataclass(frozen=True)
class RuleSpec:
    """One rule the demo wants: the products of ``observations`` of one type, one copy at ``site``."""

    dataset_type: str
    site: str
    observations: tuple[int, ...]

    @property
    def where(self) -> str:
        return f"observation IN ({', '.join(str(n) for n in self.observations)})"

    def body(self) -> dict[str, Any]:
        return {
            "dataset_type": self.dataset_type,
            "where": self.where,
            "copies": 1,
            "site_expression": self.site,
            "owner": RULE_OWNER,
        }

    def matches(self, rule: dict[str, Any]) -> bool:
        """The same selector, copies and Sites (what makes a re-run find its rule instead of adding one)."""
        return (
            rule.get("dataset_type") == self.dataset_type
            and rule.get("where") == self.where
            and rule.get("site_expression") == self.site
            and rule.get("copies") == 1
            and not rule.get("dataset_ids")
            and not rule.get("collections")
        )


def rule_specs(observations: Iterable[PlannedObservation]) -> list[RuleSpec]:
    """Per product type and secondary Site, the observations placed there (none for a one-Site survey)."""
    by_site: dict[str, list[int]] = {}
    for obs in observations:
        if obs.secondary != obs.primary:
            by_site.setdefault(obs.secondary.name, []).append(obs.number)
    return [
        RuleSpec(dataset_type, site, tuple(sorted(numbers)))
        for site, numbers in sorted(by_site.items())
        for dataset_type in REPLICATED_TYPES
    ]


# ------------------------------------------------------------------------------------------ the REST client


class TransferClient:
    """The transfer service's REST API, as far as the demo needs it (rules, their transfers)."""

    def __init__(self, url: str, token: str, timeout_s: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self._client = httpx.Client(
            base_url=self.url, timeout=timeout_s, trust_env=False, headers={"Authorization": f"Bearer {token}"}
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def _call(self, method: str, path: str, ok: tuple[int, ...] = (200,), **kw: Any) -> Any:
        try:
            response = self._client.request(method, path, **kw)
        except httpx.HTTPError as error:
            raise TransferError(f"transfer service {self.url}{path}: {error}") from error
        if response.status_code not in ok:
            raise TransferError(f"transfer service {method} {path}: {response.status_code} {response.text[:500]}")
        return response.json() if response.content else None

    def _every_page(self, path: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Every item of a cursor-paged listing (``items``, ``next_cursor``), following the cursor to the end."""
        found: list[dict[str, Any]] = []
        while True:
            page = self._call("GET", path, params=params)
            found += page["items"]
            if page["next_cursor"] is None:
                return found
            params = {**params, "cursor": page["next_cursor"]}

    def rules(self, owner: str = RULE_OWNER) -> list[dict[str, Any]]:
        return self._every_page("/rules", {"owner": owner, "limit": 1000})

    def rule(self, rule_id: str) -> dict[str, Any]:
        found: dict[str, Any] = self._call("GET", f"/rules/{rule_id}")
        return found

    def ensure_rules(self, specs: Sequence[RuleSpec]) -> list[dict[str, Any]]:
        """The rule of each spec: the existing one with that selector, or a new one (evaluated at once)."""
        existing = self.rules()
        rules = []
        for spec in specs:
            found = next((rule for rule in existing if spec.matches(rule)), None)
            rules.append(found or self._call("POST", "/rules", ok=(201,), json=spec.body()))
        return rules

    def transfers(self, rule_id: str, state: str | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"rule": rule_id, "limit": PAGE}
        if state is not None:
            params["state"] = state
        return self._every_page("/transfers", params)


# ------------------------------------------------------------------------------------------ waiting


def _settled(rule: dict[str, Any], expected: int) -> bool:
    """OK with a lock per expected dataset (a rule is OK before the events of its datasets have come in)."""
    return rule["state"] == "OK" and rule["evaluated_at"] is not None and int(rule["locks"]["ok"]) >= expected


def wait_for_rules(
    client: TransferClient,
    rules: Sequence[tuple[dict[str, Any], int]],
    on_progress: Callable[[int, int, str], None] | None = None,
    timeout_s: float = RULES_TIMEOUT_S,
    interval_s: float = 0.2,
) -> list[dict[str, Any]]:
    """The rules once each is OK with ``expected`` copies in place, or at the timeout (as they are then: the
    report shows a STUCK rule's reason rather than the demo hanging). ``on_progress(done, total, detail)``."""
    total = sum(expected for _, expected in rules)
    deadline = time.monotonic() + timeout_s
    while True:
        current = [client.rule(str(rule["id"])) for rule, _ in rules]
        done = sum(min(int(rule["locks"]["ok"]), expected) for rule, (_, expected) in zip(current, rules, strict=True))
        states = sorted({str(rule["state"]) for rule in current})
        if on_progress is not None:
            on_progress(done, total, f"rules {', '.join(states) or '-'}")
        settled = all(_settled(rule, expected) for rule, (_, expected) in zip(current, rules, strict=True))
        if settled or time.monotonic() > deadline:
            return current
        time.sleep(interval_s)


# ------------------------------------------------------------------------------------------ the report


@dataclass(frozen=True)
class RuleSummary:
    """A rule as the transfer service reports it, with its copies, their bytes and latency."""

    id: str
    dataset_type: str
    site: str
    where: str
    state: str
    reason: str | None
    locks_ok: int
    expected: int
    copies: int
    copies_this_run: int
    bytes: int
    latencies_s: tuple[float, ...]

    @property
    def latency_p50_s(self) -> float | None:
        return statistics.median(self.latencies_s) if self.latencies_s else None

    @property
    def latency_max_s(self) -> float | None:
        return max(self.latencies_s) if self.latencies_s else None


@dataclass(frozen=True)
class ReplicationReport:
    url: str
    rules: list[RuleSummary]

    @property
    def copies(self) -> int:
        return sum(r.copies for r in self.rules)

    @property
    def copies_this_run(self) -> int:
        return sum(r.copies_this_run for r in self.rules)

    @property
    def bytes(self) -> int:
        return sum(r.bytes for r in self.rules)

    @property
    def ok(self) -> bool:
        return all(r.state == "OK" and r.locks_ok >= r.expected for r in self.rules)


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _arrivals(archive: HttpArchive, dataset_type: str, where: str) -> dict[str, datetime]:
    """When each selected dataset arrived at the archive (its ingest time there)."""
    return {str(d["id"]): _time(d["ingested_at"]) for d in archive.datasets(dataset_type, where=where)}


def read_replication(
    client: TransferClient,
    archive: HttpArchive,
    rules: Sequence[tuple[dict[str, Any], int]],
    since: datetime,
) -> ReplicationReport:
    """Each rule's state and its DONE transfers (bytes; arrival at the archive → copy registered at the
    destination archive), read back from the transfer service and the archive; ``since``: this run's start."""
    summaries = []
    for rule, expected in rules:
        done = client.transfers(str(rule["id"]), state="DONE")
        arrived = _arrivals(archive, str(rule["dataset_type"]), str(rule["where"]))
        latencies = tuple(
            (_time(t["registered_at"]) - arrived[str(t["dataset_id"])]).total_seconds()
            for t in done
            if t.get("registered_at") and str(t["dataset_id"]) in arrived
        )
        summaries.append(
            RuleSummary(
                id=str(rule["id"]),
                dataset_type=str(rule["dataset_type"]),
                site=str(rule["site_expression"]),
                where=str(rule["where"]),
                state=str(rule["state"]),
                reason=rule.get("reason"),
                locks_ok=int(rule["locks"]["ok"]),
                expected=expected,
                copies=len(done),
                copies_this_run=sum(1 for t in done if t.get("done_at") and _time(t["done_at"]) >= since),
                bytes=sum(int(t["bytes"] or 0) for t in done),
                latencies_s=latencies,
            )
        )
    return ReplicationReport(client.url, summaries)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def rules_table(report: ReplicationReport) -> Table:
    """The rules with their state, copies made, bytes moved and arrival → registered latency."""
    from sgs.demo.report import format_size

    table = Table(
        title=f"replication rules at the transfer service ({report.url}): copies to each secondary Site",
        title_justify="left",
    )
    for column, justify in (
        ("rule", "left"),
        ("datasets", "left"),
        ("→ Site", "left"),
        ("state", "left"),
        ("locks OK", "right"),
        ("copies", "right"),
        ("bytes", "right"),
        ("arrival → registered p50", "right"),
        ("max", "right"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for rule in report.rules:
        state = rule.state if rule.state == "OK" else f"[red]{rule.state}[/]"
        if rule.reason:
            state += f" [dim]({rule.reason})[/]"
        table.add_row(
            rule.id[:8],
            f"{rule.dataset_type} {rule.where}",
            rule.site,
            state,
            f"{rule.locks_ok}/{rule.expected}",
            str(rule.copies),
            format_size(rule.bytes),
            _seconds(rule.latency_p50_s),
            _seconds(rule.latency_max_s),
        )
    return table


def expected_copies(specs: Sequence[RuleSpec], succeeded: Iterable[int]) -> list[int]:
    """Per rule, the observations it selects whose products exist (a failed observation registers none)."""
    ok = set(succeeded)
    return [sum(1 for n in spec.observations if n in ok) for spec in specs]


# ------------------------------------------------------------------------------------------ embedded service


def sites_manifests(sites: Sequence[DemoSite], archive_url: str, tokens: dict[str, str]) -> list[dict[str, Any]]:
    """A Site (POSIX store: the Site's directory) and a Secret with its archive token, per demo Site."""
    documents: list[dict[str, Any]] = []
    for site in sites:
        documents.append(
            {
                "apiVersion": "sgs.io/v1alpha1",
                "kind": "Site",
                "metadata": {"name": site.name, "labels": {"sgs-demo": "true"}},
                "spec": {
                    "storage": {"kind": "posix", "path": str(site.root.resolve())},
                    "archiveUrl": archive_url,
                    "archiveCredentials": {"name": f"{site.name}-archive"},
                    "capacity": {"cores": 8, "storageTb": 1},
                },
            }
        )
        documents.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": f"{site.name}-archive"},
                "stringData": {"token": tokens[site.name]},
            }
        )
    return documents


def write_sites_file(path: Path, documents: list[dict[str, Any]]) -> Path:
    """The Sites file, readable by its owner only (it holds the Sites' archive tokens)."""
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    return path


def issue_site_tokens(archive_url: str, admin_token: str, sites: Iterable[str]) -> dict[str, str]:
    """A fresh archive token per Site for the transfer worker (shown once: a re-run revokes the last run's)."""
    headers = {"Authorization": f"Bearer {admin_token}"}
    tokens: dict[str, str] = {}
    with httpx.Client(base_url=archive_url, timeout=30, trust_env=False, headers=headers) as client:
        for site in sites:
            name = f"{TOKEN_PREFIX}{site}"
            client.delete(f"/tokens/{name}")
            created = client.post("/tokens", json={"name": name, "role": "site", "site": site})
            if created.status_code != 201:
                raise TransferError(f"archive token for {site}: {created.status_code} {created.text[:300]}")
            tokens[site] = str(created.json()["token"])
    return tokens


def ensure_database(postgres: PostgresPart, name: str = TRANSFER_DB) -> str:
    """The transfer service's own database on the demo's PostgreSQL (created once; its migrations make the
    schema when the service starts)."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return postgres.dsn_for(name)


class EmbeddedTransfer:
    """The transfer service with an embedded worker, in a thread of the demo's process (``url``, ``token``)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.token = "sgs_demo_" + secrets.token_urlsafe(24)
        self._server: ServiceThread | None = None

    @property
    def sites_file(self) -> Path:
        return self.directory / "sites.yaml"

    @property
    def url(self) -> str:
        assert self._server is not None, "the transfer service is not started"
        return self._server.url

    def start(
        self, postgres: PostgresPart, nats_url: str, archive_url: str, archive_token: str, sites: Sequence[DemoSite]
    ) -> Self:
        from sgs_transfer.app import create_app
        from sgs_transfer.settings import TransferSettings

        from sgs.testing.services import ServiceThread

        tokens = issue_site_tokens(archive_url, archive_token, [site.name for site in sites])
        write_sites_file(self.sites_file, sites_manifests(sites, archive_url, tokens))
        settings = TransferSettings(
            environment="development",  # a throw-away service on loopback, with a fresh random admin token
            dsn=ensure_database(postgres),
            nats_url=nats_url,
            namespace=TRANSFER_NAMESPACE,
            admin_token=self.token,
            sites_file=self.sites_file,
            archive_url=archive_url,
            archive_token=archive_token,
            embedded_worker=True,
            pool_min_size=1,
            pool_max_size=4,
        )
        self._server = ServiceThread(create_app(settings), "demo-transfer").start()
        self._wait_ready()
        return self

    def _readiness(self) -> Iterator[dict[str, Any]]:
        while True:
            try:
                yield httpx.get(f"{self.url}/readyz", timeout=2, trust_env=False).json()
            except (httpx.HTTPError, ValueError):
                yield {}

    def _wait_ready(self) -> None:
        """Until the evaluator's event consumer is bound and the worker runs (a rule made earlier would wait)."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        for ready in self._readiness():
            if ready.get("events") == "connected" and ready.get("worker") == "running":
                return
            if time.monotonic() > deadline:
                raise TransferError(f"the transfer service did not get ready within {READY_TIMEOUT_S:.0f} s: {ready}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

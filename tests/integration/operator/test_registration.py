"""The registration outbox against real PostgreSQL and the real archive service, without a cluster: an output whose
dataset type the archive lacks waits with the reason and is registered once the type exists; one whose inputs
cannot give the type's dimensions fails naming them; a drain run twice (a restart) registers nothing twice;
outputs of a task that depends on another wait for it."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from operator_kit import new_database
from sgs_archive.app import create_app
from sgs_archive.settings import ArchiveSettings
from sgs_operator.archive import ArchiveClient, SiteArchive
from sgs_operator.records import Finished, InputRow, Registration, Started, TaskStore
from sgs_operator.registration import Registrar

from sgs.planner import TaskRecord, TaskState
from sgs.storage import checksum_file
from sgs.testing.postgres import PostgresPart
from sgs.testing.services import ServiceThread

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

ADMIN = "sgs_" + secrets.token_urlsafe(32)
SITE = "sdc-fr"


@pytest.fixture(scope="module")
def archive_url(postgres: PostgresPart) -> Iterator[str]:
    settings = ArchiveSettings(dsn=new_database(postgres, "registration"), admin_token=ADMIN)
    with ServiceThread(create_app(settings), "archive") as server:
        admin(
            server.url,
            "POST",
            "/dataset-types",
            json={"name": "raw", "dimensions": ["instrument", "exposure"], "storage_class": "T"},
        )
        yield server.url


def admin(url: str, method: str, path: str, **kw: Any) -> Any:
    response = httpx.request(method, f"{url}{path}", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30, **kw)
    assert response.status_code < 400, response.text
    return response.json()


@pytest.fixture
async def store(postgres: PostgresPart) -> AsyncIterator[TaskStore]:
    opened = await TaskStore.open(new_database(postgres, "outbox"))
    yield opened
    await opened.close()


class Outbox:
    """One Run's outbox and its Registrar, with a raw exposure registered as its archive input."""

    def __init__(self, store: TaskStore, url: str, root: Path) -> None:
        self.store, self.url, self.root = store, url, root
        self.uid = str(uuid.uuid4())
        self.client = ArchiveClient()
        self.registrar: Registrar | None = None

    async def start(self) -> Registrar:
        await self.store.ensure_run(self.uid, "ns", "r", "p", "d", {})
        raw = self.root / "raw.txt"
        raw.write_text("raw")
        sums = checksum_file(raw)
        data_id = {"instrument": "NISP", "exposure": 71, "observation": 7, "band": "H"}
        replica = {
            "site": SITE,
            "uri": raw.as_uri(),
            "size": sums.size,
            "adler32": str(sums.adler32),
            "sha256": str(sums.sha256),
        }
        body = {"dataset_type": "raw", "data_id": data_id, "run": f"raw/{self.uid[:8]}", "replicas": [replica]}
        ids = admin(self.url, "POST", "/datasets/ingest", json={"datasets": [body]})["ids"]
        await self.store.save_inputs(self.uid, [InputRow("images", 0, ids[0], "raw", data_id, SITE, str(raw), 3)])
        return await self.reload()

    async def reload(self) -> Registrar:
        """What a restarted operator builds: the Registrar from the records alone."""
        archive = SiteArchive(SITE, self.url, ADMIN)
        self.registrar = await Registrar.load(
            self.store, self.client, archive, self.uid, f"ns/r/{self.uid[:8]}", "ns/r"
        )
        return self.registrar

    async def task_succeeded(self, task: str, dataset_type: str, inputs: list[str], **spec: Any) -> str:
        path = self.root / f"{task}.txt"
        path.write_text(task)
        sums = checksum_file(path)
        facts = {
            "spec": {"name": "out", "datasetType": dataset_type, **spec},
            "inputs": inputs,
            "executable": task,
            "command": "optest_task",
            "image": "img",
            "config_digest": "sha256:x",
            "version": "0",
            "size": sums.size,
            "adler32": str(sums.adler32),
            "sha256": str(sums.sha256),
        }
        running = TaskRecord(id=task, state=TaskState.RUNNING)
        await self.store.save_started(self.uid, [Started(running, f"j-{task}", SITE, task, {})])
        done = TaskRecord(id=task, state=TaskState.SUCCEEDED)
        rows = [Registration(task, 0, "out", str(path), facts)]
        await self.store.save_finished(self.uid, Finished(done, 0, f"j-{task}", "Completed", 0, None, None, rows))
        return str(path)

    async def states(self) -> list[tuple[str, str, str | None]]:
        rows = await self.store.registrations(self.uid, pending_only=False)
        return [(r.task, r.state, r.dataset_id) for r in rows]

    def datasets(self, dataset_type: str) -> list[dict[str, Any]]:
        page = admin(
            self.url,
            "POST",
            "/datasets/query",
            json={"dataset_type": dataset_type, "collections": [f"ns/r/{self.uid[:8]}"]},
        )
        items: list[dict[str, Any]] = page["items"]
        return items


@pytest.fixture
async def outbox(store: TaskStore, archive_url: str, tmp_path: Path) -> AsyncIterator[Outbox]:
    box = Outbox(store, archive_url, tmp_path)
    yield box
    await box.client.close()


async def test_an_output_of_an_unregistered_type_waits_then_registers_once_the_type_exists(outbox: Outbox) -> None:
    registrar = await outbox.start()
    raw_path = str(outbox.root / "raw.txt")
    name = f"late_{uuid.uuid4().hex[:6]}"
    await outbox.task_succeeded("cal", name, [raw_path])

    assert await registrar.drain() == 0
    assert await outbox.states() == [("cal", "pending", None)]
    _, error = await outbox.store.registration_counts(outbox.uid)
    assert error is not None and f"dataset type {name!r} is not registered" in error

    admin(
        outbox.url,
        "POST",
        "/dataset-types",
        json={"name": name, "dimensions": ["instrument", "exposure"], "storage_class": "T"},
    )
    registrar.retry_at = 0.0  # the backoff, spent
    assert await registrar.drain() == 1
    (registered,) = outbox.datasets(name)
    assert registered["data_id"] == {"instrument": "NISP", "exposure": 71, "observation": 7, "band": "H"}
    assert await outbox.states() == [("cal", "registered", registered["id"])]


async def test_a_restart_after_registering_marks_without_registering_twice(outbox: Outbox) -> None:
    registrar = await outbox.start()
    await outbox.task_succeeded("cal", "raw_cal", [str(outbox.root / "raw.txt")])
    admin(
        outbox.url,
        "POST",
        "/dataset-types",
        json={"name": "raw_cal", "dimensions": ["instrument", "exposure"], "storage_class": "T"},
    )
    await registrar.drain()
    # The crash after the archive answered, before the row was marked: the row is pending again.
    async with outbox.store.pool.connection() as conn:
        await conn.execute("UPDATE sgs_registration SET state = 'pending' WHERE run_uid = %s", (outbox.uid,))

    again = await outbox.reload()
    assert await again.drain() == 1

    assert len(outbox.datasets("raw_cal")) == 1
    assert [s for _, s, _ in await outbox.states()] == ["registered"]


async def test_an_output_its_inputs_cannot_identify_fails_naming_the_dimension(outbox: Outbox) -> None:
    registrar = await outbox.start()
    admin(outbox.url, "POST", "/dataset-types", json={"name": "per_tile", "dimensions": ["tile"], "storage_class": "T"})
    await outbox.task_succeeded("mosaic", "per_tile", [str(outbox.root / "raw.txt")])

    assert await registrar.drain() == 1

    ((task, state, dataset_id),) = await outbox.states()
    assert (task, state, dataset_id) == ("mosaic", "failed", None)
    _, error = await outbox.store.registration_counts(outbox.uid)
    assert error is not None and "dataset type 'per_tile' needs tile" in error


async def test_a_downstream_output_gets_its_upstream_dataset_as_lineage(outbox: Outbox) -> None:
    registrar = await outbox.start()
    admin(
        outbox.url,
        "POST",
        "/dataset-types",
        json={"name": "chain_a", "dimensions": ["instrument", "exposure"], "storage_class": "T"},
    )
    admin(
        outbox.url,
        "POST",
        "/dataset-types",
        json={"name": "chain_b", "dimensions": ["instrument"], "storage_class": "T"},
    )
    first = await outbox.task_succeeded("a", "chain_a", [str(outbox.root / "raw.txt")])
    await outbox.task_succeeded("b", "chain_b", [first], dimensions=["instrument"])

    assert await registrar.drain() == 2

    (a,), (b,) = outbox.datasets("chain_a"), outbox.datasets("chain_b")
    assert b["data_id"] == {"instrument": "NISP"}
    up = admin(outbox.url, "GET", f"/datasets/{b['id']}/lineage", params={"direction": "up", "depth": 1})
    assert [e["input"] for e in up["edges"]] == [a["id"]]


async def test_a_refused_token_keeps_outputs_waiting_until_a_good_one_is_given(outbox: Outbox) -> None:
    registrar = await outbox.start()
    admin(
        outbox.url,
        "POST",
        "/dataset-types",
        json={"name": "tok_cal", "dimensions": ["instrument", "exposure"], "storage_class": "T"},
    )
    await outbox.task_succeeded("cal", "tok_cal", [str(outbox.root / "raw.txt")])
    good = registrar.archive
    registrar.archive = SiteArchive(SITE, outbox.url, "sgs_" + secrets.token_urlsafe(32))  # a rotated-away token
    registrar.types["tok_cal"] = {"name": "tok_cal", "dimensions": ["instrument", "exposure"], "implied": []}

    assert await registrar.drain() == 0

    assert registrar.refused  # the controller reads the Site's Secret again before the next try
    assert await outbox.states() == [("cal", "pending", None)]
    registrar.archive, registrar.retry_at = good, 0.0
    assert await registrar.drain() == 1
    assert [s for _, s, _ in await outbox.states()] == ["registered"]

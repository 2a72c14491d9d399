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

"""A write that found storage full answers RESOURCE_EXHAUSTED STORAGE_FULL, and one that could
not reach PostgreSQL UNAVAILABLE STORAGE_UNAVAILABLE, however its error reached the server (the
driver's own, wrapped by the library or SQLAlchemy, or sent back by the writer process); a
sealed value that does not open answers DATA_LOSS; none is INTERNAL."""

from __future__ import annotations

import errno
import pickle
import sqlite3

import grpc
import psycopg
import psycopg_pool
import pytest
from eventsourcing.persistence import OperationalError as LibraryOperationalError
from sqlalchemy.exc import OperationalError as AlchemyOperationalError

from ledger.errors import KeyShreddedError, SealingError
from server.errors import (
    StorageFull,
    StorageUnavailable,
    status_of,
    storage_full,
    storage_unavailable,
)
from server.writer_child import with_storage_full


def _sqlite_full() -> sqlite3.OperationalError:
    """SQLite's own error, as a write to a full disk raises it."""
    return sqlite3.OperationalError("database or disk is full")


def _wrapped_by_library() -> BaseException:
    try:
        try:
            raise _sqlite_full()
        except sqlite3.OperationalError as exc:
            raise LibraryOperationalError(exc) from exc
    except LibraryOperationalError as outer:
        return outer


class _DiskFull(Exception):
    """Stands for psycopg's `errors.DiskFull`, which carries the SQLSTATE."""

    sqlstate = "53100"


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(_sqlite_full(), id="sqlite"),
        pytest.param(_wrapped_by_library(), id="eventsourcing"),
        pytest.param(AlchemyOperationalError("INSERT", {}, _sqlite_full()), id="sqlalchemy"),
        pytest.param(OSError(errno.ENOSPC, "No space left on device"), id="enospc"),
        pytest.param(_DiskFull("could not extend file"), id="postgres"),
        pytest.param(StorageFull(), id="from-the-writer"),
    ],
)
def test_a_write_that_found_storage_full_is_resource_exhausted(error: BaseException) -> None:
    parts = status_of(error)

    assert storage_full(error)
    assert (parts.code, parts.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "STORAGE_FULL")
    assert "retry" in parts.message


@pytest.mark.parametrize(
    "error",
    [sqlite3.OperationalError("database is locked"), OSError(errno.EACCES, "denied"), ValueError()],
)
def test_other_storage_errors_stay_internal(error: BaseException) -> None:
    assert not storage_full(error)
    assert status_of(error).code is grpc.StatusCode.INTERNAL


def test_the_writer_sends_a_full_storage_as_storage_full_and_leaves_the_rest() -> None:
    answers = [(1, False, _wrapped_by_library()), (2, True, "recorded"), (3, False, ValueError())]

    sent = pickle.loads(pickle.dumps(with_storage_full(answers)))  # noqa: S301 (our own bytes)

    assert [type(value) for _n, _ok, value in sent] == [StorageFull, str, ValueError]
    assert status_of(sent[0][2]).reason == "STORAGE_FULL"


def test_a_sealed_value_that_does_not_open_is_data_loss_and_a_shredded_one_is_not() -> None:
    assert status_of(SealingError("tampered")).code is grpc.StatusCode.DATA_LOSS
    shredded = status_of(KeyShreddedError("no data key"))
    assert (shredded.code, shredded.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "KEY_SHREDDED")


def _lost_connection() -> BaseException:
    """psycopg's error for a connection the server closed, as the library wraps it."""
    try:
        try:
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        except psycopg.OperationalError as exc:
            raise LibraryOperationalError(exc) from exc
    except LibraryOperationalError as outer:
        return outer


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(psycopg.OperationalError("connection refused"), id="refused"),
        pytest.param(_lost_connection(), id="eventsourcing"),
        pytest.param(psycopg_pool.PoolTimeout("couldn't get a connection"), id="pool"),
        pytest.param(psycopg.errors.AdminShutdown("terminating connection"), id="shutdown"),
        pytest.param(psycopg.errors.CannotConnectNow("starting up"), id="starting"),
        pytest.param(StorageUnavailable(), id="from-the-writer"),
    ],
)
def test_a_write_that_could_not_reach_postgresql_is_unavailable(error: BaseException) -> None:
    parts = status_of(error)

    assert storage_unavailable(error)
    assert (parts.code, parts.reason) == (grpc.StatusCode.UNAVAILABLE, "STORAGE_UNAVAILABLE")
    assert "retry" in parts.message


@pytest.mark.parametrize(
    "error",
    [
        psycopg.errors.UniqueViolation("duplicate key"),
        psycopg.errors.SyntaxError("at or near"),
        sqlite3.OperationalError("database is locked"),
    ],
)
def test_other_database_errors_are_not_unavailability(error: BaseException) -> None:
    assert not storage_unavailable(error)


def test_the_writer_sends_a_lost_database_as_storage_unavailable() -> None:
    answers = [(1, False, _lost_connection()), (2, False, _wrapped_by_library())]

    sent = pickle.loads(pickle.dumps(with_storage_full(answers)))  # noqa: S301 (our own bytes)

    assert [type(value) for _n, _ok, value in sent] == [StorageUnavailable, StorageFull]

"""How the ledger's stores connect: PostgreSQL connections that fail within seconds when the
database is gone, and SQLite connections that keep their prepared statements. The event
store's recorders (`ledger.recorders`), the key store and the views database all use them."""

from __future__ import annotations

import sqlite3

from eventsourcing.persistence import InterfaceError
from eventsourcing.sqlite import (
    SQLITE3_DEFAULT_LOCK_TIMEOUT,
    SQLiteConnection,
    SQLiteConnectionPool,
)

PG_CONNECT_TIMEOUT_SECONDS = 2
"""How long a new PostgreSQL connection, or a wait for one from a pool, may take (libpq's
least). The library tries a failed read and a failed write again up to ten times each, each
try after such a wait, so a write finds a database that is gone in about 20 seconds."""
PG_CONNECTION_PARAMETERS: dict[str, int] = {
    "connect_timeout": PG_CONNECT_TIMEOUT_SECONDS,
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
}
"""libpq parameters of every connection to PostgreSQL: a server that does not answer, or a
network that drops everything, fails a call within seconds instead of holding it (and every
write queued behind it) for as long as the outage lasts. `tcp_user_timeout` (milliseconds)
bounds data sent and never acknowledged; the keepalives find an idle connection gone."""

_STATEMENTS_CACHED = 64
"""Prepared statements kept per event-store connection (a write uses about six)."""


def connect_sqlite(pool: SQLiteConnectionPool) -> SQLiteConnection:
    """A new connection of the pool to a file database, as the library's pool makes one, but
    with a statement cache of `_STATEMENTS_CACHED`.

    `eventsourcing` 9.5.6 opens its SQLite connections with ``cached_statements=True``, which
    `sqlite3` takes as a cache of one statement: every transaction's BEGIN, inserts and COMMIT
    then prepared their SQL again. The cache can only be sized when the connection is made.
    """
    try:
        raw = sqlite3.connect(
            database=pool.db_name,
            uri=True,
            check_same_thread=False,
            isolation_level=None,  # the library's transactions say BEGIN and COMMIT
            cached_statements=_STATEMENTS_CACHED,
            timeout=pool.lock_timeout or SQLITE3_DEFAULT_LOCK_TIMEOUT,
        )
    except (sqlite3.Error, TypeError) as error:
        raise InterfaceError(error) from error
    if str(raw.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
        raw.execute("PRAGMA journal_mode=WAL")
    pool.is_journal_mode_wal = True
    raw.row_factory = sqlite3.Row
    return SQLiteConnection(sqlite_conn=raw, max_age=pool.max_age)

"""Where the views live: SQLAlchemy Core tables on a SQLite file or PostgreSQL, and the
tracking table that records, per view, the last log position folded into its rows.

A view's rows and its tracking row are written in one transaction (`ViewStore.write`), so a
view is always exactly "the log folded up to its tracking position".
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.pool import ConnectionPoolEntry, QueuePool, StaticPool

from ledger.connections import PG_CONNECT_TIMEOUT_SECONDS, PG_CONNECTION_PARAMETERS
from ledger.errors import ConfigurationError
from ledger.sqlite_wal import WalCheckpoints
from projections.batch import ManyRows, guard_pipelines, sync

__all__ = ["METADATA", "SHAPE", "ViewStore", "from_us", "from_us_or_none", "to_us", "upsert"]

METADATA = sa.MetaData()
"""Every view table, on one metadata so one `create_all` makes them."""

TRACKING = sa.Table(
    "view_tracking",
    METADATA,
    sa.Column("view", sa.String(64), primary_key=True),
    sa.Column("position", sa.BigInteger, nullable=False),
)

SHAPE = 6
"""The shape of the views' rows. Raise it when a view's rows come to mean something else (2:
a recipient is kept with its class; 3: a person's value is the latest by occurred-at, and
their count of events leaves out their rights requests'; 4: a person's first notice of a
version stands, and an acknowledgement alone does not count as a notice; 5: a partial erasure
keeps what was collected after its instant; 6: the first notice is the earliest by when it
happened, not by when it was recorded, and whom a person's data was shared with outlives its
erasure), so that a views
database folded by an earlier version is emptied and every view folded again from the log
when it is next opened."""

SHAPES = sa.Table(
    "view_shape",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("shape", sa.Integer, nullable=False),
)
"""One row: the `SHAPE` the views' rows were folded in. A database made before there was one
was folded in shape 1."""

_log = logging.getLogger(__name__)

_BUSY_TIMEOUT_MS = 30_000
_WAL_SIZE_LIMIT_BYTES = 64 * 1024 * 1024
"""After a checkpoint, a write-ahead log larger than this is truncated back to it."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_us(instant: datetime) -> int:
    """An aware instant as integer microseconds since the epoch (portable and cheap to compare)."""
    delta = instant - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us_or_none(value: int | None) -> datetime | None:
    """`from_us` of a nullable column."""
    return None if value is None else from_us(value)


def from_us(value: int) -> datetime:
    """The aware UTC instant of `to_us`."""
    return datetime.fromtimestamp(value // 1_000_000, tz=UTC).replace(microsecond=value % 1_000_000)


class ViewStore:
    """The views' database: an engine, the tables, and the tracking positions.

    ``url`` is a SQLAlchemy URL: ``sqlite:///path/views.db`` (the embedded default),
    ``sqlite://`` (in memory, one process; for tests) or
    ``postgresql+psycopg://user@host/db``; ``schema`` names the PostgreSQL schema.
    """

    def __init__(self, url: str | URL, *, schema: str | None = None) -> None:
        parsed = sa.make_url(url) if isinstance(url, str) else url
        self.shown_url = parsed.render_as_string(hide_password=True)
        self.dialect = parsed.get_backend_name()
        self._lock_space = f"pdl.views:{schema or ''}:"
        self._schema = schema
        self.pipelined = self.dialect == "postgresql"
        """Whether a transaction's writes are pipelined (sent without waiting for the server,
        which writes them while the runner goes on until the commit)."""
        self._checkpoints: WalCheckpoints | None = None
        try:
            if self.dialect == "sqlite":
                self.engine = _sqlite_engine(parsed)
                if parsed.database not in (None, "", ":memory:"):
                    self._checkpoints = WalCheckpoints(
                        parsed.database or "",
                        name="pdl-views-checkpoint",
                        journal_size_limit=_WAL_SIZE_LIMIT_BYTES,
                        busy_timeout_seconds=_BUSY_TIMEOUT_MS / 1000,
                    )
            elif self.dialect == "postgresql":
                options = {} if schema is None else {"schema_translate_map": {None: schema}}
                # Views are derived from the log: a commit lost in a server crash is folded
                # again from the tracking position it also lost, so no commit waits for the
                # server's WAL flush (the page's rows and position still commit atomically).
                self.engine = sa.create_engine(
                    parsed,
                    pool_pre_ping=True,
                    pool_timeout=PG_CONNECT_TIMEOUT_SECONDS,
                    connect_args={
                        "options": "-c synchronous_commit=off",
                        **PG_CONNECTION_PARAMETERS,
                    },
                ).execution_options(**options)
                guard_pipelines(self.engine)
            else:
                msg = f"views {self.shown_url}: unsupported database {self.dialect!r}"
                raise ConfigurationError(msg)
            try:
                self._create_tables()
            except ConfigurationError:
                self.close()
                raise
            self._tracking = ManyRows(
                self.dialect, upsert(self.dialect, TRACKING, ("view",), ("position",))
            )
        except (ArgumentError, NoSuchModuleError, ImportError, SQLAlchemyError) as exc:
            msg = f"cannot open the views database {self.shown_url}: {type(exc).__name__}"
            raise ConfigurationError(msg) from None

    def _create_tables(self) -> None:
        """Create what is missing, under a lock: workers of `pdl project` open a new views
        database at the same moment, and two that both found a table missing would both
        create it (the second failing)."""
        with self.engine.connect() as conn:
            if self.dialect == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                conn.execute(
                    sa.text("SELECT pg_advisory_xact_lock(:key)"),
                    {"key": _lock_key(self._lock_space + "create tables")},
                )
            METADATA.create_all(conn)
            changed = [f"added {name}" for name in self._add_columns(conn)]
            if self.dialect == "postgresql":
                changed += [f"widened {name}" for name in self._widen_columns(conn)]
            self._reshape(conn, changed)
            conn.commit()

    def _add_columns(self, conn: Connection) -> list[str]:
        """Add the columns an earlier version's tables lack (`create_all` makes only missing
        tables); the names of those added. They are all nullable, and their views are folded
        again, so the rows folded before have them filled."""
        inspector = sa.inspect(conn)
        schema = None
        if self.dialect == "postgresql":
            schema = self._schema or conn.execute(sa.text("SELECT current_schema()")).scalar_one()
        quote = conn.dialect.identifier_preparer.quote
        added = []
        for table in METADATA.sorted_tables:
            present = {c["name"] for c in inspector.get_columns(table.name, schema=schema)}
            for column in table.columns:
                if column.name in present:
                    continue
                if not column.nullable:
                    msg = f"views {self.shown_url}: {table.name} lacks {column.name}; rebuild"
                    raise ConfigurationError(msg)
                kind = column.type.compile(dialect=conn.dialect)
                name = (
                    quote(table.name) if schema is None else f"{quote(schema)}.{quote(table.name)}"
                )
                conn.exec_driver_sql(f"ALTER TABLE {name} ADD COLUMN {quote(column.name)} {kind}")
                added.append(f"{table.name}.{column.name}")
        return added

    def _reshape(self, conn: Connection, changed: list[str]) -> None:
        """Empty every view, to be folded again from the log, when its rows were folded in
        another shape or into columns since added or widened."""
        stored = conn.execute(sa.select(SHAPES.c.shape)).scalar()
        if stored is not None and stored > SHAPE:
            msg = (
                f"views {self.shown_url}: folded by a newer version of the ledger (view shape "
                f"{stored}, this one folds {SHAPE}); run that version, or rebuild the views"
            )
            raise ConfigurationError(msg)
        if stored == SHAPE and not changed:
            return
        folded = conn.execute(sa.select(sa.func.count()).select_from(TRACKING)).scalar_one()
        for table in reversed(METADATA.sorted_tables):  # the tracking rows and shape too
            conn.execute(table.delete())
        conn.execute(SHAPES.insert().values(id=1, shape=SHAPE))
        if folded:
            why = ", ".join(changed) if changed else f"view shape {stored or 1}"
            _log.warning(
                "views database %s: %s; every view is folded again from the log (shape %d)",
                self.shown_url,
                why,
                SHAPE,
            )

    def _widen_columns(self, conn: Connection) -> list[str]:
        """Widen the text columns an earlier version created narrower than they now are; the
        names of those widened. Their views must be folded again: that version cast its array
        parameters to the columns' types, which cuts a longer value short (a recipient, at 128
        characters), so the rows folded until now may hold one cut."""
        schema = self._schema or conn.execute(sa.text("SELECT current_schema()")).scalar_one()
        found = {
            (row.table_name, row.column_name): row.character_maximum_length
            for row in conn.execute(
                sa.text(
                    "SELECT table_name, column_name, character_maximum_length"
                    " FROM information_schema.columns"
                    " WHERE table_schema = :schema AND character_maximum_length IS NOT NULL"
                ),
                {"schema": schema},
            )
        }
        quote = conn.dialect.identifier_preparer.quote
        widened = []
        for table in METADATA.sorted_tables:
            for column in table.columns:
                length = getattr(column.type, "length", None)
                stored = found.get((table.name, column.name))
                if length is None or stored is None or stored >= length:
                    continue
                conn.exec_driver_sql(
                    f"ALTER TABLE {quote(schema)}.{quote(table.name)}"
                    f" ALTER COLUMN {quote(column.name)} TYPE VARCHAR({int(length)})"
                )
                widened.append(f"{table.name}.{column.name}")
        return widened

    def close(self) -> None:
        if self._checkpoints is not None:
            self._checkpoints.stop()
        self.engine.dispose()

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """One write transaction (on SQLite, the write lock is taken at its start)."""
        with self.engine.connect() as conn:
            checkpoints = self._checkpoints
            raw = (
                cast("sqlite3.Connection", conn.connection.dbapi_connection)
                if checkpoints is not None
                else None
            )
            changes = raw.total_changes if raw is not None else 0
            if checkpoints is not None and raw is not None:
                checkpoints.catch_up(raw)  # lets the log start again (see there)
            if self.dialect == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                conn.begin()
            try:
                yield conn
                sync(conn)
            except BaseException as exc:
                sync(conn, exc)
                conn.rollback()
                raise
            conn.commit()
            if checkpoints is not None and raw is not None:
                checkpoints.wrote(raw.total_changes - changes)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """One read transaction: a consistent snapshot of every view (on PostgreSQL at
        REPEATABLE READ: at its default, READ COMMITTED, each statement sees what was
        committed before it, so a view and its tracking position could come from two commits)."""
        with self.engine.connect() as conn:
            if self.dialect == "sqlite":
                conn.exec_driver_sql("BEGIN")
            else:
                conn.execution_options(isolation_level="REPEATABLE READ")
                conn.begin()
            try:
                yield conn
            finally:
                conn.rollback()

    def positions(self, conn: Connection | None = None) -> dict[str, int]:
        """Every view's tracking position."""
        if conn is None:
            with self.read() as c:
                return self.positions(c)
        return {row.view: row.position for row in conn.execute(sa.select(TRACKING))}

    def claim(self, conn: Connection, views: Sequence[str]) -> dict[str, int]:
        """Take the right to fold the named views in this write transaction, and return their
        tracking positions as committed now (a view with no row is at 0).

        Whoever else folds these views into the same database (another server, a `pdl project`
        worker) waits until this transaction ends, and then sees its positions: on SQLite the
        write lock `write` took at the start does that; on PostgreSQL, where the views' writers
        do not lock each other, an advisory lock per view (held to the transaction's end, taken
        in one order so two folders of overlapping views cannot deadlock) does it.
        """
        if self.dialect == "postgresql":
            keys = sorted({_lock_key(self._lock_space + name) for name in views})
            conn.execute(
                sa.text(
                    "SELECT pg_advisory_xact_lock(k) "
                    "FROM (SELECT unnest(CAST(:keys AS bigint[])) AS k ORDER BY 1) AS keys"
                ),
                {"keys": keys},
            )
        rows = conn.execute(
            sa.select(TRACKING.c.view, TRACKING.c.position).where(TRACKING.c.view.in_(views))
        )
        stored = {row.view: row.position for row in rows}
        return {name: stored.get(name, 0) for name in views}

    def set_positions(self, conn: Connection, positions: dict[str, int]) -> None:
        """Record views' positions, in the transaction that wrote their rows."""
        self._tracking.run(conn, [{"view": v, "position": p} for v, p in positions.items()])

    def reset(self, conn: Connection, view: str, tables: Sequence[sa.Table]) -> None:
        """Empty a view's tables and forget its position (to rebuild it from the log)."""
        for table in tables:
            conn.execute(table.delete())
        conn.execute(TRACKING.delete().where(TRACKING.c.view == view))


def _write_ahead_log(cursor: sqlite3.Cursor) -> None:
    """Put the database in WAL mode. On a new file, connections opening it at once (workers of
    `pdl project`) may find it locked without SQLite waiting its busy timeout: ask again."""
    deadline = time.monotonic() + _BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)
        else:
            return


def _lock_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key for a name."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def upsert(
    dialect: str,
    table: sa.Table,
    keys: Sequence[str],
    replace: Sequence[str] = (),
    *,
    set_: dict[str, Any] | None = None,
    where: Any = None,
) -> Any:
    """An INSERT that, on a key conflict, replaces `replace` columns with the new values and
    applies `set_` expressions (which may use ``excluded``), for the stored rows `where` holds
    of (all, without it); nothing to do means DO NOTHING."""
    insert: Any = sqlite.insert(table) if dialect == "sqlite" else postgresql.insert(table)
    updates: dict[str, Any] = {name: insert.excluded[name] for name in replace}
    if set_ is not None:
        updates.update(set_)
    if not updates:
        return insert.on_conflict_do_nothing(index_elements=list(keys))
    return insert.on_conflict_do_update(index_elements=list(keys), set_=updates, where=where)


def greatest(dialect: str, a: Any, b: Any) -> Any:
    """The larger of two values (scalar `max` on SQLite, `GREATEST` on PostgreSQL)."""
    return sa.func.max(a, b) if dialect == "sqlite" else sa.func.greatest(a, b)


def least(dialect: str, a: Any, b: Any) -> Any:
    """The smaller of two values."""
    return sa.func.min(a, b) if dialect == "sqlite" else sa.func.least(a, b)


def _sqlite_engine(url: URL) -> Engine:
    database = url.database or ""
    in_memory = database in ("", ":memory:")
    if in_memory:
        engine = sa.create_engine(
            url, poolclass=StaticPool, connect_args={"check_same_thread": False}
        )
    else:
        path = Path(database)
        if not path.exists():
            with contextlib.suppress(FileExistsError):  # made meanwhile by another process
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        engine = sa.create_engine(
            url,
            poolclass=QueuePool,
            connect_args={"check_same_thread": False, "timeout": _BUSY_TIMEOUT_MS / 1000},
        )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # Transactions are begun explicitly (BEGIN / BEGIN IMMEDIATE in `ViewStore`).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            if not in_memory:
                _write_ahead_log(cursor)
                cursor.execute("PRAGMA synchronous = NORMAL")
                cursor.execute("PRAGMA wal_autocheckpoint = 0")  # `WalCheckpoints` does them
                # 32 MiB of page cache (SQLite defaults to 2): view rows land all over
                # their B-trees, keyed by person; a page fold then rarely rereads pages.
                cursor.execute("PRAGMA cache_size = -32768")
                cursor.execute(f"PRAGMA journal_size_limit = {_WAL_SIZE_LIMIT_BYTES}")
            cursor.execute("PRAGMA secure_delete = ON")
        finally:
            cursor.close()

    return engine

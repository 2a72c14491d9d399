"""The SQL key store (SQLAlchemy Core on SQLite or PostgreSQL) and the master key file.

``SqlKeyStore`` keeps the wrapped per-subject data keys and the keyed look-up hashes apart
from the events, in two tables. Registration is atomic (insert-or-ignore, then read back, in
one transaction), so concurrent registrations of one look-up agree on one subject. Shredding
deletes the key and every look-up of the subject in one transaction; on SQLite the file runs
with ``secure_delete`` and the WAL is checkpointed and truncated afterwards, so the destroyed
key's bytes do not linger on disk.

``load_or_create_master_key`` reads the ledger's master key from an owner-only file, making
one on first run; ``master_key_from_text`` reads one given in configuration.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import stat
from pathlib import Path
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.pool import ConnectionPoolEntry, QueuePool

from ledger.clock import Clock, SystemClock
from ledger.connections import PG_CONNECT_TIMEOUT_SECONDS, PG_CONNECTION_PARAMETERS
from ledger.errors import ConfigurationError
from ledger.sealing import MasterKey

__all__ = ["SqlKeyStore", "load_or_create_master_key", "master_key_from_text"]

_log = logging.getLogger(__name__)

_LOOKUP_BYTES = 32
_MASTER_KEY_BYTES = 32
_BUSY_TIMEOUT_MS = 30_000
_WRITE_OPTION = "pdl_keystore_write"
_CHECKPOINT_WAIT_MS = 200
_SUPPORTED_DIALECTS = ("sqlite", "postgresql")


class SqlKeyStore:
    """A ``ledger.sealing.KeyStore`` on SQLAlchemy Core: a SQLite file or PostgreSQL.

    ``url`` is a SQLAlchemy URL (``sqlite:///path/keys.db`` or
    ``postgresql+psycopg://user@host:5432/db``). ``schema`` (PostgreSQL; it must exist) and
    ``prefix`` (prepended to both table names) let several stores share one database.
    Tables are created if missing. Raises ``ConfigurationError`` when the database cannot
    be opened.
    """

    def __init__(
        self,
        url: str | URL,
        *,
        schema: str | None = None,
        prefix: str = "",
        clock: Clock | None = None,
    ) -> None:
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._wal_unclean = False
        """A shred's checkpoint was blocked: the WAL may still hold the destroyed key."""
        parsed = _parse_url(url)
        self._shown_url = parsed.render_as_string(hide_password=True)
        self._dialect = parsed.get_backend_name()
        if self._dialect not in _SUPPORTED_DIALECTS:
            msg = f"key store {self._shown_url}: unsupported database {self._dialect!r}"
            raise ConfigurationError(msg)
        if self._dialect == "sqlite":
            if schema is not None:
                msg = f"key store {self._shown_url}: a schema is for PostgreSQL only"
                raise ConfigurationError(msg)
            self._engine = _sqlite_engine(parsed, self._shown_url)
        else:
            self._engine = _create_engine(
                parsed,
                self._shown_url,
                pool_pre_ping=True,
                pool_timeout=PG_CONNECT_TIMEOUT_SECONDS,
                connect_args=dict(PG_CONNECTION_PARAMETERS),
            )
        self._writer = self._engine.execution_options(**{_WRITE_OPTION: True})

        metadata = sa.MetaData(schema=schema)
        self._keys = sa.Table(
            f"{prefix}subject_keys",
            metadata,
            sa.Column("subject_id", sa.Uuid(), primary_key=True),
            sa.Column("wrapped_key", sa.LargeBinary(), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        )
        self._lookups = sa.Table(
            f"{prefix}subject_lookups",
            metadata,
            sa.Column("lookup", sa.LargeBinary(_LOOKUP_BYTES), primary_key=True),
            sa.Column("subject_id", sa.Uuid(), nullable=False, index=True),
            sa.CheckConstraint(
                f"length(lookup) = {_LOOKUP_BYTES}", name=f"ck_{prefix}subject_lookups_length"
            ),
        )
        self._check = sa.Table(
            f"{prefix}master_key_check",
            metadata,
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("check_value", sa.LargeBinary(), nullable=False),
        )
        """One row: `MasterKey.check_value` of the key the store's data is sealed under."""
        self._create_tables(metadata)

    def key_check(self) -> bytes | None:
        """The check value of the master key this store was first opened with, if recorded."""
        with self._engine.connect() as conn:
            found: bytes | None = conn.execute(
                sa.select(self._check.c.check_value).where(self._check.c.id == 1)
            ).scalar_one_or_none()
            return found

    def record_key_check(self, value: bytes) -> bytes:
        """Record the master key's check value unless one is; the one recorded."""
        with self._writer.begin() as conn:
            conn.execute(self._insert_ignoring(self._check, "id").values(id=1, check_value=value))
            recorded: bytes = conn.execute(
                sa.select(self._check.c.check_value).where(self._check.c.id == 1)
            ).scalar_one()
            return recorded

    def any_wrapped_key(self) -> bytes | None:
        """Some subject's wrapped data key (None when there is none), to try a key on."""
        with self._engine.connect() as conn:
            key: bytes | None = conn.execute(
                sa.select(self._keys.c.wrapped_key).limit(1)
            ).scalar_one_or_none()
            return key

    def holds_data(self) -> bool:
        """Whether anything here was made under a master key: a check value, a key, a look-up."""
        with self._engine.connect() as conn:
            return any(
                conn.execute(sa.select(table.c[0]).limit(1)).first() is not None
                for table in (self._check, self._keys, self._lookups)
            )

    def register(self, lookup: bytes, subject_id: UUID, wrapped_key: bytes) -> UUID:
        """Store the look-up and key unless the look-up exists; return the subject it names.

        Atomic: concurrent calls with one look-up all return the winner's subject, and only
        the winner's key is stored. A subject that already has a key keeps it.
        """
        _check_lookup(lookup)
        with self._writer.begin() as conn:
            inserted = conn.execute(
                self._insert_ignoring(self._lookups, "lookup")
                .values(lookup=lookup, subject_id=subject_id)
                .returning(self._lookups.c.subject_id)
            ).scalar_one_or_none()
            if inserted is not None:
                conn.execute(
                    self._insert_ignoring(self._keys, "subject_id").values(
                        subject_id=subject_id,
                        wrapped_key=wrapped_key,
                        created_at=self._clock.now(),
                    )
                )
            else:
                existing: UUID = conn.execute(
                    sa.select(self._lookups.c.subject_id).where(self._lookups.c.lookup == lookup)
                ).scalar_one()
        if self._wal_unclean:
            self._checkpoint()
        return subject_id if inserted is not None else existing

    def find(self, lookup: bytes) -> UUID | None:
        """The subject a look-up hash names, if any."""
        with self._engine.connect() as conn:
            found: UUID | None = conn.execute(
                sa.select(self._lookups.c.subject_id).where(self._lookups.c.lookup == lookup)
            ).scalar_one_or_none()
            return found

    def wrapped_key(self, subject_id: UUID) -> bytes | None:
        """The subject's wrapped data key, or None once shredded (or never made)."""
        with self._engine.connect() as conn:
            key: bytes | None = conn.execute(
                sa.select(self._keys.c.wrapped_key).where(self._keys.c.subject_id == subject_id)
            ).scalar_one_or_none()
            return None if key is None else bytes(key)

    def shred(self, subject_id: UUID) -> bool:
        """Destroy the subject's key and look-ups in one transaction; True if any existed."""
        with self._writer.begin() as conn:
            # RETURNING rather than rowcount: not every driver reports rowcount reliably.
            keys = conn.execute(
                sa.delete(self._keys)
                .where(self._keys.c.subject_id == subject_id)
                .returning(self._keys.c.subject_id)
            ).all()
            lookups = conn.execute(
                sa.delete(self._lookups)
                .where(self._lookups.c.subject_id == subject_id)
                .returning(self._lookups.c.subject_id)
            ).all()
        if self._dialect == "sqlite" and (keys or lookups or self._wal_unclean):
            self._checkpoint()
        return bool(keys or lookups)

    def close(self) -> None:
        """Release connections (the last one to close checkpoints the WAL)."""
        if self._wal_unclean:
            self._checkpoint()
        self._engine.dispose()

    def __enter__(self) -> SqlKeyStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SqlKeyStore({self._shown_url!r})"

    def _insert_ignoring(
        self, table: sa.Table, key_column: str
    ) -> sqlite.Insert | postgresql.Insert:
        if self._dialect == "sqlite":
            return sqlite.insert(table).on_conflict_do_nothing(index_elements=[key_column])
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=[key_column])

    def _create_tables(self, metadata: sa.MetaData) -> None:
        # Two processes starting together may both see the tables missing; on PostgreSQL the
        # loser's CREATE then fails on the catalogue, and a second look finds them there.
        for attempt in (1, 2):
            try:
                metadata.create_all(self._writer)
            except DBAPIError as exc:
                if attempt == 2 or isinstance(exc, sa.exc.OperationalError):
                    self._engine.dispose()
                    raise ConfigurationError(_open_failure(self._shown_url, exc)) from None
            except SQLAlchemyError as exc:
                self._engine.dispose()
                raise ConfigurationError(_open_failure(self._shown_url, exc)) from None
            else:
                return

    def _checkpoint(self) -> None:
        """Copy the WAL into the file and truncate it, so deleted bytes leave the WAL."""
        raw = self._engine.raw_connection()
        try:
            cursor = raw.cursor()
            try:
                # a reader that holds the WAL is waited for briefly, not for the busy timeout:
                # the writer must not stall on it, and the checkpoint is tried again later
                cursor.execute(f"PRAGMA busy_timeout = {_CHECKPOINT_WAIT_MS}")
                try:
                    cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                    row = cursor.fetchone()
                finally:
                    cursor.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            finally:
                cursor.close()
        finally:
            raw.close()
        blocked = row is not None and bool(row[0])
        if blocked and not self._wal_unclean:
            _log.warning(
                "key store WAL checkpoint was blocked by readers; it is tried again with the "
                "next write of the key store"
            )
        self._wal_unclean = blocked


def _parse_url(url: str | URL) -> URL:
    try:
        return sa.make_url(url)
    except ArgumentError:
        raise ConfigurationError("key store URL is not a valid database URL") from None


def _create_engine(url: URL, shown: str, **kwargs: Any) -> Engine:
    try:
        return sa.create_engine(url, **kwargs)
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        msg = f"cannot open key store {shown}: {_first_line(str(exc))}"
        raise ConfigurationError(msg) from None


def _sqlite_engine(url: URL, shown: str) -> Engine:
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file::memory:"):
        msg = f"key store {shown}: an in-memory SQLite key store is not shared; use a file"
        raise ConfigurationError(msg)
    if not url.query.get("uri"):
        _precreate_private_file(Path(database), shown)
    engine = _create_engine(
        url,
        shown,
        poolclass=QueuePool,
        connect_args={"check_same_thread": False, "timeout": _BUSY_TIMEOUT_MS / 1000},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # Take transactions out of the driver's hands: BEGIN is issued below, at the start
        # of every SQLAlchemy transaction, so reads are consistent and writes lock early.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = FULL")
            cursor.execute("PRAGMA secure_delete = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # A writer takes the write lock at BEGIN (waiting out the busy timeout), so it never
        # has to upgrade a read snapshot that another writer made stale.
        immediate = conn.get_execution_options().get(_WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _precreate_private_file(path: Path, shown: str) -> None:
    """Create an empty database file readable by the owner only (SQLite's WAL inherits it)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        msg = f"cannot open key store {shown}: {exc.strerror or type(exc).__name__}"
        raise ConfigurationError(msg) from None
    os.close(fd)


def _check_lookup(lookup: bytes) -> None:
    if len(lookup) != _LOOKUP_BYTES:
        msg = f"a look-up hash is {_LOOKUP_BYTES} bytes, got {len(lookup)}"
        raise ValueError(msg)


def _open_failure(shown: str, exc: SQLAlchemyError) -> str:
    reason = exc.orig if isinstance(exc, DBAPIError) else exc
    text = _first_line(str(reason)) or type(reason).__name__
    return f"cannot open key store {shown}: {text}"


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0].strip() if text.strip() else ""


def load_or_create_master_key(path: Path) -> MasterKey:
    """Read the master key (base64 of 32 bytes) from ``path``, creating it on first run.

    A new key is random, written atomically to an owner-only file (0o600) in a directory
    made owner-only (0o700) if missing. An existing file must be owner-only and well formed,
    or ``ConfigurationError`` says what to fix.
    """
    try:
        return _read_master_key(path)
    except FileNotFoundError:
        pass
    _create_master_key_file(path)
    return _read_master_key(path)


def master_key_from_text(text: str) -> MasterKey:
    """A master key given in configuration as base64 text of 32 bytes."""
    secret = _decode_key(text)
    if secret is None:
        msg = f"the configured master key is not base64 text of {_MASTER_KEY_BYTES} bytes"
        raise ConfigurationError(msg)
    return MasterKey(secret)


def _read_master_key(path: Path) -> MasterKey:
    """Raises FileNotFoundError when there is no file, ConfigurationError when it is unusable."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise
    except OSError as exc:
        msg = f"cannot read master key file {path}: {exc.strerror or type(exc).__name__}"
        raise ConfigurationError(msg) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            msg = f"master key file {path} is not a regular file"
            raise ConfigurationError(msg)
        if os.name == "posix" and info.st_mode & 0o077:
            msg = (
                f"master key file {path} is accessible by group or others "
                f"(mode {stat.S_IMODE(info.st_mode):03o}); run: chmod 600 {path}"
            )
            raise ConfigurationError(msg)
        content = os.read(fd, 1024)
    finally:
        os.close(fd)
    try:
        text = content.decode("ascii")
    except UnicodeDecodeError:
        text = ""
    secret = _decode_key(text)
    if secret is None:
        msg = f"master key file {path} does not hold base64 text of {_MASTER_KEY_BYTES} bytes"
        raise ConfigurationError(msg)
    return MasterKey(secret)


def _decode_key(text: str) -> bytes | None:
    cleaned = text.strip().replace("-", "+").replace("_", "/")
    try:
        secret = base64.b64decode(cleaned, validate=True)
    except (binascii.Error, ValueError):
        return None
    return secret if len(secret) == _MASTER_KEY_BYTES else None


def _create_master_key_file(path: Path) -> None:
    """Write a fresh key beside ``path`` and link it into place; a concurrent winner stays."""
    directory = path.parent
    try:
        if not directory.exists():
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        text = base64.b64encode(os.urandom(_MASTER_KEY_BYTES)) + b"\n"
        temporary = directory / f".{path.name}.{os.getpid()}.{os.urandom(6).hex()}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            try:
                os.write(fd, text)
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(temporary, path)
            except FileExistsError:
                return
            _fsync_directory(directory)
        finally:
            temporary.unlink(missing_ok=True)
    except OSError as exc:
        msg = f"cannot create master key file {path}: {exc.strerror or type(exc).__name__}"
        raise ConfigurationError(msg) from None


def _fsync_directory(directory: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

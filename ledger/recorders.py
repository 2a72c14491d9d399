"""Application recorders of the event store, extended with what the ledger needs of them.

Each back-end's recorder keeps the idempotency receipts in a narrow table of its own, written
in the same transaction as the events they answer for (a duplicate key fails the whole write),
and with the log position of the answering event filled in. The SQLite recorder also learns
to follow the log by polling: `eventsourcing` 9.5.6 gives SQLite no subscription of its own.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol, cast
from uuid import UUID

from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    IntegrityError,
    ListenNotifySubscription,
    StoredEvent,
    Subscription,
)
from eventsourcing.popo import POPOApplicationRecorder, POPOFactory
from eventsourcing.postgres import PostgresAggregateRecorder, PostgresApplicationRecorder
from eventsourcing.sqlite import (
    SQLiteAggregateRecorder,
    SQLiteApplicationRecorder,
    SQLiteConnection,
    SQLiteCursor,
    SQLiteTransaction,
)
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier, Literal

from ledger.connections import PG_CONNECTION_PARAMETERS, connect_sqlite
from ledger.deferred_commits import DeferredCommits
from ledger.receipts import FORGOTTEN, Receipt
from ledger.sqlite_wal import WalCheckpoints

_CACHE_KIB = 64 * 1024
"""Page cache per event-store connection on SQLite (its default, 2 MiB, holds a small part
of the B-trees a write touches: each person's events and the receipts land all over them)."""
_WAL_SIZE_LIMIT_BYTES = 64 * 1024 * 1024
"""When the event store's write-ahead log starts again, a file larger than this is truncated
back to it (SQLite otherwise keeps the longest the log has been, on disk for good: a large
batch or a checkpoint held back by a long read would leave hundreds of MB)."""

_ANSWERED_BY_ANOTHER = "aggregate_id <> subject_id"
"""Receipts about a person answered by another aggregate than theirs: their rights requests'
(a partial index keeps them, so an erasure finds them without reading every receipt)."""

_CHECKPOINT_EVERY_ROWS = 4_000
"""Rows (events and receipts) written between the event store's checkpoints: about 5,000
log frames, 20 MB. A checkpoint copies each page once however often it was written since the
last, and people's events and receipts come back to the same pages: on the gRPC bench's
batches (1,000 people) a checkpoint every 4,000 rows copied a third of the pages one every
500 rows did, for the same log written (counted with strace; `bench/README.md`)."""


class _MostRecentFirst(deque[Any]):
    """The idle connections of a SQLite pool, handed out most recently returned first.

    The library's pool hands out the one idle longest (`popleft`), so once it holds two, a
    writer alternates between them. A connection discards its whole page cache when it finds
    that another one has written since its last transaction, so every write then read its
    B-tree pages again from the files: on the gRPC bench's batches the writer's thread made
    about two `pread`s of 4 KiB for each event it wrote, all of them pages it had just written
    on the other connection (counted with strace). Taking the most recent first keeps reusing
    one connection, whose cache stays valid; the others serve only when two are in use at once.
    """

    def popleft(self) -> Any:
        return self.pop()


RECEIPTS = "receipts"
"""The keyword under which the application hands receipts to `insert_events`."""

SNAPSHOTS = "snapshots"
"""The keyword under which the application hands `insert_events` the snapshots due in a write
(`SnapshotRows`), to be stored in the same transaction as its events."""


class SnapshotRows(NamedTuple):
    """Snapshots of aggregates as a write leaves them, already encoded, and the snapshot
    store's recorder, whose table they go into (in the same database as the events)."""

    recorder: AggregateRecorder
    stored: Sequence[StoredEvent]


class KeepsReceipts(Protocol):
    """A recorder that stores idempotency receipts with the events."""

    def receipt(self, receipt_id: str) -> Receipt | None: ...

    def forget_digests(self, subject_id: UUID, receipt_ids: Sequence[str]) -> None:
        """Blank, in one transaction, the digests (`receipts.FORGOTTEN`) of these receipts and
        of every receipt about the person answered by another aggregate than theirs (their
        rights requests' commands: few, and an index of their own finds them). The person
        was erased, and a digest of their values must not outlive their key."""


def _positioned(
    receipts: Sequence[Receipt], stored: Sequence[StoredEvent], ids: Sequence[int] | None
) -> Sequence[Receipt]:
    """Fill in each receipt's log position: that of its answering event in this write."""
    if not receipts:
        return receipts
    if ids is None:
        msg = "the recorder returned no notification ids"
        raise IntegrityError(msg)
    where = {(s.originator_id, s.originator_version): n for s, n in zip(stored, ids, strict=True)}
    for r in receipts:
        position = where.get((r.aggregate_id, r.version))
        if position is None:
            msg = "a receipt's answering event is not in the same write"
            raise IntegrityError(msg)
        r.position = position
    return receipts


def _row(r: Receipt) -> tuple[str, str, str, int, str | None, str, int]:
    return (
        r.receipt_id,
        r.digest,
        r.aggregate_id.hex,
        r.version,
        None if r.subject_id is None else r.subject_id.hex,
        r.event_type,
        r.position,
    )


def _from_row(row: Sequence[Any]) -> Receipt:
    return Receipt(
        str(row[0]),
        str(row[1]),
        UUID(str(row[2])),
        int(row[3]),
        None if row[4] is None else UUID(str(row[4])),
        str(row[5]),
        int(row[6]),
    )


def _commit_held(held: tuple[SQLiteConnection, SQLiteTransaction]) -> None:
    """Commit a held transaction (errors as the library names them); roll back if it fails."""
    conn, transaction = held
    try:
        transaction.__exit__(None, None, None)
    except BaseException:
        with contextlib.suppress(Exception):
            conn.rollback()
        raise


class LedgerPOPORecorder(POPOApplicationRecorder):
    """The in-memory recorder, keeping receipts."""

    def __init__(self) -> None:
        super().__init__()
        self._receipts: dict[str, Receipt] = {}

    def _assert_uniqueness(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> None:
        super()._assert_uniqueness(stored_events, **kwargs)
        receipts: Sequence[Receipt] = kwargs.get(RECEIPTS, ())
        ids = {r.receipt_id for r in receipts}
        if len(ids) < len(receipts) or any(i in self._receipts for i in ids):
            msg = "idempotency receipt already recorded"
            raise IntegrityError(msg)

    def _update_table(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        ids = super()._update_table(stored_events, **kwargs)
        for r in _positioned(kwargs.get(RECEIPTS, ()), stored_events, ids):
            self._receipts[r.receipt_id] = r
        snapshots: SnapshotRows | None = kwargs.get(SNAPSHOTS)
        if snapshots is not None:
            snapshots.recorder.insert_events(snapshots.stored)
        return ids

    def receipt(self, receipt_id: str) -> Receipt | None:
        with self._database_lock:
            return self._receipts.get(receipt_id)

    def forget_digests(self, subject_id: UUID, receipt_ids: Sequence[str]) -> None:
        ids = set(receipt_ids)
        with self._database_lock:
            for i, kept in self._receipts.items():
                if i in ids or (kept.subject_id == subject_id and kept.aggregate_id != subject_id):
                    kept.digest = FORGOTTEN


class LedgerPOPOFactory(POPOFactory):
    """The in-memory back-end, with the receipt-keeping recorder."""

    def application_recorder(self) -> ApplicationRecorder:
        return LedgerPOPORecorder()


class LedgerSQLiteRecorder(SQLiteApplicationRecorder):
    """The SQLite recorder, keeping receipts and able to be followed by polling.

    Its writes leave the write-ahead log's checkpoints to a thread of their own (`WalCheckpoints`):
    SQLite would otherwise run each one inside the commit that crosses its threshold, and
    that commit, with every call waiting on it, would wait for the copy and two more fsyncs.
    """

    poll_interval = 0.05

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.receipts_table_name = f"{self.events_table_name}_receipts"
        pool = self.datastore.pool
        self._checkpoints = (
            None
            if pool.is_sqlite_memory_mode
            else WalCheckpoints(
                pool.db_name, name="pdl-events-checkpoint", every_rows=_CHECKPOINT_EVERY_ROWS
            )
        )
        if self._checkpoints is not None:

            def configured() -> SQLiteConnection:
                """A new connection of the pool, set up for this store."""
                conn = connect_sqlite(pool)
                raw = conn._sqlite_conn
                raw.execute("PRAGMA wal_autocheckpoint = 0")  # `WalCheckpoints` does them
                raw.execute(f"PRAGMA cache_size = -{_CACHE_KIB}")
                raw.execute(f"PRAGMA journal_size_limit = {_WAL_SIZE_LIMIT_BYTES}")
                return conn

            pool._create_connection = configured  # type: ignore[method-assign]
            pool._pool = _MostRecentFirst(pool._pool)

        self.deferred: DeferredCommits | None = None

    def stop_checkpoints(self) -> None:
        """Checkpoint what is left, then stop the checkpoint thread (the ledger closes)."""
        if self.deferred is not None:
            self.deferred.close()
        if self._checkpoints is not None:
            self._checkpoints.stop()

    # --- deferred commits (the server's writer process) -------------------------------------

    def defer_commits(self, on_failure: Callable[[], None]) -> DeferredCommits | None:
        """From now on, while `armed`, a write leaves its transaction open for the returned
        `DeferredCommits` to commit beside the next one's work (one writer only). None for an
        in-memory database, whose one connection its readers share."""
        if self._checkpoints is None:
            return None
        self.deferred = DeferredCommits(_commit_held, self._release_held, on_failure=on_failure)
        return self.deferred

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        deferred = self.deferred
        if deferred is not None:
            deferred.settle()  # the commit in flight first; raises (a retry) if it failed
        checkpoints = self._checkpoints
        if checkpoints is not None and checkpoints.catch_up_due:
            self._catch_up(checkpoints)
        if deferred is None or not deferred.armed:
            return super().insert_events(stored_events, **kwargs)
        pool = self.datastore.pool
        conn = pool.get_connection(is_writer=True)
        transaction = SQLiteTransaction(conn, commit=True)
        try:
            cursor = transaction.__enter__()  # BEGIN
            try:
                ids = self._insert_events(cursor, stored_events, **kwargs)
            finally:
                cursor.sqlite_cursor.close()
        except BaseException as exc:
            try:
                transaction.__exit__(type(exc), exc, exc.__traceback__)  # rolls back, re-raises
            finally:
                pool.put_connection(conn)
            raise
        deferred.hold((conn, transaction))
        return ids

    def _catch_up(self, checkpoints: WalCheckpoints) -> None:
        """Let the log start again (`WalCheckpoints.catch_up`), on the writing connection."""
        pool = self.datastore.pool
        conn = pool.get_connection(is_writer=True)
        try:
            checkpoints.catch_up(conn._sqlite_conn)
        finally:
            pool.put_connection(conn)

    def _release_held(self, held: tuple[SQLiteConnection, SQLiteTransaction]) -> None:
        self.datastore.pool.put_connection(held[0])

    def select_events(self, *args: Any, **kwargs: Any) -> Any:
        if self.deferred is not None:
            self.deferred.wait()  # what the commit in flight wrote is part of the answer
        return super().select_events(*args, **kwargs)

    def select_notifications(self, *args: Any, **kwargs: Any) -> Any:
        if self.deferred is not None:
            self.deferred.wait()
        return super().select_notifications(*args, **kwargs)

    def max_notification_id(self) -> int:
        if self.deferred is not None:
            self.deferred.wait()
        return super().max_notification_id()

    def construct_create_table_statements(self) -> list[str]:
        table = f"{getattr(self, 'events_table_name', 'stored_events')}_receipts"
        return [
            *super().construct_create_table_statements(),
            f"CREATE TABLE IF NOT EXISTS {table} ("
            "receipt_id TEXT PRIMARY KEY, digest TEXT NOT NULL, aggregate_id TEXT NOT NULL, "
            "version INTEGER NOT NULL, subject_id TEXT, event_type TEXT NOT NULL, "
            "position INTEGER NOT NULL) WITHOUT ROWID",
            f"CREATE INDEX IF NOT EXISTS {table}_requests ON {table} (subject_id) "
            f"WHERE {_ANSWERED_BY_ANOTHER}",
        ]

    def _insert_events(
        self, c: SQLiteCursor, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        ids = super()._insert_events(c, stored_events, **kwargs)
        receipts = _positioned(kwargs.get(RECEIPTS, ()), stored_events, ids)
        if receipts:
            c.executemany(
                f"INSERT INTO {self.receipts_table_name} VALUES (?,?,?,?,?,?,?)",  # noqa: S608
                [_row(r) for r in receipts],
            )
        snapshots: SnapshotRows | None = kwargs.get(SNAPSHOTS)
        snapshot_rows = snapshots.stored if snapshots is not None else ()
        if snapshots is not None:
            snapshot_recorder = cast("SQLiteAggregateRecorder", snapshots.recorder)
            snapshot_recorder._insert_events(c, snapshot_rows)
        if self._checkpoints is not None:
            self._checkpoints.wrote(len(stored_events) + len(receipts) + len(snapshot_rows))
        return ids

    def receipt(self, receipt_id: str) -> Receipt | None:
        if self.deferred is not None:
            self.deferred.wait()
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                f"SELECT * FROM {self.receipts_table_name} WHERE receipt_id=?",  # noqa: S608
                (receipt_id,),
            )
            row = c.fetchone()
        return None if row is None else _from_row(tuple(row))

    def forget_digests(self, subject_id: UUID, receipt_ids: Sequence[str]) -> None:
        if self.deferred is not None:
            self.deferred.wait()
        table = self.receipts_table_name
        with self.datastore.transaction(commit=True) as c:
            c.executemany(
                f"UPDATE {table} SET digest=? WHERE receipt_id=?",  # noqa: S608
                [(FORGOTTEN, i) for i in receipt_ids],
            )
            c.execute(
                f"UPDATE {table} SET digest=? WHERE subject_id=? AND {_ANSWERED_BY_ANOTHER}",  # noqa: S608
                (FORGOTTEN, subject_id.hex),
            )

    def subscribe(
        self, gt: int | None = None, topics: Sequence[str] = ()
    ) -> Subscription[ApplicationRecorder]:
        return _PollingSubscription(self, gt=gt, topics=topics, interval=self.poll_interval)


class _PollingSubscription(ListenNotifySubscription[ApplicationRecorder]):
    """Wakes the base subscription at a fixed interval instead of on NOTIFY."""

    def __init__(
        self,
        recorder: ApplicationRecorder,
        gt: int | None,
        topics: Sequence[str],
        interval: float,
    ) -> None:
        super().__init__(recorder=recorder, gt=gt, topics=topics)
        self._interval = interval
        self._ticker = threading.Thread(target=self._tick, name="pdl-poll", daemon=True)
        self._ticker.start()

    def _tick(self) -> None:
        while not self._has_been_stopped:
            self._has_been_notified.set()
            threading.Event().wait(self._interval)


class LedgerPostgresRecorder(PostgresApplicationRecorder):
    """The PostgreSQL recorder, keeping receipts. Its connections time out and keep alive
    (`PG_CONNECTION_PARAMETERS`): the library's have neither."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        pool_kwargs = self.datastore.pool.kwargs
        if isinstance(pool_kwargs, dict):  # the pool opens on first use, after this
            pool_kwargs.update(PG_CONNECTION_PARAMETERS)
        table = Identifier(f"{self.events_table_name}_receipts")
        schema = Identifier(self.datastore.schema)
        self.sql_create_statements.append(
            SQL(
                "CREATE TABLE IF NOT EXISTS {schema}.{table} ("
                "receipt_id text PRIMARY KEY, digest text NOT NULL, aggregate_id uuid NOT NULL, "
                "version bigint NOT NULL, subject_id uuid, event_type text NOT NULL, "
                "position bigint NOT NULL)"
            ).format(schema=schema, table=table)
        )
        self.sql_create_statements.append(
            SQL(
                "CREATE INDEX IF NOT EXISTS {index} ON {schema}.{table} (subject_id) WHERE "
                + _ANSWERED_BY_ANOTHER
            ).format(
                index=Identifier(f"{self.events_table_name}_receipts_requests"),
                schema=schema,
                table=table,
            )
        )
        self._forget_request_digests = SQL(
            "UPDATE {schema}.{table} SET digest=%s WHERE subject_id=%s AND "  # noqa: S608 (a constant)
            + _ANSWERED_BY_ANOTHER
        ).format(schema=schema, table=table)
        self._insert_receipts = SQL(
            "INSERT INTO {schema}.{table} VALUES (%s,%s,%s,%s,%s,%s,%s)"
        ).format(schema=schema, table=table)
        self._select_receipt = SQL("SELECT * FROM {schema}.{table} WHERE receipt_id=%s").format(
            schema=schema, table=table
        )
        self._forget_digest = SQL(
            "UPDATE {schema}.{table} SET digest=%s WHERE receipt_id=%s"
        ).format(schema=schema, table=table)

    def _create_table(self, curs: Cursor[DictRow]) -> None:
        """Create the tables, functions and triggers one process at a time: the library's
        `CREATE OR REPLACE FUNCTION` (and trigger) statements fail with "tuple concurrently
        updated" when two processes run them at once, as the server's writer and its
        projection process do when they open the ledger side by side."""
        curs.execute(
            SQL("SELECT pg_advisory_xact_lock(hashtext({key}))").format(
                key=Literal(f"pdl-create:{self.datastore.schema}")
            ),
            prepare=False,
        )
        super()._create_table(curs)

    def _fetch_ids_after_insert_events(
        self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        ids = super()._fetch_ids_after_insert_events(curs, stored_events, **kwargs)
        receipts = _positioned(kwargs.get(RECEIPTS, ()), stored_events, ids)
        snapshots: SnapshotRows | None = kwargs.get(SNAPSHOTS)
        if receipts or snapshots is not None:
            with curs.connection.pipeline() as pipeline:
                if receipts:
                    curs.executemany(self._insert_receipts, [_row(r) for r in receipts])
                if snapshots is not None:
                    snapshot_recorder = cast("PostgresAggregateRecorder", snapshots.recorder)
                    snapshot_recorder._insert_stored_events(curs, snapshots.stored)
                pipeline.sync()
        return ids

    def forget_digests(self, subject_id: UUID, receipt_ids: Sequence[str]) -> None:
        with self.datastore.transaction(commit=True) as curs:
            if receipt_ids:
                curs.executemany(self._forget_digest, [(FORGOTTEN, i) for i in receipt_ids])
            curs.execute(self._forget_request_digests, (FORGOTTEN, subject_id))

    def receipt(self, receipt_id: str) -> Receipt | None:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._select_receipt, (receipt_id,))
            row = curs.fetchone()
        if row is None:
            return None
        return _from_row(
            [
                row[k]
                for k in (
                    "receipt_id",
                    "digest",
                    "aggregate_id",
                    "version",
                    "subject_id",
                    "event_type",
                    "position",
                )
            ]
        )

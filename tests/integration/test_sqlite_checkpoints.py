"""The SQLite event store and views database checkpoint their write-ahead logs from a thread
of their own: the writers' automatic checkpoints are off, the thread copies the log into the
database once enough rows have been written, and everything committed stays readable (by
another ledger on the same file)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from scenario import PRINCIPAL, START, collection, sqlite_ledger, subject

from ledger import recorders
from ledger.application import Ledger
from ledger.recorders import LedgerSQLiteRecorder
from ledger.sealing import MasterKey
from ledger.sqlite_wal import WalCheckpoints
from projections.store import ViewStore


def _ledger(tmp_path: Path, master: MasterKey) -> Ledger:
    return sqlite_ledger(tmp_path, master)


def _count_in_database_file(path: Path, table: str) -> int:
    """Rows readable from the main file alone: the log is copied aside and left out."""
    copy = path.with_name("copy.db")
    copy.write_bytes(path.read_bytes())
    with sqlite3.connect(copy) as conn:
        try:
            return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # noqa: S608
        except sqlite3.OperationalError:  # the table itself is not copied yet
            return 0


def _copied_by_the_thread(checkpoints: WalCheckpoints, path: Path, table: str) -> int:
    """Wait (bounded) until a checkpoint of the thread has copied the whole log, then count what
    the main file holds. The thread runs beside the writes, and a PASSIVE checkpoint copies only
    what no reader still needs, so a first one may copy part of the log; the thread is woken
    again the way a store wakes it, by rows written."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        seen = checkpoints.checkpoints
        result = checkpoints.last_result
        if seen and result is not None and result[0] == 0 and result[1] == result[2]:
            return _count_in_database_file(path, table)
        checkpoints.wrote(checkpoints.every_rows)
        while checkpoints.checkpoints == seen and time.monotonic() < deadline:
            time.sleep(0.01)
    return _count_in_database_file(path, table)


def _checkpointed_ledger(tmp_path: Path, master: MasterKey) -> tuple[Ledger, WalCheckpoints]:
    """A SQLite ledger whose checkpoint thread is woken every 100 rows (small, so a test's
    writes cross it many times)."""
    ledger = _ledger(tmp_path, master)
    recorder = ledger.recorder
    assert isinstance(recorder, LedgerSQLiteRecorder)
    checkpoints = recorder._checkpoints
    assert isinstance(checkpoints, WalCheckpoints)
    checkpoints.every_rows = 100
    return ledger, checkpoints


def _checkpointed_views(tmp_path: Path) -> tuple[ViewStore, WalCheckpoints]:
    """A SQLite views database whose checkpoint thread is woken every 100 rows."""
    store = ViewStore(f"sqlite:///{tmp_path / 'views.db'}")
    checkpoints = store._checkpoints
    assert isinstance(checkpoints, WalCheckpoints)
    checkpoints.every_rows = 100
    return store, checkpoints


def _plain_writer(path: Path) -> sqlite3.Connection:
    """A writing connection on a plain database in WAL mode, its own checkpoints off."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.execute("CREATE TABLE t (n INTEGER)")
    return conn


def _log_restarts(log: Path) -> int:
    """How many times a write-ahead log was started again: its header's checkpoint sequence
    number (bytes 12-15, big-endian), which each restart increments."""
    with log.open("rb") as f:
        return int.from_bytes(f.read(16)[12:16], "big")


def test_the_log_is_checkpointed_by_the_thread_and_nothing_committed_is_lost(
    tmp_path: Path,
) -> None:
    master = MasterKey.generate()
    ledger, checkpoints = _checkpointed_ledger(tmp_path, master)
    recorder = ledger.recorder
    sid = subject(ledger)
    for n in range(30):
        ledger.execute_batch(
            PRINCIPAL, [collection(sid, at=START) for _ in range(20)], all_or_nothing=True
        )
        if n == 0:
            with recorder.datastore.transaction(commit=False) as c:
                c.execute("PRAGMA wal_autocheckpoint")
                assert c.fetchone()[0] == 0  # the writer's own checkpoints are off
    total = ledger.recorder.max_notification_id()
    # only the thread copies there
    in_file = _copied_by_the_thread(checkpoints, tmp_path / "events.db", "stored_events")
    ledger.close()  # stops the thread after a last checkpoint

    assert checkpoints.checkpoints >= 1
    assert 0 < in_file <= total  # what was committed before the thread's last whole copy
    reopened = _ledger(tmp_path, master)
    try:
        assert len(reopened.history(sid)) == 1 + 30 * 20
    finally:
        reopened.close()


def test_the_views_database_is_checkpointed_by_the_thread_counting_rows_written(
    tmp_path: Path,
) -> None:
    store, checkpoints = _checkpointed_views(tmp_path)
    with store.write() as conn:
        conn.exec_driver_sql("CREATE TABLE scratch (n INTEGER)")
    for start in range(0, 300, 30):
        with store.write() as conn:
            conn.exec_driver_sql(
                "INSERT INTO scratch VALUES (?)", [(n,) for n in range(start, start + 30)]
            )
    # only the thread copies the log into the main file
    in_file = _copied_by_the_thread(checkpoints, tmp_path / "views.db", "scratch")
    store.close()

    assert checkpoints.checkpoints >= 1  # besides the last one, at close
    assert 0 < in_file <= 300


def test_a_writer_that_never_pauses_still_starts_its_log_again(tmp_path: Path) -> None:
    """The thread's checkpoints run beside the writes, so each leaves the frames written
    meanwhile; the writer copies those itself before its next write, which then starts the
    log again from its beginning. Without that the log would hold every frame ever written,
    more than the database file itself."""
    master = MasterKey.generate()
    ledger, checkpoints = _checkpointed_ledger(tmp_path, master)
    people = [subject(ledger) for _ in range(50)]
    for n in range(200):
        ledger.execute_batch(
            PRINCIPAL, [collection(people[(n + k) % 50], at=START) for k in range(25)]
        )
    log = (tmp_path / "events.db-wal").stat().st_size
    database = (tmp_path / "events.db").stat().st_size
    restarts = _log_restarts(tmp_path / "events.db-wal")
    catch_ups = checkpoints.catch_ups
    ledger.close()

    assert catch_ups >= 1
    # 94-100 in 200 writes, with both cores busy too; 22-24 when only the thread's passes
    # happen to find the whole log copied
    assert restarts >= 40
    assert database > 2_000_000
    assert log < database  # the file keeps the longest the log has been
    reopened = _ledger(tmp_path, master)
    try:
        assert sum(len(reopened.history(p)) for p in people) == 50 + 200 * 25
    finally:
        reopened.close()


def test_the_views_log_starts_again_under_writes_that_never_pause(tmp_path: Path) -> None:
    store, checkpoints = _checkpointed_views(tmp_path)
    with store.write() as conn:
        conn.exec_driver_sql("CREATE TABLE scratch (n INTEGER PRIMARY KEY, pad BLOB)")
    for start in range(0, 20_000, 50):
        with store.write() as conn:
            conn.exec_driver_sql(
                "INSERT INTO scratch VALUES (?, randomblob(200))",
                [((n * 7919) % 20_000,) for n in range(start, start + 50)],
            )
    database = (tmp_path / "views.db").stat().st_size
    restarts = _log_restarts(tmp_path / "views.db-wal")
    catch_ups = checkpoints.catch_ups
    store.close()

    assert catch_ups >= 1  # (that the log then starts again, step by step: the test below)
    assert restarts >= 5
    assert database > 2_000_000


def test_the_thread_goes_on_checkpointing_for_a_writer_that_never_catches_up(
    tmp_path: Path,
) -> None:
    path = tmp_path / "plain.db"
    conn = _plain_writer(path)
    checkpoints = WalCheckpoints(str(path), name="test-checkpoint", every_rows=10)
    try:
        deadline = time.monotonic() + 30
        while checkpoints.checkpoints < 3 and time.monotonic() < deadline:
            conn.executemany("INSERT INTO t VALUES (?)", [(n,) for n in range(10)])
            checkpoints.wrote(10)
            time.sleep(0.005)
    finally:
        checkpoints.stop()
        conn.close()
    assert checkpoints.checkpoints >= 3
    assert checkpoints.catch_ups == 0


def test_the_writers_catch_up_lets_its_next_write_start_the_log_again(tmp_path: Path) -> None:
    """Step by step: a checkpoint (the thread's) copies the log, the writer commits more, and
    its next write does not start the log again; once it has caught up, the one after does."""
    path = tmp_path / "plain.db"
    writer = _plain_writer(path)
    thread = sqlite3.connect(path, isolation_level=None)
    checkpoints = WalCheckpoints(str(path), name="test-checkpoint")
    log = tmp_path / "plain.db-wal"
    try:
        writer.execute("INSERT INTO t VALUES (1)")
        assert thread.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[0] == 0
        writer.execute("INSERT INTO t VALUES (2)")  # written after that checkpoint began
        before = _log_restarts(log)
        writer.execute("INSERT INTO t VALUES (3)")
        assert _log_restarts(log) == before  # a frame not yet copied: the log goes on

        checkpoints.catch_up(writer)
        assert checkpoints.catch_ups == 0  # nothing due: the thread has not completed one
        checkpoints._caught_up = True  # as the thread's completed checkpoint leaves it
        checkpoints.catch_up(writer)
        assert checkpoints.catch_ups == 1
        assert not checkpoints.catch_up_due
        writer.execute("INSERT INTO t VALUES (4)")
        assert _log_restarts(log) == before + 1
        assert [r[0] for r in writer.execute("SELECT n FROM t ORDER BY n")] == [1, 2, 3, 4]
    finally:
        checkpoints.stop()
        thread.close()
        writer.close()


def test_the_event_stores_log_file_shrinks_back_when_the_log_starts_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large batch grows the log file to several times the limit; once the log has been
    copied and a later write starts it again, the file is cut back to the limit (SQLite would
    keep it at its peak). The limit is kept well above one small write's frames (about 64 of
    4 KiB), which the write that starts the log again adds from the file's start."""
    limit = 1024 * 1024
    monkeypatch.setattr(recorders, "_WAL_SIZE_LIMIT_BYTES", limit)
    master = MasterKey.generate()
    ledger, _checkpoints = _checkpointed_ledger(tmp_path, master)
    log = tmp_path / "events.db-wal"
    people = [subject(ledger) for _ in range(40)]
    ledger.execute_batch(PRINCIPAL, [collection(people[k % 40], at=START) for k in range(3000)])
    peak = log.stat().st_size
    restarts = _log_restarts(log)
    deadline = time.monotonic() + 30
    while _log_restarts(log) <= restarts + 1 and time.monotonic() < deadline:
        ledger.execute_batch(PRINCIPAL, [collection(p, at=START) for p in people[:20]])
    after, restarted = log.stat().st_size, _log_restarts(log) - restarts
    ledger.close()

    assert peak > 3 * limit
    assert restarted >= 2
    assert after <= limit

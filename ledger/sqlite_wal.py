"""Checkpoints of a SQLite database's write-ahead log, from a thread of their own.

SQLite checkpoints automatically inside the commit that crosses its threshold, and that commit
then waits for the copy and two more fsyncs, with everything queued behind it. The ledger's
SQLite stores (the event store, the views) turn the automatic checkpoints off on their writing
connections and tell a `WalCheckpoints` how many rows each transaction wrote.
"""

from __future__ import annotations

import logging
import sqlite3
import threading

_log = logging.getLogger(__name__)

_BUSY_RETRY_SECONDS = 0.05


class WalCheckpoints:
    """Runs a PASSIVE checkpoint once about `every_rows` rows have been written since the last.

    Each row dirties a page or so (the event store's rows: about 1.2 log frames each), so the
    default, 500 rows, is close to SQLite's own 1,000-page one; the event store takes more.
    A PASSIVE checkpoint never blocks a reader or a writer and copies only what is committed;
    its fsyncs release the interpreter lock, so writing goes on meanwhile. Durability does not
    depend on it: a committed transaction is in the log, which is part of the database until
    checkpointed. `journal_size_limit` (bytes), when given, is set on the checkpointing
    connection. The thread starts at the first threshold crossed; `stop` ends it after a last
    checkpoint.
    """

    def __init__(
        self,
        path: str,
        *,
        name: str,
        every_rows: int = 500,
        journal_size_limit: int | None = None,
        busy_timeout_seconds: float = 30.0,
    ) -> None:
        self._path = path
        self._name = name
        self.every_rows = every_rows
        self._journal_size_limit = journal_size_limit
        self._busy_timeout = busy_timeout_seconds
        self._written = 0
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.checkpoints = 0
        """Checkpoints run (each copied what no reader still needed)."""
        self.busy = 0
        """Checkpoints that could not start because the log was busy (each tried again)."""
        self.last_result: tuple[int, int, int] | None = None
        """The last checkpoint's (busy, frames in the log, frames copied); a PASSIVE checkpoint
        copies fewer than the log holds while a reader still needs older pages."""

    def wrote(self, rows: int) -> None:
        """Count rows written (by the one writer holding the database's write lock)."""
        self._written += rows
        if self._written < self.every_rows:
            return
        self._written = 0
        if self._thread is None:
            with self._lock:
                if self._thread is None and not self._stopping.is_set():
                    self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                    self._thread.start()
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(30)

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        busy = False
        try:
            while True:
                # a checkpoint that found the log busy is tried again shortly, not only at the
                # next threshold (PASSIVE never waits for the lock it could not take)
                self._wake.wait(_BUSY_RETRY_SECONDS if busy else None)
                self._wake.clear()
                try:
                    if conn is None:
                        conn = sqlite3.connect(
                            self._path, timeout=self._busy_timeout, isolation_level=None
                        )
                        if self._journal_size_limit is not None:
                            conn.execute(f"PRAGMA journal_size_limit = {self._journal_size_limit}")
                    row = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    self.last_result = (int(row[0]), int(row[1]), int(row[2]))
                    busy = self.last_result[0] != 0
                    if busy:
                        self.busy += 1
                    else:
                        self.checkpoints += 1
                except sqlite3.Error as exc:  # tried again at the next threshold
                    _log.warning("%s failed: %s", self._name, type(exc).__name__)
                if self._stopping.is_set():
                    return
        finally:
            if conn is not None:
                conn.close()

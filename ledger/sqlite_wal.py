"""Checkpoints of a SQLite database's write-ahead log, from a thread of their own.

SQLite checkpoints automatically inside the commit that crosses its threshold, and that commit
then waits for the copy and two more fsyncs, with everything queued behind it. The ledger's
SQLite stores (the event store, the views) turn the automatic checkpoints off on their writing
connections and tell a `WalCheckpoints` how many rows each transaction wrote; before each write
transaction they call its `catch_up`, so that the log is started again from its beginning
after each of the thread's checkpoints.
"""

from __future__ import annotations

import logging
import sqlite3
import threading

_log = logging.getLogger(__name__)

_BUSY_RETRY_SECONDS = 0.05
_CATCH_UP_FRAMES = 256
"""A checkpoint pass is run again while its log had grown by more frames than this since the
pass before (those were written while it copied), so that the writer's `catch_up` copies few."""
_MAX_PASSES = 4
_CATCH_UP_WAIT = 4
"""While the writer's `catch_up` is due, the thread is not woken again until this many times
`every_rows` have been written (a writer that never catches up still gets checkpoints)."""


class WalCheckpoints:
    """Runs a PASSIVE checkpoint once about `every_rows` rows have been written since the last.

    Each row dirties a page or so (the event store's rows: about 1.2 log frames each), so the
    default, 500 rows, is close to SQLite's own 1,000-page one; the event store takes more.
    A PASSIVE checkpoint never blocks a reader or a writer and copies only what is committed;
    its fsyncs release the interpreter lock, so writing goes on meanwhile. Durability does not
    depend on it: a committed transaction is in the log, which is part of the database until
    checkpointed. While a pass finds that many frames were written during the one before, it
    runs another (at most four), so that the writer's `catch_up`, which lets the log start
    again, has few left to copy. `journal_size_limit` (bytes), when given, is set on the
    checkpointing connection. The thread starts at the first threshold crossed; `stop` ends it
    after a last checkpoint.
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
        self._caught_up = False
        self.catch_ups = 0
        """Checkpoints the writer ran itself after the thread's (`catch_up`)."""

    def wrote(self, rows: int) -> None:
        """Count rows written (by the one writer holding the database's write lock)."""
        self._written += rows
        if self._written < self.every_rows:
            return
        if self._caught_up and self._written < _CATCH_UP_WAIT * self.every_rows:
            return  # the writer's `catch_up` comes first: a checkpoint now would be in its way
        self._written = 0
        if self._thread is None:
            with self._lock:
                if self._thread is None and not self._stopping.is_set():
                    self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                    self._thread.start()
        self._wake.set()

    @property
    def catch_up_due(self) -> bool:
        """Whether the thread has completed a checkpoint since the writer last caught up."""
        return self._caught_up

    def catch_up(self, conn: sqlite3.Connection) -> None:
        """The writer's part, on its own connection between two of its transactions, once the
        thread has completed a checkpoint: copy the frames written since that one began (a
        few hundred), so that the next write transaction finds the whole log copied and
        starts it again from its beginning.

        SQLite starts the log again only in a write transaction that begins with every frame
        copied; a writer that never pauses always leaves some for the thread, and its log
        then grows without end. Every frame is then appended to a longer file, where the file
        system must allocate and zero new blocks: on the gRPC bench's store of 150,000 events
        a commit of 100 items took 7 ms of CPU with the log growing, 2 ms with it started
        again (`bench/README.md`). A reader still using older frames keeps the log from
        starting again this time; the next completed checkpoint tries again."""
        if not self._caught_up:
            return
        try:
            row = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:  # the thread's next checkpoint comes all the same
            _log.warning("%s: the writer's checkpoint failed: %s", self._name, type(exc).__name__)
            self._caught_up = False
            return
        if int(row[0]) == 0:  # else another checkpoint was running: again before the next write
            self._caught_up = False
            self.catch_ups += 1

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(30)

    def _passes(self, conn: sqlite3.Connection) -> bool:
        """Checkpoint, then again while the last pass found many frames written during the
        one before (bounded), so that the writer's `catch_up` has few left to copy. True when
        the log was busy."""
        before: int | None = None
        for _ in range(_MAX_PASSES):
            row = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            self.last_result = (int(row[0]), int(row[1]), int(row[2]))
            if self.last_result[0] != 0:
                self.busy += 1
                return True
            self.checkpoints += 1
            frames = self.last_result[1]
            grown = frames - before if before is not None and frames >= before else frames
            before = frames
            if grown <= _CATCH_UP_FRAMES:
                break
        self._caught_up = True
        return False

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
                    busy = self._passes(conn)
                except sqlite3.Error as exc:  # tried again at the next threshold
                    _log.warning("%s failed: %s", self._name, type(exc).__name__)
                if self._stopping.is_set():
                    return
        finally:
            if conn is not None:
                conn.close()

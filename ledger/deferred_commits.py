"""Commits that run beside the next transaction's work, for the one writer of a SQLite store.

A commit of a hundred events writes a few hundred pages to the write-ahead log and waits for
its fsync; in the server's writer process that was a quarter of the time, spent with the
interpreter lock released but nothing else to do. With `DeferredCommits` on its recorder, the
writer's transaction is left open once its rows are in (the log positions are known then), and
a thread of its own commits it while the writer reads its next requests and runs their rules.
Nothing is answered before its commit is durable: the thread sends the answers itself.

Ordering is kept by `settle`: the next write, and every read of the store from the writer's
thread, first waits for the commit in flight. A commit that failed is told to its callers by
the thread; the writer's next `settle` then makes the ledger forget everything it cached (its
copies carry the lost events) and raises `CommitFailed`, so a write in progress is run again on
fresh state (the engine retries it as a conflict) and anything decided meanwhile is decided
again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from eventsourcing.persistence import IntegrityError

_log = logging.getLogger(__name__)


class CommitFailed(IntegrityError):
    """The commit in flight failed: what was decided after it must be decided again.

    An `IntegrityError`, so a write that meets it is retried by the engine on fresh state."""


class DeferredCommits:
    """The hand-off of one open transaction at a time to a committing thread.

    `armed` says whether the recorder may leave its transaction open (the writer disarms it for
    commands that must see their commit before anything else runs). The recorder calls `hold`
    with the open transaction; the writer then calls `commit_then` with what to do once it is
    durable or has failed. `commit` and `release` are the recorder's: commit the connection,
    and give it back to its pool.
    """

    def __init__(
        self,
        commit: Callable[[Any], None],
        release: Callable[[Any], None],
        *,
        on_failure: Callable[[], None],
    ) -> None:
        self._commit = commit
        self._release = release
        self._on_failure = on_failure
        self.armed = False
        self._held: Any = None
        self._lock = threading.Condition()
        self._job: tuple[Any, Callable[[BaseException | None], None]] | None = None
        self._busy = False
        self._failed = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self.commits = 0
        """Commits run by the thread."""
        self.failures = 0

    # --- the recorder's side ---------------------------------------------------------------

    def hold(self, transaction: Any) -> None:
        """Keep an open transaction whose rows are in, for `commit_then`."""
        if self._held is not None:  # pragma: no cover (settle runs before every write)
            msg = "a transaction is already held"
            raise RuntimeError(msg)
        self._held = transaction

    # --- the writer's side -----------------------------------------------------------------

    @property
    def holding(self) -> bool:
        """Whether the last write left its transaction open (so `commit_then` must follow)."""
        return self._held is not None

    def commit_then(self, done: Callable[[BaseException | None], None]) -> None:
        """Commit the held transaction in the thread, then call `done(None)`, or
        `done(error)` if the commit failed (it is rolled back; `settle` then raises)."""
        transaction, self._held = self._held, None
        if transaction is None:
            msg = "no transaction is held"
            raise RuntimeError(msg)
        with self._lock:
            self._wait_idle()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="pdl-commit", daemon=True)
                self._thread.start()
            self._job = (transaction, done)
            self._busy = True
            self._lock.notify_all()

    def settle(self) -> None:
        """Wait for the commit in flight; if one failed since the last call, make the ledger
        forget what it cached and raise `CommitFailed`."""
        if self._held is not None:  # pragma: no cover (the writer commits what it holds)
            msg = "settle while a transaction is held and not handed to commit_then"
            raise RuntimeError(msg)
        with self._lock:
            self._wait_idle()
            failed, self._failed = self._failed, False
        if failed:
            self._on_failure()
            raise CommitFailed("the previous commit failed")

    def wait(self) -> None:
        """Wait for the commit in flight (a read that must see what it wrote)."""
        if self._busy:
            with self._lock:
                self._wait_idle()

    def close(self) -> None:
        """Wait for the commit in flight and stop the thread."""
        with self._lock:
            self._wait_idle()
            self._closed = True
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join(30)

    def _wait_idle(self) -> None:
        while self._busy:
            self._lock.wait()

    def _run(self) -> None:
        while True:
            with self._lock:
                while self._job is None and not self._closed:
                    self._lock.wait()
                if self._job is None:
                    return
                transaction, done = self._job
                self._job = None
            error: BaseException | None = None
            try:
                self._commit(transaction)
            except BaseException as exc:  # noqa: BLE001 (told to the callers and to settle)
                error = exc
            finally:
                self._release(transaction)
            with self._lock:
                if error is None:
                    self.commits += 1
                else:
                    self.failures += 1
                    self._failed = True
            try:
                done(error)
            except Exception:  # noqa: BLE001 (whatever answering raised, the thread goes on)
                _log.exception("could not answer after a commit")
            with self._lock:
                self._busy = False
                self._lock.notify_all()

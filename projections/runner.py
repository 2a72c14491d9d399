"""The projection runner: catch every view up with the log, then follow it.

The runner reads the notification log in pages from the lowest view position, decodes each
page once, and hands each view the entries past its own position; each view's rows and its
tracking position are written in one transaction, so a runner killed at any instant resumes
from the tracking positions with nothing counted twice. A follower's transaction holds one
page; while the runner catches up (each transaction comes back full) its transactions grow,
up to eight pages. On PostgreSQL, where the writes are pipelined, the server writes one page
while the runner reads and decodes the next (and the next transaction's first page before
a commit).

It wakes when this process records an event (a ledger listener), on PostgreSQL when another
process does (LISTEN on the recorder's NOTIFY channel), and otherwise polls at a short
interval (SQLite has no notifications across processes). Woken by new events, it lets more
arrive for a moment (`gather_seconds`) before it reads, so a steady stream of writes is folded
in pages of many events rather than many pages of one. A failing page is retried with a
growing pause; the error is kept for health reporting.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection

from ledger.application import Ledger
from projections.store import ViewStore
from projections.view import Entry, View

__all__ = ["DEFAULT_GATHER_SECONDS", "DEFAULT_PAGE_SIZE", "ProjectionRunner", "RunnerStopped"]

_log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 500
_CATCH_UP_GROWTH = 8
"""While catching up, transactions grow (doubling while they come back full) to this many
pages: a commit writes every database page its rows touched, and the views' rows land all
over their tables (keyed by person), so bigger transactions write much less in all. They are
still read, decoded and folded a page at a time: a page's payloads die before the garbage
collector moves them to its oldest generation (a page of 4,000 doubled its collections)."""
_DEFAULT_POLL_SECONDS = 0.05
DEFAULT_GATHER_SECONDS = 0.02
_MAX_BACKOFF_SECONDS = 5.0


class RunnerStopped(Exception):
    """The runner was stopped while a caller waited for it."""


Progress = Callable[[int, int], None]
"""Called after each transaction with (position reached, log entries it read)."""


class ProjectionRunner:
    """Folds the ledger's log into a set of views, once each, in log order."""

    def __init__(
        self,
        ledger: Ledger,
        store: ViewStore,
        views: Sequence[View],
        *,
        page_size: int = DEFAULT_PAGE_SIZE,
        poll_interval: float = _DEFAULT_POLL_SECONDS,
        gather_seconds: float = DEFAULT_GATHER_SECONDS,
    ) -> None:
        self.ledger = ledger
        self.store = store
        self.views = list(views)
        self.page_size = page_size
        """Log entries read and decoded at a time (and all a follower's transaction holds)."""
        self.catch_up_size = page_size * _CATCH_UP_GROWTH
        """The most log entries one transaction folds, while catching up."""
        self._budget = page_size
        """The next transaction's size: `page_size`, doubled after each full one up to
        `catch_up_size`."""
        self._read_ahead: _Page | None = None
        """The next transaction's first page, read while the server wrote the last one
        (PostgreSQL)."""
        self.poll_interval = poll_interval
        self.gather_seconds = gather_seconds
        """How long a follower, woken by new events, lets more arrive before it reads: a
        transaction costs about as much for one event as for dozens, so under a steady
        stream of writes this trades a few milliseconds of lag for far less work per event.
        A reader waiting for the views cuts it short (`hurry`)."""
        stored = store.positions()
        self._positions = {v.name: stored.get(v.name, 0) for v in self.views}
        self._changed = threading.Condition()
        self._wake = threading.Event()
        self._hurry = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._listener: _PostgresListener | None = None
        self.last_error: str | None = None
        self._overtaken = False
        self.on_advance: Callable[[int], None] | None = None
        """Called with the position every view has reached after each transaction that moved
        it (from the thread that folded it)."""

    # --- state -------------------------------------------------------------------------------

    @property
    def position(self) -> int:
        """The position every view has reached."""
        return min(self._positions.values(), default=0)

    def positions(self) -> dict[str, int]:
        return dict(self._positions)

    # --- running -----------------------------------------------------------------------------

    def catch_up(self, progress: Progress | None = None) -> int:
        """Fold everything recorded so far; returns the position reached."""
        while self.step(progress):
            pass
        return self.position

    def step(self, progress: Progress | None = None) -> int:
        """Fold one transaction's worth of the log, a page at a time; returns how many log
        entries it read (0 when up to date).

        Another folder of these views (another server on the same database, say) may have
        moved their tracking positions since this runner last wrote them: the transaction
        then rolls back before folding anything, the runner takes the stored positions as
        its own, forgets what it knew of the rows, and folds from there."""
        while True:
            try:
                return self._step(progress)
            except _Overtaken as overtaken:
                self._adopt(overtaken.stored)

    def _step(self, progress: Progress | None) -> int:
        start = self.position + 1
        budget, self._budget = self._budget, self.page_size  # unless this one, full, commits
        page, self._read_ahead = self._read_ahead, None
        if page is None or page.start != start:
            page = self._read(start, min(self.page_size, budget))
        if not page.read:
            return 0
        read, last, full = 0, start - 1, False
        advanced: dict[str, int] = {}
        try:
            with self.store.write() as conn:
                self._claim(conn)
                while True:
                    self._fold(conn, page, advanced)
                    read, last = read + page.read, page.last
                    full = read >= budget
                    if full or page.read < page.asked:
                        break
                    page = self._read(last + 1, min(self.page_size, budget - read))
                    if not page.read:
                        break
                self.store.set_positions(conn, advanced)
                if full and self.store.pipelined:  # the server writes this one meanwhile
                    self._read_ahead = self._read(last + 1, self.page_size)
        except BaseException:
            self._read_ahead = None
            for view in self.views:
                view.discarded()
            raise
        for view in self.views:
            view.committed()
        if full:  # catching up: the next transaction may fold more
            self._budget = min(budget * 2, self.catch_up_size)
        with self._changed:
            self._positions.update(advanced)
            self._changed.notify_all()
        if self.on_advance is not None:
            self.on_advance(self.position)
        if progress is not None:
            progress(last, read)
        return read

    def start(self) -> None:
        """Follow the log in a background thread."""
        if self._thread is not None:
            return
        self._stop.clear()
        self.ledger.add_listener(self._on_recorded)
        channel = getattr(self.ledger.recorder, "channel_name", None)
        if channel is not None and self.store.dialect == "postgresql":
            self._listener = _PostgresListener(self.ledger, channel, self._wake)
        self._thread = threading.Thread(target=self._follow, name="pdl-projections", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop following; the page in hand is finished first."""
        self._stop.set()
        self._wake.set()
        self._hurry.set()
        self.ledger.remove_listener(self._on_recorded)
        if self._listener is not None:
            self._listener.stop()
            self._listener = None
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        with self._changed:
            self._changed.notify_all()

    def wait(self, position: int, timeout: float) -> bool:
        """Block until every view has folded `position`, or `timeout` seconds; True if it has."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self.position < position:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                if self._stop.is_set() and self._thread is None:
                    raise RunnerStopped
                self.hurry()
                self._changed.wait(min(left, 0.5))
        return True

    def rebuild(self, names: Sequence[str], progress: Progress | None = None) -> int:
        """Empty the named views and fold the whole log into them again.

        The views are claimed first (`ViewStore.claim`): a fold of them by another process
        commits before they are emptied, and any later one starts again from zero."""
        chosen = [v for v in self.views if v.name in names]
        with self.store.write() as conn:
            self.store.claim(conn, [v.name for v in chosen])
            for view in chosen:
                self.store.reset(conn, view.name, view.tables)
        for view in chosen:
            view.emptied()
        with self._changed:
            for view in chosen:
                self._positions[view.name] = 0
        return self.catch_up(progress)

    def __enter__(self) -> ProjectionRunner:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    # --- plumbing ----------------------------------------------------------------------------

    def wake(self) -> None:
        """New events are in the log (another process wrote them): fold them without waiting
        for the next poll."""
        self._wake.set()

    def hurry(self) -> None:
        """A reader waits for the views: fold what is in the log now, without letting more
        gather first."""
        self._hurry.set()
        self._wake.set()

    def _on_recorded(self, _position: int) -> None:
        self.wake()

    def _follow(self) -> None:
        backoff = self.poll_interval
        while not self._stop.is_set():
            try:
                read = self.step()
            except Exception as exc:  # noqa: BLE001 (kept, logged and retried; never lost)
                self.last_error = f"{type(exc).__name__}"
                _log.warning(
                    "projection page failed, retrying",
                    extra={"error": type(exc).__name__, "position": self.position},
                )
                self._stop.wait(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_SECONDS)
                continue
            self.last_error = None
            backoff = self.poll_interval
            if read < self.page_size:
                woken = self._wake.wait(self.poll_interval)
                self._wake.clear()
                if woken and self.gather_seconds > 0:
                    self._hurry.wait(self.gather_seconds)
                self._hurry.clear()

    def _claim(self, conn: Connection) -> None:
        """Take the views for this transaction; `_Overtaken` if their stored positions are not
        the ones this runner knows (it then folds nothing in it)."""
        stored = self.store.claim(conn, list(self._positions))
        if stored != self._positions:
            raise _Overtaken(stored)

    def _adopt(self, stored: dict[str, int]) -> None:
        """Take the positions another folder left as this runner's own (`step`)."""
        # Said once: two folders of the same views take turns, correctly but twice the work.
        _log.log(
            logging.DEBUG if self._overtaken else logging.WARNING,
            "views folded by another process too; following their stored positions",
            extra={"positions": stored},
        )
        self._overtaken = True
        for view in self.views:
            if stored[view.name] != self._positions[view.name]:
                view.emptied()  # rows it knew of may have been deleted meanwhile
        with self._changed:
            self._positions.update(stored)
            self._changed.notify_all()
        if self.on_advance is not None:
            self.on_advance(self.position)

    def _fold(self, conn: Connection, page: _Page, advanced: dict[str, int]) -> None:
        """Hand each view the page's entries past its own position."""
        entries, last = page.entries, page.last
        for view in self.views:
            reached = self._positions[view.name]
            if reached >= last:
                continue
            todo = entries if reached < page.start else [e for e in entries if e[0] > reached]
            if todo:
                view.apply(conn, todo)
            advanced[view.name] = last

    def _read(self, start: int, size: int) -> _Page:
        """Up to `size` log entries from `start`, decoded."""
        notifications = self.ledger.recorder.select_notifications(start, size)
        payload_of = self.ledger.payload_of
        entries: list[Entry] = []
        for n in notifications:
            payload = payload_of(n)
            if payload is not None:
                entries.append((n.id, payload))
        # Only the payloads are kept: the stored events would be scanned by every collection
        # of the garbage collector while the page is folded.
        last = notifications[-1].id if notifications else start - 1
        return _Page(start, size, len(notifications), last, entries)


class _Overtaken(Exception):
    """The views' stored positions are not this runner's: another folder moved them."""

    def __init__(self, stored: dict[str, int]) -> None:
        super().__init__("views folded elsewhere")
        self.stored = stored


@dataclass(frozen=True, slots=True)
class _Page:
    """A page of the log as read: where it starts, how many entries were asked for and how
    many were read, the last one's position, and the payloads decoded (position, payload)."""

    start: int
    asked: int
    read: int
    last: int
    entries: list[Entry]


class _PostgresListener:
    """LISTENs on the event store's channel and wakes the runner on each NOTIFY."""

    def __init__(self, ledger: Ledger, channel: str, wake: threading.Event) -> None:
        self._recorder: Any = ledger.recorder
        self._channel = channel
        self._wake = wake
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pdl-listen", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2.0)

    def _run(self) -> None:
        from psycopg import sql  # noqa: PLC0415 (only PostgreSQL deployments need it)

        while not self._stop.is_set():
            try:
                with self._recorder.datastore.get_connection() as conn:
                    conn.execute(sql.SQL("LISTEN {0}").format(sql.Identifier(self._channel)))
                    conn.commit()
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=0.5, stop_after=1):
                            self._wake.set()
            except Exception:  # noqa: BLE001 (a lost connection: polling covers, then re-listen)
                self._stop.wait(1.0)

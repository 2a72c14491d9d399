"""Deferred commits on SQLite (the writer process's): a write's commit runs in a thread while
the next write's work goes on; nothing is visible to another reader before its commit; a commit
that fails loses only its own write, the ledger forgets the copies that had taken it in, and
the next write runs again on what is stored."""

from __future__ import annotations

import os
import resource
import socket
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.persistence import OperationalError
from scenario import (
    PRINCIPAL,
    START,
    collection,
    consent,
    gps_collection,
    sqlite_ledger,
    subject,
    withdrawal,
)

from ledger.application import Ledger
from ledger.deferred_commits import CommitFailed, DeferredCommits
from ledger.errors import Refused
from ledger.events import CollectionMode
from ledger.recorders import LedgerSQLiteRecorder
from ledger.sealing import MasterKey
from ledger.subject import Subject
from server.writer_child import _Writer
from server.writer_link import BATCH, ONE, STOP, Frames, framed


def _ledger(tmp_path: Path, master: MasterKey) -> Ledger:
    return sqlite_ledger(tmp_path, master)


@pytest.fixture
def master() -> MasterKey:
    return MasterKey.generate()


@pytest.fixture
def ledger(tmp_path: Path, master: MasterKey) -> Any:
    app = _ledger(tmp_path, master)
    yield app
    app.close()


def _deferred(ledger: Ledger) -> DeferredCommits:
    recorder = ledger.recorder
    assert isinstance(recorder, LedgerSQLiteRecorder)
    return recorder.defer_commits(on_failure=ledger.forget_cached)


def _held_back(deferred: DeferredCommits, *, first_fails: bool = False) -> threading.Event:
    """Make the thread's commits wait until the returned event is set; with `first_fails`,
    the first one then fails as a full or broken disk would (rolled back), the others commit."""
    release = threading.Event()
    commit = deferred._commit
    failures = [first_fails]

    def slow_commit(held: Any) -> None:
        release.wait(10)
        if failures.pop() if failures else False:
            held[0].rollback()
            raise OperationalError("disk I/O error")
        commit(held)

    deferred._commit = slow_commit
    return release


def _failing_once(deferred: DeferredCommits) -> None:
    """The thread's first commit fails; the others commit."""
    _held_back(deferred, first_fails=True).set()


def _held_batch(ledger: Ledger, deferred: DeferredCommits, items: list[Any]) -> None:
    """Run a batch whose commit the recorder holds, then hand it to the committing thread."""
    deferred.armed = True
    ledger.execute_batch(PRINCIPAL, items)
    deferred.armed = False
    deferred.commit_then(lambda _error: None)


def _stored(tmp_path: Path, master: MasterKey, sid: Any) -> Subject:
    """A person as another reader of the files sees them (only what is committed)."""
    other = _ledger(tmp_path, master)
    try:
        return other.subject(sid)
    finally:
        other.close()


def _events_stored(tmp_path: Path, master: MasterKey, sid: Any) -> int:
    return _stored(tmp_path, master, sid).version


def test_a_held_write_is_invisible_until_its_thread_commits_it(
    tmp_path: Path, master: MasterKey, ledger: Ledger
) -> None:
    sid = subject(ledger)
    deferred = _deferred(ledger)
    deferred.armed = True
    outcomes = ledger.execute_batch(PRINCIPAL, [collection(sid, at=START) for _ in range(5)])
    deferred.armed = False
    assert all(o.recorded is not None for o in outcomes)
    assert deferred.holding
    assert _events_stored(tmp_path, master, sid) == 1  # the registration only

    done = threading.Event()
    errors: list[BaseException | None] = []

    def answered(error: BaseException | None) -> None:
        errors.append(error)
        done.set()

    deferred.commit_then(answered)
    assert done.wait(10)
    assert errors == [None]
    deferred.settle()
    assert deferred.commits == 1
    assert _events_stored(tmp_path, master, sid) == 6
    positions = [o.recorded.position for o in outcomes if o.recorded is not None]
    assert positions == sorted(positions)
    assert positions[-1] == ledger.recorder.max_notification_id()


def test_the_next_write_waits_for_the_commit_in_flight(
    tmp_path: Path, master: MasterKey, ledger: Ledger
) -> None:
    sid = subject(ledger)
    deferred = _deferred(ledger)
    release = _held_back(deferred)
    deferred.armed = True
    ledger.execute_batch(PRINCIPAL, [collection(sid, at=START)])
    deferred.commit_then(lambda _error: None)
    second: list[Any] = []
    writer = threading.Thread(
        target=lambda: second.extend(ledger.execute_batch(PRINCIPAL, [collection(sid, at=START)]))
    )
    writer.start()
    writer.join(0.3)
    assert writer.is_alive()  # its insert waits for the first commit
    release.set()
    writer.join(10)
    assert not writer.is_alive()
    assert second[0].recorded is not None
    deferred.commit_then(lambda _error: None)
    deferred.settle()
    deferred.armed = False
    assert _events_stored(tmp_path, master, sid) == 3


def test_a_failed_commit_loses_only_its_write_and_the_next_runs_again_on_what_is_stored(
    tmp_path: Path, master: MasterKey, ledger: Ledger
) -> None:
    sid = subject(ledger)
    # consent in one write, then a collection that needs it in the next, while the first's
    # commit is in flight and fails: the second must be decided again, without the consent
    deferred = _deferred(ledger)
    _failing_once(deferred)
    deferred.armed = True
    given = ledger.execute_batch(PRINCIPAL, [consent(sid, at=START - timedelta(minutes=2))])
    assert given[0].recorded is not None
    told: list[BaseException | None] = []
    deferred.commit_then(told.append)

    needs_consent = gps_collection(
        sid, at=START - timedelta(minutes=1), mode=CollectionMode.CONSENT
    )
    second = ledger.execute_batch(PRINCIPAL, [needs_consent])  # settles: the retry runs fresh
    deferred.armed = False
    assert isinstance(told[0], OperationalError)
    assert deferred.failures == 1
    assert second[0].recorded is None
    assert isinstance(second[0].error, Refused)  # the consent was never stored
    assert not deferred.holding
    deferred.settle()  # the failure was taken by the retry
    assert _events_stored(tmp_path, master, sid) == 1
    assert ledger.subject(sid).state.consents == _stored(tmp_path, master, sid).state.consents
    assert "location.gps" not in ledger.subject(sid).state.held


def test_settle_raises_once_after_a_failed_commit_and_the_ledger_forgets_its_copies(
    ledger: Ledger,
) -> None:
    sid = subject(ledger)
    deferred = _deferred(ledger)
    _failing_once(deferred)
    deferred.armed = True
    ledger.execute_batch(PRINCIPAL, [collection(sid, at=START)])
    deferred.armed = False
    assert ledger.repository.cache is not None
    assert sid in ledger.repository.cache.cache  # the copy took the lost event in
    deferred.commit_then(lambda _error: None)
    with pytest.raises(CommitFailed):
        deferred.settle()
    assert sid not in ledger.repository.cache.cache
    deferred.settle()  # told once
    assert len(ledger.history(sid)) == 1


def test_a_snapshot_due_in_a_held_write_is_stored_with_it_once_it_is_committed(
    ledger: Ledger, tmp_path: Path, master: MasterKey
) -> None:
    sid = subject(ledger)
    deferred = _deferred(ledger)
    deferred.armed = True
    ledger.execute_batch(PRINCIPAL, [collection(sid, at=START) for _ in range(210)])
    deferred.armed = False
    assert ledger.snapshots is not None
    assert not ledger.snapshots.recorder.select_events(sid)  # not committed yet
    deferred.commit_then(lambda _error: None)
    deferred.settle()
    snapshots = ledger.snapshots.recorder.select_events(sid)
    assert [s.originator_version for s in snapshots] == [211]
    assert _stored(tmp_path, master, sid).version == 211


def test_a_snapshot_due_in_a_held_write_that_fails_to_commit_is_lost_with_it(
    ledger: Ledger,
) -> None:
    sid = subject(ledger)
    deferred = _deferred(ledger)
    _failing_once(deferred)
    _held_batch(ledger, deferred, [collection(sid, at=START) for _ in range(210)])
    with pytest.raises(CommitFailed):
        deferred.settle()
    assert ledger.snapshots is not None
    assert not ledger.snapshots.recorder.select_events(sid)
    assert len(ledger.history(sid)) == 1


# --- the writer process's loop, on a socket pair in this process ----------------------------


class _Link:
    """The server's end of a socket pair to a `_Writer` serving in a thread."""

    def __init__(
        self, ledger: Ledger, deferred: DeferredCommits, *, writer_fd: int | None = None
    ) -> None:
        self.sock, theirs = socket.socketpair()
        if writer_fd is not None:  # the writer's end at that descriptor number
            os.dup2(theirs.fileno(), writer_fd)
            theirs.close()
            theirs = socket.socket(fileno=writer_fd)
        self._frames = Frames()
        self._got: list[tuple[int, bool, Any]] = []
        self.writer = threading.Thread(
            target=_Writer(ledger, theirs, 64, deferred).serve, daemon=True
        )
        self.writer.start()

    def send(self, *requests: tuple[Any, ...]) -> None:
        self.sock.sendall(framed(list(requests)))

    def answer(self, number: int, timeout: float = 10.0) -> tuple[bool, Any]:
        self.sock.settimeout(timeout)
        while True:
            for got in self._got:
                if got[0] == number:
                    return got[1], got[2]
            for message in self._frames.feed(self.sock.recv(1 << 20)):
                assert message[0] == "answers"
                self._got.extend(message[1])

    def stop(self) -> None:
        self.send((STOP, 0))
        self.writer.join(10)
        self.sock.close()


def test_the_writer_decides_again_what_it_refused_on_a_commit_that_then_failed(
    ledger: Ledger,
) -> None:
    """A withdrawal whose commit fails must not leave a collection that needed the consent
    refused: the writer, having written nothing for it, learns of the failure and runs it
    again on what is stored (the consent in force), and it is recorded. (Batches' commits go
    to the committing thread; so do large groups of unary calls.)"""
    sid = subject(ledger)
    ledger.execute(PRINCIPAL, consent(sid, at=START - timedelta(minutes=3)))
    deferred = _deferred(ledger)
    release = _held_back(deferred, first_fails=True)
    decided: list[Any] = []  # what each run of a batch decided
    runs = 0
    second_runs = threading.Event()
    execute_batch = ledger.execute_batch

    def run_batch(*args: Any, **kwargs: Any) -> Any:
        nonlocal runs
        runs += 1
        if runs == 2:  # on the withdrawal's copy: its commit is held back, not yet failed
            second_runs.set()
        outcomes = execute_batch(*args, **kwargs)
        decided.append(outcomes)
        return outcomes

    ledger.execute_batch = run_batch  # type: ignore[method-assign]
    link = _Link(ledger, deferred)
    try:
        withdrawn = withdrawal(sid, at=START - timedelta(minutes=2))
        link.send((BATCH, 1, PRINCIPAL, [withdrawn], False, None))
        needs = gps_collection(sid, at=START - timedelta(minutes=1), mode=CollectionMode.CONSENT)
        link.send((BATCH, 2, PRINCIPAL, [needs], False, None))
        assert second_runs.wait(10)
        release.set()
        ok, value = link.answer(1)
        assert not ok
        assert isinstance(value, OperationalError)
        ok, value = link.answer(2)
        assert ok, value
        [outcome] = value
        assert outcome.recorded is not None, outcome.error
        assert outcome.recorded.event_type == "DataCollected"
    finally:
        link.stop()
    assert len(decided) == 3  # the withdrawal, the collection refused, then run again
    assert isinstance(decided[1][0].error, Refused)
    assert deferred.failures == 1
    assert "location.gps" in ledger.subject(sid).state.held
    assert [e.__class__.__name__ for e in ledger.history(sid)][-1] == "DataCollected"
    assert "ConsentWithdrawn" not in [e.__class__.__name__ for e in ledger.history(sid)]


def test_the_writer_answers_a_group_only_once_its_commit_is_durable(ledger: Ledger) -> None:
    sid = subject(ledger)
    deferred = _deferred(ledger)
    release = _held_back(deferred)
    link = _Link(ledger, deferred)
    try:
        link.send((BATCH, 1, PRINCIPAL, [collection(sid, at=START)], False, None))
        with pytest.raises(TimeoutError):
            link.answer(1, timeout=0.3)
        release.set()
        ok, outcomes = link.answer(1)
        assert ok
        assert outcomes[0].recorded is not None
        assert ledger.recorder.max_notification_id() == outcomes[0].recorded.position
    finally:
        link.stop()


def test_a_small_group_of_unary_calls_commits_in_the_writer_and_a_large_one_in_the_thread(
    ledger: Ledger,
) -> None:
    sid = subject(ledger)
    deferred = _deferred(ledger)
    link = _Link(ledger, deferred)
    try:
        link.send((ONE, 1, PRINCIPAL, collection(sid, at=START)))
        ok, outcome = link.answer(1)
        assert ok
        assert outcome.recorded is not None
        assert deferred.commits == 0  # committed in the writer's own thread
        many = [(ONE, n, PRINCIPAL, collection(sid, at=START)) for n in range(2, 42)]
        link.send(*many)  # one frame: taken as one group of 40
        for n in range(2, 42):
            ok, outcome = link.answer(n)
            assert ok
            assert outcome.recorded is not None
        assert deferred.commits == 1
    finally:
        link.stop()
    assert len(ledger.history(sid)) == 1 + 1 + 40


def test_the_writer_reads_from_a_socket_numbered_past_what_select_can_watch(
    ledger: Ledger,
) -> None:
    """A process with many files open (a server with many clients, this test run) may give the
    writer's socket a number of 1024 or more, which `select.select` refuses."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft <= 1100:
        pytest.skip(f"this process may open only {soft} files")
    sid = subject(ledger)
    deferred = _deferred(ledger)
    link = _Link(ledger, deferred, writer_fd=1050)
    try:
        link.send((BATCH, 1, PRINCIPAL, [collection(sid, at=START)], False, None))
        ok, outcomes = link.answer(1)
        assert ok
        assert outcomes[0].recorded is not None
        link.send((ONE, 2, PRINCIPAL, collection(sid, at=START)))
        ok, outcome = link.answer(2)
        assert ok
        assert outcome.recorded is not None
    finally:
        link.stop()
    assert not link.writer.is_alive()

"""The writer process's own side (see `server.writer_process`): open the ledger, then take
in every request that has arrived, commit the unary ones as one group, run the others each in
a transaction of its own, and answer, until told to stop or until the server goes away."""

from __future__ import annotations

import functools
import logging
import os
import pickle
import selectors
import signal
import socket
import sys
import threading
from collections import deque
from typing import Any

from ledger import commands as cmd
from ledger.application import Ledger
from ledger.deferred_commits import CommitFailed, DeferredCommits
from ledger.errors import ConfigurationError
from ledger.recorders import LedgerSQLiteRecorder
from server.errors import (
    StorageFull,
    StorageUnavailable,
    WriterFailed,
    storage_full,
    storage_unavailable,
)
from server.forwarding import ROUTES, Route
from server.runtime import collect_young_less_often, open_ledger, settle_heap
from server.settings import Settings
from server.writer_link import (
    ALONE,
    BATCH,
    GROUPED,
    MANY,
    ONE,
    PICKLE,
    STOP,
    Forwarded,
    Frames,
    framed,
)

_log = logging.getLogger("pdl.writer")

_READ_CHUNK = 1 << 20
_SWITCH_INTERVAL_SECONDS = 0.0005
_DEFER_GROUP_ITEMS = 32


def writer_main(settings: Settings, sock: socket.socket, max_items: int) -> None:
    """The writer process: open the ledger, then answer requests until told to stop or until
    the server's end closes."""
    # Signals meant for the server (Ctrl-C reaches the whole process group; a service manager
    # may send SIGTERM to every process) must not stop the writer before the server has
    # drained its calls: the writer stops when the server says so or goes away.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        ledger, keystore = open_ledger(settings)
    except ConfigurationError as error:
        _send(sock, ("failed", str(error)))
        return
    except Exception as error:  # noqa: BLE001 (told to the server, which fails its start)
        _send(sock, ("failed", f"cannot open the ledger: {type(error).__name__}"))
        return
    recorder = ledger.recorder
    deferred = (
        recorder.defer_commits(on_failure=ledger.forget_cached)
        if isinstance(recorder, LedgerSQLiteRecorder)
        else None
    )
    if deferred is not None:
        # the committing thread needs the interpreter lock back briefly after each commit, to
        # answer; by default it could wait 5 ms for the writer's thread to give it up
        sys.setswitchinterval(_SWITCH_INTERVAL_SECONDS)
    try:
        settle_heap()
        collect_young_less_often()
        _send(sock, ("ready", os.getpid()))
        _Writer(ledger, sock, max_items, deferred).serve()
    finally:
        ledger.close()  # waits for a commit still in flight
        keystore.close()


def _send(sock: socket.socket, message: object) -> bool:
    try:
        sock.sendall(framed(message))
    except OSError:
        return False
    return True


class _Writer:
    """Reads requests, commits them in groups, answers.

    With `deferred` (SQLite), a group's commit runs in a thread of its own, which answers the
    group once it is durable, while this one reads and runs the next requests; a commit that
    failed has this one run again what it decided meanwhile (see `ledger.deferred_commits`).
    """

    def __init__(
        self,
        ledger: Ledger,
        sock: socket.socket,
        max_items: int,
        deferred: DeferredCommits | None = None,
    ) -> None:
        self._ledger = ledger
        self._sock = sock
        self._max_items = max_items
        self._deferred = deferred
        self._frames = Frames()
        self._queue: deque[tuple[Any, ...]] = deque()
        self._stopping = False
        self._closed = False
        self._groups = 0
        self._items = 0
        self._send_lock = threading.Lock()
        sock.settimeout(None)  # sends block; reads look first (`_read`)
        # not `select.select`, which fails on a descriptor numbered 1024 or more
        self._readable = selectors.DefaultSelector()
        self._readable.register(sock, selectors.EVENT_READ)

    def serve(self) -> None:
        try:
            while True:
                self._read(wait=not self._queue)
                if not self._queue:
                    if self._stopping or self._closed:
                        return
                    continue
                self._serve_next()
        finally:
            self._readable.close()
            if self._deferred is not None:
                self._deferred.close()  # the last commit and its answers

    def _serve_next(self) -> None:
        """Run what is at the head of the queue and answer it, or hand its commit and its
        answers to the committing thread."""
        taken = self._take()
        deferred = self._deferred
        if deferred is None:
            self._send_answers(self._run(taken))
            return
        for _ in range(2):
            deferred.armed = self._defers(taken)
            try:
                answers = self._run(taken)
            finally:
                deferred.armed = False
            if deferred.holding:  # its own commit settled any before it
                frame = self._frame(self._message(answers))  # here: the thread needs little
                deferred.commit_then(functools.partial(self._after_commit, frame, answers))
                return
            try:
                deferred.settle()  # nothing written: was anything decided on a lost commit?
            except CommitFailed:
                continue  # the ledger forgot its copies: decide again, on what is stored
            break
        self._send_answers(answers)

    @staticmethod
    def _defers(taken: list[tuple[Any, ...]]) -> bool:
        """Whether this work's commit goes to the committing thread: a batch's (many rows: its
        commit is long, the next one's work fills it), and a large group's; a small group is
        answered sooner by committing it here (handing over and back costs more than the
        overlap gains)."""
        kind = taken[0][0]
        return kind in (BATCH, MANY) or (kind in GROUPED and len(taken) >= _DEFER_GROUP_ITEMS)

    def _after_commit(
        self, frame: bytes, answers: list[tuple[int, bool, Any]], error: BaseException | None
    ) -> None:
        """In the committing thread: answer the group, or tell each caller the failure."""
        if error is not None:
            _log.error("commit of %d answers failed: %s", len(answers), type(error).__name__)
            frame = self._frame(self._message([(a[0], False, error) for a in answers]))
        self._send(frame)

    def _send_answers(self, answers: list[tuple[int, bool, Any]]) -> None:
        self._send(self._frame(self._message(answers)))

    def _read(self, *, wait: bool) -> None:
        """Take in every frame that has arrived; with `wait`, block until one has."""
        if self._closed or self._stopping:
            return
        while True:
            if not self._readable.select(None if wait else 0):
                return
            try:
                data = self._sock.recv(_READ_CHUNK)
            except OSError:
                data = b""
            if not data:
                self._closed = True  # the server went away: finish what was sent, then exit
                return
            for frame in self._frames.feed(data):
                for request in frame:
                    if request[0] == STOP:
                        self._stopping = True
                    else:
                        self._queue.append(request)
            wait = False

    def _take(self) -> list[tuple[Any, ...]]:
        """The unary commands at the head of the queue, as one group, or else the one request
        there."""
        queue = self._queue
        if queue[0][0] not in GROUPED:
            return [queue.popleft()]
        taken: list[tuple[Any, ...]] = []
        while queue and queue[0][0] in GROUPED and len(taken) < self._max_items:
            taken.append(queue.popleft())
        return taken

    def _run(self, taken: list[tuple[Any, ...]]) -> list[tuple[int, bool, Any]]:
        """Run what `_take` took and return the answers."""
        if taken[0][0] not in GROUPED:
            return [self._alone(taken[0])]
        answers: list[tuple[int, bool, Any]] = []
        group: list[tuple[int, str, cmd._Command, Route | None]] = []
        now = self._ledger.clock.now()
        for request in taken:
            if request[0] == ONE:
                group.append((request[1], request[2], request[3], None))
                continue
            forwarded = ROUTES[request[3]]
            try:
                command = forwarded.to_command(request[4], now)
                group.append((request[1], request[2], command, forwarded))
            except Exception as error:  # noqa: BLE001 (a bad request is its caller's answer)
                answers.append((request[1], False, error))
        if not group:
            return answers
        try:
            outcomes = self._ledger.execute_many([(g[1], g[2]) for g in group])
        except Exception as error:  # noqa: BLE001 (each caller gets the failure)
            _log.error("group commit of %d failed: %s", len(group), type(error).__name__)
            return [*answers, *((g[0], False, error) for g in group)]
        self._groups += 1
        self._items += len(group)
        for (number, _principal, _command, route), outcome in zip(group, outcomes, strict=True):
            if route is None:
                answers.append((number, True, outcome))
            elif outcome.error is not None:
                answers.append((number, False, outcome.error))
            else:
                done = outcome.recorded
                assert done is not None  # noqa: S101 (an outcome is one or the other)
                answers.append(
                    (number, True, Forwarded(route.answer(done), done.position, done.event_type))
                )
        return answers

    def _alone(self, request: tuple[Any, ...]) -> tuple[int, bool, Any]:
        number = request[1]
        try:
            return (number, True, self._run_alone(request))
        except Exception as error:  # noqa: BLE001 (the caller gets the failure)
            return (number, False, error)

    def _run_alone(self, request: tuple[Any, ...]) -> Any:
        kind, _number, *body = request
        if kind == ALONE:
            principal, command = body
            return self._ledger.execute(principal, command)
        if kind == BATCH:
            principal, commands, all_or_nothing, digests = body
            return self._ledger.execute_batch(
                principal, commands, all_or_nothing=all_or_nothing, digests=digests
            )
        (items,) = body  # MANY
        return self._ledger.execute_many(items)

    def _message(self, answers: list[tuple[int, bool, Any]]) -> tuple[Any, ...]:
        return ("answers", with_storage_full(answers), self._groups, self._items)

    @staticmethod
    def _frame(message: tuple[Any, ...]) -> bytes:
        try:
            return framed(message)
        except Exception:  # noqa: BLE001 (an error that does not pickle: send its kind only)
            tag, answers, groups, items = message
            return framed((tag, [_sendable(a) for a in answers], groups, items))

    def _send(self, frame: bytes) -> None:
        """Send a frame (from this thread or the committing one), unless the server has gone;
        a failed send means it has."""
        with self._send_lock:
            if self._closed:
                return
            try:
                self._sock.sendall(frame)
            except OSError:
                self._closed = True


def with_storage_full(answers: list[tuple[int, bool, Any]]) -> list[tuple[int, bool, Any]]:
    """The answers, each failure for want of room in storage sent as `StorageFull`, and each
    for want of a connection to it as `StorageUnavailable` (the driver's error does not keep
    what says so across pickling)."""
    if all(ok for _number, ok, _value in answers):
        return answers
    return [(number, ok, value if ok else _storage_trouble(value)) for number, ok, value in answers]


def _storage_trouble(error: Any) -> Any:
    if storage_full(error):
        return StorageFull()
    if storage_unavailable(error):
        return StorageUnavailable()
    return error


def _sendable(answer: tuple[int, bool, Any]) -> tuple[int, bool, Any]:
    number, _ok, value = answer
    try:
        pickle.dumps(value, PICKLE)
    except Exception:  # noqa: BLE001
        return (number, False, WriterFailed(type(value).__name__))
    return answer

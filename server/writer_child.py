"""The writer process's own side (see `server.writer_process`): open the ledger, then take
in every request that has arrived, commit the unary ones as one group, run the others each in
a transaction of its own, and answer, until told to stop or until the server goes away."""

from __future__ import annotations

import logging
import os
import pickle
import select
import signal
import socket
from collections import deque
from typing import Any

from ledger import commands as cmd
from ledger.application import Ledger
from ledger.errors import ConfigurationError
from server.errors import WriterFailed
from server.forwarding import ROUTES, Route
from server.runtime import open_ledger, settle_heap
from server.settings import Settings
from server.writer_link import (
    ALONE,
    BATCH,
    GROUPED,
    ONE,
    PICKLE,
    STOP,
    Forwarded,
    Frames,
    framed,
)

_log = logging.getLogger("pdl.writer")

_READ_CHUNK = 1 << 20


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
    try:
        settle_heap()
        _send(sock, ("ready", os.getpid()))
        _Writer(ledger, sock, max_items).serve()
    finally:
        ledger.close()
        keystore.close()


def _send(sock: socket.socket, message: object) -> bool:
    try:
        sock.sendall(framed(message))
    except OSError:
        return False
    return True


class _Writer:
    """Reads requests, commits them in groups, answers."""

    def __init__(self, ledger: Ledger, sock: socket.socket, max_items: int) -> None:
        self._ledger = ledger
        self._sock = sock
        self._max_items = max_items
        self._frames = Frames()
        self._queue: deque[tuple[Any, ...]] = deque()
        self._stopping = False
        self._closed = False
        self._groups = 0
        self._items = 0
        sock.settimeout(0.0)

    def serve(self) -> None:
        while True:
            self._read(wait=not self._queue)
            if not self._queue:
                if self._stopping or self._closed:
                    return
                continue
            answers = self._next()
            if not self._closed and not self._answer(answers):
                self._closed = True

    def _read(self, *, wait: bool) -> None:
        """Take in every frame that has arrived; with `wait`, block until one has."""
        if self._closed or self._stopping:
            return
        while True:
            if wait:
                select.select([self._sock], [], [])
            try:
                data = self._sock.recv(_READ_CHUNK)
            except BlockingIOError:
                if wait and not self._queue:
                    continue
                return
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

    def _next(self) -> list[tuple[int, bool, Any]]:
        """Run the unary commands at the head of the queue as one group, or else the one
        request there, and return the answers."""
        queue = self._queue
        if queue[0][0] not in GROUPED:
            return [self._alone(queue.popleft())]
        answers: list[tuple[int, bool, Any]] = []
        group: list[tuple[int, str, cmd._Command, Route | None]] = []
        now = self._ledger.clock.now()
        while queue and queue[0][0] in GROUPED and len(group) < self._max_items:
            request = queue.popleft()
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

    def _answer(self, answers: list[tuple[int, bool, Any]]) -> bool:
        message = ("answers", answers, self._groups, self._items)
        try:
            frame = framed(message)
        except Exception:  # noqa: BLE001 (an error that does not pickle: send its kind only)
            frame = framed(("answers", [_sendable(a) for a in answers], self._groups, self._items))
        self._sock.settimeout(None)
        try:
            self._sock.sendall(frame)
        except OSError:
            return False
        finally:
            self._sock.settimeout(0.0)
        return True


def _sendable(answer: tuple[int, bool, Any]) -> tuple[int, bool, Any]:
    number, _ok, value = answer
    try:
        pickle.dumps(value, PICKLE)
    except Exception:  # noqa: BLE001
        return (number, False, WriterFailed(type(value).__name__))
    return answer

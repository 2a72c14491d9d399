"""The projection process's own side (see `server.projection_process`): open the ledger and
the views, fold the log into every view, and tell the server each position reached, until told
to stop or until the server goes away.

It never writes the event store: the policy notices a publication calls for go to the server,
which records them through its writer, and the answer comes back here.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import selectors
import signal
import socket
import threading
from collections.abc import Sequence
from typing import Any

from ledger import commands as cmd
from ledger.application import ItemOutcome
from ledger.errors import ConfigurationError
from projections import ProjectionRunner, ledger_runner
from server.runtime import collect_young_less_often, open_runtime
from server.settings import Settings
from server.writer_link import Frames, framed

__all__ = ["NoticesNotRecorded", "projection_main"]

_READ_CHUNK = 1 << 16
_NOTICE_TIMEOUT_SECONDS = 120.0

# Messages, server to this process.
WAKE = "wake"  # new events are in the log
HURRY = "hurry"  # a reader waits for the views: fold without letting more events gather
ANSWER = "answer"  # (ANSWER, number, ok, outcomes or the error's name): notices recorded
STOP = "stop"  # finish the page in hand and exit
# This process to the server, a message a frame: ("ready", pid), ("failed", reason),
# ("position", position, last error or None), ("notices", number, [(principal, command)]).


class NoticesNotRecorded(Exception):
    """The server could not record a page's policy notices (its writer was unavailable, or
    the link closed); the runner folds the page again later."""


def projection_main(settings: Settings, sock: socket.socket) -> None:
    """The projection process: fold the log into the views until told to stop or until the
    server's end closes."""
    # As for the writer, the server decides when this process stops (`server.writer_child`).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if settings.projection_nice:
        # folding is deferred work: the calls and their writes come first on a busy machine
        os.nice(settings.projection_nice)
    link = _ChildLink(sock)
    try:
        runtime = open_runtime(settings)
    except ConfigurationError as error:
        link.send(("failed", str(error)))
        return
    except Exception as error:  # noqa: BLE001 (told to the server, which fails its start)
        link.send(("failed", f"cannot open the views: {type(error).__name__}"))
        return
    try:
        runner = ledger_runner(
            runtime.ledger,
            runtime.views,
            execute_many=link.execute_many,
            gather_seconds=settings.projection_gather_seconds,
        )
        runner.on_advance = lambda position: link.send(("position", position, runner.last_error))
        collect_young_less_often()
        link.send(("ready", os.getpid()))
        runner.on_advance(runner.position)  # where the views stand
        runner.start()
        try:
            link.serve(runner)
        finally:
            link.close()  # a page waiting on its notices fails now, and is folded again later
            runner.stop()
    finally:
        link.close()
        runtime.close()


class _ChildLink:
    """This process's end of the socket pair: sends from any thread, reads on the main one."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._send_lock = threading.Lock()
        self._numbers = itertools.count(1)
        self._answers: dict[int, Any] = {}
        self._answered = threading.Condition()
        self._closed = False

    def send(self, message: object) -> None:
        with self._send_lock:
            if self._closed:
                return
            try:
                self._sock.sendall(framed(message))
            except OSError:
                self._closed = True

    def serve(self, runner: ProjectionRunner) -> None:
        """Read the server's messages until it says stop or its end closes."""
        frames = Frames()
        with selectors.DefaultSelector() as selector:
            selector.register(self._sock, selectors.EVENT_READ)
            while True:
                selector.select()
                try:
                    data = self._sock.recv(_READ_CHUNK)
                except OSError:
                    data = b""
                if not data:
                    return
                for batch in frames.feed(data):
                    for message in batch:
                        if message[0] == WAKE:
                            runner.wake()
                        elif message[0] == HURRY:
                            runner.hurry()
                        elif message[0] == ANSWER:
                            self._answer(message[1], message[2:])
                        elif message[0] == STOP:
                            return

    def execute_many(self, items: Sequence[tuple[str, cmd._Command]]) -> list[ItemOutcome]:
        """Have the server record these commands through its writer (from the runner's
        thread); raises `NoticesNotRecorded` if it could not."""
        number = next(self._numbers)
        self.send(("notices", number, list(items)))
        with self._answered:
            if not self._answered.wait_for(
                lambda: number in self._answers or self._closed, _NOTICE_TIMEOUT_SECONDS
            ):
                raise NoticesNotRecorded("no answer from the server")
            answer = self._answers.pop(number, None)
        if answer is None:
            raise NoticesNotRecorded("the server's end closed")
        ok, value = answer
        if not ok:
            raise NoticesNotRecorded(str(value))
        outcomes: list[ItemOutcome] = value
        return outcomes

    def _answer(self, number: int, answer: tuple[Any, ...]) -> None:
        with self._answered:
            self._answers[number] = answer
            self._answered.notify_all()

    def close(self) -> None:
        with self._send_lock:
            self._closed = True
        with self._answered:
            self._answered.notify_all()
        with contextlib.suppress(OSError):
            self._sock.close()

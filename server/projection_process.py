"""The projection process: `pdl serve` keeps its views up to date in a child process.

Folding the log into the views is steady work: under sustained recording it cost the
server's process 100-300 µs of CPU per event, on the interpreter lock that also serves the
calls (`bench/README.md`). In a process of its own it runs on its own lock, and the calls'
latency no longer waits for a page being folded.

The server and the child talk over a socket pair in the writer's frames (`server.writer_link`):
the server tells the child when the log has grown (after each group its writer commits), so
it folds at once instead of polling; the child tells the server each position the views
reach, so read-your-writes waits (`server.views.ViewWaiter`) need no query; and the policy
notices a publication calls for are recorded by the server's writer, sent there by the child,
so the event store keeps one writer. If the child dies it is started again; it resumes from
the views' tracking positions, so nothing is folded twice or left out.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ledger import commands as cmd
from ledger.application import ItemOutcome, Ledger
from server import projection_child
from server.child_process import ChildProcess
from server.projection_child import ANSWER, HURRY, STOP, WAKE
from server.settings import Settings
from server.writer_link import framed

__all__ = ["CATCH_UP_NOTICE", "ProjectionProcess"]

CATCH_UP_NOTICE = 10_000
"""Log entries the views must be behind at start for the server to say they are catching up."""

ExecuteMany = Callable[[Sequence[tuple[str, cmd._Command]]], Awaitable[list[ItemOutcome]]]


class ProjectionProcess(ChildProcess):
    """Runs the projection runner over every view in a child process; start it inside the
    server's event loop, with its writer.

    `ledger` is the server's own: its listeners hear of every group the writer commits.
    `execute_many` records the child's policy notices (the committer's, awaited on the event
    loop).
    """

    what = "projection"
    opens = "the views"
    fallback = "projections = 'in-process'"
    log = logging.getLogger("pdl.projections")
    stop_timeout = 30.0

    def __init__(self, settings: Settings, ledger: Ledger, execute_many: ExecuteMany) -> None:
        super().__init__(projection_child.projection_main)
        self._settings = settings
        self._ledger = ledger
        self._execute_many = execute_many
        self._tasks: set[asyncio.Task[None]] = set()
        self._announced = 0
        """The last log position the server's writer reported."""
        self._wake_sent = False
        """A wake is on its way or being acted on: none more until the child reports."""
        self._hurry_sent = False
        self.position = 0
        """The position every view has reached, as the child last reported it."""
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        """Reads waiting for a position (a heap): each is woken by the report that reaches it."""
        self._numbers = itertools.count()
        self.last_error: str | None = None
        """The kind of the last error the child's runner met, until a page folds again."""
        self._first_report = False
        self._catching_up: tuple[int, float] | None = None
        """(the log's end, when it started) while the views catch up with a long way to go."""

    async def start(self) -> None:
        """Start the child and wait until its views are open; say so when they have a long
        way to go (a new views database, or one left far behind), and when they are there."""
        self._first_report = True
        await super().start()
        self._ledger.add_listener(self._on_recorded)

    async def stop(self) -> None:
        """Let the child finish the page in hand, then stop it."""
        self._ledger.remove_listener(self._on_recorded)
        await super().stop()

    def reached(self, position: int) -> asyncio.Future[None]:
        """A future done once the views have folded `position` (on the event loop; cancel it
        to stop waiting). Until then, the child is hurried after each report short of it."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.position >= position:
            future.set_result(None)
            return future
        heapq.heappush(self._waiters, (position, next(self._numbers), future))
        self.hurry()
        return future

    def hurry(self) -> None:
        """A reader waits for a position the views have not reached: have the child fold
        what is in the log now (once until it next reports)."""
        link = self._link
        if self._hurry_sent or link is None:
            return
        self._hurry_sent = True
        link.write(framed([(HURRY,)]))

    # --- on the event loop ---------------------------------------------------------------------

    def _on_recorded(self, position: int) -> None:
        """A ledger listener: the writer committed up to `position` (called on the event loop
        with the writer process, from the writer's thread with a writer thread)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._recorded(position)
        else:
            loop.call_soon_threadsafe(self._recorded, position)

    def _recorded(self, position: int) -> None:
        self._announced = max(self._announced, position)
        self._wake()

    def _wake(self) -> None:
        link = self._link
        if self._wake_sent or link is None or self._announced <= self.position:
            return
        self._wake_sent = True
        link.write(framed([(WAKE,)]))

    def _message(self, message: tuple[Any, ...]) -> None:
        tag = message[0]
        if tag == "position":
            self.position = max(self.position, message[1])
            self.last_error = message[2]
            if self._first_report:  # where the views stand at start
                self._first_report = False
                self._say_if_far_behind()
            catching_up = self._catching_up
            if catching_up is not None and self.position >= catching_up[0]:
                self._catching_up = None
                seconds = time.monotonic() - catching_up[1]
                self.log.info("views caught up with position %d in %.1f s", catching_up[0], seconds)
            self._wake_sent = self._hurry_sent = False
            waiters = self._waiters
            while waiters and waiters[0][0] <= self.position:
                future = heapq.heappop(waiters)[2]
                if not future.done():
                    future.set_result(None)
            while waiters and waiters[0][2].done():  # given up: their calls ended
                heapq.heappop(waiters)
            if waiters:
                self.hurry()  # a read still waits: fold what is there, without gathering
            self._wake()  # more came in while it folded
        elif tag == "notices":
            task = asyncio.get_running_loop().create_task(self._notices(message[1], message[2]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _say_if_far_behind(self) -> None:
        end = self._ledger.recorder.max_notification_id() or 0
        if end - self.position >= CATCH_UP_NOTICE:
            self._catching_up = (end, time.monotonic())
            self.log.info(
                "views at position %d of %d: catching up (reads waiting for a later position "
                "wait, or fail VIEW_BEHIND)",
                self.position,
                end,
            )

    async def _notices(self, number: int, items: list[tuple[str, cmd._Command]]) -> None:
        """Record a page's policy notices through the writer and answer the child."""
        link = self._link
        try:
            outcomes = await self._execute_many(items)
        except Exception as error:  # noqa: BLE001 (the child retries the page later)
            answer: tuple[Any, ...] = (ANSWER, number, False, type(error).__name__)
        else:
            answer = (ANSWER, number, True, outcomes)
        if link is not None and link is self._link:
            link.write(framed([answer]))

    # --- the child's lifecycle (`ChildProcess`) ------------------------------------------------

    def _child_args(self, sock: socket.socket) -> tuple[Any, ...]:
        return (self._settings, sock)

    def _stop_frame(self) -> bytes:
        return framed([(STOP,)])

    def _stopped(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    def _down(self) -> None:
        self._wake_sent = self._hurry_sent = False

    def _replaced(self) -> None:
        self._wake()  # what was recorded while it was down

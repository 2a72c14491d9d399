"""The writer process: every write of the server is made by a process of its own.

The server's process takes the calls (TLS, authentication, parsing and validating requests,
answering, the access log, reads, waking the projections); a child process opens the same
ledger and makes every write: it runs the engine, seals values, writes the event store and the
key store. Each has its own interpreter lock, so the two halves of a recording call run on two
cores at once instead of taking turns on one.

The two talk over a socket pair in length-prefixed pickled frames. Each call's command goes to
the writer with a request number; the writer takes everything that has arrived whenever it is
free, commits the unary recording commands among it as one group (group commit: the busier
the server, the larger the groups), runs batches and the commands that cannot share a
transaction each on their own, and answers each request once its events are durable. The
server sends everything queued in one event-loop turn as one frame and reads answers on the
event loop, so no thread hands anything over.

If the writer dies, the calls waiting on it fail with UNAVAILABLE (`WriterUnavailable`): their
commands may or may not have been committed, and a retry with the same idempotency key gets
the recorded answer or records it once. A new writer is started at once. On stop the writer
finishes what it was sent, answers it, and exits; the server then closes its end.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, cast

from ledger import commands as cmd
from ledger.application import BATCHABLE, ItemOutcome, Ledger, Recorded
from server import writer_child
from server.child_process import ChildProcess
from server.errors import WriterUnavailable
from server.settings import Settings
from server.writer_link import ALONE, BATCH, FORWARD, MANY, ONE, STOP, Forwarded, framed

__all__ = ["ProcessCommitter"]


class ProcessCommitter(ChildProcess):
    """Sends the server's writes to a writer process; start it inside the server's event loop.

    `ledger` is the server's own (read) ledger: it is told the log positions the writer
    reached, so the projections (in-process, or the projection process) wake up, and to read
    the policy book afresh after a publication.
    """

    what = "writer"
    opens = "the ledger"
    fallback = "writer = 'thread'"
    log = logging.getLogger("pdl.writer")

    def __init__(self, settings: Settings, ledger: Ledger, max_items: int = 512) -> None:
        super().__init__(writer_child.writer_main)
        self._settings = settings
        self._ledger = ledger
        self._max_items = max_items
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._outbox: list[tuple[Any, ...]] = []
        self._flush_scheduled = False
        self._told: asyncio.Task[None] | None = None
        self.groups = 0
        self.items = 0
        self.on_availability: Callable[[bool], Coroutine[Any, Any, None]] | None = None
        """Awaited on the event loop with False when the writer is lost, with True when its
        replacement is ready (the server's health follows it)."""

    @property
    def writer_pid(self) -> int | None:
        """The writer process's pid, while it runs."""
        return self.pid

    async def record(self, principal: str, command: cmd._Command) -> Recorded:
        """Record one command, sharing a transaction with concurrent ones where it can."""
        if isinstance(command, BATCHABLE):
            outcome = cast("ItemOutcome", await self._ask(ONE, principal, command))
            if outcome.error is not None:
                raise outcome.error
            assert outcome.recorded is not None  # noqa: S101 (an outcome is one or the other)
            return outcome.recorded
        return cast("Recorded", await self._ask(ALONE, principal, command))

    async def record_many(
        self, principal: str, commands: Sequence[cmd._Command], *, all_or_nothing: bool
    ) -> list[ItemOutcome]:
        """A batch call: its own transaction. Its keyed digests are made here, on the
        server's core, since a batch is the writer's heaviest work."""
        digests = [self._ledger.digest(c) for c in commands]
        answer = await self._ask(BATCH, principal, list(commands), all_or_nothing, digests)
        return cast("list[ItemOutcome]", answer)

    async def forward(self, method: str, principal: str, request: bytes) -> bytes:
        """A forwarded call: the writer parses, converts, records and answers it."""
        answer = cast("Forwarded", await self._ask(FORWARD, principal, method, request))
        return answer.response

    async def execute_many(self, items: Sequence[tuple[str, cmd._Command]]) -> list[ItemOutcome]:
        """`Ledger.execute_many` through the writer, from the event loop (the projection
        process's policy notices)."""
        if self._stopping:
            raise WriterUnavailable
        return cast("list[ItemOutcome]", await self._ask(MANY, list(items)))

    def execute_many_threadsafe(
        self, items: Sequence[tuple[str, cmd._Command]], timeout: float = 60.0
    ) -> list[ItemOutcome]:
        """`execute_many` from a thread other than the event loop's (the in-process
        projection runner's policy notices)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            raise WriterUnavailable
        future = asyncio.run_coroutine_threadsafe(self.execute_many(items), loop)
        return future.result(timeout)

    # --- sending and receiving, on the event loop -----------------------------------------------

    async def _ask(self, kind: int, *body: Any) -> Any:
        if self._stopping and self._link is None:
            raise WriterUnavailable
        loop = self._loop
        assert loop is not None  # noqa: S101 (started)
        request = next(self._ids)
        answer: asyncio.Future[Any] = loop.create_future()
        self._waiting[request] = answer
        self._outbox.append((kind, request, *body))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        try:
            return await answer
        finally:
            self._waiting.pop(request, None)

    def _flush(self) -> None:
        """Send everything queued in this turn of the loop as one frame (once the writer is
        up; until then it waits in the outbox)."""
        self._flush_scheduled = False
        link = self._link
        if not self._outbox or link is None or not link.open:
            return
        outbox, self._outbox = self._outbox, []
        link.write(framed(outbox))

    def _settle(self, answers: list[tuple[int, bool, Any]]) -> None:
        reached = 0
        published = False
        for request, ok, value in answers:
            for position, event_type in _reached(value):
                reached = max(reached, position)
                published = published or event_type == "PolicyPublished"
            answer = self._waiting.pop(request, None)
            if answer is None or answer.done():
                continue  # a cancelled call's command is committed all the same
            if ok:
                answer.set_result(value)
            else:
                answer.set_exception(value)
        if published:
            self._ledger.forget_policy_book()
        if reached:
            self._ledger.announce(reached)

    # --- the child's lifecycle (`ChildProcess`) ------------------------------------------------

    def _child_args(self, sock: socket.socket) -> tuple[Any, ...]:
        return (self._settings, sock, self._max_items)

    def _stop_frame(self) -> bytes:
        return framed([(STOP,)])

    def _message(self, message: tuple[Any, ...]) -> None:
        if message[0] == "answers":
            _tag, answers, groups, items = message
            self.groups, self.items = groups, items
            self._settle(answers)

    def _before_stop(self) -> None:
        self._flush()  # what is queued goes first; the writer answers it, then stops

    def _stopped(self) -> None:
        self._fail_all()

    def _down(self) -> None:
        """Whatever the writer had not answered fails."""
        self._fail_sent()

    def _replacing(self) -> None:
        self._tell_availability(available=False)

    def _start_failed(self) -> None:
        self._fail_all()  # the calls waiting for it are not kept waiting for ever

    def _started(self) -> None:
        self._flush()  # what queued while it started

    def _replaced(self) -> None:
        self._tell_availability(available=True)

    def _tell_availability(self, *, available: bool) -> None:
        hook, loop = self.on_availability, self._loop
        if hook is not None and loop is not None:
            self._told = loop.create_task(hook(available))

    def _fail_sent(self) -> None:
        """Fail the calls whose requests went to a writer that is gone; those still in the
        outbox go to the next one."""
        unsent = {queued[1] for queued in self._outbox}
        for request, answer in list(self._waiting.items()):
            if request not in unsent:
                del self._waiting[request]
                if not answer.done():
                    answer.set_exception(WriterUnavailable())

    def _fail_all(self) -> None:
        self._outbox.clear()
        self._fail_sent()


def _reached(value: Any) -> list[tuple[int, str]]:
    """(position, event type) of what an answer recorded."""
    if isinstance(value, Forwarded):
        return [(value.position, value.event_type)]
    return [(r.position, r.event_type) for r in _recorded_in(value)]


def _recorded_in(value: Any) -> list[Recorded]:
    if isinstance(value, Recorded):
        return [value]
    if isinstance(value, ItemOutcome):
        return [value.recorded] if value.recorded is not None else []
    if isinstance(value, list):
        return [o.recorded for o in value if isinstance(o, ItemOutcome) and o.recorded]
    return []

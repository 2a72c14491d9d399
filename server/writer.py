"""Group commit: concurrent unary recording calls share one transaction.

`Committer` is what the servicers ask to write. The server's default is the writer process
(`server.writer_process`); `GroupCommitter` here does the same in a thread of the server's own
process (`writer = "thread"`), sharing its interpreter lock.

One writer thread makes every write that the server's calls ask for. Each unary recording call
puts its command in the writer's inbox and awaits its own outcome; whenever the writer is free
it takes everything queued, runs it through `Ledger.execute_many` as one transaction, and
answers the whole group with one hand-off back to the event loop, once its events are
durable. While it commits, calls keep queueing for the next group, so the busier the server
the larger the groups. A refused command refuses only its own call. Commands that cannot share
a transaction (registration, erasure, rights requests, policy) and batch calls (their own
transaction, all or nothing if asked) go through the same thread, each on its own. A call
cancelled while its command waits is still answered by the commit, which the caller no longer
hears; a retry with the same idempotency key gets the recorded answer.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, cast

from ledger import commands as cmd
from ledger.application import BATCHABLE, ItemOutcome, Ledger, Recorded

_log = logging.getLogger(__name__)
_T = TypeVar("_T")


class Committer(Protocol):
    """Makes the server's writes; started and stopped inside the server's event loop."""

    groups: int
    items: int

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def record(self, principal: str, command: cmd._Command) -> Recorded: ...

    async def record_many(
        self, principal: str, commands: Sequence[cmd._Command], *, all_or_nothing: bool
    ) -> list[ItemOutcome]: ...

    async def execute_many(
        self, items: Sequence[tuple[str, cmd._Command]]
    ) -> list[ItemOutcome]: ...

    def execute_many_threadsafe(
        self, items: Sequence[tuple[str, cmd._Command]], timeout: float = 60.0
    ) -> list[ItemOutcome]: ...


@dataclass(slots=True)
class _Pending:
    """A unary batchable command, committed with whatever else is queued."""

    principal: str
    command: cmd.RecordingCommand
    answer: asyncio.Future[ItemOutcome] = field(repr=False)


@dataclass(slots=True)
class _Alone:
    """Work that runs in a transaction of its own."""

    run: Callable[[], Any]
    answer: asyncio.Future[Any] = field(repr=False)


_Work = _Pending | _Alone | None
"""What the writer's inbox holds; None asks the writer to stop once it has reached it."""


class _Idle:
    """Nothing else was queued."""


_IDLE = _Idle()


class GroupCommitter:
    """Commits concurrent unary commands together; start it inside the server's event loop."""

    def __init__(self, ledger: Ledger, max_items: int = 512) -> None:
        self._ledger = ledger
        self._max_items = max_items
        self._inbox: queue.SimpleQueue[_Work] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.groups = 0
        self.items = 0

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._write, name="pdl-writer", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """Finish what is queued, then stop; later calls run on their own, in a worker thread."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._inbox.put(None)
            await asyncio.to_thread(thread.join)

    async def record(self, principal: str, command: cmd._Command) -> Recorded:
        """Record one command, sharing a transaction with concurrent ones where it can."""
        if self._thread is None:
            return await asyncio.to_thread(self._ledger.execute, principal, command)
        if not isinstance(command, BATCHABLE):
            return await self._alone(lambda: self._ledger.execute(principal, command))
        answer: asyncio.Future[ItemOutcome] = self._future()
        self._inbox.put(_Pending(principal, command, answer))
        outcome = await answer
        if outcome.error is not None:
            raise outcome.error
        assert outcome.recorded is not None  # noqa: S101 (an outcome is one or the other)
        return outcome.recorded

    async def record_many(
        self, principal: str, commands: Sequence[cmd._Command], *, all_or_nothing: bool
    ) -> list[ItemOutcome]:
        """A batch call: its own transaction."""

        def run() -> list[ItemOutcome]:
            return self._ledger.execute_batch(principal, commands, all_or_nothing=all_or_nothing)

        if self._thread is None:
            return await asyncio.to_thread(run)
        return await self._alone(run)

    async def execute_many(self, items: Sequence[tuple[str, cmd._Command]]) -> list[ItemOutcome]:
        """`Ledger.execute_many`, from the event loop: commands of possibly several
        principals in one transaction (the projection process's policy notices)."""

        def run() -> list[ItemOutcome]:
            return self._ledger.execute_many(items)

        if self._thread is None:
            return await asyncio.to_thread(run)
        return await self._alone(run)

    def execute_many_threadsafe(
        self, items: Sequence[tuple[str, cmd._Command]], timeout: float = 60.0
    ) -> list[ItemOutcome]:
        """`Ledger.execute_many` from another thread (its write lock orders it with ours)."""
        return self._ledger.execute_many(items)

    def _future(self) -> asyncio.Future[Any]:
        assert self._loop is not None  # noqa: S101 (started)
        return self._loop.create_future()

    async def _alone(self, run: Callable[[], _T]) -> _T:
        answer: asyncio.Future[Any] = self._future()
        self._inbox.put(_Alone(run, answer))
        return cast("_T", await answer)

    # --- the writer thread ------------------------------------------------------------------

    def _write(self) -> None:
        inbox = self._inbox
        work = inbox.get()
        while work is not None:
            if isinstance(work, _Alone):
                self._run_alone(work)
                work = inbox.get()
                continue
            group, after = self._gather(work)
            self._commit(group)
            work = inbox.get() if isinstance(after, _Idle) else after

    def _gather(self, first: _Pending) -> tuple[list[_Pending], _Work | _Idle]:
        """`first` and the unary commands queued behind it, up to the limit; and the work that
        ended the group (`_IDLE` when the inbox ran dry or the group is full)."""
        group = [first]
        while len(group) < self._max_items:
            try:
                work = self._inbox.get_nowait()
            except queue.Empty:
                break
            if not isinstance(work, _Pending):
                return group, work
            group.append(work)
        return group, _IDLE

    def _commit(self, group: list[_Pending]) -> None:
        """Commit one group and hand the answers back."""
        try:
            outcomes = self._ledger.execute_many([(p.principal, p.command) for p in group])
        except Exception as error:  # noqa: BLE001 (each caller gets the failure)
            _log.error("group commit of %d failed: %s", len(group), type(error).__name__)
            self._hand_back(_fail_all, [p.answer for p in group], error)
            return
        self.groups += 1
        self.items += len(group)
        self._hand_back(_answer_all, [p.answer for p in group], outcomes)

    def _run_alone(self, work: _Alone) -> None:
        try:
            result = work.run()
        except Exception as error:  # noqa: BLE001 (the caller gets the failure)
            self._hand_back(_fail_all, [work.answer], error)
        else:
            self._hand_back(_answer_all, [work.answer], [result])

    def _hand_back(self, settle: Callable[..., None], *args: Any) -> None:
        """Settle the callers' futures on the event loop: one wake-up per group."""
        assert self._loop is not None  # noqa: S101 (started)
        try:
            self._loop.call_soon_threadsafe(settle, *args)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            _log.warning("event loop closed before %d answers were handed back", len(args[0]))


def _answer_all(answers: list[asyncio.Future[Any]], results: Sequence[Any]) -> None:
    for answer, result in zip(answers, results, strict=True):
        if not answer.done():  # a cancelled call's command is committed all the same
            answer.set_result(result)


def _fail_all(answers: list[asyncio.Future[Any]], error: Exception) -> None:
    for answer in answers:
        if not answer.done():
            answer.set_exception(error)

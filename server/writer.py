"""Group commit: concurrent unary recording calls share one transaction.

Each call queues its command and awaits its own outcome. One writer task takes everything
queued, runs it through `Ledger.execute_many` in a worker thread (so the event loop keeps
accepting calls, which queue for the next round), and answers each call once its events are
durable. A refused command refuses only its own call. Commands that cannot share a
transaction (registration, erasure, rights requests, policy) run on their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ledger import commands as cmd
from ledger.application import BATCHABLE, ItemOutcome, Ledger, Recorded

_log = logging.getLogger(__name__)


@dataclass
class _Pending:
    principal: str
    command: cmd.RecordingCommand
    answer: asyncio.Future[ItemOutcome] = field(repr=False)


class GroupCommitter:
    """Commits concurrent unary commands together; start it inside the server's event loop."""

    def __init__(self, ledger: Ledger, max_items: int = 512) -> None:
        self._ledger = ledger
        self._max_items = max_items
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pdl-writer")
        self.groups = 0
        self.items = 0

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run(), name="pdl-group-commit")

    async def stop(self) -> None:
        """Finish what is queued, then stop."""
        if self._queue is not None:
            await self._queue.join()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._thread.shutdown(wait=True)

    async def record(self, principal: str, command: cmd._Command) -> Recorded:
        """Record one command, sharing a transaction with concurrent ones where it can."""
        if not isinstance(command, BATCHABLE) or self._queue is None:
            return await asyncio.to_thread(self._ledger.execute, principal, command)
        answer: asyncio.Future[ItemOutcome] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(principal, command, answer))
        outcome = await asyncio.shield(answer)
        if outcome.error is not None:
            raise outcome.error
        assert outcome.recorded is not None  # noqa: S101 (an outcome is one or the other)
        return outcome.recorded

    async def record_many(
        self, principal: str, commands: Sequence[cmd._Command], *, all_or_nothing: bool
    ) -> list[ItemOutcome]:
        """A batch call: its own transaction, in a worker thread."""
        return await asyncio.to_thread(
            self._ledger.execute_batch, principal, commands, all_or_nothing=all_or_nothing
        )

    async def _run(self) -> None:
        assert self._queue is not None  # noqa: S101 (started)
        queue = self._queue
        while True:
            group = [await queue.get()]
            while len(group) < self._max_items and not queue.empty():
                group.append(queue.get_nowait())
            items = [(p.principal, p.command) for p in group]
            try:
                outcomes = await asyncio.get_running_loop().run_in_executor(
                    self._thread, self._ledger.execute_many, items
                )
            except Exception as error:  # noqa: BLE001 (each caller gets the failure)
                _log.error("group commit of %d failed: %s", len(group), type(error).__name__)
                for pending in group:
                    if not pending.answer.done():
                        pending.answer.set_exception(error)
                    queue.task_done()
                continue
            self.groups += 1
            self.items += len(group)
            for pending, outcome in zip(group, outcomes, strict=True):
                if not pending.answer.done():
                    pending.answer.set_result(outcome)
                queue.task_done()

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
import contextlib
import logging
import multiprocessing
import socket
from collections.abc import Callable, Sequence
from multiprocessing import util
from typing import Any, cast

from ledger import commands as cmd
from ledger.application import ItemOutcome, Ledger
from ledger.errors import ConfigurationError
from server import projection_child
from server.projection_child import ANSWER, HURRY, STOP, WAKE
from server.runtime import child_context
from server.settings import Settings
from server.writer_link import Frames, framed

__all__ = ["ProjectionProcess"]

_log = logging.getLogger("pdl.projections")

_START_TIMEOUT_SECONDS = 60.0
_STOP_TIMEOUT_SECONDS = 30.0
_RESTART_PAUSE_SECONDS = 0.5

ExecuteMany = Callable[[Sequence[tuple[str, cmd._Command]]], list[ItemOutcome]]


class _Link(asyncio.Protocol):
    """The server's end of the socket pair, read on the event loop."""

    def __init__(self, owner: ProjectionProcess) -> None:
        self._owner = owner
        self._frames = Frames()
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)

    def data_received(self, data: bytes) -> None:
        for batch in self._frames.feed(data):
            for message in batch:
                self._owner._received(message)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        self._owner._lost(self)

    def send(self, message: object) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(framed([message]))


class ProjectionProcess:
    """Runs the projection runner over every view in a child process; start it inside the
    server's event loop, after its writer.

    `ledger` is the server's own: its listeners hear of every group the writer commits.
    `execute_many` records the child's policy notices (the committer's thread-safe
    `execute_many_threadsafe`, called here from a worker thread).
    """

    def __init__(self, settings: Settings, ledger: Ledger, execute_many: ExecuteMany) -> None:
        self._settings = settings
        self._ledger = ledger
        self._execute_many = execute_many
        self._loop: asyncio.AbstractEventLoop | None = None
        self._process: multiprocessing.process.BaseProcess | None = None
        self._link: _Link | None = None
        self._ready: asyncio.Future[None] | None = None
        self._stopping = False
        self._restarting: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._announced = 0
        """The last log position the server's writer reported."""
        self._wake_sent = False
        """A wake is on its way or being acted on: none more until the child reports."""
        self._hurry_sent = False
        self.position = 0
        """The position every view has reached, as the child last reported it."""
        self.last_error: str | None = None
        """The kind of the last error the child's runner met, until a page folds again."""
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        """The child's pid, while it runs."""
        process = self._process
        return process.pid if process is not None and process.is_alive() else None

    async def start(self) -> None:
        """Start the child and wait until its views are open."""
        self._loop = asyncio.get_running_loop()
        await self._spawn()
        self._ledger.add_listener(self._on_recorded)

    async def stop(self) -> None:
        """Let the child finish the page in hand, then stop it."""
        self._stopping = True
        self._ledger.remove_listener(self._on_recorded)
        if self._restarting is not None:
            self._restarting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._restarting
        link, process = self._link, self._process
        if link is not None and link.transport is not None and not link.transport.is_closing():
            link.send((STOP,))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(link.closed), _STOP_TIMEOUT_SECONDS)
            if link.transport is not None:
                link.transport.close()
        if process is not None:
            await asyncio.to_thread(process.join, _STOP_TIMEOUT_SECONDS)
            if process.is_alive():
                _log.error("the projection process did not stop; killing it")
                process.kill()
                await asyncio.to_thread(process.join, 5)
        self._link = None
        for task in list(self._tasks):
            task.cancel()

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

    def hurry(self) -> None:
        """A reader waits for a position the views have not reached: have the child fold
        what is in the log now (once until it next reports)."""
        link = self._link
        if self._hurry_sent or link is None:
            return
        self._hurry_sent = True
        link.send((HURRY,))

    def _wake(self) -> None:
        link = self._link
        if self._wake_sent or link is None or self._announced <= self.position:
            return
        self._wake_sent = True
        link.send((WAKE,))

    def _received(self, message: tuple[Any, ...]) -> None:
        tag = message[0]
        if tag == "position":
            self.position = max(self.position, message[1])
            self.last_error = message[2]
            self._wake_sent = self._hurry_sent = False
            self._wake()  # more came in while it folded
        elif tag == "notices":
            task = asyncio.get_running_loop().create_task(self._notices(message[1], message[2]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif tag == "ready":
            self.position = max(self.position, message[2])
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(None)
        elif tag == "failed" and self._ready is not None and not self._ready.done():
            self._ready.set_exception(ConfigurationError(message[1]))

    async def _notices(self, number: int, items: list[tuple[str, cmd._Command]]) -> None:
        """Record a page's policy notices through the writer and answer the child."""
        link = self._link
        try:
            outcomes = await asyncio.to_thread(self._execute_many, items)
        except Exception as error:  # noqa: BLE001 (the child retries the page later)
            answer: tuple[Any, ...] = (ANSWER, number, False, type(error).__name__)
        else:
            answer = (ANSWER, number, True, outcomes)
        if link is not None and link is self._link:
            link.send(answer)

    def _lost(self, link: _Link) -> None:
        if link is not self._link:
            return
        self._link = None
        self._wake_sent = self._hurry_sent = False
        ready = self._ready
        if ready is not None and not ready.done():
            ready.set_exception(
                ConfigurationError("the projection process exited while opening the views")
            )
            return
        if not self._stopping and self._loop is not None and self._restarting is None:
            _log.error("the projection process stopped unexpectedly; starting another")
            self._restarting = self._loop.create_task(self._restart())

    async def _restart(self) -> None:
        try:
            while not self._stopping:
                await asyncio.sleep(_RESTART_PAUSE_SECONDS)
                old = self._process
                if old is not None:
                    await asyncio.to_thread(old.join, 5)
                try:
                    await self._spawn()
                except (ConfigurationError, TimeoutError) as error:
                    _log.error("the projection process could not start: %s", error)
                    continue
                self.restarts += 1
                self._wake()
                return
        finally:
            self._restarting = None

    async def _spawn(self) -> None:
        loop = self._loop
        assert loop is not None  # noqa: S101 (started)
        ours, theirs = socket.socketpair()
        process = child_context().Process(
            target=projection_child.projection_main,
            args=(self._settings, theirs),
            name="pdl-projections",
            daemon=False,
        )
        try:
            await asyncio.to_thread(process.start)
        except (OSError, AssertionError, RuntimeError) as exc:
            ours.close()
            theirs.close()
            msg = (
                f"cannot start the projection process ({type(exc).__name__}); "
                "set projections = 'in-process'"
            )
            raise ConfigurationError(msg) from None
        theirs.close()
        util.Finalize(process, _close_quietly, args=(ours,), exitpriority=10)
        self._process = process
        self._ready = loop.create_future()
        _transport, link = await loop.connect_accepted_socket(lambda: _Link(self), ours)
        self._link = link
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), _START_TIMEOUT_SECONDS)
        except (ConfigurationError, TimeoutError):
            self._link = None  # its closing is no loss to recover from: the start failed
            if link.transport is not None:
                link.transport.close()
            await asyncio.to_thread(process.join, 5)
            if process.is_alive():
                process.kill()
            raise


def _close_quietly(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.close()

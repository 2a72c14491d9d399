"""A child process of the server over a socket pair: what the writer process and the
projection process share.

The child is forked from the server's forkserver (`server.runtime.child_context`) and talks in
the writer's frames (`server.writer_link`). It says ("ready", pid) once it has opened what it
serves, or ("failed", reason). If it dies afterwards, another is started after a pause, for
as long as the server runs. On stop it is sent its stop frame and given time to finish, then
killed if it has not. Subclasses handle the other messages and say what losing the child, or
starting another, means for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import socket
from collections.abc import Callable
from multiprocessing import util
from typing import Any, ClassVar, cast

from ledger.errors import ConfigurationError
from server.runtime import child_context
from server.writer_link import Frames

__all__ = ["ChildProcess"]

_START_TIMEOUT_SECONDS = 60.0
_RESTART_PAUSE_SECONDS = 0.5


class _Link(asyncio.Protocol):
    """The server's end of the socket pair, read on the event loop."""

    def __init__(self, owner: ChildProcess) -> None:
        self._owner = owner
        self._frames = Frames()
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)

    def data_received(self, data: bytes) -> None:
        for message in self._frames.feed(data):
            self._owner._received(message)

    def eof_received(self) -> bool:
        return False  # close our end too

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        self._owner._lost(self)

    @property
    def open(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def write(self, frame: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame)


class ChildProcess:
    """Starts, restarts and stops one child process; start it inside the server's event loop.

    A subclass sets `what` (its name in messages), `opens` (what the child opens before it is
    ready), `fallback` (the setting that avoids the child) and `log`; it gives the child's
    function and says what it is called with (`_child_args`).
    """

    what: ClassVar[str]
    opens: ClassVar[str]
    fallback: ClassVar[str]
    log: ClassVar[logging.Logger]
    stop_timeout: ClassVar[float] = _START_TIMEOUT_SECONDS

    def __init__(self, target: Callable[..., None]) -> None:
        self._target = target
        self._loop: asyncio.AbstractEventLoop | None = None
        self._process: multiprocessing.process.BaseProcess | None = None
        self._link: _Link | None = None
        self._ready: asyncio.Future[None] | None = None
        self._stopping = False
        self._restarting: asyncio.Task[None] | None = None
        self.restarts = 0
        """Children started after the first one died."""

    @property
    def pid(self) -> int | None:
        """The child's pid, while it runs."""
        process = self._process
        return process.pid if process is not None and process.is_alive() else None

    async def start(self) -> None:
        """Start the child and wait until it is ready."""
        self._loop = asyncio.get_running_loop()
        await self._spawn()

    async def stop(self) -> None:
        """Send the child its stop frame, let it finish, then make sure it has exited."""
        self._stopping = True
        if self._restarting is not None:
            self._restarting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._restarting
        link, process = self._link, self._process
        if link is not None and link.open:
            self._before_stop()
            link.write(self._stop_frame())
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(link.closed), self.stop_timeout)
            if link.transport is not None:
                link.transport.close()
        if process is not None:
            await asyncio.to_thread(process.join, self.stop_timeout)
            if process.is_alive():
                self.log.error("the %s process did not stop; killing it", self.what)
                process.kill()
                await asyncio.to_thread(process.join, 5)
        self._link = None
        self._stopped()

    # --- what a subclass says ------------------------------------------------------------------

    def _child_args(self, sock: socket.socket) -> tuple[Any, ...]:
        """What the child's function is called with, `sock` its end of the socket pair."""
        raise NotImplementedError

    def _stop_frame(self) -> bytes:
        raise NotImplementedError

    def _message(self, message: tuple[Any, ...]) -> None:
        """A message of the child's other than "ready" and "failed"."""

    def _before_stop(self) -> None:
        """Just before the stop frame is sent."""

    def _stopped(self) -> None:
        """The child has exited (or been killed) on stop."""

    def _down(self) -> None:
        """The child's end closed (it died, or is stopping)."""

    def _replacing(self) -> None:
        """The child died unexpectedly; another will be started."""

    def _start_failed(self) -> None:
        """A replacement could not start; another try follows."""

    def _started(self) -> None:
        """A child is ready (the first, or a replacement)."""

    def _replaced(self) -> None:
        """A replacement is ready."""

    # --- plumbing, on the event loop -------------------------------------------------------

    def _received(self, message: tuple[Any, ...]) -> None:
        tag = message[0]
        ready = self._ready
        if tag == "ready":
            if ready is not None and not ready.done():
                ready.set_result(None)
        elif tag == "failed":
            if ready is not None and not ready.done():
                ready.set_exception(ConfigurationError(message[1]))
        else:
            self._message(message)

    def _lost(self, link: _Link) -> None:
        """The child's end closed: start another, unless the server is stopping."""
        if link is not self._link:
            return
        self._link = None
        self._down()
        ready = self._ready
        if ready is not None and not ready.done():  # it died while opening
            ready.set_exception(
                ConfigurationError(f"the {self.what} process exited while opening {self.opens}")
            )
            return
        if not self._stopping and self._loop is not None and self._restarting is None:
            self.log.error("the %s process stopped unexpectedly; starting another", self.what)
            self._restarting = self._loop.create_task(self._restart())
            self._replacing()

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
                    self.log.error(
                        "the %s process could not start: %s", self.what, type(error).__name__
                    )
                    self._start_failed()
                    continue
                self.restarts += 1
                self._replaced()
                return
        finally:
            self._restarting = None

    async def _spawn(self) -> None:
        loop = self._loop
        assert loop is not None  # noqa: S101 (started)
        ours, theirs = socket.socketpair()
        process = child_context().Process(
            target=self._target,
            args=self._child_args(theirs),
            name=f"pdl-{self.what}",
            daemon=False,
        )
        try:
            await asyncio.to_thread(process.start)
        except (OSError, AssertionError, RuntimeError) as exc:  # e.g. from a daemonic process
            ours.close()
            theirs.close()
            msg = (
                f"cannot start the {self.what} process ({type(exc).__name__}); set {self.fallback}"
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
        self._started()


def _close_quietly(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.close()

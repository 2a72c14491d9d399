"""Whether the recording services can take writes, as `grpc.health.v1` tells probes.

The server and its recording services are SERVING while the writer process is up and storage
had room at the last write. A write that finds storage full (STORAGE_FULL) turns them
NOT_SERVING, so a load balancer or an orchestrator's readiness probe sends recording calls
elsewhere; the read-only services stay SERVING, since reads need no room. They are SERVING
again as soon as a write succeeds, or when the room probe finds room: on SQLite, enough free
space on the data directory's file system (checked every `ROOM_CHECK_SECONDS`); on
PostgreSQL, whose disk this server cannot see, after `ROOM_CHECK_SECONDS` (the next write
tells, and turns them NOT_SERVING again if there is still no room). A write that cannot reach
PostgreSQL at all (STORAGE_UNAVAILABLE) turns them NOT_SERVING the same way, for
`ROOM_CHECK_SECONDS` or until a write succeeds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from grpc_health.v1 import health, health_pb2

__all__ = [
    "ROOM_CHECK_SECONDS",
    "ROOM_MARGIN_BYTES",
    "RoomProbe",
    "WriteHealth",
    "free_bytes_probe",
]

_log = logging.getLogger("pdl.server")

ROOM_CHECK_SECONDS = 2.0
"""How often the room probe looks, once storage was found full."""
ROOM_MARGIN_BYTES = 8 << 20
"""Free space on the data directory's file system that counts as room again: a few
checkpoints' worth of the event store's log, so a write that follows does not fill it at
once."""

RoomProbe = Callable[[], bool]
"""Whether storage has room again (called on the event loop; it must not block long)."""


def free_bytes_probe(directory: Path, margin: int = ROOM_MARGIN_BYTES) -> RoomProbe:
    """Room when the file system holding `directory` has `margin` bytes free for this user."""

    def has_room() -> bool:
        try:
            found = os.statvfs(directory)
        except OSError:
            return True  # cannot tell: let the next write decide
        return found.f_bavail * found.f_frsize >= margin

    return has_room


_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class WriteHealth:
    """Sets the health of the server ("") and of the recording services from two facts: the
    writer is available, and storage has room. Every method runs on the server's event loop."""

    def __init__(
        self,
        checker: health.aio.HealthServicer,
        services: Sequence[str],
        probe: RoomProbe | None,
        check_seconds: float = ROOM_CHECK_SECONDS,
    ) -> None:
        self._checker = checker
        self._names = ("", *services)
        self._probe = probe
        self._check_seconds = check_seconds
        self._writer_up = True
        self.full = False
        """True from a write that found storage full until there is room again."""
        self._watch: asyncio.Task[None] | None = None
        self._serving: bool | None = None

    async def start(self) -> None:
        """Every name SERVING (the server is up)."""
        await self._publish()

    async def writer_available(self, available: bool) -> None:
        """The writer process was lost (False) or its replacement is ready (True)."""
        self._writer_up = available
        await self._publish()

    async def storage_full(self) -> None:
        """A write found no room: NOT_SERVING until a write succeeds or the probe finds room."""
        await self._trouble("storage is full")

    async def storage_unavailable(self) -> None:
        """A write could not reach storage: NOT_SERVING until a write succeeds, or for
        `check_seconds` (the next write tells again)."""
        await self._trouble("storage cannot be reached", probe=False)

    async def _trouble(self, what: str, *, probe: bool = True) -> None:
        if not self.full:
            self.full = True
            _log.warning("%s: the recording services are NOT_SERVING until a write succeeds", what)
            task = self._wait_for_room(probe=probe)
            self._watch = asyncio.get_running_loop().create_task(task)
        await self._publish()

    async def wrote(self) -> None:
        """A write succeeded: storage has room."""
        if self.full:
            await self._room_again()

    async def stop(self) -> None:
        """Stop watching for room (the server is stopping)."""
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch

    async def _wait_for_room(self, *, probe: bool = True) -> None:
        while self.full:
            await asyncio.sleep(self._check_seconds)
            if self.full and (not probe or self._probe is None or self._probe()):
                await self._room_again()

    async def _room_again(self) -> None:
        self.full = False
        watch, self._watch = self._watch, None
        if watch is not None and watch is not asyncio.current_task():
            watch.cancel()
        _log.info("storage takes writes again: the recording services are SERVING")
        await self._publish()

    async def _publish(self) -> None:
        serving = self._writer_up and not self.full
        if serving is self._serving:
            return
        self._serving = serving
        status = _SERVING if serving else _NOT_SERVING
        for name in self._names:
            await self._checker.set(name, status)

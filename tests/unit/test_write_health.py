"""The health of the server and its recording services (`server.write_health`): the writer's
availability and storage's room decide it together; a write that succeeds, or the room probe,
ends a full-storage spell; without a probe (PostgreSQL) the next check period does."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from grpc_health.v1 import health, health_pb2

from server.write_health import WriteHealth, free_bytes_probe

_S = health_pb2.HealthCheckResponse
_NAMES = ("pdl.v1.LedgerService",)


async def _status(checker: health.aio.HealthServicer, name: str) -> int:
    answer = await checker.Check(health_pb2.HealthCheckRequest(service=name), None)  # type: ignore[arg-type]
    return answer.status


async def _all(checker: health.aio.HealthServicer) -> set[int]:
    return {await _status(checker, name) for name in ("", *_NAMES)}


def test_writer_and_room_both_decide() -> None:
    async def run() -> None:
        checker = health.aio.HealthServicer()
        room = [False]
        writes = WriteHealth(checker, _NAMES, lambda: room[0], check_seconds=0.01)
        await writes.start()
        assert await _all(checker) == {_S.SERVING}
        await writes.storage_full()
        assert writes.full
        assert await _all(checker) == {_S.NOT_SERVING}
        await writes.writer_available(available=False)
        await writes.writer_available(available=True)
        assert await _all(checker) == {_S.NOT_SERVING}, "the writer back does not make room"
        await asyncio.sleep(0.05)
        assert await _all(checker) == {_S.NOT_SERVING}, "the probe found no room yet"
        room[0] = True
        for _ in range(100):
            if not writes.full:
                break
            await asyncio.sleep(0.01)
        assert await _all(checker) == {_S.SERVING}
        await writes.writer_available(available=False)
        assert await _all(checker) == {_S.NOT_SERVING}
        await writes.stop()

    asyncio.run(run())


def test_a_write_that_succeeds_ends_it_and_without_a_probe_the_period_does() -> None:
    async def run() -> None:
        checker = health.aio.HealthServicer()
        writes = WriteHealth(checker, _NAMES, None, check_seconds=3600)
        await writes.start()
        await writes.storage_full()
        await writes.storage_full()  # a second failure changes nothing
        await writes.wrote()
        assert not writes.full
        assert await _all(checker) == {_S.SERVING}

        quick = WriteHealth(checker, _NAMES, None, check_seconds=0.01)
        await quick.storage_full()
        assert await _all(checker) == {_S.NOT_SERVING}
        await asyncio.sleep(0.1)
        assert not quick.full
        assert await _all(checker) == {_S.SERVING}
        await quick.stop()
        await writes.stop()

    asyncio.run(run())


def test_storage_out_of_reach_is_not_serving_for_a_period_whatever_the_room_probe_says() -> None:
    """A database that cannot be reached is no question of room: the period ends it (the next
    write tells again), or a write that succeeds."""

    async def run() -> None:
        checker = health.aio.HealthServicer()
        writes = WriteHealth(checker, _NAMES, lambda: False, check_seconds=0.01)
        await writes.start()
        await writes.storage_unavailable()
        assert await _all(checker) == {_S.NOT_SERVING}
        for _ in range(100):
            if not writes.full:
                break
            await asyncio.sleep(0.01)
        assert await _all(checker) == {_S.SERVING}
        await writes.storage_unavailable()
        await writes.wrote()
        assert await _all(checker) == {_S.SERVING}
        await writes.stop()

    asyncio.run(run())


@pytest.mark.parametrize(("margin", "room"), [(1, True), (1 << 62, False)])
def test_the_room_probe_reads_free_space(tmp_path: Path, margin: int, room: bool) -> None:
    assert free_bytes_probe(tmp_path, margin)() is room
    assert free_bytes_probe(tmp_path / "missing", 1 << 62)(), "cannot tell: let a write decide"

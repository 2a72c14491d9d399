"""Read-your-writes waits on the projection process (`ProjectionProcess.reached`): a read is
woken by the position report that reaches what it waits for, not by polling; while it waits,
the child is hurried after every report short of it; a read that gave up is dropped."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from server.projection_child import HURRY
from server.projection_process import ProjectionProcess
from server.settings import load_settings
from server.writer_link import Frames


class _Link:
    """Stands for the socket to the child: keeps the messages written to it."""

    def __init__(self) -> None:
        self._frames = Frames()
        self.sent: list[tuple[Any, ...]] = []

    def write(self, frame: bytes) -> None:
        for batch in self._frames.feed(frame):
            self.sent.extend(batch)

    def hurries(self) -> int:
        return sum(1 for message in self.sent if message == (HURRY,))


async def _unused(_items: object) -> list[Any]:
    raise AssertionError("no notices here")


def _process(tmp_path: Path) -> tuple[ProjectionProcess, _Link]:
    process = ProjectionProcess(load_settings(environ={}, data_dir=tmp_path), None, _unused)  # type: ignore[arg-type]
    link = _Link()
    process._link = link  # type: ignore[assignment]
    return process, link


def test_a_read_waits_for_the_report_that_reaches_its_position(tmp_path: Path) -> None:
    async def scenario() -> None:
        process, link = _process(tmp_path)
        waiting = process.reached(10)
        await asyncio.sleep(0)
        assert not waiting.done()
        assert link.hurries() == 1  # fold what is there now

        process._message(("position", 6, None))
        await asyncio.sleep(0)
        assert not waiting.done()
        assert link.hurries() == 2  # short of it: hurried again

        process._message(("position", 10, None))
        assert waiting.done()
        assert link.hurries() == 2  # no read waits any more
        assert process.reached(7).done()  # already folded: at once

    asyncio.run(scenario())


def test_reads_given_up_are_dropped_and_do_not_keep_hurrying_the_child(tmp_path: Path) -> None:
    async def scenario() -> None:
        process, link = _process(tmp_path)
        gave_up = process.reached(50)
        with_deadline = asyncio.ensure_future(asyncio.wait_for(process.reached(40), 0.01))
        await asyncio.sleep(0.05)
        assert with_deadline.done()
        assert isinstance(with_deadline.exception(), TimeoutError)
        gave_up.cancel()

        process._message(("position", 20, None))
        assert link.hurries() == 1  # only the first wait asked
        assert process._waiters == []

    asyncio.run(scenario())


def test_several_reads_wake_in_the_order_their_positions_are_reached(tmp_path: Path) -> None:
    async def scenario() -> None:
        process, _link = _process(tmp_path)
        woken: list[int] = []
        for position in (30, 10, 20):
            process.reached(position).add_done_callback(lambda _f, p=position: woken.append(p))
        for reported in (15, 25, 35):
            process._message(("position", reported, None))
            await asyncio.sleep(0)
        assert woken == [10, 20, 30]

    asyncio.run(scenario())

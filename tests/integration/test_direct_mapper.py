"""The ledger's mapper writes the common event shape directly: its bytes must be exactly what
the library's mapper and the ledger's transcoder write, for every kind of event a realistic
history holds (the demo's: registrations, a guardian, consents, collections, uses, shares,
refusals, a rights request, an erasure, policy versions), and they read back the same."""

from __future__ import annotations

import io
from pathlib import Path

from eventsourcing.persistence import Mapper
from rich.console import Console

from ledger.clock import FixedClock
from ledger.transcoding import DirectMapper
from server.demo import DEMO_START, DemoValues, run_demo
from server.runtime import open_runtime
from server.settings import load_settings


def test_the_direct_mapper_writes_the_librarys_bytes_for_every_event_of_a_history(
    tmp_path: Path,
) -> None:
    clock = FixedClock(DEMO_START)
    runtime = open_runtime(load_settings(data_dir=tmp_path / "data"), clock=clock)
    try:
        ledger = runtime.ledger
        run_demo(ledger, clock, Console(file=io.StringIO()), DemoValues.generate())
        assert isinstance(ledger.mapper, DirectMapper)
        plain: Mapper = Mapper(transcoder=ledger.mapper.transcoder)  # type: ignore[type-arg]
        stored = ledger.recorder.select_notifications(1, 10_000)
        fell_back: list[bool] = []
        library_encode = Mapper.to_stored_event

        def counted(self: Mapper, event: object) -> object:  # type: ignore[type-arg]
            fell_back.append("originator_topic" in vars(event))
            return library_encode(self, event)  # type: ignore[arg-type]

        kinds = set()
        for notification in stored:
            event = ledger.mapper.to_domain_event(notification)
            Mapper.to_stored_event = counted  # type: ignore[method-assign,assignment]
            try:
                direct = ledger.mapper.to_stored_event(event)
            finally:
                Mapper.to_stored_event = library_encode  # type: ignore[method-assign]
            library = plain.to_stored_event(event)
            assert direct.state == library.state, notification.topic
            assert direct.topic == library.topic == notification.topic
            assert direct.originator_id == library.originator_id
            assert direct.originator_version == library.originator_version
            assert direct.state == notification.state  # as the write path stored it
            kinds.add(notification.topic)
    finally:
        runtime.close()
    assert len(kinds) >= 12  # the demo's history is varied
    # only creation events, which also name their aggregate's class, go the library's way
    assert all(fell_back)
    assert len(fell_back) < len(stored) / 4

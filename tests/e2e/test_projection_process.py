"""The projection process of `pdl serve` (`projections = "process"`, the default), on SQLite and
PostgreSQL: the views it keeps answer read-your-writes reads, the policy notices it finds are
recorded through the server's writer, it is started again when it dies and resumes where the
views stood, and it stops with the server.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from conftest import e2e_settings, start_server, stop_server
from e2e_requests import IP as _IP
from e2e_requests import ip_collection
from scenario import secret

from ledger.errors import ConfigurationError
from ledger.policy import load_seed_policy
from server import projection_process
from server._pb.pdl.v1 import common_pb2 as cpb
from server._pb.pdl.v1 import ledger_service_pb2 as lpb
from server._pb.pdl.v1 import policy_service_pb2 as ppb
from server.client import LedgerClient, meta, timestamp
from server.projection_process import ProjectionProcess
from server.settings import load_settings

if TYPE_CHECKING:
    from conftest import Served

_WAIT_SECONDS = 30.0


def _collect_ip(client: LedgerClient, sid: str) -> cpb.Recorded:
    return client.ledger.RecordCollection(ip_collection(sid), **client.options).recorded


def _process(served: Served) -> ProjectionProcess:
    projections = served.serving.projections
    assert projections is not None
    return projections


def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + _WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {_WAIT_SECONDS:.0f} s")
        time.sleep(0.05)


def test_the_views_are_kept_by_a_child_process_not_the_servers_own(
    serve_with: Callable[..., Served],
) -> None:
    served = serve_with()
    projections = _process(served)
    assert served.runtime.runner is None  # nothing folds in the server's process
    assert projections.pid is not None
    assert projections.pid != os.getpid()
    with served.client() as client:
        sid = client.register_subject("app", secret("account")).subject_id
        for expected in (1, 2, 3):
            written = _collect_ip(client, sid)
            view = client.subject_view(sid, min_position=written.position)
            (held,) = view.categories
            assert (held.category, held.collections) == (_IP, expected)
            assert view.last_position >= written.position
    assert projections.position >= written.position


@pytest.mark.parametrize("nice", [None, 0, 5])
def test_the_projection_process_runs_at_a_lower_cpu_priority_than_the_server(
    serve_with: Callable[..., Served], nice: int | None
) -> None:
    served = serve_with(**({} if nice is None else {"projection_nice": nice}))
    pid = _process(served).pid
    assert pid is not None
    ours = os.getpriority(os.PRIO_PROCESS, 0)  # the server's, which runs in this process
    expected = min(19, ours + (10 if nice is None else nice))  # 10 by default
    assert os.getpriority(os.PRIO_PROCESS, pid) == expected
    with served.client() as client:  # and it keeps the views all the same
        sid = client.register_subject("app", secret("account")).subject_id
        written = _collect_ip(client, sid)
        (held,) = client.subject_view(sid, min_position=written.position).categories
    assert held.category == _IP


@pytest.mark.parametrize("value", ["-1", "20", "ten"])
def test_a_projection_nice_outside_0_to_19_is_refused(value: str) -> None:
    with pytest.raises(ConfigurationError, match="projection_nice"):
        load_settings(environ={"PDL_PROJECTION_NICE": value})


@pytest.mark.parametrize("projections", ["process", "in-process"])
def test_a_read_after_a_batch_sees_every_item_of_it(
    serve_with: Callable[..., Served], projections: str
) -> None:
    served = serve_with(projections=projections)
    assert (served.serving.projections is not None) == (projections == "process")
    with served.client() as client:
        people = [client.register_subject("app", secret("account")).subject_id for _ in range(5)]
        items = [lpb.BatchItem(collection=ip_collection(sid)) for sid in people]
        answer = client.ledger.RecordBatch(lpb.RecordBatchRequest(items=items), **client.options)
        last = max(o.recorded.position for o in answer.outcomes)
        views = [client.subject_view(sid, min_position=last) for sid in people]
    assert [[c.category for c in v.categories] for v in views] == [[_IP]] * 5


def _widened_document(version: str) -> str:
    """The seed policy with the security purpose also using precise location: a major change
    that touches everyone whose network logs it uses."""
    policy = load_seed_policy()
    purposes = tuple(
        p.model_copy(update={"categories": (*p.categories, "location.gps")})
        if p.id == "security_detection"
        else p
        for p in policy.purposes
    )
    return policy.model_copy(update={"version": version, "purposes": purposes}).model_dump_json()


@pytest.mark.parametrize("writer", ["process", "thread"])
def test_policy_notices_found_by_the_child_are_recorded_through_the_servers_writer(
    serve_with: Callable[..., Served], writer: str
) -> None:
    served = serve_with(writer=writer)
    assert served.serving.projections is not None
    with served.client() as client, served.client("admin") as admin:
        touched = client.register_subject("app", secret("account")).subject_id
        untouched = client.register_subject("app", secret("account")).subject_id
        _collect_ip(client, touched)
        published = admin.policy.PublishPolicy(
            ppb.PublishPolicyRequest(
                meta=meta(),
                document_json=_widened_document("2"),
                effective_at=timestamp(datetime.now(UTC) + timedelta(days=30)),
                major=True,
                changes=["security detection also uses precise location"],
            ),
            **admin.options,
        ).recorded

        def notified() -> list[str]:
            found = client.policy_notifications(published.position + 1, version="2")
            return [n.subject_id for n in found]

        _until(lambda: notified() != [], "no policy notice was recorded")
        versions = client.policy_versions(min_position=published.position)
        told = notified()
    assert told == [touched]
    assert untouched not in told
    (v2,) = [v for v in versions if v.version == "2"]
    assert v2.major


def test_a_projection_process_that_dies_is_started_again_and_resumes(
    serve_with: Callable[..., Served],
) -> None:
    served = serve_with()
    projections = _process(served)
    with served.client() as client:
        sid = client.register_subject("app", secret("account")).subject_id
        before = _collect_ip(client, sid)
        client.subject_view(sid, min_position=before.position)
        first = projections.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        _until(lambda: projections.restarts == 1, "the projection process was not restarted")
        assert projections.pid not in (None, first)
        after = _collect_ip(client, sid)
        view = client.subject_view(sid, min_position=after.position)
    (held,) = view.categories
    assert held.collections == 2  # folded once each, across the restart


def test_the_projection_process_stops_with_the_server(
    serve_with: Callable[..., Served],
) -> None:
    served = serve_with()
    projections = _process(served)
    pid = projections.pid
    assert pid is not None
    served.run(served.serving.stop(1.0))
    assert projections.pid is None

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    _until(gone, "the projection process outlived the server")


@pytest.mark.parametrize("projections", ["process", "in-process"])
def test_a_read_waiting_for_its_position_cuts_the_gathering_short(
    serve_with: Callable[..., Served], projections: str
) -> None:
    # With 5 s of gathering and reads that wait at most 1 s, a read answers VIEW_BEHIND unless
    # it has the projections fold at once.
    served = serve_with(
        projections=projections, projection_gather_seconds=5.0, view_wait_seconds=1.0
    )
    with served.client() as client:
        sid = client.register_subject("app", secret("account")).subject_id
        for expected in (1, 2):
            written = _collect_ip(client, sid)
            view = client.subject_view(sid, min_position=written.position)
            (held,) = view.categories
            assert held.collections == expected


def test_views_far_behind_at_start_are_said_to_catch_up_and_then_to_be_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A new views database under an existing log: the server says where the views stand
    and the log ends, and once they got there."""
    settings = e2e_settings(tmp_path, "sqlite")
    first = start_server(settings)
    try:
        with first.client() as client:
            sid = client.register_subject("app", secret("account")).subject_id
            last = max(_collect_ip(client, sid).position for _ in range(8))
    finally:
        stop_server(first)
    for stale in (tmp_path / "data").glob("views.db*"):
        stale.unlink()
    monkeypatch.setattr(projection_process, "CATCH_UP_NOTICE", 5)
    caplog.set_level(logging.INFO, logger="pdl.projections")

    second = start_server(settings)
    try:
        _until(lambda: _process(second).position >= last, "the views caught up")
        _until(lambda: "caught up" in caplog.text, "the catching up was said to end")
    finally:
        stop_server(second)

    said = [r.getMessage() for r in caplog.records if r.name == "pdl.projections"]
    assert f"views at position 0 of {last}: catching up" in said[0]
    assert any(m.startswith(f"views caught up with position {last} in ") for m in said)

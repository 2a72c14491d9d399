"""A rights request keeps the deadline's terms of the policy in force at its receipt (§6.4
counts from receipt): a later version's longer extension, another kind of days or another
calendar does not apply to it; a delay or a close cannot be dated back before the due instant
once the request is overdue by the ledger's clock; and a pause of a working-day deadline
moves it by the working days the pause took whole.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError
from scenario import PRINCIPAL, key, later, refused, subject

from ledger import commands as c
from ledger import deadlines
from ledger.application import Ledger
from ledger.errors import RefusalReason as R
from ledger.events import RequestOutcome
from ledger.policy import Policy, ResponseDeadline, RightKind, load_seed_policy
from projections import ProjectionRunner, ViewStore, views
from projections import queries as q

_SHANGHAI = ZoneInfo("Asia/Shanghai")
_NEW_YORK = ZoneInfo("America/New_York")


def _open(ledger: Ledger, sid: UUID, at: datetime, **fields: Any) -> UUID:
    command = c.OpenRightsRequest(
        idempotency_key=key("req"),
        occurred_at=at,
        subject=c.SubjectRef(subject_id=sid),
        kind=RightKind.ACCESS,
        **fields,
    )
    return ledger.execute(PRINCIPAL, command).aggregate_id


def _extend(rid: UUID, at: datetime, days: int) -> c.ExtendRightsRequest:
    return c.ExtendRightsRequest(
        idempotency_key=key("ext"), occurred_at=at, request_id=rid, days=days, reason="backlog"
    )


def _pause(rid: UUID, at: datetime) -> c.PauseRightsRequest:
    return c.PauseRightsRequest(
        idempotency_key=key("pau"), occurred_at=at, request_id=rid, reason="verifying identity"
    )


def _resume(rid: UUID, at: datetime) -> c.ResumeRightsRequest:
    return c.ResumeRightsRequest(idempotency_key=key("res"), occurred_at=at, request_id=rid)


def _close(rid: UUID, at: datetime) -> c.CloseRightsRequest:
    return c.CloseRightsRequest(
        idempotency_key=key("clo"),
        occurred_at=at,
        request_id=rid,
        outcome=RequestOutcome.FULFILLED,
        reason="answered",
    )


def _version_2(ledger: Ledger, **deadline: Any) -> None:
    """Publish version 2 with other deadline terms, in force a minute from now."""
    seed = load_seed_policy()
    terms = seed.response_deadline.model_copy(update=deadline)
    policy = Policy.model_validate(
        {**seed.model_dump(mode="json"), "version": "2", "response_deadline": terms.model_dump()}
    )
    ledger.execute(
        PRINCIPAL,
        c.PublishPolicy(
            idempotency_key=key("pub"),
            occurred_at=ledger.clock.now(),
            policy=policy,
            effective_at=ledger.clock.now() + timedelta(minutes=1),
            major=True,
        ),
    )
    ledger.clock.advance(timedelta(minutes=2))  # type: ignore[attr-defined]


# --- the terms at receipt -----------------------------------------------------------------


def test_a_longer_extension_of_a_later_version_does_not_apply_to_an_open_request__clause_6_4(
    memory_ledger: Ledger,
) -> None:
    rid = _open(memory_ledger, subject(memory_ledger), later(memory_ledger))
    received = memory_ledger.rights_request(rid).received_at
    _version_2(memory_ledger, max_extension_days=30)

    refusal = refused(memory_ledger, _extend(rid, later(memory_ledger), 30))

    assert (refusal.reason, refusal.clause) == (R.EXTENSION_TOO_LONG, "§6.4")
    memory_ledger.execute(PRINCIPAL, _extend(rid, later(memory_ledger), 15))
    assert memory_ledger.rights_request(rid).due_at - received == timedelta(days=30)


def test_working_days_of_a_later_version_do_not_apply_to_a_calendar_request__clause_6_4(
    memory_ledger: Ledger,
) -> None:
    sid = subject(memory_ledger)
    memory_ledger.clock.advance(timedelta(days=4))  # type: ignore[attr-defined]
    rid = _open(memory_ledger, sid, later(memory_ledger))  # Thursday: due on a Friday
    due = memory_ledger.rights_request(rid).due_at
    assert due.astimezone(_SHANGHAI).weekday() == 4
    _version_2(memory_ledger, kind="working")

    memory_ledger.execute(PRINCIPAL, _extend(rid, later(memory_ledger), 1))

    state = memory_ledger.rights_request(rid)
    assert (state.deadline_kind, state.due_at - due) == ("calendar", timedelta(days=1))


def test_a_request_received_before_a_new_version_is_due_under_the_old_one__clause_6_4(
    memory_ledger: Ledger,
) -> None:
    sid = subject(memory_ledger)
    received = later(memory_ledger)
    _version_2(memory_ledger, days=30)

    rid = _open(memory_ledger, sid, memory_ledger.clock.now(), received_at=received)

    state = memory_ledger.rights_request(rid)
    assert state.due_at - received == timedelta(days=15)
    assert state.deadline is not None
    assert state.deadline.days == 15


def test_the_deadlines_view_agrees_with_the_request_after_a_new_version__clause_6_4(
    memory_ledger: Ledger,
) -> None:
    """Paused past its latest due instant under the terms at receipt, the request is overdue
    in the view, and the ledger refuses to delay it any more."""
    rid = _open(memory_ledger, subject(memory_ledger), later(memory_ledger))
    _version_2(memory_ledger, max_extension_days=30)
    memory_ledger.execute(PRINCIPAL, _pause(rid, later(memory_ledger)))
    memory_ledger.clock.advance(timedelta(days=35))  # type: ignore[attr-defined]
    now = memory_ledger.clock.now()

    refusal = refused(memory_ledger, _extend(rid, now, 1))

    assert (refusal.reason, refusal.clause) == (R.REQUEST_OVERDUE, "§6.4")
    store = ViewStore("sqlite://")
    try:
        ProjectionRunner(memory_ledger, store, views(store.dialect)).catch_up()
        with store.read() as conn:
            [row] = [r for r in q.deadlines(conn, now=now).items if r.request_id == rid]
    finally:
        store.close()
    assert row.overdue is True


# --- dated back ---------------------------------------------------------------------------


@pytest.mark.parametrize("step", ["extend", "pause"])
def test_a_delay_dated_before_the_due_instant_but_recorded_after_it_is_refused__clause_6_4(
    memory_ledger: Ledger, step: str
) -> None:
    rid = _open(memory_ledger, subject(memory_ledger), later(memory_ledger))
    due = memory_ledger.rights_request(rid).due_at
    memory_ledger.clock.advance(timedelta(days=20))  # type: ignore[attr-defined]
    back = due - timedelta(hours=1)
    command = _extend(rid, back, 10) if step == "extend" else _pause(rid, back)

    refusal = refused(memory_ledger, command)

    assert (refusal.reason, refusal.clause) == (R.REQUEST_OVERDUE, "§6.4")


def test_a_close_dated_before_the_due_instant_but_recorded_after_it_is_late__clause_6_4(
    memory_ledger: Ledger,
) -> None:
    rid = _open(memory_ledger, subject(memory_ledger), later(memory_ledger))
    due = memory_ledger.rights_request(rid).due_at
    memory_ledger.clock.advance(timedelta(days=40))  # type: ignore[attr-defined]

    memory_ledger.execute(PRINCIPAL, _close(rid, due - timedelta(seconds=1)))

    assert memory_ledger.rights_request(rid).late is True


def test_a_step_recorded_within_the_clocks_skew_keeps_its_own_date__clause_6_4(
    memory_ledger: Ledger,
) -> None:
    rid = _open(memory_ledger, subject(memory_ledger), later(memory_ledger))
    due = memory_ledger.rights_request(rid).due_at
    memory_ledger.clock.advance(due - memory_ledger.clock.now() + timedelta(minutes=4))  # type: ignore[attr-defined]

    memory_ledger.execute(PRINCIPAL, _extend(rid, due - timedelta(seconds=1), 2))
    memory_ledger.execute(PRINCIPAL, _close(rid, due))

    state = memory_ledger.rights_request(rid)
    assert (state.extended_days, state.late) == (2, False)


# --- pauses of working-day deadlines --------------------------------------------------------


def _working(**fields: Any) -> ResponseDeadline:
    terms: dict[str, Any] = {
        "days": 15,
        "kind": "working",
        "holiday_calendar": "CN",
        "max_extension_days": 15,
        "clause": "§6.4",
        **fields,
    }
    return ResponseDeadline.model_validate(terms)


def _end_of(day: date, zone: ZoneInfo = _SHANGHAI) -> datetime:
    return datetime.combine(day, time.max, tzinfo=zone).astimezone(UTC)


def test_a_pause_over_a_weekend_stops_no_working_day__clause_6_4() -> None:
    due = _end_of(date(2026, 11, 26))  # a Thursday
    paused = datetime(2026, 11, 20, 18, tzinfo=_SHANGHAI)  # Friday evening
    resumed = datetime(2026, 11, 23, 9, tzinfo=_SHANGHAI)  # Monday morning

    assert deadlines.resume(due, paused, resumed, _working()) == due


def test_a_pause_moves_a_working_day_deadline_by_the_working_days_it_took_whole__clause_6_4() -> (
    None
):
    """Paused on the Friday before the 2026 Spring Festival, resumed on the first working day
    after it: of the days between, only the make-up Saturday (14 February) is a working day."""
    due = _end_of(date(2026, 3, 6))
    paused = datetime(2026, 2, 13, 18, tzinfo=_SHANGHAI)
    resumed = datetime(2026, 2, 24, 9, tzinfo=_SHANGHAI)

    moved = deadlines.resume(due, paused, resumed, _working())

    assert moved == _end_of(date(2026, 3, 9))  # one working day later: Monday
    assert deadlines.working_days_between(date(2026, 3, 6), date(2026, 3, 9), "CN") == 1


def test_a_pause_of_a_calendar_deadline_moves_it_by_the_time_paused__clause_6_4() -> None:
    due = datetime(2026, 11, 26, 9, tzinfo=UTC)
    paused = datetime(2026, 11, 20, 18, tzinfo=UTC)
    calendar = _working(kind="calendar")

    moved = deadlines.resume(due, paused, paused + timedelta(hours=63), calendar)

    assert moved == due + timedelta(hours=63)


# --- the zone and the calendar of the terms -------------------------------------------------


def test_working_days_are_counted_in_the_deadlines_own_time_zone__clause_6_4() -> None:
    """Received on a Thursday morning in New York, with US holidays (4 July a Friday): due at
    the end of Monday, New York time."""
    terms = _working(days=1, holiday_calendar="US", time_zone="America/New_York")

    due = deadlines.due_at(datetime(2025, 7, 3, 8, tzinfo=_NEW_YORK), terms)

    assert due == _end_of(date(2025, 7, 7), _NEW_YORK)


def test_a_holiday_calendar_or_zone_nobody_knows_is_refused_in_the_policy() -> None:
    with pytest.raises(ValidationError, match="no public-holiday calendar for country 'ZZ'"):
        _working(holiday_calendar="ZZ")
    with pytest.raises(ValidationError, match="unknown time zone 'Mars/Olympus'"):
        _working(time_zone="Mars/Olympus")

"""Due instants of rights requests: calendar days, Chinese working days, extensions, pauses."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.deadlines import (
    check_calendar,
    due_at,
    extend,
    is_working_day,
    resume,
    working_days_between,
)
from ledger.policy import ResponseDeadline

SHANGHAI = ZoneInfo("Asia/Shanghai")


def _deadline(
    days: int, kind: Literal["calendar", "working"], country: str = "CN"
) -> ResponseDeadline:
    return ResponseDeadline(
        days=days, kind=kind, holiday_calendar=country, max_extension_days=30, clause="§6.4"
    )


def _local(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=SHANGHAI)


def _end_of_local_day(day: date) -> datetime:
    return datetime.combine(day, time.max, tzinfo=SHANGHAI).astimezone(UTC)


# --- the calendar itself: facts the deadlines below rest on -----------------------------


def test_the_2025_national_day_week_is_off_in_china() -> None:
    assert not any(is_working_day(date(2025, 10, day), "CN") for day in range(1, 9))
    assert is_working_day(date(2025, 10, 9), "CN")


def test_the_make_up_weekend_days_around_national_day_2025_are_working_days() -> None:
    assert date(2025, 9, 28).weekday() == 6  # a Sunday
    assert date(2025, 10, 11).weekday() == 5  # a Saturday
    assert is_working_day(date(2025, 9, 28), "CN")
    assert is_working_day(date(2025, 10, 11), "CN")
    assert not is_working_day(date(2025, 10, 12), "CN")  # the Sunday after stays off


def test_an_ordinary_weekend_is_not_a_working_day() -> None:
    assert not is_working_day(date(2025, 3, 15), "CN")
    assert not is_working_day(date(2025, 3, 16), "CN")
    assert is_working_day(date(2025, 3, 17), "CN")


# --- calendar kind ------------------------------------------------------------------------


def test_a_request_is_due_exactly_15_calendar_days_after_receipt() -> None:
    """§6.4 (account cancellation) and §9 (contact) of the seed policy: within 15 days."""
    received = _local(2025, 3, 3, 10, 0)

    due = due_at(received, _deadline(15, "calendar"))

    assert due == _local(2025, 3, 18, 10, 0)
    assert due - received == timedelta(days=15)
    assert due.tzinfo is UTC


def test_a_calendar_deadline_runs_through_the_national_day_holidays() -> None:
    due = due_at(_local(2025, 9, 26, 10, 0), _deadline(15, "calendar"))

    assert due == _local(2025, 10, 11, 10, 0)


# --- working kind -------------------------------------------------------------------------


def test_15_working_days_across_the_national_day_week_end_later_than_15_calendar_days() -> None:
    received = _local(2025, 9, 26, 10, 0)  # a Friday

    working = due_at(received, _deadline(15, "working"))
    calendar = due_at(received, _deadline(15, "calendar"))

    # 28 Sep (make-up Sunday), 29, 30 Sep, 9, 10, 11 (make-up Saturday), 13-17, 20-23 Oct.
    assert working == _end_of_local_day(date(2025, 10, 23))
    assert working > calendar


def test_a_working_deadline_is_due_at_the_end_of_its_last_local_day() -> None:
    due = due_at(_local(2025, 3, 3, 10, 0), _deadline(5, "working"))

    assert due == datetime(2025, 3, 10, 15, 59, 59, 999999, tzinfo=UTC)
    assert due.astimezone(SHANGHAI).time() == time.max


def test_a_receipt_on_a_friday_evening_counts_from_the_next_monday() -> None:
    received = _local(2025, 3, 14, 20, 0)  # Friday evening in Shanghai, noon UTC

    assert due_at(received, _deadline(1, "working")) == _end_of_local_day(date(2025, 3, 17))
    assert due_at(received, _deadline(5, "working")) == _end_of_local_day(date(2025, 3, 21))


def test_the_day_of_receipt_is_the_local_date_not_the_utc_date() -> None:
    received = datetime(2025, 3, 13, 16, 30, tzinfo=UTC)  # Thursday UTC, Friday 00:30 local

    due = due_at(received, _deadline(1, "working"))

    assert due == _end_of_local_day(date(2025, 3, 17))  # the Monday, not the Friday


def test_a_make_up_working_weekend_day_counts_as_a_working_day() -> None:
    assert due_at(_local(2025, 10, 10, 9), _deadline(1, "working")) == _end_of_local_day(
        date(2025, 10, 11)
    )
    assert due_at(_local(2025, 9, 26, 9), _deadline(1, "working")) == _end_of_local_day(
        date(2025, 9, 28)
    )


def test_the_working_days_between_receipt_and_due_date_are_the_deadline_days() -> None:
    assert working_days_between(date(2025, 9, 26), date(2025, 10, 23), "CN") == 15
    assert working_days_between(date(2025, 9, 26), date(2025, 9, 26), "CN") == 0


def test_working_days_between_refuses_an_end_before_the_start() -> None:
    with pytest.raises(ValueError, match="before start"):
        working_days_between(date(2025, 10, 2), date(2025, 10, 1), "CN")


# --- extensions ---------------------------------------------------------------------------


def test_a_calendar_extension_adds_whole_days() -> None:
    deadline = _deadline(15, "calendar")
    due = due_at(_local(2025, 3, 3, 10, 0), deadline)

    assert extend(due, 15, deadline) == _local(2025, 4, 2, 10, 0)


def test_a_working_extension_adds_working_days_and_keeps_the_end_of_day() -> None:
    deadline = _deadline(15, "working")
    due = due_at(_local(2025, 9, 26, 10, 0), deadline)  # end of Thu 23 Oct

    assert extend(due, 2, deadline) == _end_of_local_day(date(2025, 10, 27))


def test_a_working_extension_skips_holidays() -> None:
    deadline = _deadline(1, "working")
    due = _end_of_local_day(date(2025, 9, 30))

    assert extend(due, 1, deadline) == _end_of_local_day(date(2025, 10, 9))


def test_a_negative_extension_is_refused() -> None:
    deadline = _deadline(15, "calendar")
    due = due_at(_local(2025, 3, 3), deadline)

    with pytest.raises(ValueError, match="negative"):
        extend(due, -1, deadline)


# --- pauses -------------------------------------------------------------------------------


def test_a_pause_moves_the_due_instant_by_exactly_the_paused_time() -> None:
    due = _local(2025, 3, 18, 10, 0)
    paused = _local(2025, 3, 5, 9, 15)
    resumed = _local(2025, 3, 7, 17, 40)

    assert resume(due, paused, resumed) == due + (resumed - paused)
    assert resume(due, paused, resumed) == _local(2025, 3, 20, 18, 25)


def test_a_pause_of_no_time_leaves_the_due_instant_alone() -> None:
    due = _local(2025, 3, 18, 10, 0)

    assert resume(due, _local(2025, 3, 5), _local(2025, 3, 5)) == due


def test_a_pause_that_ends_before_it_began_is_refused() -> None:
    with pytest.raises(ValueError, match="before paused_at"):
        resume(_local(2025, 3, 18), _local(2025, 3, 7), _local(2025, 3, 5))


# --- refusals -----------------------------------------------------------------------------


def test_an_unknown_holiday_calendar_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="'XX'"):
        check_calendar("XX")


def test_a_working_deadline_under_an_unknown_calendar_is_refused() -> None:
    with pytest.raises(ValueError, match="'XX'"):
        due_at(_local(2025, 3, 3), _deadline(15, "working", country="XX"))


def test_a_library_alias_is_not_an_iso_country_code() -> None:
    check_calendar("GB")
    with pytest.raises(ValueError, match="'UK'"):
        check_calendar("UK")


def test_an_unknown_time_zone_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="Mars/Olympus"):
        due_at(_local(2025, 3, 3), _deadline(15, "working"), tz="Mars/Olympus")


def test_a_naive_receipt_instant_is_refused() -> None:
    naive = _local(2025, 3, 3).replace(tzinfo=None)

    with pytest.raises(ValueError, match="timezone-aware"):
        due_at(naive, _deadline(15, "calendar"))


# --- properties ---------------------------------------------------------------------------

_START = _local(2024, 1, 1)
_SPAN = _local(2031, 1, 1) - _START

receipts = st.integers(min_value=0, max_value=int(_SPAN.total_seconds()) - 1).map(
    lambda seconds: _START + timedelta(seconds=seconds)
)
day_counts = st.integers(min_value=1, max_value=30)


@given(received=receipts, days=day_counts)
def test_a_working_due_instant_ends_the_nth_working_day_after_the_local_receipt_date(
    received: datetime, days: int
) -> None:
    due = due_at(received, _deadline(days, "working")).astimezone(SHANGHAI)
    received_on = received.astimezone(SHANGHAI).date()

    assert due > received
    assert due.time() == time.max
    assert is_working_day(due.date(), "CN")
    assert working_days_between(received_on, due.date(), "CN") == days


@given(received=receipts, days=day_counts)
def test_a_working_due_instant_is_never_earlier_than_the_calendar_one(
    received: datetime, days: int
) -> None:
    # At most one working day per date, so N working days span at least N dates.
    assert due_at(received, _deadline(days, "working")) >= due_at(
        received, _deadline(days, "calendar")
    )


@given(received=receipts, days=st.integers(min_value=1, max_value=29))
def test_one_more_working_day_is_always_a_later_due_instant(received: datetime, days: int) -> None:
    assert due_at(received, _deadline(days + 1, "working")) > due_at(
        received, _deadline(days, "working")
    )


@given(
    received=receipts,
    days=day_counts,
    more=st.integers(min_value=0, max_value=30),
    kind=st.sampled_from(["calendar", "working"]),
)
def test_extending_by_m_days_is_the_same_as_a_deadline_m_days_longer(
    received: datetime, days: int, more: int, kind: Literal["calendar", "working"]
) -> None:
    deadline = _deadline(days, kind)

    extended = extend(due_at(received, deadline), more, deadline)

    assert extended == due_at(received, _deadline(days + more, kind))

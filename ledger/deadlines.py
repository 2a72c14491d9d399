"""Due instants of rights requests: calendar or working days under a public-holiday calendar.

Pure functions: every instant is passed in, nothing reads the clock. Instants go in and come
out as timezone-aware datetimes (naive ones are refused); results are in UTC. Working days
come from the ``holidays`` library, which knows China's public holidays *and* the weekend
days the State Council turns into make-up working days (调休).

How days are counted (a working-kind deadline of N days):

* The day of receipt does not count; day 1 is the first working day after the local date of
  receipt. This is how periods in days are counted in Chinese law (PRC Civil Code art. 201:
  the starting day is not counted, the period runs from the next day).
* A working day is one the holiday calendar calls a working day: Monday to Friday unless a
  public holiday or a day off moved there, and a Saturday or Sunday only when it is an
  official make-up working day.
* The due instant is the *end* of the Nth working day, 23:59:59.999999 local time, converted
  to UTC. A period counted in whole days ends when its last day ends (art. 203: the last day
  ends at 24:00). Working days are dates, not spans of 24 hours, so a time-of-receipt reading
  would have no clear meaning; the organisation has the whole of its last working day.

A calendar-kind deadline of N days is the stricter, exact reading: the due instant is the
receipt instant plus N x 24 hours, with no rounding up to the end of a day and no moving off a
holiday. That is the reading protective of the person: the organisation never gets more than
N x 24 hours. (In Asia/Shanghai, which has no daylight saving time, N x 24 hours is also the
same wall-clock time N days later.)

The calendar is only as good as the library's data: for a year whose holiday arrangement has
not been published yet, the library knows the fixed and lunar holidays but no make-up days.
"""

from __future__ import annotations

import functools
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays

from ledger.clock import ensure_utc
from ledger.policy import ResponseDeadline, known_calendar

__all__ = [
    "DEFAULT_TZ",
    "check_calendar",
    "due_at",
    "extend",
    "is_working_day",
    "latest_due",
    "resume",
    "working_days_between",
]

DEFAULT_TZ = "Asia/Shanghai"
"""The zone a policy's working days are counted in unless it names another
(`ResponseDeadline.time_zone`)."""

_END_OF_DAY = time.max  # 23:59:59.999999


def check_calendar(country: str) -> None:
    """Refuse a country code the holiday library has no calendar for (``ValueError``); only
    canonical ISO 3166-1 alpha-2 codes, not the library's aliases (``policy.known_calendar``)."""
    known_calendar(country)


def is_working_day(day: date, country: str) -> bool:
    """True when ``day`` is a working day in ``country`` (make-up weekend days count)."""
    return day in _working_days(country, day.year)


def working_days_between(start: date, end: date, country: str) -> int:
    """Count the working days ``d`` with ``start < d <= end`` in ``country``.

    The start is excluded and the end included, as deadlines are counted: for a working-kind
    due instant, ``working_days_between(receipt_date, due_date, country)`` is N.
    ``end`` before ``start`` is refused with ``ValueError``.
    """
    if end < start:
        msg = f"end {end.isoformat()} is before start {start.isoformat()}"
        raise ValueError(msg)
    check_calendar(country)
    count = 0
    day = start
    while day < end:
        day += timedelta(days=1)
        count += is_working_day(day, country)
    return count


def due_at(received_at: datetime, deadline: ResponseDeadline, *, tz: str | None = None) -> datetime:
    """The instant by which a request received at ``received_at`` must be answered, in UTC.

    Calendar kind: ``received_at`` + ``deadline.days`` x 24 hours exactly (``tz`` is unused).
    Working kind: the end (23:59:59.999999 local time) of the ``deadline.days``-th working day
    after the local date of receipt, under the ``deadline.holiday_calendar`` country's
    calendar, in ``tz`` (by default the deadline's own ``time_zone``). See the module
    docstring for why each reading.
    """
    return _shift(ensure_utc(received_at), deadline.days, deadline, tz, end_of_day=True)


def extend(
    due: datetime, days: int, deadline: ResponseDeadline, *, tz: str | None = None
) -> datetime:
    """Move the due instant ``due`` later by ``days`` days of the deadline's kind, in UTC.

    Calendar kind: ``days`` x 24 hours later. Working kind: the same local wall-clock time
    (in ``tz``, by default the deadline's ``time_zone``) on the ``days``-th working day after
    the local date of ``due``; a due instant at the end of a working day therefore stays at
    the end of a working day. ``days`` must be zero or more (``ValueError``). Whether the
    extension stays within ``deadline.max_extension_days`` in total is a rule for the caller,
    which knows the extensions already granted.
    """
    if days < 0:
        msg = f"an extension cannot be negative ({days} days)"
        raise ValueError(msg)
    return _shift(ensure_utc(due), days, deadline, tz, end_of_day=False)


def latest_due(
    received_at: datetime, deadline: ResponseDeadline, *, tz: str | None = None
) -> datetime:
    """The latest a request received at ``received_at`` may ever be due, in UTC: its due
    instant extended by the whole of ``deadline.max_extension_days``. Extensions and pauses
    together never move a request's due instant past it (§6.4: any delay is an extension)."""
    return extend(
        due_at(received_at, deadline, tz=tz), deadline.max_extension_days, deadline, tz=tz
    )


def resume(
    due: datetime,
    paused_at: datetime,
    resumed_at: datetime,
    deadline: ResponseDeadline | None = None,
    *,
    tz: str | None = None,
) -> datetime:
    """The due instant after a pause, in UTC: the clock stops while the request is paused
    (e.g. waiting for the person to prove who they are) and restarts where it stopped.

    Calendar kind (or no ``deadline``): ``due`` moved later by ``resumed_at - paused_at``.
    Working kind: ``due`` moved later by the working days the pause took whole, those whose
    local date (in ``tz``, by default the deadline's ``time_zone``) is after the pause's and
    before the resumption's; the days it began and ended on were worked in part, and a pause
    over a weekend or a holiday stops no working day. The due instant stays at the end of a
    working day. A pause that ends before it began is refused with ``ValueError``.
    """
    paused = ensure_utc(resumed_at) - ensure_utc(paused_at)
    if paused < timedelta(0):
        msg = f"resumed_at {resumed_at.isoformat()} is before paused_at {paused_at.isoformat()}"
        raise ValueError(msg)
    if deadline is None or deadline.kind == "calendar":
        return ensure_utc(due) + paused
    zone = _zone(tz or deadline.time_zone)
    first = ensure_utc(paused_at).astimezone(zone).date()
    last = ensure_utc(resumed_at).astimezone(zone).date()
    whole = 0
    if last > first:
        whole = working_days_between(first, last, deadline.holiday_calendar)
        whole -= is_working_day(last, deadline.holiday_calendar)
    return extend(due, whole, deadline, tz=tz)


def _shift(
    start: datetime, days: int, deadline: ResponseDeadline, tz: str | None, *, end_of_day: bool
) -> datetime:
    """``start`` moved by ``days`` of the deadline's kind; for working days, see callers."""
    if deadline.kind == "calendar":
        return start + timedelta(days=days)
    zone = _zone(tz or deadline.time_zone)
    local = start.astimezone(zone)
    day = _nth_working_day_after(local.date(), days, deadline.holiday_calendar)
    wall = _END_OF_DAY if end_of_day else local.time()
    return datetime.combine(day, wall, tzinfo=zone).astimezone(UTC)


def _nth_working_day_after(start: date, n: int, country: str) -> date:
    """The ``n``-th working day after ``start`` (``start`` itself for ``n == 0``)."""
    check_calendar(country)
    day = start
    remaining = n
    while remaining > 0:
        day += timedelta(days=1)
        if is_working_day(day, country):
            remaining -= 1
    return day


@functools.lru_cache(maxsize=64)
def _zone(tz: str) -> ZoneInfo:
    """The zone named ``tz``; an unknown name is refused with ``ValueError`` naming it."""
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        msg = f"unknown time zone {tz!r}"
        raise ValueError(msg) from None


@functools.lru_cache(maxsize=512)
def _working_days(country: str, year: int) -> frozenset[date]:
    """Every working day of ``year`` in ``country``, computed once and never mutated.

    The library's calendar objects fill themselves in lazily on lookup, which is not safe to
    share between threads; a frozen set per (country, year) is. The neighbouring years are
    loaded too, because a make-up working day can be declared in the arrangement of the next
    year (e.g. the last weekend of December working for a 2 January day off).
    """
    check_calendar(country)
    calendar = holidays.country_holidays(country, years=range(year - 1, year + 2), expand=False)
    first = date(year, 1, 1)
    span = (date(year + 1, 1, 1) - first).days
    days = (first + timedelta(days=offset) for offset in range(span))
    return frozenset(day for day in days if calendar.is_working_day(day))

"""What is due: rights requests against their deadlines, and data held past its retention."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from ledger.policy import RightKind
from ledger.rights import RequestStatus
from projections.answers import (
    DeadlineCounts,
    DeadlinePage,
    DeadlineRow,
    RetentionPage,
    RetentionRow,
)
from projections.deadlines import REQUESTS
from projections.errors import BadQuery
from projections.paging import exact_filter, fetch_page, page
from projections.retention import HELD
from projections.store import from_us, from_us_or_none, to_us

__all__ = ["DEFAULT_DUE_SOON_DAYS", "DeadlineStatus", "deadlines", "retention_due"]

DEFAULT_DUE_SOON_DAYS = 3
_MAX_DUE_SOON_DAYS = 366
_DAY_US = 86_400 * 1_000_000


class DeadlineStatus(StrEnum):
    """Which rights requests to list by where they stand against their deadline."""

    ALL = "all"
    OPEN = "open"
    """Not closed: running or paused."""
    PAUSED = "paused"
    DUE_SOON = "due_soon"
    """Running and due within the asked number of days from now."""
    OVERDUE = "overdue"
    """Running and past its due instant, or paused past the latest it may ever be due (a
    pause then can only end late)."""
    CLOSED = "closed"
    CLOSED_LATE = "closed_late"


# --- rights-request deadlines -------------------------------------------------------------------


def deadlines(
    conn: Connection,
    *,
    now: datetime,
    status: DeadlineStatus = DeadlineStatus.ALL,
    kind: RightKind | None = None,
    due_within_days: int = 0,
    page_size: int = 0,
    page_token: str = "",
) -> DeadlinePage:
    """Rights requests standing where `status` says at `now`, soonest due first, and how many
    of each kind stand where."""
    if not 0 <= due_within_days <= _MAX_DUE_SOON_DAYS:
        raise BadQuery(
            "due_within_days", f"give 0 (for {DEFAULT_DUE_SOON_DAYS}) to {_MAX_DUE_SOON_DAYS}"
        )
    days = due_within_days or DEFAULT_DUE_SOON_DAYS
    r = REQUESTS
    now_us = to_us(now)
    soon_us = now_us + days * _DAY_US
    running = r.c.status == RequestStatus.OPEN.value
    closed = r.c.status == RequestStatus.CLOSED.value
    paused = r.c.status == RequestStatus.PAUSED.value
    conditions: dict[DeadlineStatus, sa.ColumnElement[bool]] = {
        DeadlineStatus.OPEN: sa.not_(closed),
        DeadlineStatus.PAUSED: paused,
        DeadlineStatus.DUE_SOON: sa.and_(running, r.c.due_at >= now_us, r.c.due_at < soon_us),
        DeadlineStatus.OVERDUE: sa.or_(
            sa.and_(running, r.c.due_at < now_us),
            sa.and_(paused, r.c.latest_due_at < now_us),
        ),
        DeadlineStatus.CLOSED: closed,
        DeadlineStatus.CLOSED_LATE: sa.and_(closed, r.c.late),
    }
    kind_value = "" if kind is None else kind.value
    want = page(
        "deadlines",
        [status.value, kind_value, days],
        page_size,
        page_token,
        (int, UUID),
    )
    query = sa.select(r)
    if status is not DeadlineStatus.ALL:
        query = query.where(conditions[status])
    if kind_value:
        query = query.where(r.c.kind == kind_value)
    rows, token = fetch_page(conn, query, (r.c.due_at, r.c.request_id), want)
    items = tuple(_deadline(row, now_us, soon_us) for row in rows)
    counted = [
        sa.func.sum(sa.case((conditions[s], 1), else_=0)).label(s.value)
        for s in DeadlineStatus
        if s is not DeadlineStatus.ALL
    ]
    summary_query = sa.select(r.c.kind, *counted, sa.func.count().label("total")).group_by(r.c.kind)
    if kind_value:
        summary_query = summary_query.where(r.c.kind == kind_value)
    summary = tuple(
        DeadlineCounts(
            kind=RightKind(s.kind),
            open=s.open or 0,
            paused=s.paused or 0,
            due_soon=s.due_soon or 0,
            overdue=s.overdue or 0,
            closed=s.closed or 0,
            closed_late=s.closed_late or 0,
            total=s.total,
        )
        for s in sorted(conn.execute(summary_query), key=lambda s: str(s.kind))
    )
    return DeadlinePage(items=items, next_page_token=token, summary=summary, as_of=now)


def _deadline(r: Row[Any], now_us: int, soon_us: int) -> DeadlineRow:
    running = r.status == RequestStatus.OPEN.value
    return DeadlineRow(
        request_id=r.request_id,
        subject_id=r.subject_id,
        kind=RightKind(r.kind),
        status=RequestStatus(r.status),
        received_at=from_us(r.received_at),
        due_at=from_us(r.due_at),
        deadline_kind=r.deadline_kind,
        deadline_clause=r.deadline_clause,
        extended_days=r.extended_days,
        paused_at=from_us_or_none(r.paused_at),
        closed_at=from_us_or_none(r.closed_at),
        outcome=r.outcome,
        late=r.late,
        overdue=(running and r.due_at < now_us)
        or (
            r.status == RequestStatus.PAUSED.value
            and r.latest_due_at is not None
            and r.latest_due_at < now_us
        ),
        due_soon=running and now_us <= r.due_at < soon_us,
    )


# --- retention due ------------------------------------------------------------------------------


def retention_due(
    conn: Connection,
    *,
    now: datetime,
    retention_days: Mapping[str, int],
    category: str = "",
    page_size: int = 0,
    page_token: str = "",
) -> RetentionPage:
    """Data held past its category's retention period (`retention_days`, from the policy in
    force at `now`), longest overdue first. A category that policy no longer declares has no
    period that allows holding it: it is due from its last collection."""
    category = exact_filter("category", category)
    h = HELD
    now_us = to_us(now)
    periods = {name: days * _DAY_US for name, days in sorted(retention_days.items())}
    period: sa.ColumnElement[int] = (
        sa.case(periods, value=h.c.category, else_=0) if periods else sa.literal(0)
    )
    due_at = (h.c.last_at + period).label("due_at")
    want = page(
        "retention",
        [category, sorted(periods.items())],
        page_size,
        page_token,
        (int, UUID, str),
    )
    query = sa.select(h, due_at).where(h.c.last_at + period < now_us)
    if category:
        query = query.where(h.c.category == category)
    order = (h.c.last_at + period, h.c.subject_id, h.c.category)
    rows, token = fetch_page(conn, query, order, want, ("due_at", "subject_id", "category"))
    items = tuple(
        RetentionRow(
            subject_id=r.subject_id,
            category=r.category,
            first_at=from_us(r.first_at),
            last_at=from_us(r.last_at),
            retention_days=retention_days.get(r.category, 0),
            due_at=from_us(r.due_at),
            in_policy=r.category in retention_days,
        )
        for r in rows
    )
    return RetentionPage(items=items, next_page_token=token, as_of=now)

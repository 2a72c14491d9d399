"""Reads of the views: pure queries on a `Connection`, answering `projections.answers` models.

Each list is keyset-paged (`projections.paging`) in a stable order and filtered by exact
values; a bad filter, page size or page token raises `BadQuery` naming the argument. "Now" is
passed in (the ledger's clock), as is the retention period of each category under the policy
in force, so a query never reads a clock or the log. Call them inside `ViewStore.read()` so a
page and its summary come from one snapshot.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from ledger.errors import SubjectNotFound
from ledger.policy import RightKind
from ledger.rights import RequestStatus
from projections.answers import (
    ConsentRow,
    DeadlineCounts,
    DeadlinePage,
    DeadlineRow,
    HeldCategoryView,
    HeldField,
    NoticeRow,
    Paged,
    RegisterRow,
    RetentionPage,
    RetentionRow,
    SubjectViewAnswer,
    VersionRow,
)
from projections.consents import CONSENTS
from projections.deadlines import REQUESTS
from projections.errors import BadQuery, PolicyVersionNotFound
from projections.notices import NOTICES, VERSIONS
from projections.paging import Page, after, page, token_for
from projections.register import ACTIVITIES, REGISTER
from projections.retention import HELD
from projections.store import from_us, to_us
from projections.subjects import CATEGORIES, FACETS, REFERENCE_FIELD, SUBJECTS, VALUES

__all__ = [
    "DEFAULT_DUE_SOON_DAYS",
    "DeadlineStatus",
    "NoticeStatus",
    "consents",
    "deadlines",
    "policy_notices",
    "policy_versions",
    "register",
    "retention_due",
    "subject_view",
]

DEFAULT_DUE_SOON_DAYS = 3
_MAX_DUE_SOON_DAYS = 366
_DAY_US = 86_400 * 1_000_000
_MAX_FILTER_CHARS = 128
_MAX_VERSION_CHARS = 32
_SEAL_FIELDS = {REFERENCE_FIELD: "reference"}
"""View field names whose values were sealed under another field name."""


class DeadlineStatus(StrEnum):
    """Which rights requests to list by where they stand against their deadline."""

    ALL = "all"
    OPEN = "open"
    """Not closed: running or paused."""
    PAUSED = "paused"
    DUE_SOON = "due_soon"
    """Running and due within the asked number of days from now."""
    OVERDUE = "overdue"
    """Running and past its due instant; a paused request is not overdue while paused."""
    CLOSED = "closed"
    CLOSED_LATE = "closed_late"


class NoticeStatus(StrEnum):
    """Which notices of a policy version to list."""

    ALL = "all"
    NOTIFIED = "notified"
    UNACKNOWLEDGED = "unacknowledged"
    """Told, and not (yet) acknowledged."""
    ACKNOWLEDGED = "acknowledged"


# --- a person's view ----------------------------------------------------------------------------


def subject_view(conn: Connection, subject_id: UUID) -> SubjectViewAnswer:
    """One person: flags, and each category held with its facets and sealed fields."""
    s = conn.execute(sa.select(SUBJECTS).where(SUBJECTS.c.subject_id == subject_id)).first()
    if s is None:
        raise SubjectNotFound("unknown subject")
    held = {
        r.category: r
        for r in conn.execute(sa.select(CATEGORIES).where(CATEGORIES.c.subject_id == subject_id))
    }
    facets: dict[str, dict[str, list[str]]] = {}
    for r in conn.execute(
        sa.select(FACETS.c.category, FACETS.c.facet, FACETS.c.value)
        .where(FACETS.c.subject_id == subject_id)
        .order_by(FACETS.c.category, FACETS.c.facet, FACETS.c.value)
    ):
        facets.setdefault(r.category, {}).setdefault(r.facet, []).append(r.value)
    fields: dict[str, list[HeldField]] = {}
    for r in conn.execute(
        sa.select(VALUES).where(VALUES.c.subject_id == subject_id).order_by(VALUES.c.field)
    ):
        fields.setdefault(r.category, []).append(
            HeldField(
                field=r.field,
                seal_field=_SEAL_FIELDS.get(r.field, r.field),
                sealed=r.sealed,
                set_at=from_us(r.at),
                position=r.position,
            )
        )
    categories = tuple(
        _held_category(name, held.get(name), facets.get(name, {}), fields.get(name, []))
        for name in sorted(set(held) | set(facets) | set(fields))
    )
    return SubjectViewAnswer(
        subject_id=s.subject_id,
        namespace=s.namespace,
        account_id_sealed=s.account_id,
        registered_at=from_us(s.registered_at),
        minor=s.minor,
        has_guardian=s.has_guardian,
        storage_region=s.storage_region,
        erased=s.erased,
        cancelled=s.cancelled,
        key_shredded=s.key_shredded,
        closed_at=_instant(s.closed_at),
        events=s.events,
        last_position=s.last_position,
        categories=categories,
        recipient_classes=_union(c.recipient_classes for c in categories),
        recipients=_union(c.recipients for c in categories),
    )


def _held_category(
    name: str, held: Row[Any] | None, facets: dict[str, list[str]], fields: list[HeldField]
) -> HeldCategoryView:
    return HeldCategoryView(
        category=name,
        first_at=None if held is None else from_us(held.first_at),
        last_at=None if held is None else from_us(held.last_at),
        collections=0 if held is None else held.collections,
        sources=tuple(facets.get("source", ())),
        purposes=tuple(facets.get("purpose", ())),
        bases=tuple(facets.get("basis", ())),
        regions=tuple(facets.get("region", ())),
        recipient_classes=tuple(facets.get("recipient_class", ())),
        recipients=tuple(facets.get("recipient", ())),
        fields=tuple(fields),
    )


def _union(groups: Any) -> tuple[str, ...]:
    return tuple(sorted({item for group in groups for item in group}))


# --- consents -----------------------------------------------------------------------------------


def consents(
    conn: Connection,
    subject_id: UUID,
    *,
    now: datetime,
    include_withdrawn: bool = False,
    purpose: str = "",
    category: str = "",
    page_size: int = 0,
    page_token: str = "",
) -> Paged[ConsentRow]:
    """A person's consents per purpose by category, in force at `now` (and withdrawn ones
    too with `include_withdrawn`), in log order."""
    purpose, category = _text("purpose", purpose), _text("category", category)
    c = CONSENTS
    order = (c.c.position, c.c.purpose, c.c.category)
    want = page(
        "consents",
        [str(subject_id), include_withdrawn, purpose, category],
        page_size,
        page_token,
        (int, str, str),
    )
    if (
        conn.execute(
            sa.select(SUBJECTS.c.subject_id).where(SUBJECTS.c.subject_id == subject_id)
        ).first()
        is None
    ):
        raise SubjectNotFound("unknown subject")
    now_us = to_us(now)
    in_force = sa.or_(c.c.withdrawn_at.is_(None), c.c.withdrawn_at > now_us)
    query = sa.select(c).where(c.c.subject_id == subject_id)
    if not include_withdrawn:
        query = query.where(in_force)
    if purpose:
        query = query.where(c.c.purpose == purpose)
    if category:
        query = query.where(c.c.category == category)
    rows, token = _paged(conn, query, order, want)
    items = tuple(
        ConsentRow(
            consent_id=r.consent_id,
            purpose=r.purpose,
            category=r.category,
            given_at=from_us(r.given_at),
            given_by=r.given_by,
            method=r.method,
            policy_version=r.policy_version,
            position=r.position,
            withdrawn_at=_instant(r.withdrawn_at),
            in_force=r.withdrawn_at is None or r.withdrawn_at > now_us,
        )
        for r in rows
    )
    return Paged[ConsentRow](items=items, next_page_token=token)


# --- the processing register --------------------------------------------------------------------


def register(
    conn: Connection,
    *,
    activity: str = "",
    category: str = "",
    purpose: str = "",
    recipient_class: str = "",
    region: str = "",
    page_size: int = 0,
    page_token: str = "",
) -> Paged[RegisterRow]:
    """The record of processing activities, by activity, category, purpose, basis, class and
    region."""
    if activity and activity not in ACTIVITIES:
        raise BadQuery("activity", f"must be one of {', '.join(ACTIVITIES)}")
    filters = {
        REGISTER.c.activity: activity,
        REGISTER.c.category: _text("category", category),
        REGISTER.c.purpose: _text("purpose", purpose),
        REGISTER.c.recipient_class: _text("recipient_class", recipient_class),
        REGISTER.c.region: _text("region", region),
    }
    want = page("register", list(filters.values()), page_size, page_token, (str,))
    query = sa.select(REGISTER).where(*(col == v for col, v in filters.items() if v))
    rows, token = _paged(conn, query, (REGISTER.c.key,), want)
    items = tuple(
        RegisterRow(
            activity=r.activity,
            category=r.category,
            purpose=r.purpose,
            legal_basis=r.legal_basis,
            recipient_class=r.recipient_class,
            region=r.region,
            subjects=r.subjects,
            events=r.events,
            first_seen=from_us(r.first_seen),
            last_seen=from_us(r.last_seen),
        )
        for r in rows
    )
    return Paged[RegisterRow](items=items, next_page_token=token)


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
    conditions: dict[DeadlineStatus, sa.ColumnElement[bool]] = {
        DeadlineStatus.OPEN: sa.not_(closed),
        DeadlineStatus.PAUSED: r.c.status == RequestStatus.PAUSED.value,
        DeadlineStatus.DUE_SOON: sa.and_(running, r.c.due_at >= now_us, r.c.due_at < soon_us),
        DeadlineStatus.OVERDUE: sa.and_(running, r.c.due_at < now_us),
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
    rows, token = _paged(conn, query, (r.c.due_at, r.c.request_id), want)
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
        paused_at=_instant(r.paused_at),
        closed_at=_instant(r.closed_at),
        outcome=r.outcome,
        late=r.late,
        overdue=running and r.due_at < now_us,
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
    category = _text("category", category)
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
    rows, token = _paged(conn, query, order, want, ("due_at", "subject_id", "category"))
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


# --- policy versions and notices ----------------------------------------------------------------


def policy_versions(
    conn: Connection, *, page_size: int = 0, page_token: str = ""
) -> Paged[VersionRow]:
    """The published versions in log order, with their change reasons and notice counts."""
    v, n = VERSIONS, NOTICES
    want = page("versions", [], page_size, page_token, (int,))
    notified = (
        sa.select(sa.func.count())
        .where(n.c.version == v.c.version, n.c.notified_at.is_not(None))
        .scalar_subquery()
    )
    acknowledged = (
        sa.select(sa.func.count())
        .where(n.c.version == v.c.version, n.c.acknowledged_at.is_not(None))
        .scalar_subquery()
    )
    query = sa.select(
        v.c.version,
        v.c.previous_version,
        v.c.major,
        v.c.effective_at,
        v.c.published_at,
        v.c.reasons,
        v.c.affected,
        v.c.position,
        notified.label("notified"),
        acknowledged.label("acknowledged"),
    )
    rows, token = _paged(conn, query, (v.c.position,), want)
    items = tuple(
        VersionRow(
            version=r.version,
            previous_version=r.previous_version,
            major=r.major,
            effective_at=from_us(r.effective_at),
            published_at=from_us(r.published_at),
            reasons=tuple(orjson.loads(r.reasons)),
            affected=r.affected,
            notified=r.notified,
            acknowledged=r.acknowledged,
            position=r.position,
        )
        for r in rows
    )
    return Paged[VersionRow](items=items, next_page_token=token)


def policy_notices(
    conn: Connection,
    version: str,
    *,
    status: NoticeStatus = NoticeStatus.ALL,
    page_size: int = 0,
    page_token: str = "",
) -> Paged[NoticeRow]:
    """Who was told of a published version and who acknowledged it, by person."""
    if not version:
        raise BadQuery("version", "required")
    version = _text("version", version, _MAX_VERSION_CHARS)
    n = NOTICES
    want = page("notices", [version, status.value], page_size, page_token, (UUID,))
    if (
        conn.execute(sa.select(VERSIONS.c.version).where(VERSIONS.c.version == version)).first()
        is None
    ):
        raise PolicyVersionNotFound(version)
    query = sa.select(n).where(n.c.version == version)
    if status is NoticeStatus.NOTIFIED:
        query = query.where(n.c.notified_at.is_not(None))
    elif status is NoticeStatus.UNACKNOWLEDGED:
        query = query.where(n.c.notified_at.is_not(None), n.c.acknowledged_at.is_(None))
    elif status is NoticeStatus.ACKNOWLEDGED:
        query = query.where(n.c.acknowledged_at.is_not(None))
    rows, token = _paged(conn, query, (n.c.subject_id,), want)
    items = tuple(
        NoticeRow(
            subject_id=r.subject_id,
            version=r.version,
            notified_at=_instant(r.notified_at),
            method=r.method,
            notified_position=r.notified_position,
            acknowledged_at=_instant(r.acknowledged_at),
            acknowledged_position=r.acknowledged_position,
        )
        for r in rows
    )
    return Paged[NoticeRow](items=items, next_page_token=token)


# --- plumbing -----------------------------------------------------------------------------------


def _paged(
    conn: Connection,
    query: sa.Select[Any],
    order: tuple[Any, ...],
    want: Page,
    keys: tuple[str, ...] | None = None,
) -> tuple[list[Row[Any]], str]:
    """One page of `query` in `order` (unique), and the token of the next ("" at the end).

    The next page's key is read from the last row's columns named `keys` (by default, the
    names of the ordering columns)."""
    if want.after is not None:
        query = query.where(after(order, want.after))
    rows = list(conn.execute(query.order_by(*order).limit(want.size + 1)))
    if len(rows) <= want.size:
        return rows, ""
    rows = rows[: want.size]
    last = rows[-1]._mapping
    names = keys if keys is not None else tuple(column.name for column in order)
    return rows, token_for(want, tuple(last[name] for name in names))


def _text(field: str, value: str, most: int = _MAX_FILTER_CHARS) -> str:
    """An exact-match filter: empty means none; bounded and free of NUL characters."""
    if len(value) > most:
        raise BadQuery(field, f"at most {most} characters")
    if "\x00" in value:
        raise BadQuery(field, "must not contain NUL characters")
    return value


def _instant(value: int | None) -> datetime | None:
    return None if value is None else from_us(value)

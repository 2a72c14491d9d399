"""What is held and processed: a person's view, their consents, the processing register."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from ledger.errors import SubjectNotFound
from projections.answers import (
    ConsentRow,
    HeldCategoryView,
    HeldField,
    Paged,
    RegisterRow,
    SharedWith,
    SubjectViewAnswer,
)
from projections.consents import CONSENTS
from projections.errors import BadQuery
from projections.paging import exact_filter, fetch_page, page
from projections.register import ACTIVITIES, REGISTER
from projections.store import from_us, from_us_or_none, to_us
from projections.subjects import (
    CATEGORIES,
    FACETS,
    PERSON,
    REFERENCE_FIELD,
    SUBJECTS,
    VALUES,
    shared_with_of,
)

__all__ = ["consents", "register", "subject_view"]

_SEAL_FIELDS = {REFERENCE_FIELD: "reference"}
"""View field names whose values were sealed under another field name."""


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
    whole = facets.pop(PERSON, {})
    categories = tuple(
        _held_category(name, held.get(name), facets.get(name, {}), fields.get(name, []))
        for name in sorted(set(held) | set(facets) | set(fields))
    )
    shared = sorted({shared_with_of(v) for v in whole.get("shared_with", ())})

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
        closed_at=from_us_or_none(s.closed_at),
        events=s.events,
        last_position=s.last_position,
        categories=categories,
        recipient_classes=tuple(sorted({k for k, _ in shared})),
        recipients=tuple(sorted({n for _, n in shared})),
        shared_with=_by_class(shared),
    )


def _held_category(
    name: str, held: Row[Any] | None, facets: dict[str, list[str]], fields: list[HeldField]
) -> HeldCategoryView:
    shared = [shared_with_of(value) for value in facets.get("shared_with", ())]
    return HeldCategoryView(
        category=name,
        first_at=None if held is None else from_us(held.first_at),
        last_at=None if held is None else from_us(held.last_at),
        collections=0 if held is None else held.collections,
        sources=tuple(facets.get("source", ())),
        purposes=tuple(facets.get("purpose", ())),
        bases=tuple(facets.get("basis", ())),
        regions=tuple(facets.get("region", ())),
        recipient_classes=tuple(sorted({c for c, _ in shared})),
        recipients=tuple(sorted({r for _, r in shared})),
        shared_with=_by_class(shared),
        fields=tuple(fields),
    )


def _by_class(pairs: Iterable[tuple[str, str]]) -> tuple[SharedWith, ...]:
    """(recipient class, recipient) pairs as each class with its recipients, both sorted."""
    by_class: dict[str, set[str]] = {}
    for recipient_class, recipient in pairs:
        by_class.setdefault(recipient_class, set()).add(recipient)
    return tuple(
        SharedWith(recipient_class=c, recipients=tuple(sorted(names)))
        for c, names in sorted(by_class.items())
    )


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
    purpose, category = exact_filter("purpose", purpose), exact_filter("category", category)
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
    rows, token = fetch_page(conn, query, order, want)
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
            withdrawn_at=from_us_or_none(r.withdrawn_at),
            in_force=r.given_at <= now_us and (r.withdrawn_at is None or r.withdrawn_at > now_us),
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
        REGISTER.c.category: exact_filter("category", category),
        REGISTER.c.purpose: exact_filter("purpose", purpose),
        REGISTER.c.recipient_class: exact_filter("recipient_class", recipient_class),
        REGISTER.c.region: exact_filter("region", region),
    }
    want = page("register", list(filters.values()), page_size, page_token, (str,))
    query = sa.select(REGISTER).where(*(col == v for col, v in filters.items() if v))
    rows, token = fetch_page(conn, query, (REGISTER.c.key,), want)
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

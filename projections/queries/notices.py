"""Policy versions with their reasons, and who was told of each and who acknowledged."""

from __future__ import annotations

from enum import StrEnum
from uuid import UUID

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from projections.answers import (
    NoticeRow,
    Paged,
    VersionRow,
)
from projections.errors import BadQuery, PolicyVersionNotFound
from projections.notices import NOTICES, VERSIONS
from projections.paging import exact_filter, fetch_page, page
from projections.store import from_us, from_us_or_none

__all__ = ["NoticeStatus", "policy_notices", "policy_versions"]

_MAX_VERSION_CHARS = 32


class NoticeStatus(StrEnum):
    """Which notices of a policy version to list."""

    ALL = "all"
    NOTIFIED = "notified"
    UNACKNOWLEDGED = "unacknowledged"
    """Told, and not (yet) acknowledged."""
    ACKNOWLEDGED = "acknowledged"


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
    rows, token = fetch_page(conn, query, (v.c.position,), want)
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
    version = exact_filter("version", version, _MAX_VERSION_CHARS)
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
    rows, token = fetch_page(conn, query, (n.c.subject_id,), want)
    items = tuple(
        NoticeRow(
            subject_id=r.subject_id,
            version=r.version,
            notified_at=from_us_or_none(r.notified_at),
            method=r.method,
            notified_position=r.notified_position,
            acknowledged_at=from_us_or_none(r.acknowledged_at),
            acknowledged_position=r.acknowledged_position,
        )
        for r in rows
    )
    return Paged[NoticeRow](items=items, next_page_token=token)

"""The rights-request deadlines view: every request with its type, due instant and status, so
staff see what is open, due soon, overdue or closed late (§6: answered within the policy's
deadline, 15 days in the seed policy).

Requests are few next to recordings: the requests a page opens are inserted together, and
each later change is one statement.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast
from uuid import UUID

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.engine import Connection

from ledger import events as ev
from ledger.policy import CLAUSE_MAX_LENGTH
from ledger.rights import RequestStatus
from projections.batch import ManyRows, uuid_param
from projections.store import METADATA, to_us
from projections.view import Entry, View

__all__ = ["DeadlineView"]

REQUESTS = sa.Table(
    "view_requests",
    METADATA,
    sa.Column("request_id", sa.Uuid, primary_key=True),
    sa.Column("subject_id", sa.Uuid, nullable=False, index=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("received_at", sa.BigInteger, nullable=False),
    sa.Column("due_at", sa.BigInteger, nullable=False, index=True),
    sa.Column("deadline_kind", sa.String(16), nullable=False),
    sa.Column("deadline_clause", sa.String(CLAUSE_MAX_LENGTH), nullable=False),
    sa.Column("extended_days", sa.Integer, nullable=False),
    sa.Column("paused_at", sa.BigInteger, nullable=True),
    sa.Column(
        "latest_due_at",
        sa.BigInteger,
        nullable=True,
        comment="The latest it may ever be due (NULL for requests opened before it was kept).",
    ),
    sa.Column("closed_at", sa.BigInteger, nullable=True),
    sa.Column("outcome", sa.String(16), nullable=True),
    sa.Column("late", sa.Boolean, nullable=False),
    sa.Column("last_position", sa.BigInteger, nullable=False),
)


_COLUMNS = tuple(c.name for c in REQUESTS.c)
_KINDS = frozenset(
    {
        ev.RightsRequestOpened,
        ev.RightsRequestExtended,
        ev.RightsRequestPaused,
        ev.RightsRequestResumed,
        ev.RightsRequestClosed,
    }
)


class DeadlineView(View):
    """Rights requests by status and due instant."""

    name = "deadlines"
    tables = (REQUESTS,)

    def __init__(self, dialect: str) -> None:
        super().__init__(dialect)
        self._uuid = uuid_param(dialect)
        self._insert = ManyRows(dialect, REQUESTS.insert(), _COLUMNS)

    def apply(self, conn: Connection, entries: Sequence[Entry]) -> None:
        opened: list[tuple[object, ...]] = []  # inserted together, before any later change
        for position, payload in entries:
            if type(payload) not in _KINDS:
                continue
            if isinstance(payload, ev.RightsRequestOpened):
                opened.append(self._opened(position, payload))
                continue
            request_id, values = _change(payload)
            self._insert.run(conn, opened)
            opened = []
            conn.execute(
                REQUESTS.update()
                .where(REQUESTS.c.request_id == request_id)
                .values(last_position=position, **values)
            )
        self._insert.run(conn, opened)

    def _opened(self, position: int, p: ev.RightsRequestOpened) -> tuple[object, ...]:
        return (
            self._uuid(p.request_id),
            self._uuid(p.subject_id),
            p.kind.value,
            RequestStatus.OPEN.value,
            to_us(p.received_at),
            to_us(p.due_at),
            p.deadline_kind,
            p.deadline_clause,
            0,
            None,
            None if p.latest_due_at is None else to_us(p.latest_due_at),
            None,
            None,
            False,
            position,
        )


def _change(p: BaseModel) -> tuple[UUID, dict[str, object]]:
    """The request a later event changes, and how."""
    if isinstance(p, ev.RightsRequestExtended):
        return p.request_id, {
            "due_at": to_us(p.due_at),
            "extended_days": REQUESTS.c.extended_days + p.days,
        }
    if isinstance(p, ev.RightsRequestPaused):
        return p.request_id, {
            "status": RequestStatus.PAUSED.value,
            "paused_at": to_us(p.occurred_at),
        }
    if isinstance(p, ev.RightsRequestResumed):
        return p.request_id, {
            "status": RequestStatus.OPEN.value,
            "paused_at": None,
            "due_at": to_us(p.due_at),
        }
    closed = cast("ev.RightsRequestClosed", p)
    return closed.request_id, {
        "status": RequestStatus.CLOSED.value,
        "closed_at": to_us(closed.occurred_at),
        "outcome": closed.outcome.value,
        "late": closed.late,
    }

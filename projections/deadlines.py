"""The rights-request deadlines view: every request with its type, due instant and status, so
staff see what is open, due soon, overdue or closed late (§6: answered within the policy's
deadline, 15 days in the seed policy).

Requests are few next to recordings, so each event is one statement here.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ledger import events as ev
from ledger.rights import RequestStatus
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
    sa.Column("deadline_clause", sa.String(32), nullable=False),
    sa.Column("extended_days", sa.Integer, nullable=False),
    sa.Column("paused_at", sa.BigInteger, nullable=True),
    sa.Column("closed_at", sa.BigInteger, nullable=True),
    sa.Column("outcome", sa.String(16), nullable=True),
    sa.Column("late", sa.Boolean, nullable=False),
    sa.Column("last_position", sa.BigInteger, nullable=False),
)


class DeadlineView(View):
    """Rights requests by status and due instant."""

    name = "deadlines"
    tables = (REQUESTS,)

    def apply(self, conn: Connection, entries: Sequence[Entry]) -> None:
        for position, p in entries:
            if isinstance(p, ev.RightsRequestOpened):
                conn.execute(
                    REQUESTS.insert(),
                    {
                        "request_id": p.request_id,
                        "subject_id": p.subject_id,
                        "kind": p.kind.value,
                        "status": RequestStatus.OPEN.value,
                        "received_at": to_us(p.received_at),
                        "due_at": to_us(p.due_at),
                        "deadline_kind": p.deadline_kind,
                        "deadline_clause": p.deadline_clause,
                        "extended_days": 0,
                        "paused_at": None,
                        "closed_at": None,
                        "outcome": None,
                        "late": False,
                        "last_position": position,
                    },
                )
                continue
            values: dict[str, object]
            if isinstance(p, ev.RightsRequestExtended):
                values = {
                    "due_at": to_us(p.due_at),
                    "extended_days": REQUESTS.c.extended_days + p.days,
                }
            elif isinstance(p, ev.RightsRequestPaused):
                values = {"status": RequestStatus.PAUSED.value, "paused_at": to_us(p.occurred_at)}
            elif isinstance(p, ev.RightsRequestResumed):
                values = {
                    "status": RequestStatus.OPEN.value,
                    "paused_at": None,
                    "due_at": to_us(p.due_at),
                }
            elif isinstance(p, ev.RightsRequestClosed):
                values = {
                    "status": RequestStatus.CLOSED.value,
                    "closed_at": to_us(p.occurred_at),
                    "outcome": p.outcome.value,
                    "late": p.late,
                }
            else:
                continue
            conn.execute(
                REQUESTS.update()
                .where(REQUESTS.c.request_id == p.request_id)
                .values(last_position=position, **values)
            )

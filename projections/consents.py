"""The consents view: every consent given, per person by purpose by category, with the policy
version, the giver (the person or a guardian), the method and the time; a withdrawal closes
the interval of each grant it covers.

Withdrawals apply by occurred-at, as the ledger's own rules do: a grant is withdrawn by the
earliest covering withdrawal at or after it, whatever order the two were recorded in, so the
rows are a function of the set of events and rebuilding gives the same rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ledger import events as ev
from projections.batch import ManyRows
from projections.store import METADATA, to_us
from projections.view import Entry, View

__all__ = ["ANY", "ConsentView"]

ANY = "*"
"""A withdrawal's purpose or category that means 'every'."""

CONSENTS = sa.Table(
    "view_consents",
    METADATA,
    sa.Column("consent_id", sa.Uuid, primary_key=True),
    sa.Column("purpose", sa.String(64), primary_key=True),
    sa.Column("category", sa.String(64), primary_key=True),
    sa.Column("subject_id", sa.Uuid, nullable=False, index=True),
    sa.Column("given_at", sa.BigInteger, nullable=False),
    sa.Column("given_by", sa.String(16), nullable=False),
    sa.Column("method", sa.String(64), nullable=False),
    sa.Column("policy_version", sa.String(32), nullable=False),
    sa.Column("position", sa.BigInteger, nullable=False),
    sa.Column("withdrawn_at", sa.BigInteger, nullable=True),
)

WITHDRAWALS = sa.Table(
    "view_consent_withdrawals",
    METADATA,
    sa.Column("position", sa.BigInteger, primary_key=True),
    sa.Column("purpose", sa.String(64), primary_key=True),
    sa.Column("category", sa.String(64), primary_key=True),
    sa.Column("subject_id", sa.Uuid, nullable=False, index=True),
    sa.Column("at", sa.BigInteger, nullable=False),
)


def _withdrawn_at() -> sa.ScalarSelect[int]:
    w = WITHDRAWALS
    c = CONSENTS
    return (
        sa.select(sa.func.min(w.c.at))
        .where(
            w.c.subject_id == c.c.subject_id,
            w.c.at >= c.c.given_at,
            sa.or_(w.c.purpose == c.c.purpose, w.c.purpose == ANY),
            sa.or_(w.c.category == c.c.category, w.c.category == ANY),
        )
        .scalar_subquery()
    )


class ConsentView(View):
    """Consents in force and withdrawn, per person by purpose by category."""

    name = "consents"
    tables = (CONSENTS, WITHDRAWALS)

    def __init__(self, dialect: str) -> None:
        super().__init__(dialect)
        self._insert_grants = ManyRows(dialect, CONSENTS.insert())
        self._insert_withdrawals = ManyRows(dialect, WITHDRAWALS.insert())
        self._settle_subjects = (
            CONSENTS.update()
            .where(CONSENTS.c.subject_id.in_(sa.bindparam("subjects", expanding=True)))
            .values(withdrawn_at=_withdrawn_at())
        )
        self._settle_new = (
            CONSENTS.update()
            .where(CONSENTS.c.position.in_(sa.bindparam("positions", expanding=True)))
            .values(withdrawn_at=_withdrawn_at())
        )

    def apply(self, conn: Connection, entries: Sequence[Entry]) -> None:
        grants: list[dict[str, object]] = []
        withdrawals: list[dict[str, object]] = []
        withdrawing: set[UUID] = set()
        granted: list[int] = []
        for position, p in entries:
            if isinstance(p, ev.ConsentGiven):
                granted.append(position)
                at = to_us(p.occurred_at)
                grants.extend(
                    {
                        "consent_id": p.consent_id,
                        "purpose": purpose,
                        "category": category,
                        "subject_id": p.subject_id,
                        "given_at": at,
                        "given_by": p.given_by.value,
                        "method": p.method,
                        "policy_version": p.policy_version,
                        "position": position,
                        "withdrawn_at": None,
                    }
                    for purpose in p.purposes
                    for category in p.categories
                )
            elif isinstance(p, ev.ConsentWithdrawn):
                withdrawing.add(p.subject_id)
                at = to_us(p.occurred_at)
                withdrawals.extend(
                    {
                        "position": position,
                        "purpose": purpose,
                        "category": category,
                        "subject_id": p.subject_id,
                        "at": at,
                    }
                    for purpose in (p.purposes or (ANY,))
                    for category in (p.categories or (ANY,))
                )
        if grants:
            self._insert_grants.run(conn, grants)
        if withdrawals:
            self._insert_withdrawals.run(conn, withdrawals)
            conn.execute(self._settle_subjects, {"subjects": sorted(withdrawing)})
        if granted:
            conn.execute(self._settle_new, {"positions": granted})

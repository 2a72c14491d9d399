"""The consents view: every consent given, per person by purpose by category, with the policy
version, the giver (the person or a guardian), the method and the time; a withdrawal closes
the interval of each grant it covers.

Withdrawals apply by occurred-at, as the ledger's own rules do: a grant is withdrawn by the
earliest covering withdrawal at or after it, whatever order the two were recorded in, so the
rows are a function of the set of events and rebuilding gives the same rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ledger import events as ev
from projections.batch import ManyRows, uuid_param
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
    every = sa.literal_column(
        f"'{ANY}'", sa.String
    )  # inline: the statement's only parameter is its row's
    return (
        sa.select(sa.func.min(w.c.at))
        .where(
            w.c.subject_id == c.c.subject_id,
            w.c.at >= c.c.given_at,
            sa.or_(w.c.purpose == c.c.purpose, w.c.purpose == every),
            sa.or_(w.c.category == c.c.category, w.c.category == every),
        )
        .scalar_subquery()
    )


_GRANT_COLUMNS = tuple(c.name for c in CONSENTS.c)
_WITHDRAWAL_COLUMNS = tuple(c.name for c in WITHDRAWALS.c)
_GIVERS = {giver: giver.value for giver in ev.ConsentGiver}


class ConsentView(View):
    """Consents in force and withdrawn, per person by purpose by category."""

    name = "consents"
    tables = (CONSENTS, WITHDRAWALS)

    def __init__(self, dialect: str) -> None:
        super().__init__(dialect)
        self._uuid = uuid_param(dialect)
        self._insert_grants = ManyRows(dialect, CONSENTS.insert(), _GRANT_COLUMNS)
        self._insert_withdrawals = ManyRows(dialect, WITHDRAWALS.insert(), _WITHDRAWAL_COLUMNS)
        # Each settles rows by their key's leading column (an index seek per consent or
        # person): the new grants, and every grant of a person who withdrew in the page.
        self._settle_subjects = ManyRows(
            dialect,
            CONSENTS.update()
            .where(CONSENTS.c.subject_id == sa.bindparam("sid", type_=sa.Uuid))
            .values(withdrawn_at=_withdrawn_at()),
            ("sid",),
        )
        self._settle_grants = ManyRows(
            dialect,
            CONSENTS.update()
            .where(CONSENTS.c.consent_id == sa.bindparam("cid", type_=sa.Uuid))
            .values(withdrawn_at=_withdrawn_at()),
            ("cid",),
        )

    def apply(self, conn: Connection, entries: Sequence[Entry]) -> None:
        grants: list[tuple[object, ...]] = []
        withdrawals: list[tuple[object, ...]] = []
        granted: dict[int, tuple[int, object]] = {}
        withdrawing: dict[int, object] = {}
        uuid = self._uuid
        for position, payload in entries:
            kind = type(payload)
            if kind is ev.ConsentGiven:
                p = cast("ev.ConsentGiven", payload)
                cid, sid = uuid(p.consent_id), uuid(p.subject_id)
                granted[p.consent_id.int] = (p.subject_id.int, cid)
                at, by = to_us(p.occurred_at), _GIVERS[p.given_by]
                grants.extend(
                    (
                        cid,
                        purpose,
                        category,
                        sid,
                        at,
                        by,
                        p.method,
                        p.policy_version,
                        position,
                        None,
                    )
                    for purpose in p.purposes
                    for category in p.categories
                )
            elif kind is ev.ConsentWithdrawn:
                w = cast("ev.ConsentWithdrawn", payload)
                sid = uuid(w.subject_id)
                withdrawing[w.subject_id.int] = sid
                at = to_us(w.occurred_at)
                withdrawals.extend(
                    (position, purpose, category, sid, at)
                    for purpose in (w.purposes or (ANY,))
                    for category in (w.categories or (ANY,))
                )
        self._insert_grants.run(conn, grants)
        self._insert_withdrawals.run(conn, withdrawals)
        self._settle_subjects.run(conn, [(sid,) for sid in withdrawing.values()])
        self._settle_grants.run(
            conn, [(cid,) for person, cid in granted.values() if person not in withdrawing]
        )

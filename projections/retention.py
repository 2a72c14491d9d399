"""The retention view: per person and category, when data was last collected, so data held
past its category's retention period (§5 of the seed policy) can be found.

The period is not stored: it is the one of the policy in force when the question is asked, so
a new policy version's longer or shorter period applies at once to everything held.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ledger import events as ev
from projections.batch import ManyRows
from projections.store import METADATA, greatest, least, to_us, upsert
from projections.view import Entry, View

__all__ = ["RetentionView"]

HELD = sa.Table(
    "view_retention",
    METADATA,
    sa.Column("subject_id", sa.Uuid, primary_key=True),
    sa.Column("category", sa.String(64), primary_key=True),
    sa.Column("first_at", sa.BigInteger, nullable=False),
    sa.Column("last_at", sa.BigInteger, nullable=False, index=True),
)


class RetentionView(View):
    """When each held category was last collected."""

    name = "retention"
    tables = (HELD,)

    def __init__(self, dialect: str) -> None:
        super().__init__(dialect)
        self._upsert = ManyRows(
            dialect,
            upsert(
                dialect,
                HELD,
                ("subject_id", "category"),
                set_={
                    "first_at": least(
                        dialect, HELD.c.first_at, sa.literal_column("excluded.first_at")
                    ),
                    "last_at": greatest(
                        dialect, HELD.c.last_at, sa.literal_column("excluded.last_at")
                    ),
                },
            ),
        )

    def apply(self, conn: Connection, entries: Sequence[Entry]) -> None:
        held: dict[tuple[object, str], list[int]] = {}
        for _, p in entries:
            if isinstance(p, ev.DataCollected):
                at = to_us(p.occurred_at)
                seen = held.get((p.subject_id, p.category))
                if seen is None:
                    held[(p.subject_id, p.category)] = [at, at]
                else:
                    seen[0], seen[1] = min(seen[0], at), max(seen[1], at)
            elif isinstance(p, ev.DataErased):
                self._flush(conn, held)
                held = {}
                erase = HELD.delete().where(HELD.c.subject_id == p.subject_id)
                if p.categories:
                    erase = erase.where(HELD.c.category.in_(p.categories))
                conn.execute(erase)
        self._flush(conn, held)

    def _flush(self, conn: Connection, held: dict[tuple[object, str], list[int]]) -> None:
        if held:
            self._upsert.run(
                conn,
                [
                    {"subject_id": sid, "category": cat, "first_at": v[0], "last_at": v[1]}
                    for (sid, cat), v in held.items()
                ],
            )

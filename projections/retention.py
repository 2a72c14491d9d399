"""The retention view: per person and category, when data was last collected, so data held
past its category's retention period (§5 of the seed policy) can be found.

The period is not stored: it is the one of the policy in force when the question is asked, so
a new policy version's longer or shorter period applies at once to everything held.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ledger import events as ev
from projections.batch import ManyRows, uuid_param
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
        self._uuid = uuid_param(dialect)
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
            ("subject_id", "category", "first_at", "last_at"),
        )

    def apply(self, conn: Connection, entries: Sequence[Entry]) -> None:
        # (person's integer, category) -> [person, first, last]: a UUID hashes in Python
        held: dict[tuple[int, str], list[Any]] = {}
        collected, erased = ev.DataCollected, ev.DataErased
        for _, payload in entries:
            kind = type(payload)
            if kind is collected:
                p = cast("ev.DataCollected", payload)
                at = to_us(p.occurred_at)
                key = (p.subject_id.int, p.category)
                seen = held.get(key)
                if seen is None:
                    held[key] = [p.subject_id, at, at]
                else:
                    seen[1], seen[2] = min(seen[1], at), max(seen[2], at)
            elif kind is erased:
                e = cast("ev.DataErased", payload)
                self._flush(conn, held)
                erase = HELD.delete().where(HELD.c.subject_id == e.subject_id)
                if e.categories:  # what was collected after it stays held (§6.3)
                    at = to_us(e.occurred_at)
                    erase = erase.where(HELD.c.category.in_(e.categories), HELD.c.last_at <= at)
                    conn.execute(
                        HELD.update()
                        .where(
                            HELD.c.subject_id == e.subject_id,
                            HELD.c.category.in_(e.categories),
                            HELD.c.first_at <= at,
                        )
                        .values(first_at=at + 1)
                    )
                conn.execute(erase)
        self._flush(conn, held)

    def _flush(self, conn: Connection, held: dict[tuple[int, str], list[Any]]) -> None:
        """Write what is held, then forget it (the dict is emptied in place)."""
        uuid = self._uuid
        rows = [
            (uuid(sid), category, first, last) for (_, category), (sid, first, last) in held.items()
        ]
        held.clear()
        self._upsert.run(conn, rows)

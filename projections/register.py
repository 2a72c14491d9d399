"""The processing register: the record of processing activities a regulator asks for.

One row per activity (collection, use, share) by category by purpose by legal basis by recipient
class by region, with how many people and events it covers and when it was first and last
seen (occurred-at). A collection's basis is how it was collected (`consent` or `automatic`);
uses and collections have no recipient class. People are counted once per row.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ledger import events as ev
from projections.batch import ManyRows
from projections.store import METADATA, greatest, least, to_us, upsert
from projections.view import Entry, View

__all__ = ["ACTIVITIES", "RegisterView"]

ACTIVITIES = ("collection", "use", "share")

REGISTER = sa.Table(
    "view_register",
    METADATA,
    sa.Column("key", sa.String(512), primary_key=True),
    sa.Column("activity", sa.String(16), nullable=False),
    sa.Column("category", sa.String(64), nullable=False),
    sa.Column("purpose", sa.String(64), nullable=False),
    sa.Column("legal_basis", sa.String(64), nullable=False),
    sa.Column("recipient_class", sa.String(64), nullable=False),
    sa.Column("region", sa.String(64), nullable=False),
    sa.Column("subjects", sa.BigInteger, nullable=False),
    sa.Column("events", sa.BigInteger, nullable=False),
    sa.Column("first_seen", sa.BigInteger, nullable=False),
    sa.Column("last_seen", sa.BigInteger, nullable=False),
)

REGISTER_SUBJECTS = sa.Table(
    "view_register_subjects",
    METADATA,
    sa.Column("key", sa.String(512), primary_key=True),
    sa.Column("subject_id", sa.Uuid, primary_key=True),
)
"""Who a register row covers, so each person is counted once per row."""

Row = tuple[str, str, str, str, str, str]


@dataclass(slots=True)
class _Tally:
    row: Row
    events: int
    first: int
    last: int


def _rows(p: ev.SubjectEnvelope) -> Iterator[Row]:
    if isinstance(p, ev.DataCollected):
        for purpose in p.purposes:
            yield ("collection", p.category, purpose, p.mode.value, "", p.storage_region)
    elif isinstance(p, ev.DataUsed):
        for category in p.categories:
            yield ("use", category, p.purpose, p.legal_basis, "", "")
    elif isinstance(p, ev.DataShared):
        for category in p.categories:
            yield (
                "share",
                category,
                p.purpose,
                p.legal_basis,
                p.recipient_class,
                p.destination_region,
            )


class RegisterView(View):
    """Counts of processing per activity by category by purpose by basis by class by region."""

    name = "register"
    tables = (REGISTER, REGISTER_SUBJECTS)

    def __init__(self, dialect: str) -> None:
        super().__init__(dialect)
        d = dialect
        excluded = sa.literal_column
        self._upsert = ManyRows(
            d,
            upsert(
                d,
                REGISTER,
                ("key",),
                set_={
                    "subjects": REGISTER.c.subjects + excluded("excluded.subjects"),
                    "events": REGISTER.c.events + excluded("excluded.events"),
                    "first_seen": least(d, REGISTER.c.first_seen, excluded("excluded.first_seen")),
                    "last_seen": greatest(d, REGISTER.c.last_seen, excluded("excluded.last_seen")),
                },
            ),
        )
        self._new_pairs = upsert(d, REGISTER_SUBJECTS, ("key", "subject_id")).returning(
            REGISTER_SUBJECTS.c.key
        )

    def apply(self, conn: Connection, entries: Sequence[Entry]) -> None:
        rows: dict[str, _Tally] = {}
        people: dict[UUID, set[str]] = {}
        for _, p in entries:
            if not isinstance(p, ev.DataCollected | ev.DataUsed | ev.DataShared):
                continue
            at = to_us(p.occurred_at)
            keys = people.get(p.subject_id)
            if keys is None:
                keys = people[p.subject_id] = set()
            for row in _rows(p):
                key = "|".join(row)
                keys.add(key)
                seen = rows.get(key)
                if seen is None:
                    rows[key] = _Tally(row, 1, at, at)
                else:
                    seen.events += 1
                    seen.first = min(seen.first, at)
                    seen.last = max(seen.last, at)
        if not rows:
            return
        new_people: dict[str, int] = dict.fromkeys(rows, 0)
        fresh = self.known.fresh_of
        unknown = [
            {"key": k, "subject_id": s}
            for s, keys in sorted(people.items())
            for k in sorted(fresh(s, keys))
        ]
        if unknown:
            for (key,) in conn.execute(self._new_pairs, unknown):
                new_people[key] += 1
        self._upsert.run(
            conn,
            [
                {
                    "key": key,
                    "activity": t.row[0],
                    "category": t.row[1],
                    "purpose": t.row[2],
                    "legal_basis": t.row[3],
                    "recipient_class": t.row[4],
                    "region": t.row[5],
                    "subjects": new_people[key],
                    "events": t.events,
                    "first_seen": t.first,
                    "last_seen": t.last,
                }
                for key, t in rows.items()
            ],
        )

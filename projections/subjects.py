"""The subject view: per person, what is held, from where, why, under which basis, shared with
whom, and where; the closing flags. Personal values stay sealed here and are opened only on
read, for a principal allowed to; when the person's key is shredded they are deleted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ledger import events as ev
from projections.batch import ManyRows
from projections.store import METADATA, greatest, least, to_us, upsert
from projections.view import Entry, View

__all__ = ["SubjectView"]

SUBJECTS = sa.Table(
    "view_subjects",
    METADATA,
    sa.Column("subject_id", sa.Uuid, primary_key=True),
    sa.Column("namespace", sa.String(64), nullable=False),
    sa.Column("account_id", sa.Text, nullable=True, comment="Sealed; NULL once shredded."),
    sa.Column("registered_at", sa.BigInteger, nullable=False),
    sa.Column("minor", sa.Boolean, nullable=False),
    sa.Column("has_guardian", sa.Boolean, nullable=False),
    sa.Column("storage_region", sa.String(64), nullable=False),
    sa.Column("erased", sa.Boolean, nullable=False, default=False),
    sa.Column("cancelled", sa.Boolean, nullable=False, default=False),
    sa.Column("key_shredded", sa.Boolean, nullable=False, default=False),
    sa.Column("closed_at", sa.BigInteger, nullable=True),
    sa.Column("events", sa.BigInteger, nullable=False),
    sa.Column("last_position", sa.BigInteger, nullable=False),
)

CATEGORIES = sa.Table(
    "view_subject_categories",
    METADATA,
    sa.Column("subject_id", sa.Uuid, primary_key=True),
    sa.Column("category", sa.String(64), primary_key=True),
    sa.Column("first_at", sa.BigInteger, nullable=False),
    sa.Column("last_at", sa.BigInteger, nullable=False),
    sa.Column("collections", sa.BigInteger, nullable=False),
)

FACETS = sa.Table(
    "view_subject_facets",
    METADATA,
    sa.Column("subject_id", sa.Uuid, primary_key=True),
    sa.Column("category", sa.String(64), primary_key=True),
    sa.Column("facet", sa.String(16), primary_key=True),
    sa.Column("value", sa.String(128), primary_key=True),
)
"""What is known of a held category: its sources, purposes, bases (the collection mode or a
use's legal basis), regions, and the recipient classes and recipients it went to."""

VALUES = sa.Table(
    "view_subject_values",
    METADATA,
    sa.Column("subject_id", sa.Uuid, primary_key=True),
    sa.Column("category", sa.String(64), primary_key=True),
    sa.Column("field", sa.String(64), primary_key=True),
    sa.Column("sealed", sa.Text, nullable=False),
    sa.Column("at", sa.BigInteger, nullable=False),
    sa.Column("position", sa.BigInteger, nullable=False),
)
"""The latest sealed value of each field of a held category."""

REFERENCE_FIELD = "@reference"
"""The field name under which a collection's sealed reference (instead of values) is kept."""

FACET_KINDS = ("source", "purpose", "basis", "region", "recipient_class", "recipient")


@dataclass(slots=True)
class _Person:
    """One person's writes in a page (grouped so a page hashes each person's id once per
    event, not once per row)."""

    categories: dict[str, list[int]] = field(default_factory=dict)
    facets: set[tuple[str, str, str]] = field(default_factory=set)
    values: dict[tuple[str, str], tuple[str, int, int]] = field(default_factory=dict)
    events: int = 0
    last_position: int = 0


@dataclass
class _Page:
    """Writes of one page, merged by key so each key is written once."""

    subjects: list[dict[str, object]] = field(default_factory=list)
    people: dict[UUID, _Person] = field(default_factory=dict)

    def person(self, subject_id: UUID) -> _Person:
        found = self.people.get(subject_id)
        if found is None:
            found = self.people[subject_id] = _Person()
        return found


class SubjectView(View):
    """Per person: categories held with their facets and sealed values, and the flags."""

    name = "subjects"
    tables = (SUBJECTS, CATEGORIES, FACETS, VALUES)

    def __init__(self, dialect: str) -> None:
        super().__init__(dialect)
        d = dialect
        self._insert_subject = ManyRows(d, SUBJECTS.insert())
        excluded = sa.literal_column
        self._upsert_category = ManyRows(
            d,
            upsert(
                d,
                CATEGORIES,
                ("subject_id", "category"),
                set_={
                    "first_at": least(d, CATEGORIES.c.first_at, excluded("excluded.first_at")),
                    "last_at": greatest(d, CATEGORIES.c.last_at, excluded("excluded.last_at")),
                    "collections": CATEGORIES.c.collections + excluded("excluded.collections"),
                },
            ),
        )
        self._insert_facet = ManyRows(
            d, upsert(d, FACETS, ("subject_id", "category", "facet", "value"))
        )
        self._upsert_value = ManyRows(
            d, upsert(d, VALUES, ("subject_id", "category", "field"), ("sealed", "at", "position"))
        )
        self._count = ManyRows(
            d,
            SUBJECTS.update()
            .where(SUBJECTS.c.subject_id == sa.bindparam("sid", type_=sa.Uuid))
            .values(
                events=SUBJECTS.c.events + sa.bindparam("n", type_=sa.BigInteger),
                last_position=sa.bindparam("pos", type_=sa.BigInteger),
            ),
        )

    def apply(self, conn: Connection, entries: Sequence[Entry]) -> None:
        page = _Page()
        for position, payload in entries:
            if isinstance(payload, ev.SubjectEnvelope):
                self._fold(conn, page, position, payload)
        self._flush(conn, page)

    def _fold(self, conn: Connection, page: _Page, position: int, p: ev.SubjectEnvelope) -> None:
        sid = p.subject_id
        if isinstance(p, ev.DataErased | ev.AccountCancelled | ev.KeyShredded):
            self._flush(conn, page)  # what came before must land before it is removed
            self._close(conn, p)
        person = page.person(sid)
        person.events += 1
        person.last_position = position
        if isinstance(p, ev.DataCollected):
            self._collected(person, position, p)
        elif isinstance(p, ev.SubjectRegistered):
            page.subjects.append(
                {
                    "subject_id": sid,
                    "namespace": p.namespace,
                    "account_id": p.account_id,
                    "registered_at": to_us(p.occurred_at),
                    "minor": p.minor,
                    "has_guardian": p.guardian is not None or p.guardian_subject_id is not None,
                    "storage_region": p.storage_region,
                    "erased": False,
                    "cancelled": False,
                    "key_shredded": False,
                    "closed_at": None,
                    "events": 0,
                    "last_position": position,
                }
            )
        elif isinstance(p, ev.DataUsed):
            for category in p.categories:
                person.facets.add((category, "purpose", p.purpose))
                person.facets.add((category, "basis", p.legal_basis))
        elif isinstance(p, ev.DataShared):
            for category in p.categories:
                person.facets.add((category, "purpose", p.purpose))
                person.facets.add((category, "basis", p.legal_basis))
                person.facets.add((category, "recipient_class", p.recipient_class))
                person.facets.add((category, "recipient", p.recipient))
                person.facets.add((category, "region", p.destination_region))
        elif isinstance(p, ev.DataCorrected):
            at = to_us(p.occurred_at)
            for name, sealed in p.values.items():
                person.values[(p.category, name)] = (sealed, at, position)

    @staticmethod
    def _collected(person: _Person, position: int, p: ev.DataCollected) -> None:
        category, at = p.category, to_us(p.occurred_at)
        held = person.categories.get(category)
        if held is None:
            person.categories[category] = [at, at, 1]
        else:
            held[0], held[1], held[2] = min(held[0], at), max(held[1], at), held[2] + 1
        facets = person.facets
        facets.add((category, "source", p.source))
        facets.add((category, "basis", p.mode.value))
        facets.add((category, "region", p.storage_region))
        for purpose in p.purposes:
            facets.add((category, "purpose", purpose))
        for name, sealed in p.values.items():
            person.values[(category, name)] = (sealed, at, position)
        if p.reference is not None:
            person.values[(category, REFERENCE_FIELD)] = (p.reference, at, position)

    def _close(self, conn: Connection, p: ev.SubjectEnvelope) -> None:
        sid = p.subject_id
        self.known.forget(sid)
        at = to_us(p.occurred_at)
        if isinstance(p, ev.DataErased):
            if p.categories:
                for table in (CATEGORIES, FACETS, VALUES):
                    conn.execute(
                        table.delete().where(
                            table.c.subject_id == sid, table.c.category.in_(p.categories)
                        )
                    )
                return
            for table in (CATEGORIES, FACETS, VALUES):
                conn.execute(table.delete().where(table.c.subject_id == sid))
            conn.execute(
                SUBJECTS.update()
                .where(SUBJECTS.c.subject_id == sid)
                .values(erased=True, closed_at=sa.func.coalesce(SUBJECTS.c.closed_at, at))
            )
        elif isinstance(p, ev.AccountCancelled):
            conn.execute(
                SUBJECTS.update()
                .where(SUBJECTS.c.subject_id == sid)
                .values(cancelled=True, closed_at=sa.func.coalesce(SUBJECTS.c.closed_at, at))
            )
        else:  # KeyShredded: the sealed values are unreadable now; drop them
            conn.execute(VALUES.delete().where(VALUES.c.subject_id == sid))
            conn.execute(
                SUBJECTS.update()
                .where(SUBJECTS.c.subject_id == sid)
                .values(key_shredded=True, account_id=None)
            )

    def _flush(self, conn: Connection, page: _Page) -> None:
        if page.subjects:
            self._insert_subject.run(conn, page.subjects)
        categories: list[dict[str, object]] = []
        facets: list[dict[str, object]] = []
        values: list[dict[str, object]] = []
        counts: list[dict[str, object]] = []
        fresh = self.known.fresh_of
        for sid, person in page.people.items():
            categories.extend(
                {
                    "subject_id": sid,
                    "category": cat,
                    "first_at": v[0],
                    "last_at": v[1],
                    "collections": v[2],
                }
                for cat, v in person.categories.items()
            )
            if person.facets:
                facets.extend(
                    {"subject_id": sid, "category": c, "facet": f, "value": v}
                    for c, f, v in fresh(sid, person.facets)
                )
            values.extend(
                {
                    "subject_id": sid,
                    "category": cat,
                    "field": name,
                    "sealed": v[0],
                    "at": v[1],
                    "position": v[2],
                }
                for (cat, name), v in person.values.items()
            )
            counts.append({"sid": sid, "n": person.events, "pos": person.last_position})
        self._upsert_category.run(conn, categories)
        self._insert_facet.run(conn, facets)
        self._upsert_value.run(conn, values)
        self._count.run(conn, counts)
        page.subjects, page.people = [], {}

"""The processing register: the record of processing activities a regulator asks for.

One row per activity (collection, use, share) by category by purpose by legal basis by recipient
class by region, with how many people and events it covers and when it was first and last
seen (occurred-at). A collection's basis is how it was collected (`consent` or `automatic`);
uses and collections have no recipient class. People are counted once per row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import groupby
from operator import itemgetter
from typing import Any, cast
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection

from ledger import events as ev
from projections.batch import ArrayStatement, ManyRows, uuid_param
from projections.store import METADATA, greatest, least, to_us, upsert
from projections.view import MODES, Entry, View

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
    sqlite_with_rowid=False,  # every column is the key: a rowid table would repeat it
)
"""Who a register row covers, so each person is counted once per row."""

Row = tuple[str, str, str, str, str, str]
Shape = tuple[Any, ...]
"""What of an event decides the register rows it counts in (see `_rows`)."""

_COLUMNS = tuple(c.name for c in REGISTER.c)


def _collected(p: ev.DataCollected) -> Shape:
    return ("collection", p.category, p.purposes, MODES[p.mode], p.storage_region)


def _used(p: ev.DataUsed) -> Shape:
    return ("use", p.categories, p.purpose, p.legal_basis)


def _shared(p: ev.DataShared) -> Shape:
    return (
        "share",
        p.categories,
        p.purpose,
        p.legal_basis,
        p.recipient_class,
        p.destination_region,
    )


_SHAPES: dict[type, Callable[[Any], Shape]] = {
    ev.DataCollected: _collected,
    ev.DataUsed: _used,
    ev.DataShared: _shared,
}
"""What of an event decides the register rows it counts in, by the kind of event (other
kinds count in none)."""


def _shapes(
    entries: Sequence[Entry],
) -> tuple[dict[Shape, list[int]], dict[int, tuple[UUID, set[Shape]]]]:
    """The page's events tallied by shape (events, first and last occurred-at), and each
    person's shapes. A page holds few shapes: each event costs one lookup, not one per row."""
    shapes: dict[Shape, list[int]] = {}
    people: dict[int, tuple[UUID, set[Shape]]] = {}
    for _, payload in entries:
        shape_of = _SHAPES.get(type(payload))
        if shape_of is None:
            continue
        p = cast("ev.SubjectEnvelope", payload)
        shape = shape_of(p)
        at = to_us(p.occurred_at)
        tally = shapes.get(shape)
        if tally is None:
            shapes[shape] = [1, at, at]
        else:
            tally[0] += 1
            tally[1], tally[2] = min(tally[1], at), max(tally[2], at)
        sid = p.subject_id
        person = people.get(sid.int)
        if person is None:
            people[sid.int] = (sid, {shape})
        else:
            person[1].add(shape)
    return shapes, people


def _rows(shape: Shape) -> list[Row]:
    """The register rows an event of this shape counts in."""
    activity = shape[0]
    if activity == "collection":
        _, category, purposes, mode, region = shape
        return [("collection", category, purpose, mode, "", region) for purpose in purposes]
    if activity == "use":
        _, categories, purpose, basis = shape
        return [("use", category, purpose, basis, "", "") for category in categories]
    _, categories, purpose, basis, recipient_class, region = shape
    return [("share", category, purpose, basis, recipient_class, region) for category in categories]


class RegisterView(View):
    """Counts of processing per activity by category by purpose by basis by class by region."""

    name = "register"
    tables = (REGISTER, REGISTER_SUBJECTS)

    def __init__(self, dialect: str) -> None:
        super().__init__(dialect)
        d = dialect
        self._uuid = uuid_param(d)
        excluded = sa.literal_column
        merge = {
            "subjects": REGISTER.c.subjects + excluded("excluded.subjects"),
            "events": REGISTER.c.events + excluded("excluded.events"),
            "first_seen": least(d, REGISTER.c.first_seen, excluded("excluded.first_seen")),
            "last_seen": greatest(d, REGISTER.c.last_seen, excluded("excluded.last_seen")),
        }
        if d == "sqlite":
            self._upsert = ManyRows(d, upsert(d, REGISTER, ("key",), set_=merge), _COLUMNS)
            self._pairs = ManyRows(
                d, upsert(d, REGISTER_SUBJECTS, ("key", "subject_id")), ("key", "subject_id")
            )
        else:
            self._counted_upsert = ArrayStatement(_counted_upsert(merge))

    def apply(self, conn: Connection, entries: Sequence[Entry]) -> None:
        shapes, people = _shapes(entries)
        if not shapes:
            return
        rows_of = {shape: _rows(shape) for shape in shapes}
        tallies: dict[Row, list[int]] = {}
        for shape, (events, first, last) in shapes.items():
            for row in rows_of[shape]:
                tally = tallies.get(row)
                if tally is None:
                    tallies[row] = [events, first, last]
                else:
                    tally[0] += events
                    tally[1], tally[2] = min(tally[1], first), max(tally[2], last)
        keys = {row: "|".join(row) for row in tallies}
        # Who may be new to a row: everyone not known to be counted in it already (the
        # database has the last word: a pair already there is not counted again).
        fresh = self.known.fresh_of
        pairs = sorted(
            (key, person_key, sid)
            for person_key, (sid, shaped) in people.items()
            for key in fresh(person_key, {keys[row] for shape in shaped for row in rows_of[shape]})
        )
        if self.dialect == "sqlite":
            self._write_sqlite(conn, tallies, keys, pairs)
        else:
            self._write_postgres(conn, tallies, keys, pairs)

    def _write_sqlite(
        self,
        conn: Connection,
        tallies: dict[Row, list[int]],
        keys: dict[Row, str],
        pairs: list[tuple[str, int, UUID]],
    ) -> None:
        new_people = dict.fromkeys(keys.values(), 0)
        uuid = self._uuid
        for key, group in groupby(pairs, itemgetter(0)):
            new_people[key] = self._pairs.changed(conn, [(key, uuid(sid)) for _, _, sid in group])
        self._upsert.run(
            conn,
            [
                (keys[row], *row, new_people[keys[row]], events, first, last)
                for row, (events, first, last) in tallies.items()
            ],
        )

    def _write_postgres(
        self,
        conn: Connection,
        tallies: dict[Row, list[int]],
        keys: dict[Row, str],
        pairs: list[tuple[str, int, UUID]],
    ) -> None:
        rows = [(keys[row], *row, *tally) for row, tally in tallies.items()]
        arrays: dict[str, Sequence[Any]] = dict(
            zip(_COUNTED_COLUMNS, zip(*rows, strict=True), strict=True)
        )
        arrays["pair_key"] = [key for key, _, _ in pairs]
        arrays["pair_subject"] = [sid for _, _, sid in pairs]
        self._counted_upsert.run(conn, arrays)


_COUNTED_COLUMNS = tuple(c for c in _COLUMNS if c != "subjects")


def _counted_upsert(merge: dict[str, Any]) -> Any:
    """PostgreSQL: one statement that records the page's (row, person) pairs and upserts the
    rows, each counting the people its pairs newly added (so it needs no answer back)."""
    array = postgresql.ARRAY
    pairs = (
        sa.func.unnest(
            sa.bindparam("pair_key", type_=array(REGISTER_SUBJECTS.c.key.type)),
            sa.bindparam("pair_subject", type_=array(REGISTER_SUBJECTS.c.subject_id.type)),
        )
        .table_valued("key", "subject_id")
        .render_derived(name="pairs")
    )
    added = (
        postgresql.insert(REGISTER_SUBJECTS)
        .from_select(["key", "subject_id"], sa.select(pairs.c.key, pairs.c.subject_id))
        .on_conflict_do_nothing(index_elements=["key", "subject_id"])
        .returning(REGISTER_SUBJECTS.c.key)
        .cte("added")
    )
    counted = (
        sa.select(added.c.key, sa.func.count().label("n")).group_by(added.c.key).cte("counted")
    )
    page = (
        sa.func.unnest(
            *(sa.bindparam(c, type_=array(REGISTER.c[c].type)) for c in _COUNTED_COLUMNS)
        )
        .table_valued(*_COUNTED_COLUMNS)
        .render_derived(name="page")
    )
    source = sa.select(
        *(
            sa.func.coalesce(counted.c.n, sa.literal_column("0")) if c == "subjects" else page.c[c]
            for c in _COLUMNS
        )
    ).select_from(page.outerjoin(counted, counted.c.key == page.c.key))
    return (
        postgresql.insert(REGISTER)
        .from_select(list(_COLUMNS), source)
        .on_conflict_do_update(index_elements=["key"], set_=merge)
    )

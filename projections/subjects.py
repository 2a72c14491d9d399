"""The subject view: per person, what is held, from where, why, under which basis, shared with
whom, and where; the closing flags. Personal values stay sealed here and are opened only on
read, for a principal allowed to; when the person's key is shredded they are deleted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ledger import events as ev
from ledger.commands import ID_MAX_LENGTH, TEXT_MAX_LENGTH
from projections.batch import ManyRows, uuid_param
from projections.store import METADATA, greatest, least, to_us, upsert
from projections.view import MODES, Entry, View

__all__ = ["SubjectView"]

_FACET_VALUE_LENGTH = ID_MAX_LENGTH + 1 + TEXT_MAX_LENGTH  # a recipient class and recipient

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
    sqlite_with_rowid=False,  # rows in key order, no second B-tree beside the key's
)

FACETS = sa.Table(
    "view_subject_facets",
    METADATA,
    sa.Column("subject_id", sa.Uuid, primary_key=True),
    sa.Column("category", sa.String(64), primary_key=True),
    sa.Column("facet", sa.String(16), primary_key=True),
    sa.Column("value", sa.String(_FACET_VALUE_LENGTH), primary_key=True),
    sqlite_with_rowid=False,  # every column is the key: a rowid table would repeat it
)
"""What is known of a held category: its sources, purposes, bases (the collection mode or a
use's legal basis), regions, and whom it was shared with (`shared_with`: a recipient with its
class, as `shared_with_value` writes them)."""

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
"""The sealed value of each field of a held category of the latest occurred-at, whatever order
the values were recorded in."""

REFERENCE_FIELD = "@reference"
"""The field name under which a collection's sealed reference (instead of values) is kept."""

FACET_KINDS = ("source", "purpose", "basis", "region", "shared_with")

_PAIRED = ":"  # a recipient class, an `Id`, has none


def shared_with_value(recipient_class: str, recipient: str) -> str:
    """A `shared_with` facet's value: the recipient with its class."""
    return f"{recipient_class}{_PAIRED}{recipient}"


PERSON = "*"
"""The facets' category for what is about the person as a whole, not one category held:
whom any of their data was shared with, which the audit trail keeps after erasure as the
ledger's own state does (no category is named so: ids start with a letter)."""


def shared_with_of(value: str) -> tuple[str, str]:
    """The recipient class and recipient of a `shared_with` facet's value."""
    recipient_class, _, recipient = value.partition(_PAIRED)
    return recipient_class, recipient


_CLOSING = (ev.DataErased, ev.AccountCancelled, ev.KeyShredded)


class _Person:
    """One person's writes in a page, so that each row is written once per page and the
    person's id is converted once (keyed by its integer: a UUID hashes in Python)."""

    __slots__ = ("categories", "events", "facets", "last_position", "registered", "sid", "values")

    def __init__(self, sid: UUID) -> None:
        self.sid = sid
        self.registered: ev.SubjectRegistered | None = None
        self.categories: dict[str, list[int]] = {}
        self.facets: set[tuple[str, str, str]] = set()
        self.values: dict[tuple[str, str], tuple[str, int, int]] = {}
        self.events = 0
        self.last_position = 0


class SubjectView(View):
    """Per person: categories held with their facets and sealed values, and the flags."""

    name = "subjects"
    tables = (SUBJECTS, CATEGORIES, FACETS, VALUES)

    def __init__(self, dialect: str) -> None:
        super().__init__(dialect)
        d = dialect
        self._uuid = uuid_param(d)
        self._insert_subject = ManyRows(d, SUBJECTS.insert(), [c.name for c in SUBJECTS.c])
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
            ("subject_id", "category", "first_at", "last_at", "collections"),
        )
        self._insert_facet = ManyRows(
            d,
            upsert(d, FACETS, ("subject_id", "category", "facet", "value")),
            ("subject_id", "category", "facet", "value"),
        )
        self._upsert_value = ManyRows(
            d,
            upsert(
                d,
                VALUES,
                ("subject_id", "category", "field"),
                ("sealed", "at", "position"),
                where=VALUES.c.at <= excluded("excluded.at"),  # a value recorded late is older
            ),
            ("subject_id", "category", "field", "sealed", "at", "position"),
        )
        self._count = ManyRows(
            d,
            SUBJECTS.update()
            .where(SUBJECTS.c.subject_id == sa.bindparam("sid", type_=sa.Uuid))
            .values(
                events=SUBJECTS.c.events + sa.bindparam("n", type_=sa.BigInteger),
                last_position=sa.bindparam("pos", type_=sa.BigInteger),
            ),
            ("sid", "n", "pos"),
        )
        self._folds: dict[type, _Fold | None] = {}
        """How each kind of payload is folded (None: not about a person), found on first sight."""

    def apply(self, conn: Connection, entries: Sequence[Entry]) -> None:
        people: dict[int, _Person] = {}
        folds = self._folds
        for position, payload in entries:
            kind = type(payload)
            fold = folds.get(kind, _UNSEEN)
            if fold is _UNSEEN:
                fold = folds[kind] = _fold_of(kind)
            if fold is None:  # not about a person
                continue
            p = cast("ev.SubjectEnvelope", payload)
            if kind in _CLOSING:
                self._flush(conn, people)  # what came before must land before it is removed
                self._close(conn, p)
            sid = p.subject_id
            person = people.get(sid.int)
            if person is None:
                person = people[sid.int] = _Person(sid)
            person.events += 1
            person.last_position = position
            fold(person, position, p)
        self._flush(conn, people)

    def _close(self, conn: Connection, p: ev.SubjectEnvelope) -> None:
        sid = p.subject_id
        self.known.forget(sid.int)
        at = to_us(p.occurred_at)
        if isinstance(p, ev.DataErased):
            if p.categories:
                self._erase_categories(conn, sid, p.categories, at)
                return
            for table in (CATEGORIES, VALUES):
                conn.execute(table.delete().where(table.c.subject_id == sid))
            conn.execute(
                FACETS.delete().where(FACETS.c.subject_id == sid, FACETS.c.category != PERSON)
            )
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

    @staticmethod
    def _erase_categories(conn: Connection, sid: UUID, categories: Sequence[str], at: int) -> None:
        """A partial erasure takes the values collected up to its instant (§6.3): a category
        collected again after it (recorded first, the erasure reported late) stays, with its
        later values, held from just after the erasure (the view keeps no earlier instants)."""
        mine = (CATEGORIES.c.subject_id == sid) & CATEGORIES.c.category.in_(categories)
        kept = set(
            conn.execute(
                sa.select(CATEGORIES.c.category).where(mine, CATEGORIES.c.last_at > at)
            ).scalars()
        )
        gone = [c for c in categories if c not in kept]
        if gone:
            for table in (CATEGORIES, FACETS, VALUES):
                conn.execute(
                    table.delete().where(table.c.subject_id == sid, table.c.category.in_(gone))
                )
        if kept:
            conn.execute(
                CATEGORIES.update()
                .where(mine, CATEGORIES.c.category.in_(kept), CATEGORIES.c.first_at <= at)
                .values(first_at=at + 1)
            )
            conn.execute(
                VALUES.delete().where(
                    VALUES.c.subject_id == sid, VALUES.c.category.in_(kept), VALUES.c.at <= at
                )
            )

    def _flush(self, conn: Connection, people: dict[int, _Person]) -> None:
        """Write the people's rows, then forget them (the dict is emptied in place)."""
        if not people:
            return
        subjects: list[tuple[object, ...]] = []
        categories: list[tuple[object, ...]] = []
        facets: list[tuple[object, ...]] = []
        values: list[tuple[object, ...]] = []
        counts: list[tuple[object, ...]] = []
        fresh, uuid = self.known.fresh_of, self._uuid
        for key, person in people.items():
            sid = uuid(person.sid)
            for category, (first, last, n) in person.categories.items():
                categories.append((sid, category, first, last, n))
            if person.facets:
                for category, facet, value in fresh(key, person.facets):
                    facets.append((sid, category, facet, value))
            for (category, name), (sealed, at, position) in person.values.items():
                values.append((sid, category, name, sealed, at, position))
            registered = person.registered
            if registered is None:
                counts.append((sid, person.events, person.last_position))
            else:  # a person's first event: the row starts with the page's count
                subjects.append(
                    (
                        sid,
                        registered.namespace,
                        registered.account_id,
                        to_us(registered.occurred_at),
                        registered.minor,
                        registered.guardian is not None
                        or registered.guardian_subject_id is not None,
                        registered.storage_region,
                        False,
                        False,
                        False,
                        None,
                        person.events,
                        person.last_position,
                    )
                )
        people.clear()
        self._insert_subject.run(conn, subjects)
        self._upsert_category.run(conn, categories)
        self._insert_facet.run(conn, facets)
        self._upsert_value.run(conn, values)
        self._count.run(conn, counts)


_Fold = Callable[[_Person, int, Any], None]


def _collected(person: _Person, position: int, p: ev.DataCollected) -> None:
    category, at = p.category, to_us(p.occurred_at)
    held = person.categories.get(category)
    if held is None:
        person.categories[category] = [at, at, 1]
    else:
        held[0], held[1], held[2] = min(held[0], at), max(held[1], at), held[2] + 1
    facets = person.facets
    facets.add((category, "source", p.source))
    facets.add((category, "basis", MODES[p.mode]))
    facets.add((category, "region", p.storage_region))
    for purpose in p.purposes:
        facets.add((category, "purpose", purpose))
    values = person.values
    for name, sealed in p.values.items():
        _keep_latest(values, (category, name), (sealed, at, position))
    if p.reference is not None:
        _keep_latest(values, (category, REFERENCE_FIELD), (p.reference, at, position))


def _keep_latest(
    values: dict[tuple[str, str], tuple[str, int, int]],
    key: tuple[str, str],
    value: tuple[str, int, int],
) -> None:
    """A field's value is the one of the latest occurred-at (of two at the same instant, the
    one recorded later), whatever order they were recorded in."""
    held = values.get(key)
    if held is None or held[1] <= value[1]:
        values[key] = value


def _used(person: _Person, _position: int, p: ev.DataUsed) -> None:
    facets, purpose, basis = person.facets, p.purpose, p.legal_basis
    for category in p.categories:
        facets.add((category, "purpose", purpose))
        facets.add((category, "basis", basis))


def _shared(person: _Person, _position: int, p: ev.DataShared) -> None:
    facets = person.facets
    shared_with = shared_with_value(p.recipient_class, p.recipient)
    facets.add((PERSON, "shared_with", shared_with))  # the trail stays through erasure
    for category in p.categories:
        facets.add((category, "purpose", p.purpose))
        facets.add((category, "basis", p.legal_basis))
        facets.add((category, "shared_with", shared_with))
        facets.add((category, "region", p.destination_region))


def _registered(person: _Person, _position: int, p: ev.SubjectRegistered) -> None:
    person.registered = p


def _corrected(person: _Person, position: int, p: ev.DataCorrected) -> None:
    at = to_us(p.occurred_at)
    for name, sealed in p.values.items():
        _keep_latest(person.values, (p.category, name), (sealed, at, position))


def _counted(_person: _Person, _position: int, _p: ev.SubjectEnvelope) -> None:
    """Events that only count (and move the person's last position)."""


_FOLDS: dict[type, _Fold] = {
    ev.DataCollected: _collected,
    ev.DataUsed: _used,
    ev.DataShared: _shared,
    ev.SubjectRegistered: _registered,
    ev.DataCorrected: _corrected,
}
_UNSEEN: Any = object()


_REQUESTS = (
    ev.RightsRequestOpened,
    ev.RightsRequestExtended,
    ev.RightsRequestPaused,
    ev.RightsRequestResumed,
    ev.RightsRequestClosed,
)
"""Events of a person's rights requests: the deadlines view's, not the person's own (the
ledger's `SubjectState.events` does not count them either)."""


def _fold_of(kind: type) -> _Fold | None:
    if not issubclass(kind, ev.SubjectEnvelope) or issubclass(kind, _REQUESTS):
        return None
    return _FOLDS.get(kind, _counted)

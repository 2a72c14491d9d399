"""Policy-change notifications (§8): who must be told of a major change, who was told, and who
has acknowledged.

The view keeps each person's *footprint* (the categories, purposes, recipient classes and
regions their data has been involved in, and whether they are closed), insert-only and with
the position each item entered it. When it folds a major `PolicyPublished`, it computes the
change from the version it replaces (`ledger.policy_diff`), selects exactly the people whose
footprint meets what the change touches, and records `PolicyNotified` for each through the
ledger's own command, with an idempotency key derived from version and person, so a crash
between recording and committing the view records nothing twice. The `PolicyNotified` and
`PolicyAcknowledged` events then come back through the log into the notices table.

People whose data meets the change only after it was published are told too, when it does,
if they registered before it took effect (so they agreed to an earlier version): the view keeps
each person's registration instant and what each notified version touches, and checks the
people of every page against those versions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast
from uuid import UUID

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ledger import commands as cmd
from ledger import events as ev
from ledger.application import ItemOutcome, Ledger
from ledger.policy import parse_policy
from ledger.policy_diff import Touched, diff_policies
from projections.batch import ManyRows, uuid_param
from projections.store import METADATA, from_us, to_us, upsert
from projections.view import Entry, View

__all__ = ["NOTIFIER_PRINCIPAL", "LedgerNotifier", "NoticeView", "Notifier"]

_log = logging.getLogger(__name__)

NOTIFIER_PRINCIPAL = "pdl-notifier"
"""The principal the ledger records policy notifications under."""

_CHUNK = 500

VERSIONS = sa.Table(
    "view_policy_versions",
    METADATA,
    sa.Column("version", sa.String(32), primary_key=True),
    sa.Column("previous_version", sa.String(32), nullable=True),
    sa.Column("major", sa.Boolean, nullable=False),
    sa.Column("effective_at", sa.BigInteger, nullable=False),
    sa.Column("published_at", sa.BigInteger, nullable=False),
    sa.Column("reasons", sa.Text, nullable=False, comment="JSON list of one-line reasons."),
    sa.Column("document", sa.Text, nullable=False, comment="The policy document (JSON)."),
    sa.Column("affected", sa.BigInteger, nullable=False),
    sa.Column("position", sa.BigInteger, nullable=False),
)

NOTICES = sa.Table(
    "view_policy_notices",
    METADATA,
    sa.Column("version", sa.String(32), primary_key=True),
    sa.Column("subject_id", sa.Uuid, primary_key=True),
    sa.Column("notified_at", sa.BigInteger, nullable=True),
    sa.Column("notified_position", sa.BigInteger, nullable=True),
    sa.Column("method", sa.String(64), nullable=True),
    sa.Column("acknowledged_at", sa.BigInteger, nullable=True),
    sa.Column("acknowledged_position", sa.BigInteger, nullable=True),
)

FOOTPRINT = sa.Table(
    "view_policy_footprint",
    METADATA,
    sa.Column("subject_id", sa.Uuid, primary_key=True),
    sa.Column("kind", sa.String(16), primary_key=True),
    sa.Column("item", sa.String(64), primary_key=True),
    sa.Column("since_position", sa.BigInteger, nullable=False),
    sa.Index("ix_view_policy_footprint_item", "kind", "item"),
)
"""Kinds: category, purpose, recipient_class, region, and `closed` (item empty)."""

REGISTRATIONS = sa.Table(
    "view_policy_registrations",
    METADATA,
    sa.Column("subject_id", sa.Uuid, primary_key=True),
    sa.Column("registered_at", sa.BigInteger, nullable=False),
)
"""When each person registered: one who registered before a version took effect agreed to an
earlier one, and is told of it when their data comes to meet what it changed."""

TOUCHES = sa.Table(
    "view_policy_touches",
    METADATA,
    sa.Column("version", sa.String(32), primary_key=True),
    sa.Column("touched", sa.Text, nullable=False, comment="JSON of `policy_diff.Touched`."),
)
"""What each major version that is notified touches."""

_NOTICE_COLUMNS = tuple(c.name for c in NOTICES.c)

Notifier = Callable[[str, Sequence[tuple[UUID, datetime]]], int]
"""Records that each of these people is to be told of this version, each notice dated as
given; returns how many were."""


ExecuteMany = Callable[[Sequence[tuple[str, cmd._Command]]], list[ItemOutcome]]
"""`Ledger.execute_many`, or what makes a process's writes for it (the server's writer)."""


class LedgerNotifier:
    """Records `PolicyNotified` through the ledger's `NotifyPolicy` command."""

    def __init__(
        self, ledger: Ledger, method: str = "popup", *, execute_many: ExecuteMany | None = None
    ) -> None:
        self.ledger = ledger
        self.method = method
        self._execute_many = execute_many or ledger.execute_many

    def __call__(self, version: str, subjects: Sequence[tuple[UUID, datetime]]) -> int:
        recorded = 0
        for start in range(0, len(subjects), _CHUNK):
            chunk = subjects[start : start + _CHUNK]
            outcomes = self._execute_many(
                [
                    (
                        NOTIFIER_PRINCIPAL,
                        cmd.NotifyPolicy(
                            idempotency_key=f"policy-notice:{version}:{subject_id}",
                            occurred_at=at,
                            subject=cmd.SubjectRef(subject_id=subject_id),
                            version=version,
                            method=self.method,
                        ),
                    )
                    for subject_id, at in chunk
                ]
            )
            for (subject_id, _), outcome in zip(chunk, outcomes, strict=True):
                if outcome.error is None:
                    recorded += 1
                else:  # closed since the publication: nothing may be recorded for them
                    _log.info(
                        "policy notice not recorded",
                        extra={"subject": str(subject_id), "error": type(outcome.error).__name__},
                    )
        return recorded


class NoticeView(View):
    """Versions published, people to be told, told and acknowledged; and their footprints."""

    name = "notices"
    tables = (VERSIONS, NOTICES, FOOTPRINT, REGISTRATIONS, TOUCHES)

    def __init__(self, dialect: str, notifier: Notifier | None = None) -> None:
        super().__init__(dialect)
        self.notifier = notifier
        self._uuid = uuid_param(dialect)
        self._footprint = ManyRows(
            dialect,
            upsert(dialect, FOOTPRINT, ("subject_id", "kind", "item")),
            ("subject_id", "kind", "item", "since_position"),
        )
        self._notified = ManyRows(
            dialect,
            upsert(
                dialect,
                NOTICES,
                ("version", "subject_id"),
                ("notified_at", "notified_position", "method"),
                # the first notice stands: when the person was told (§8) is not moved by a
                # later one (a manual notice by another channel is still in the log); first
                # by when it happened, whatever order the notices were recorded in
                where=sa.or_(
                    NOTICES.c.notified_at.is_(None),
                    sa.literal_column("excluded.notified_at") < NOTICES.c.notified_at,
                ),
            ),
            _NOTICE_COLUMNS,
        )
        self._registration = ManyRows(
            dialect,
            upsert(dialect, REGISTRATIONS, ("subject_id",)),
            ("subject_id", "registered_at"),
        )
        self._watched: list[_Watched] | None = None
        """The notified major versions, loaded on first need (None: not yet)."""
        self._told: set[tuple[str, int]] = set()
        """(version, person) notices asked for by this view, not yet seen come back."""
        self._acknowledged = ManyRows(
            dialect,
            upsert(
                dialect,
                NOTICES,
                ("version", "subject_id"),
                ("acknowledged_at", "acknowledged_position"),
            ),
            _NOTICE_COLUMNS,
        )

    def apply(self, conn: Connection, entries: Sequence[Entry]) -> None:
        people: dict[int, _Page] = {}
        # A person's first notice and latest acknowledgement of a version: they set columns
        # of their own, so they are written after the page's other rows, each kind as it
        # would be row by row.
        notified: dict[tuple[str, int], tuple[object, ...]] = {}
        acknowledged: dict[tuple[str, int], tuple[object, ...]] = {}
        uuid = self._uuid
        for position, payload in entries:
            kind = type(payload)
            marks = _MARKS.get(kind)
            if marks is not None:
                p = cast("ev.SubjectEnvelope", payload)
                sid = p.subject_id
                person = people.get(sid.int)
                if person is None:
                    person = people[sid.int] = _Page(sid)
                marks(person.marks, position, p)
                person.at_of[position] = p.occurred_at
                if kind is ev.SubjectRegistered:
                    person.registered_at = to_us(p.occurred_at)
            elif kind is ev.PolicyNotified:
                n = cast("ev.PolicyNotified", payload)
                told = (n.version, n.subject_id.int)
                at = to_us(n.occurred_at)
                first = notified.get(told)
                if first is None or at < cast("int", first[2]):  # the earliest stands
                    notified[told] = (
                        n.version,
                        uuid(n.subject_id),
                        at,
                        position,
                        n.method,
                        None,
                        None,
                    )
            elif kind is ev.PolicyAcknowledged:
                a = cast("ev.PolicyAcknowledged", payload)
                acknowledged[(a.version, a.subject_id.int)] = (
                    a.version,
                    uuid(a.subject_id),
                    None,
                    None,
                    None,
                    to_us(a.occurred_at),
                    position,
                )
            elif kind is ev.PolicyPublished:
                self._flush(conn, people)  # who is affected depends on the footprints so far
                self._published(conn, position, cast("ev.PolicyPublished", payload))
        self._flush(conn, people)
        self._notified.run(conn, list(notified.values()))
        self._acknowledged.run(conn, list(acknowledged.values()))

    def _flush(self, conn: Connection, people: dict[int, _Page]) -> None:
        """Write the footprints' new items and the registrations, tell of the versions they
        come to meet, then forget them (the dict is emptied in place)."""
        fresh, uuid = self.known.fresh_of, self._uuid
        rows: list[tuple[object, ...]] = []
        registered: list[tuple[object, ...]] = []
        for key, person in people.items():
            h = uuid(person.sid)
            mine = person.marks
            rows.extend([(h, k, i, mine[(k, i)]) for k, i in fresh(key, mine)])
            if person.registered_at is not None:
                registered.append((h, person.registered_at))
        self._footprint.run(conn, rows)
        self._registration.run(conn, registered)
        late = self._late(conn, list(people.values()))
        people.clear()
        for version, told in late.items():
            if self.notifier is not None:
                self.notifier(version, told)

    def _late(
        self, conn: Connection, people: list[_Page]
    ) -> dict[str, list[tuple[UUID, datetime]]]:
        """Of these people, by version, those to be told of a major version they agreed to
        none of (they registered before it took effect) now that their data meets what it
        changes, where it did not when it was published (§8: a person who joins, or whose
        data comes to be involved, while a major change is pending or in force under the
        agreement they gave to the version before)."""
        watched = self._versions(conn)
        if not watched or not people:
            return {}
        late: dict[str, list[tuple[UUID, datetime]]] = {}
        for w in watched:
            meets: dict[int, int] = {}  # person -> the position of their first event meeting it
            for person in people:
                if (w.version, person.sid.int) in self._told:
                    continue
                first = min(
                    (
                        position
                        for (kind, item), position in person.marks.items()
                        if position > w.position and _meets(w.touched, kind, item)
                    ),
                    default=None,
                )
                if first is not None:
                    meets[person.sid.int] = first
            meeting = [person for person in people if person.sid.int in meets]
            if not meeting:
                continue
            ids = [person.sid for person in meeting]
            f, r, n = FOOTPRINT, REGISTRATIONS, NOTICES
            closed = sa.select(f.c.subject_id).where(f.c.kind == "closed", f.c.subject_id.in_(ids))
            told = sa.select(n.c.subject_id).where(  # an acknowledgement alone is not a notice
                n.c.version == w.version, n.c.subject_id.in_(ids), n.c.notified_at.is_not(None)
            )
            under_older = set(
                conn.execute(
                    sa.select(r.c.subject_id).where(
                        r.c.subject_id.in_(ids),
                        r.c.registered_at < w.effective_at,
                        r.c.subject_id.not_in(closed),
                        r.c.subject_id.not_in(told),
                    )
                ).scalars()
            )
            for person in meeting:
                if person.sid in under_older:
                    self._told.add((w.version, person.sid.int))
                    # Told when the event that met it happened (whatever else the page holds),
                    # and not before the version was published, whatever that is dated.
                    at = max(person.at_of[meets[person.sid.int]], w.published_at)
                    late.setdefault(w.version, []).append((person.sid, at))
        if len(self._told) > _MOST_TOLD:
            self._told.clear()  # the ledger's idempotency keys still record each notice once
        return late

    def _versions(self, conn: Connection) -> list[_Watched]:
        """The major versions that are notified, with what they touch."""
        if self._watched is None:
            v = VERSIONS
            query = sa.select(
                v.c.version, v.c.position, v.c.effective_at, v.c.published_at, TOUCHES.c.touched
            ).join(TOUCHES, TOUCHES.c.version == v.c.version)
            self._watched = [
                _Watched(
                    row.version,
                    row.position,
                    row.effective_at,
                    from_us(row.published_at),
                    Touched.model_validate_json(row.touched),
                )
                for row in conn.execute(query)
            ]
        return self._watched

    def discarded(self) -> None:
        super().discarded()
        self._watched = None  # a version folded in the page rolled back is not there
        self._told.clear()

    def emptied(self) -> None:
        super().emptied()
        self._watched = None
        self._told.clear()

    def _published(self, conn: Connection, position: int, p: ev.PolicyPublished) -> None:
        previous = p.previous_version
        affected: list[UUID] = []
        if previous is not None and p.major:
            row = conn.execute(
                sa.select(VERSIONS.c.document).where(VERSIONS.c.version == previous)
            ).first()
            new = parse_policy(p.document)
            old = None if row is None else parse_policy(orjson.loads(row.document))
            # The change is made under the version it replaces: if that one promises notice of
            # major changes, a version that stops promising it is itself notified (§8).
            if old is not None and (
                old.change_notice.notify_on_major_change or new.change_notice.notify_on_major_change
            ):
                touched = diff_policies(old, new).touched()
                affected = affected_subjects(conn, touched, position)
                conn.execute(
                    TOUCHES.insert(), {"version": p.version, "touched": touched.model_dump_json()}
                )
                self._versions(conn).append(
                    _Watched(p.version, position, to_us(p.effective_at), p.recorded_at, touched)
                )
        if affected and self.notifier is not None:
            self._told.update((p.version, sid.int) for sid in affected)
            self.notifier(p.version, [(sid, p.recorded_at) for sid in affected])
        conn.execute(
            VERSIONS.insert(),
            {
                "version": p.version,
                "previous_version": previous,
                "major": p.major,
                "effective_at": to_us(p.effective_at),
                "published_at": to_us(p.recorded_at),
                "reasons": orjson.dumps(list(p.changes)).decode(),
                "document": orjson.dumps(p.document).decode(),
                "affected": len(affected),
                "position": position,
            },
        )


_MOST_TOLD = 200_000


class _Page:
    """One person's part of a page: their footprint's items, when each of their events in it
    happened, and their registration's instant if it is in it."""

    __slots__ = ("at_of", "marks", "registered_at", "sid")

    def __init__(self, sid: UUID) -> None:
        self.sid = sid
        self.marks: dict[tuple[str, str], int] = {}
        self.at_of: dict[int, datetime] = {}
        """When each of their events in the page happened, by position."""
        self.registered_at: int | None = None


@dataclass(frozen=True, slots=True)
class _Watched:
    """A notified major version: its position, when it takes effect (µs), when it was
    published, what it touches."""

    version: str
    position: int
    effective_at: int
    published_at: datetime
    touched: Touched


def _meets(touched: Touched, kind: str, item: str) -> bool:
    """Whether one footprint item meets what a version touches."""
    if touched.everyone:
        return kind != "closed"
    found = {
        "category": touched.categories,
        "purpose": touched.purposes,
        "recipient_class": touched.recipient_classes,
        "region": touched.regions,
    }.get(kind)
    return found is not None and item in found


_Marks = Callable[[dict[tuple[str, str], int], int, Any], None]
"""Adds what an event brings to a person's footprint, each item with the first position."""


def _registered(mine: dict[tuple[str, str], int], position: int, p: ev.SubjectRegistered) -> None:
    mine.setdefault(("region", p.storage_region), position)


def _collected(mine: dict[tuple[str, str], int], position: int, p: ev.DataCollected) -> None:
    mine.setdefault(("category", p.category), position)
    mine.setdefault(("region", p.storage_region), position)
    for purpose in p.purposes:
        mine.setdefault(("purpose", purpose), position)


def _used(mine: dict[tuple[str, str], int], position: int, p: ev.DataUsed) -> None:
    mine.setdefault(("purpose", p.purpose), position)
    for category in p.categories:
        mine.setdefault(("category", category), position)


def _shared(mine: dict[tuple[str, str], int], position: int, p: ev.DataShared) -> None:
    mine.setdefault(("purpose", p.purpose), position)
    mine.setdefault(("recipient_class", p.recipient_class), position)
    mine.setdefault(("region", p.destination_region), position)
    for category in p.categories:
        mine.setdefault(("category", category), position)


def _consented(mine: dict[tuple[str, str], int], position: int, p: ev.ConsentGiven) -> None:
    for purpose in p.purposes:
        mine.setdefault(("purpose", purpose), position)
    for category in p.categories:
        mine.setdefault(("category", category), position)


def _erased(mine: dict[tuple[str, str], int], position: int, p: ev.DataErased) -> None:
    if not p.categories:  # erasing some categories leaves the person open
        mine.setdefault(("closed", ""), position)


def _cancelled(mine: dict[tuple[str, str], int], position: int, _p: ev.AccountCancelled) -> None:
    mine.setdefault(("closed", ""), position)


_MARKS: dict[type, _Marks] = {
    ev.SubjectRegistered: _registered,
    ev.DataCollected: _collected,
    ev.DataUsed: _used,
    ev.DataShared: _shared,
    ev.ConsentGiven: _consented,
    ev.DataErased: _erased,
    ev.AccountCancelled: _cancelled,
}


def affected_subjects(conn: Connection, touched: Touched, position: int) -> list[UUID]:
    """The open people whose footprint, as it stood at `position`, meets `touched`."""
    f = FOOTPRINT
    if touched.everyone:
        reach: sa.ColumnElement[bool] = f.c.kind == "region"  # every person has one
    else:
        parts = [
            sa.and_(f.c.kind == kind, f.c.item.in_(sorted(items)))
            for kind, items in (
                ("category", touched.categories),
                ("purpose", touched.purposes),
                ("recipient_class", touched.recipient_classes),
                ("region", touched.regions),
            )
            if items
        ]
        if not parts:
            return []
        reach = sa.or_(*parts)
    closed = sa.select(f.c.subject_id).where(f.c.kind == "closed", f.c.since_position <= position)
    query = (
        sa.select(f.c.subject_id)
        .where(reach, f.c.since_position <= position, f.c.subject_id.not_in(closed))
        .distinct()
        .order_by(f.c.subject_id)
    )
    return [row.subject_id for row in conn.execute(query)]

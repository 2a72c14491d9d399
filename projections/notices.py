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
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
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
from projections.store import METADATA, to_us, upsert
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

_NOTICE_COLUMNS = tuple(c.name for c in NOTICES.c)

Notifier = Callable[[ev.PolicyPublished, Sequence[UUID]], int]
"""Records that each of these people is to be told of this version; returns how many were."""


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

    def __call__(self, published: ev.PolicyPublished, subjects: Sequence[UUID]) -> int:
        recorded = 0
        for start in range(0, len(subjects), _CHUNK):
            chunk = subjects[start : start + _CHUNK]
            outcomes = self._execute_many(
                [
                    (
                        NOTIFIER_PRINCIPAL,
                        cmd.NotifyPolicy(
                            idempotency_key=f"policy-notice:{published.version}:{subject_id}",
                            occurred_at=published.recorded_at,
                            subject=cmd.SubjectRef(subject_id=subject_id),
                            version=published.version,
                            method=self.method,
                        ),
                    )
                    for subject_id in chunk
                ]
            )
            for subject_id, outcome in zip(chunk, outcomes, strict=True):
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
    tables = (VERSIONS, NOTICES, FOOTPRINT)

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
            ),
            _NOTICE_COLUMNS,
        )
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
        people: dict[int, tuple[UUID, dict[tuple[str, str], int]]] = {}
        # A person's latest notice and latest acknowledgement of a version: they set columns
        # of their own, so they are written after the page's other rows, the last of each kind
        # winning as it would row by row.
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
                    person = people[sid.int] = (sid, {})
                marks(person[1], position, p)
            elif kind is ev.PolicyNotified:
                n = cast("ev.PolicyNotified", payload)
                notified[(n.version, n.subject_id.int)] = (
                    n.version,
                    uuid(n.subject_id),
                    to_us(n.occurred_at),
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

    def _flush(
        self, conn: Connection, people: dict[int, tuple[UUID, dict[tuple[str, str], int]]]
    ) -> None:
        """Write the footprints' new items, then forget them (the dict is emptied in place)."""
        fresh, uuid = self.known.fresh_of, self._uuid
        rows: list[tuple[object, ...]] = []
        for key, (sid, mine) in people.items():
            h = uuid(sid)
            rows.extend([(h, k, i, mine[(k, i)]) for k, i in fresh(key, mine)])
        people.clear()
        self._footprint.run(conn, rows)

    def _published(self, conn: Connection, position: int, p: ev.PolicyPublished) -> None:
        previous = p.previous_version
        affected: list[UUID] = []
        if previous is not None and p.major:
            row = conn.execute(
                sa.select(VERSIONS.c.document).where(VERSIONS.c.version == previous)
            ).first()
            new = parse_policy(p.document)
            if row is not None and new.change_notice.notify_on_major_change:
                old = parse_policy(orjson.loads(row.document))
                affected = affected_subjects(conn, diff_policies(old, new).touched(), position)
        if affected and self.notifier is not None:
            self.notifier(p, affected)
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

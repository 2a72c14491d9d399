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
from uuid import UUID

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ledger import commands as cmd
from ledger import events as ev
from ledger.application import ItemOutcome, Ledger
from ledger.policy import parse_policy
from ledger.policy_diff import Touched, diff_policies
from projections.batch import ManyRows
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
        self._footprint = ManyRows(
            dialect, upsert(dialect, FOOTPRINT, ("subject_id", "kind", "item"))
        )
        self._notified = upsert(
            dialect,
            NOTICES,
            ("version", "subject_id"),
            ("notified_at", "notified_position", "method"),
        )
        self._acknowledged = upsert(
            dialect,
            NOTICES,
            ("version", "subject_id"),
            ("acknowledged_at", "acknowledged_position"),
        )

    def apply(self, conn: Connection, entries: Sequence[Entry]) -> None:
        marks: dict[UUID, dict[tuple[str, str], int]] = {}
        for position, p in entries:
            if isinstance(p, ev.PolicyPublished):
                self._flush(conn, marks)
                marks = {}
                self._published(conn, position, p)
            elif isinstance(p, ev.PolicyNotified):
                conn.execute(
                    self._notified,
                    {
                        "version": p.version,
                        "subject_id": p.subject_id,
                        "notified_at": to_us(p.occurred_at),
                        "notified_position": position,
                        "method": p.method,
                        "acknowledged_at": None,
                        "acknowledged_position": None,
                    },
                )
            elif isinstance(p, ev.PolicyAcknowledged):
                conn.execute(
                    self._acknowledged,
                    {
                        "version": p.version,
                        "subject_id": p.subject_id,
                        "notified_at": None,
                        "notified_position": None,
                        "method": None,
                        "acknowledged_at": to_us(p.occurred_at),
                        "acknowledged_position": position,
                    },
                )
            elif isinstance(p, ev.SubjectEnvelope):
                items = _footprint(p)
                if items:
                    mine = marks.get(p.subject_id)
                    if mine is None:
                        mine = marks[p.subject_id] = {}
                    for item in items:
                        mine.setdefault(item, position)
        self._flush(conn, marks)

    def _flush(self, conn: Connection, marks: dict[UUID, dict[tuple[str, str], int]]) -> None:
        fresh = self.known.fresh_of
        rows = [
            {"subject_id": s, "kind": k, "item": i, "since_position": mine[(k, i)]}
            for s, mine in marks.items()
            for k, i in fresh(s, mine)
        ]
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


def _footprint(p: ev.SubjectEnvelope) -> list[tuple[str, str]]:
    if isinstance(p, ev.SubjectRegistered):
        return [("region", p.storage_region)]
    if isinstance(p, ev.DataCollected):
        return [
            ("category", p.category),
            ("region", p.storage_region),
            *(("purpose", x) for x in p.purposes),
        ]
    if isinstance(p, ev.DataUsed):
        return [("purpose", p.purpose), *(("category", x) for x in p.categories)]
    if isinstance(p, ev.DataShared):
        return [
            ("purpose", p.purpose),
            ("recipient_class", p.recipient_class),
            ("region", p.destination_region),
            *(("category", x) for x in p.categories),
        ]
    if isinstance(p, ev.ConsentGiven):
        return [*(("purpose", x) for x in p.purposes), *(("category", x) for x in p.categories)]
    if isinstance(p, ev.AccountCancelled) or (isinstance(p, ev.DataErased) and not p.categories):
        return [("closed", "")]
    return []


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

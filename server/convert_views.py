"""Proto to view-query arguments and notice commands, and view answers to proto: the first and
third steps of the view and notice servicers (CONVENTIONS §8).

Pure functions, no I/O. As elsewhere, a proto3 zero value means "not given": an unspecified
enum is "no filter", an empty string "any". An enum number the contract does not define is a
field violation. A person's values appear in an answer only when the servicer opened them
(`Opened`); otherwise a field is named and dated, with no value, and sealed text never leaves.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any, TypeVar

from google.protobuf import timestamp_pb2

from ledger import commands as cmd
from ledger import events as ev
from ledger.policy import RightKind
from projections.answers import (
    ConsentRow,
    DeadlineCounts,
    DeadlineRow,
    HeldCategoryView,
    NoticeRow,
    RegisterRow,
    RetentionRow,
    SharedWith,
    SubjectViewAnswer,
    VersionRow,
)
from projections.queries import DeadlineStatus, NoticeStatus
from server._pb.pdl.v1 import common_pb2 as cpb
from server._pb.pdl.v1 import notice_service_pb2 as npb
from server._pb.pdl.v1 import query_service_pb2 as qpb
from server._pb.pdl.v1 import rights_service_pb2 as rpb
from server._pb.pdl.v1 import view_service_pb2 as vpb
from server.convert_results import (
    CONSENT_GIVERS,
    REQUEST_OUTCOMES,
    REQUEST_STATUSES,
    RIGHT_KINDS,
    timestamp,
)
from server.errors import FieldViolation, InvalidRequest
from server.request_reader import Draft

__all__ = [
    "Opened",
    "acknowledge_policy",
    "activity",
    "consent",
    "deadline",
    "deadline_counts",
    "deadline_status",
    "min_position",
    "notice",
    "notice_status",
    "notification",
    "notify_policy",
    "register_entry",
    "retention_due",
    "right_kind",
    "subject_view",
    "version",
]

_E = TypeVar("_E", bound=Enum)
_ACTIVITIES: dict[int, str] = {
    vpb.PROCESSING_ACTIVITY_COLLECTION: "collection",
    vpb.PROCESSING_ACTIVITY_USE: "use",
    vpb.PROCESSING_ACTIVITY_SHARE: "share",
}
_ACTIVITY_NUMBERS = {
    name: vpb.ProcessingActivity.ValueType(number) for number, name in _ACTIVITIES.items()
}


def _paired(value_of: Callable[[str], int], prefix: str, members: type[_E]) -> dict[int, _E]:
    """Proto enum number → query enum member, paired by name; UNSPECIFIED is the member `ALL`.

    A member without its proto value fails at import, so the two cannot drift apart.
    """
    return {
        int(value_of(f"{prefix}{'UNSPECIFIED' if m.name == 'ALL' else m.name}")): m for m in members
    }


_DEADLINE_STATUSES = _paired(vpb.DeadlineStatus.Value, "DEADLINE_STATUS_", DeadlineStatus)
_NOTICE_STATUSES = _paired(vpb.NoticeStatus.Value, "NOTICE_STATUS_", NoticeStatus)
_KIND_NUMBERS = {kind: number for number, kind in RIGHT_KINDS.items()}
_STATUS_NUMBERS = {status: number for number, status in REQUEST_STATUSES.items()}
_OUTCOME_NUMBERS = {outcome: number for number, outcome in REQUEST_OUTCOMES.items()}
_GIVER_NUMBERS = {giver: number for number, giver in CONSENT_GIVERS.items()}


# --- requests -----------------------------------------------------------------------------------


def min_position(value: int) -> int:
    """The log position a read waits for; 0 means none."""
    if value < 0:
        raise InvalidRequest([FieldViolation("min_position", "must not be negative")])
    return value


def _choice(field_name: str, number: int, table: Mapping[Any, _E], names: str) -> _E:
    found = table.get(number)
    if found is None:
        raise InvalidRequest([FieldViolation(field_name, f"must be one of {names}")])
    return found


def activity(number: int) -> str:
    """A register activity filter; "" for every activity."""
    if number == vpb.PROCESSING_ACTIVITY_UNSPECIFIED:
        return ""
    found = _ACTIVITIES.get(number)
    if found is None:
        names = ", ".join(vpb.ProcessingActivity.keys())
        raise InvalidRequest([FieldViolation("activity", f"must be one of {names}")])
    return found


def deadline_status(number: int) -> DeadlineStatus:
    return _choice("status", number, _DEADLINE_STATUSES, ", ".join(vpb.DeadlineStatus.keys()))


def notice_status(number: int) -> NoticeStatus:
    return _choice("status", number, _NOTICE_STATUSES, ", ".join(vpb.NoticeStatus.keys()))


def right_kind(number: int) -> RightKind | None:
    """A rights-request kind filter; None for every kind."""
    if number == cpb.RIGHT_KIND_UNSPECIFIED:
        return None
    return _choice("kind", number, RIGHT_KINDS, ", ".join(cpb.RightKind.keys()))


def acknowledge_policy(req: npb.AcknowledgePolicyRequest, now: datetime) -> cmd.AcknowledgePolicy:
    """AcknowledgePolicy: an empty method means "popup"."""
    d = Draft(req.meta, now)
    d.subject(req.subject)
    d.texts_of(req, "version", "method")
    return d.build(cmd.AcknowledgePolicy)


def notify_policy(req: npb.NotifyPolicyRequest, now: datetime) -> cmd.NotifyPolicy:
    """NotifyPolicy: an empty method means "popup"."""
    d = Draft(req.meta, now)
    d.subject(req.subject)
    d.texts_of(req, "version", "method")
    return d.build(cmd.NotifyPolicy)


# --- answers ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Opened:
    """A person's values opened for one answer: by (category, field), and the account id."""

    values: dict[tuple[str, str], str] = field(default_factory=dict)
    account_id: str | None = None
    key_shredded: bool = False


def _stamp(instant: datetime | None) -> timestamp_pb2.Timestamp | None:
    return None if instant is None else timestamp(instant)


def subject_view(view: SubjectViewAnswer, opened: Opened | None) -> vpb.SubjectView:
    """A person's view; values and the account id only from `opened`, never sealed text."""
    shredded = view.key_shredded or (opened is not None and opened.key_shredded)
    revealed = opened is not None and not shredded
    return vpb.SubjectView(
        subject_id=str(view.subject_id),
        namespace=view.namespace,
        registered_at=timestamp(view.registered_at),
        minor=view.minor,
        has_guardian=view.has_guardian,
        storage_region=view.storage_region,
        erased=view.erased,
        cancelled=view.cancelled,
        key_shredded=shredded,
        closed_at=_stamp(view.closed_at),
        events=view.events,
        last_position=view.last_position,
        categories=[_category(c, opened if revealed else None) for c in view.categories],
        revealed=revealed,
        account_id=(opened.account_id or "") if revealed and opened is not None else "",
        recipient_classes=view.recipient_classes,
        recipients=view.recipients,
        shared_with=_shared_with(view.shared_with),
    )


def _category(held: HeldCategoryView, opened: Opened | None) -> vpb.ViewCategory:
    fields = []
    for f in held.fields:
        value = None if opened is None else opened.values.get((held.category, f.field))
        fields.append(
            vpb.ViewField(
                field=f.field,
                set_at=timestamp(f.set_at),
                position=f.position,
                revealed=value is not None,
                value=value or "",
            )
        )
    return vpb.ViewCategory(
        category=held.category,
        first_at=_stamp(held.first_at),
        last_at=_stamp(held.last_at),
        collections=held.collections,
        sources=held.sources,
        purposes=held.purposes,
        bases=held.bases,
        regions=held.regions,
        recipient_classes=held.recipient_classes,
        recipients=held.recipients,
        fields=fields,
        shared_with=_shared_with(held.shared_with),
    )


def _shared_with(shared: tuple[SharedWith, ...]) -> list[qpb.Recipients]:
    return [
        qpb.Recipients(recipient_class=s.recipient_class, recipients=s.recipients) for s in shared
    ]


def consent(row: ConsentRow) -> vpb.ConsentGrant:
    return vpb.ConsentGrant(
        consent_id=str(row.consent_id),
        purpose=row.purpose,
        category=row.category,
        given_at=timestamp(row.given_at),
        given_by=_GIVER_NUMBERS[row.given_by],
        method=row.method,
        policy_version=row.policy_version,
        position=row.position,
        withdrawn_at=_stamp(row.withdrawn_at),
        in_force=row.in_force,
    )


def register_entry(row: RegisterRow) -> vpb.RegisterEntry:
    return vpb.RegisterEntry(
        activity=_ACTIVITY_NUMBERS.get(row.activity, vpb.PROCESSING_ACTIVITY_UNSPECIFIED),
        category=row.category,
        purpose=row.purpose,
        legal_basis=row.legal_basis,
        recipient_class=row.recipient_class,
        region=row.region,
        subjects=row.subjects,
        events=row.events,
        first_seen=timestamp(row.first_seen),
        last_seen=timestamp(row.last_seen),
    )


def deadline(row: DeadlineRow) -> vpb.RequestDeadline:
    return vpb.RequestDeadline(
        request_id=str(row.request_id),
        subject_id=str(row.subject_id),
        kind=_KIND_NUMBERS[row.kind],
        status=_STATUS_NUMBERS[row.status],
        received_at=timestamp(row.received_at),
        due_at=timestamp(row.due_at),
        deadline_kind=row.deadline_kind,
        deadline_clause=row.deadline_clause,
        extended_days=row.extended_days,
        paused_at=_stamp(row.paused_at),
        closed_at=_stamp(row.closed_at),
        outcome=(
            rpb.REQUEST_OUTCOME_UNSPECIFIED
            if row.outcome is None
            else _OUTCOME_NUMBERS[row.outcome]
        ),
        late=row.late,
        overdue=row.overdue,
        due_soon=row.due_soon,
    )


def deadline_counts(counts: DeadlineCounts) -> vpb.DeadlineSummary:
    return vpb.DeadlineSummary(
        kind=_KIND_NUMBERS[counts.kind],
        open=counts.open,
        paused=counts.paused,
        due_soon=counts.due_soon,
        overdue=counts.overdue,
        closed=counts.closed,
        closed_late=counts.closed_late,
        total=counts.total,
    )


def retention_due(row: RetentionRow) -> vpb.RetentionDue:
    return vpb.RetentionDue(
        subject_id=str(row.subject_id),
        category=row.category,
        first_at=timestamp(row.first_at),
        last_at=timestamp(row.last_at),
        retention_days=row.retention_days,
        due_at=timestamp(row.due_at),
        in_policy=row.in_policy,
    )


def version(row: VersionRow) -> vpb.PolicyVersionNotices:
    return vpb.PolicyVersionNotices(
        version=row.version,
        previous_version=row.previous_version or "",
        major=row.major,
        effective_at=timestamp(row.effective_at),
        published_at=timestamp(row.published_at),
        reasons=row.reasons,
        affected=row.affected,
        notified=row.notified,
        acknowledged=row.acknowledged,
        position=row.position,
    )


def notice(row: NoticeRow) -> vpb.PolicyNotice:
    return vpb.PolicyNotice(
        subject_id=str(row.subject_id),
        version=row.version,
        notified_at=_stamp(row.notified_at),
        method=row.method or "",
        notified_position=row.notified_position or 0,
        acknowledged_at=_stamp(row.acknowledged_at),
        acknowledged_position=row.acknowledged_position or 0,
    )


def notification(position: int, payload: ev.PolicyNotified) -> npb.PolicyNotification:
    return npb.PolicyNotification(
        subject_id=str(payload.subject_id),
        version=payload.version,
        method=payload.method,
        notified_at=timestamp(payload.occurred_at),
        position=position,
    )

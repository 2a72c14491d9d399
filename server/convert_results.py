"""Ledger results to proto messages: the third step of a servicer (CONVENTIONS §8).

Pure functions, no I/O. Sets come out sorted so equal states give equal bytes, datetimes become
`Timestamp`s, and sealed values stay sealed text. The enum tables pairing proto numbers with the
ledger's enums live here and are shared with `server.convert`, which re-exports these functions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from enum import Enum
from typing import TypeVar

from google.protobuf import timestamp_pb2

from ledger.application import ItemOutcome, Recorded
from ledger.errors import Refused
from ledger.events import ConsentGiver, RequestOutcome, SubjectEnvelope
from ledger.policy import RightKind
from ledger.policy_book import PublishedVersion
from ledger.rights import RequestState, RequestStatus
from ledger.subject_state import SubjectState
from server._pb.pdl.v1 import common_pb2, ledger_service_pb2, policy_service_pb2
from server._pb.pdl.v1 import query_service_pb2 as qpb
from server._pb.pdl.v1 import rights_service_pb2 as rpb
from server.errors import status_of

_E = TypeVar("_E", bound=Enum)
_V = TypeVar("_V", bound=int)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_IN_OWN_FIELDS = frozenset({"occurred_at", "recorded_at", "principal", "policy_version"})
"""Envelope fields a `HistoryEvent` carries in fields of its own, left out of `payload_json`."""


def _by_number(value_of: Callable[[str], _V], prefix: str, members: type[_E]) -> dict[_V, _E]:
    """Proto enum number → ledger enum member, paired by name (`RIGHT_KIND_ACCESS` ↔ `ACCESS`).

    A ledger member without its proto value fails at import, so the two cannot drift apart.
    """
    return {value_of(f"{prefix}{m.name}"): m for m in members}


CONSENT_GIVERS = _by_number(common_pb2.ConsentGiver.Value, "CONSENT_GIVER_", ConsentGiver)
RIGHT_KINDS = _by_number(common_pb2.RightKind.Value, "RIGHT_KIND_", RightKind)
REQUEST_OUTCOMES = _by_number(rpb.RequestOutcome.Value, "REQUEST_OUTCOME_", RequestOutcome)
REQUEST_STATUSES = _by_number(rpb.RequestStatus.Value, "REQUEST_STATUS_", RequestStatus)


def _number(table: dict[_V, _E], member: _E) -> _V:
    return next(number for number, m in table.items() if m is member)


def timestamp(instant: datetime) -> timestamp_pb2.Timestamp:
    """An aware datetime as a `Timestamp` (exact to the microsecond)."""
    delta = instant - _EPOCH
    return timestamp_pb2.Timestamp(
        seconds=delta.days * 86_400 + delta.seconds, nanos=delta.microseconds * 1_000
    )


def recorded(r: Recorded) -> common_pb2.Recorded:
    """The answer to an accepted command."""
    return common_pb2.Recorded(
        aggregate_id=str(r.aggregate_id),
        subject_id=str(r.subject_id) if r.subject_id is not None else "",
        version=r.version,
        position=r.position,
        event_type=r.event_type,
        replayed=r.replayed,
    )


def item_outcome(o: ItemOutcome) -> ledger_service_pb2.ItemOutcome:
    """One batch item's outcome: its `Recorded`, or the status that item alone would have had."""
    if o.recorded is not None:
        return ledger_service_pb2.ItemOutcome(recorded=recorded(o.recorded))
    if o.error is None:
        msg = "an item outcome carries a result or an error"
        raise ValueError(msg)
    parts = status_of(o.error)
    return ledger_service_pb2.ItemOutcome(
        refusal=ledger_service_pb2.ItemRefusal(
            code=parts.code.name,
            reason=parts.reason,
            clause=o.error.clause if isinstance(o.error, Refused) else "",
            message=parts.message,
        )
    )


def _sorted(values: Iterable[str]) -> list[str]:
    return sorted(values)


def subject_state(s: SubjectState) -> qpb.SubjectState:
    """A person's state; every set sorted, categories and recipient classes by name."""
    message = qpb.SubjectState(
        subject_id=str(s.subject_id),
        namespace=s.namespace,
        registered_at=timestamp(s.registered_at),
        birth_year=s.birth_year or 0,
        minor=s.minor,
        has_guardian=s.has_guardian,
        storage_region=s.storage_region,
        held=[
            qpb.HeldCategory(
                category=category,
                first_at=timestamp(h.first_at),
                last_at=timestamp(h.last_at),
                sources=_sorted(h.sources),
                purposes=_sorted(h.purposes),
                regions=_sorted(h.regions),
                collections=h.collections,
            )
            for category, h in sorted(s.held.items())
        ],
        consents=[
            qpb.Consent(
                consent_id=str(g.consent_id),
                purposes=_sorted(g.purposes),
                categories=_sorted(g.categories),
                given_at=timestamp(g.given_at),
                given_by=_number(CONSENT_GIVERS, g.given_by),
                policy_version=g.policy_version,
            )
            for g in s.consents
        ],
        withdrawals=[
            qpb.Withdrawal(
                purposes=_sorted(w.purposes), categories=_sorted(w.categories), at=timestamp(w.at)
            )
            for w in s.withdrawals
        ],
        shared_with=[
            qpb.Recipients(recipient_class=name, recipients=_sorted(recipients))
            for name, recipients in sorted(s.shared_with.items())
        ],
        purposes_used=_sorted(s.purposes_used),
        erased=s.erased,
        cancelled=s.cancelled,
        key_shredded=s.key_shredded,
        notified_versions=_sorted(s.notified_versions),
        acknowledged_versions=_sorted(s.acknowledged_versions),
        events=s.events,
    )
    if s.closed_at is not None:
        message.closed_at.CopyFrom(timestamp(s.closed_at))
    return message


def rights_request(s: RequestState) -> rpb.RightsRequest:
    """A rights request's state; its purposes and categories in the order it named them."""
    message = rpb.RightsRequest(
        request_id=str(s.request_id),
        subject_id=str(s.subject_id),
        kind=_number(RIGHT_KINDS, s.kind),
        ground=s.ground or "",
        received_at=timestamp(s.received_at),
        due_at=timestamp(s.due_at),
        deadline_kind=s.deadline_kind,
        status=_number(REQUEST_STATUSES, s.status),
        extended_days=s.extended_days,
        late=s.late,
        purposes=list(s.purposes),
        categories=list(s.categories),
    )
    if s.paused_at is not None:
        message.paused_at.CopyFrom(timestamp(s.paused_at))
    if s.outcome is not None:
        message.outcome = _number(REQUEST_OUTCOMES, s.outcome)
    if s.closed_at is not None:
        message.closed_at.CopyFrom(timestamp(s.closed_at))
    return message


def policy_version(v: PublishedVersion) -> policy_service_pb2.PolicyVersion:
    """A published policy version, without its document."""
    return policy_service_pb2.PolicyVersion(
        version=v.version,
        effective_at=timestamp(v.effective_at),
        digest=v.digest,
        text_sha256=v.text_sha256,
        major=v.major,
        changes=list(v.changes),
        published_at=timestamp(v.published_at),
    )


def history_event(version: int, payload: SubjectEnvelope) -> qpb.HistoryEvent:
    """One event of a person's history. `payload_json` is the payload without the envelope
    fields the message carries itself; sealed values stay sealed text, never opened."""
    return qpb.HistoryEvent(
        version=version,
        event_type=type(payload).__name__,
        occurred_at=timestamp(payload.occurred_at),
        recorded_at=timestamp(payload.recorded_at),
        principal=payload.principal,
        policy_version=payload.policy_version,
        payload_json=payload.model_dump_json(exclude=set(_IN_OWN_FIELDS)),
    )

"""The rules of rights requests (§6): opening each kind, the 15-day deadline (§6.4, §9),
extension, pause and resume, closing, and what fulfilling each kind carries out.

Every refusal is checked three ways: the reason, the clause, and that nothing was written.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from pydantic import SecretStr
from scenario import (
    PRINCIPAL,
    collection,
    consent,
    erasure,
    gps_collection,
    key,
    later,
    refused,
    secret,
    subject,
    usage_collection,
    written,
)

from ledger import commands as c
from ledger.application import Ledger
from ledger.errors import (
    InvalidCommand,
    KeyShreddedError,
    LedgerError,
    RightsRequestNotFound,
    SubjectNotFound,
)
from ledger.errors import RefusalReason as R
from ledger.events import RequestOutcome
from ledger.policy import RightKind, load_seed_policy
from ledger.rights import RequestStatus

_FIFTEEN_DAYS = timedelta(days=15)

# --- helpers ------------------------------------------------------------------------------


def _open(sid: UUID, at: datetime, kind: RightKind, **fields: Any) -> c.OpenRightsRequest:
    return c.OpenRightsRequest(
        idempotency_key=key("req"),
        occurred_at=at,
        subject=c.SubjectRef(subject_id=sid),
        kind=kind,
        **fields,
    )


def _request(ledger: Ledger, sid: UUID, kind: RightKind = RightKind.ACCESS, **fields: Any) -> UUID:
    return ledger.execute(PRINCIPAL, _open(sid, later(ledger), kind, **fields)).aggregate_id


def _extend(rid: UUID, at: datetime, days: int) -> c.ExtendRightsRequest:
    return c.ExtendRightsRequest(
        idempotency_key=key("ext"), occurred_at=at, request_id=rid, days=days, reason="backlog"
    )


def _pause(rid: UUID, at: datetime) -> c.PauseRightsRequest:
    return c.PauseRightsRequest(
        idempotency_key=key("pau"), occurred_at=at, request_id=rid, reason="verifying identity"
    )


def _resume(rid: UUID, at: datetime) -> c.ResumeRightsRequest:
    return c.ResumeRightsRequest(idempotency_key=key("res"), occurred_at=at, request_id=rid)


def _close(
    rid: UUID, at: datetime, outcome: RequestOutcome = RequestOutcome.FULFILLED, **fields: Any
) -> c.CloseRightsRequest:
    return c.CloseRightsRequest(
        idempotency_key=key("clo"),
        occurred_at=at,
        request_id=rid,
        outcome=outcome,
        reason="answered",
        **fields,
    )


_LATER_STEPS = [
    pytest.param(_close, id="close"),
    pytest.param(lambda rid, at: _extend(rid, at, 1), id="extend"),
    pytest.param(_pause, id="pause"),
]
"""Steps taken on an open request, each made from its id and an instant."""


def _types(ledger: Ledger, sid: UUID) -> list[str]:
    return [type(e).__name__ for e in ledger.history(sid)]


# --- opening ------------------------------------------------------------------------------

_SCOPES: dict[RightKind, dict[str, Any]] = {
    RightKind.ACCESS: {},
    RightKind.CORRECTION: {"categories": ("network_log.ip_address",)},
    RightKind.DELETION: {"ground": "no_consent"},
    RightKind.ACCOUNT_CANCELLATION: {},
    RightKind.CONSENT_WITHDRAWAL: {
        "purposes": ("customer_service",),
        "categories": ("location.gps",),
    },
}


@pytest.mark.parametrize("kind", list(RightKind))
def test_each_declared_right_can_be_requested_and_is_due_in_15_calendar_days__clauses_6_6_4(
    memory_ledger, kind
):
    """§6.4/§9: 'within 15 days', read as 15 calendar days from receipt (protective)."""
    sid = subject(memory_ledger)
    later(memory_ledger, 7 * 3600)
    received = memory_ledger.clock.now() - timedelta(hours=6)

    rid = memory_ledger.execute(
        PRINCIPAL, _open(sid, later(memory_ledger), kind, received_at=received, **_SCOPES[kind])
    ).aggregate_id

    state = memory_ledger.rights_request(rid)
    assert (state.kind, state.status, state.subject_id) == (kind, RequestStatus.OPEN, sid)
    assert state.due_at == received + _FIFTEEN_DAYS
    assert state.deadline_kind == "calendar"


def test_a_request_without_received_at_is_due_15_days_after_it_occurred__clause_6_4(
    memory_ledger,
):
    sid = subject(memory_ledger)
    at = later(memory_ledger)

    rid = memory_ledger.execute(PRINCIPAL, _open(sid, at, RightKind.ACCESS)).aggregate_id

    assert memory_ledger.rights_request(rid).due_at == at + _FIFTEEN_DAYS


@pytest.mark.parametrize(
    ("fields", "reason", "clause"),
    [
        ({"kind": RightKind.DELETION}, R.ERASURE_GROUND_NOT_DECLARED, "§6.3"),
        ({"kind": RightKind.DELETION, "ground": "boredom"}, R.ERASURE_GROUND_NOT_DECLARED, "§6.3"),
        (
            {"kind": RightKind.CONSENT_WITHDRAWAL, "purposes": ("profiling",)},
            R.PURPOSE_NOT_DECLARED,
            "§2",
        ),
        (
            {"kind": RightKind.CORRECTION, "categories": ("biometrics.face",)},
            R.CATEGORY_NOT_DECLARED,
            "§1",
        ),
    ],
    ids=["deletion-no-ground", "deletion-unknown-ground", "purpose", "category"],
)
def test_a_request_outside_the_declared_grounds_purposes_and_categories_is_refused__clause_6(
    memory_ledger, fields, reason, clause
):
    sid = subject(memory_ledger)
    kind = fields.pop("kind")

    refusal = refused(memory_ledger, _open(sid, later(memory_ledger), kind, **fields))

    assert (refusal.reason, refusal.clause) == (reason, clause)


def test_a_right_the_policy_in_force_does_not_declare_cannot_be_requested__clause_6(
    memory_ledger,
):
    seed = load_seed_policy()
    rights = tuple(r for r in seed.rights if r.kind is not RightKind.ACCESS)
    now = memory_ledger.clock.now()
    memory_ledger.execute(
        PRINCIPAL,
        c.PublishPolicy(
            idempotency_key=key("pub"),
            occurred_at=now,
            policy=seed.model_copy(update={"version": "2", "rights": rights}),
            effective_at=now + timedelta(minutes=1),
            major=True,
        ),
    )
    sid = subject(memory_ledger)

    refusal = refused(memory_ledger, _open(sid, later(memory_ledger, 120), RightKind.ACCESS))

    assert (refusal.reason, refusal.clause) == (R.RIGHT_NOT_DECLARED, "§6")


def test_a_request_for_an_erased_subject_is_refused__clause_6_3(memory_ledger):
    sid = subject(memory_ledger)
    rid = _request(memory_ledger, sid, RightKind.DELETION, ground="no_consent")
    memory_ledger.execute(PRINCIPAL, _close(rid, later(memory_ledger)))

    refusal = refused(memory_ledger, _open(sid, later(memory_ledger), RightKind.ACCESS))

    assert (refusal.reason, refusal.clause) == (R.SUBJECT_ERASED, "§6.3")


def test_a_request_for_an_unknown_subject_raises_subject_not_found(memory_ledger):
    with pytest.raises(SubjectNotFound):
        memory_ledger.execute(PRINCIPAL, _open(uuid4(), later(memory_ledger), RightKind.ACCESS))


def test_a_request_received_in_the_future_is_refused__clauses_0_6_4(memory_ledger):
    """A received_at after the ledger's clock would move the 15-day deadline at will."""
    sid = subject(memory_ledger)
    far = memory_ledger.clock.now() + timedelta(days=300)

    with pytest.raises(LedgerError):
        memory_ledger.execute(
            PRINCIPAL, _open(sid, later(memory_ledger), RightKind.ACCESS, received_at=far)
        )


# --- extension, pause, resume -------------------------------------------------------------


def test_an_extension_with_a_reason_moves_the_due_instant__clause_6_4(memory_ledger):
    rid = _request(memory_ledger, subject(memory_ledger))
    due = memory_ledger.rights_request(rid).due_at

    memory_ledger.execute(PRINCIPAL, _extend(rid, later(memory_ledger), 10))
    memory_ledger.execute(PRINCIPAL, _extend(rid, later(memory_ledger), 5))

    state = memory_ledger.rights_request(rid)
    assert (state.due_at, state.extended_days) == (due + timedelta(days=15), 15)


def test_extensions_beyond_15_days_in_total_are_refused__clause_6_4(memory_ledger):
    rid = _request(memory_ledger, subject(memory_ledger))
    memory_ledger.execute(PRINCIPAL, _extend(rid, later(memory_ledger), 10))

    refusal = refused(memory_ledger, _extend(rid, later(memory_ledger), 6))

    assert (refusal.reason, refusal.clause) == (R.EXTENSION_TOO_LONG, "§6.4")
    assert memory_ledger.rights_request(rid).extended_days == 10


def test_pausing_a_request_pauses_it_and_pausing_again_is_refused__clause_6(memory_ledger):
    rid = _request(memory_ledger, subject(memory_ledger))
    paused_at = later(memory_ledger)

    memory_ledger.execute(PRINCIPAL, _pause(rid, paused_at))
    refusal = refused(memory_ledger, _pause(rid, later(memory_ledger)))

    state = memory_ledger.rights_request(rid)
    assert (state.status, state.paused_at) == (RequestStatus.PAUSED, paused_at)
    assert (refusal.reason, refusal.clause) == (R.REQUEST_PAUSED, "§6")


def test_resuming_moves_the_due_instant_by_the_paused_time__clause_6_4(memory_ledger):
    rid = _request(memory_ledger, subject(memory_ledger))
    due = memory_ledger.rights_request(rid).due_at
    memory_ledger.execute(PRINCIPAL, _pause(rid, later(memory_ledger)))

    memory_ledger.execute(PRINCIPAL, _resume(rid, later(memory_ledger, 3 * 3600)))

    state = memory_ledger.rights_request(rid)
    assert (state.status, state.paused_at) == (RequestStatus.OPEN, None)
    assert state.due_at == due + timedelta(hours=3)


def test_a_pause_counts_as_extension_so_no_request_waits_past_30_days__clause_6_4(
    memory_ledger,
):
    rid = _request(memory_ledger, subject(memory_ledger))
    received = memory_ledger.rights_request(rid).received_at
    memory_ledger.execute(PRINCIPAL, _extend(rid, later(memory_ledger), 10))
    memory_ledger.execute(PRINCIPAL, _pause(rid, later(memory_ledger)))

    memory_ledger.execute(PRINCIPAL, _resume(rid, later(memory_ledger, 200 * 24 * 3600)))

    assert memory_ledger.rights_request(rid).due_at == received + 2 * _FIFTEEN_DAYS


def test_an_extension_after_a_long_pause_is_refused_past_30_days__clause_6_4(memory_ledger):
    rid = _request(memory_ledger, subject(memory_ledger))
    memory_ledger.execute(PRINCIPAL, _pause(rid, later(memory_ledger)))
    memory_ledger.execute(PRINCIPAL, _resume(rid, later(memory_ledger, 10 * 24 * 3600)))

    refusal = refused(memory_ledger, _extend(rid, later(memory_ledger), 10))

    assert (refusal.reason, refusal.clause) == (R.EXTENSION_TOO_LONG, "§6.4")
    memory_ledger.execute(PRINCIPAL, _extend(rid, later(memory_ledger), 5))  # what is left


@pytest.mark.parametrize("make", _LATER_STEPS)
def test_a_request_event_dated_before_its_receipt_is_refused__clause_6_4(memory_ledger, make):
    rid = _request(memory_ledger, subject(memory_ledger))
    received = memory_ledger.rights_request(rid).received_at

    refusal = refused(memory_ledger, make(rid, received - timedelta(days=3)))

    assert (refusal.reason, refusal.clause) == (R.REQUEST_OUT_OF_ORDER, "§6.4")


def test_a_resume_dated_before_its_pause_is_refused__clause_6_4(memory_ledger):
    rid = _request(memory_ledger, subject(memory_ledger))
    paused_at = later(memory_ledger, 3600)
    memory_ledger.execute(PRINCIPAL, _pause(rid, paused_at))

    refusal = refused(memory_ledger, _resume(rid, paused_at - timedelta(minutes=30)))

    assert (refusal.reason, refusal.clause) == (R.REQUEST_OUT_OF_ORDER, "§6.4")


def test_resuming_a_request_that_is_not_paused_is_refused__clause_6(memory_ledger):
    rid = _request(memory_ledger, subject(memory_ledger))

    refusal = refused(memory_ledger, _resume(rid, later(memory_ledger)))

    assert (refusal.reason, refusal.clause) == (R.REQUEST_NOT_PAUSED, "§6")


# --- closing ------------------------------------------------------------------------------


def test_closing_a_paused_request_is_refused__clause_6(memory_ledger):
    rid = _request(memory_ledger, subject(memory_ledger))
    memory_ledger.execute(PRINCIPAL, _pause(rid, later(memory_ledger)))

    refusal = refused(memory_ledger, _close(rid, later(memory_ledger)))

    assert (refusal.reason, refusal.clause) == (R.REQUEST_PAUSED, "§6")


@pytest.mark.parametrize("make", _LATER_STEPS)
def test_a_closed_request_cannot_be_closed_extended_or_paused__clause_6(memory_ledger, make):
    rid = _request(memory_ledger, subject(memory_ledger))
    memory_ledger.execute(PRINCIPAL, _close(rid, later(memory_ledger)))

    refusal = refused(memory_ledger, make(rid, later(memory_ledger)))

    assert (refusal.reason, refusal.clause) == (R.REQUEST_CLOSED, "§6")


@pytest.mark.parametrize(
    "make", [pytest.param(lambda rid, at: _extend(rid, at, 5), id="extend"), _LATER_STEPS[2]]
)
def test_an_overdue_request_can_no_longer_be_extended_or_paused__clause_6_4(memory_ledger, make):
    """A delay recorded after the due instant would hide that the request is already late."""
    rid = _request(memory_ledger, subject(memory_ledger))
    due = memory_ledger.rights_request(rid).due_at
    memory_ledger.clock.advance(timedelta(days=16))

    refusal = refused(memory_ledger, make(rid, memory_ledger.clock.now()))

    assert (refusal.reason, refusal.clause) == (R.REQUEST_OVERDUE, "§6.4")
    state = memory_ledger.rights_request(rid)
    assert (state.status, state.due_at) == (RequestStatus.OPEN, due)
    memory_ledger.execute(PRINCIPAL, _close(rid, later(memory_ledger)))
    assert memory_ledger.rights_request(rid).late is True


def test_a_paused_request_past_its_first_due_instant_can_still_be_extended__clause_6_4(
    memory_ledger,
):
    """Its clock stopped when it was paused: it is not overdue while a resumption could
    still leave it due later."""
    rid = _request(memory_ledger, subject(memory_ledger))
    memory_ledger.clock.advance(timedelta(days=5))
    memory_ledger.execute(PRINCIPAL, _pause(rid, memory_ledger.clock.now()))
    memory_ledger.clock.advance(timedelta(days=12))

    memory_ledger.execute(PRINCIPAL, _extend(rid, memory_ledger.clock.now(), 5))

    assert memory_ledger.rights_request(rid).extended_days == 5
    memory_ledger.clock.advance(timedelta(days=14))  # past received + 30 days: late whatever
    refusal = refused(memory_ledger, _extend(rid, memory_ledger.clock.now(), 1))
    assert (refusal.reason, refusal.clause) == (R.REQUEST_OVERDUE, "§6.4")


@pytest.mark.parametrize("make", [_LATER_STEPS[1], _LATER_STEPS[2]])
def test_a_request_can_be_extended_or_paused_up_to_its_due_instant__clause_6_4(memory_ledger, make):
    rid = _request(memory_ledger, subject(memory_ledger))
    due = memory_ledger.rights_request(rid).due_at
    memory_ledger.clock.advance(due - memory_ledger.clock.now())

    memory_ledger.execute(PRINCIPAL, make(rid, due))

    assert memory_ledger.rights_request(rid).last_at == due


def _request_payloads(ledger: Ledger, rid: UUID) -> list[Any]:
    events = ledger.recorder.select_notifications(1, 100_000)
    payloads = [getattr(ledger.mapper.to_domain_event(n), "payload", None) for n in events]
    return [p for p in payloads if getattr(p, "request_id", None) == rid]


def test_staff_reasons_are_sealed_with_the_persons_key_and_go_with_it__clause_6_3(
    memory_ledger,
):
    """Free text written about a request may name the person: it is sealed, never in clear,
    and unreadable once the person is erased."""
    sid = subject(memory_ledger)
    rid = _request(memory_ledger, sid)
    other = _request(memory_ledger, sid)
    memory_ledger.execute(PRINCIPAL, _pause(rid, later(memory_ledger)))
    memory_ledger.execute(PRINCIPAL, _resume(rid, later(memory_ledger)))
    memory_ledger.execute(PRINCIPAL, _extend(rid, later(memory_ledger), 3))
    memory_ledger.execute(PRINCIPAL, _close(rid, later(memory_ledger), RequestOutcome.REFUSED))

    written = [p for p in _request_payloads(memory_ledger, rid) if hasattr(p, "sealed_reason")]
    assert [type(p).__name__ for p in written] == [
        "RightsRequestPaused",
        "RightsRequestExtended",
        "RightsRequestClosed",
    ]
    assert all(p.reason == "" and p.sealed_reason.startswith("s1:") for p in written)
    opened = [memory_ledger.sealer.open(sid, "reason", p.sealed_reason) for p in written]
    assert opened == ["verifying identity", "backlog", "answered"]

    memory_ledger.execute(
        PRINCIPAL,
        erasure(sid, at=later(memory_ledger), ground="no_consent"),
    )
    with pytest.raises(KeyShreddedError):
        memory_ledger.sealer.open(sid, "reason", written[0].sealed_reason)
    memory_ledger.execute(PRINCIPAL, _close(other, later(memory_ledger), RequestOutcome.REFUSED))
    (closed,) = [
        p for p in _request_payloads(memory_ledger, other) if type(p).__name__.endswith("Closed")
    ]
    assert (closed.reason, closed.sealed_reason) == ("", None)


@pytest.mark.parametrize(("days_later", "late"), [(14, False), (16, True)])
def test_closing_after_the_due_instant_marks_the_request_late__clause_6_4(
    memory_ledger, days_later, late
):
    rid = _request(memory_ledger, subject(memory_ledger))
    memory_ledger.clock.advance(timedelta(days=days_later))

    memory_ledger.execute(PRINCIPAL, _close(rid, memory_ledger.clock.now()))

    state = memory_ledger.rights_request(rid)
    assert (state.status, state.outcome, state.late) == (
        RequestStatus.CLOSED,
        RequestOutcome.FULFILLED,
        late,
    )


def test_fulfilling_a_deletion_request_erases_the_subject_in_the_same_save__clause_6_3(
    memory_ledger,
):
    sid = subject(memory_ledger)
    memory_ledger.execute(PRINCIPAL, collection(sid, at=later(memory_ledger)))
    rid = _request(memory_ledger, sid, RightKind.DELETION, ground="breach_of_agreement")
    before = written(memory_ledger)

    memory_ledger.execute(PRINCIPAL, _close(rid, later(memory_ledger)))

    new = memory_ledger.recorder.select_notifications(before + 1, 10)
    assert sorted(n.topic.rsplit(".", 1)[-1] for n in new) == [
        "DataErased",
        "KeyShredded",
        "RightsRequestClosed",
    ]
    state = memory_ledger.subject(sid).state
    assert (state.erased, state.key_shredded, state.held) == (True, True, {})
    erased = memory_ledger.history(sid)[-2]
    assert (erased.ground, erased.request_id) == ("breach_of_agreement", rid)
    for payload in memory_ledger.history(sid)[:2]:
        with pytest.raises(KeyShreddedError):
            memory_ledger.reveal(payload)


def test_a_deletion_request_naming_categories_erases_those_alone__clause_6_3(memory_ledger):
    """The person asked for some of their data to go: the rest, and their key, stay."""
    sid = subject(memory_ledger)
    memory_ledger.execute(PRINCIPAL, collection(sid, at=later(memory_ledger)))
    usage = usage_collection(sid, at=later(memory_ledger), purpose="product_analysis")
    memory_ledger.execute(PRINCIPAL, usage)
    rid = _request(
        memory_ledger,
        sid,
        RightKind.DELETION,
        ground="no_consent",
        categories=("network_log.ip_address",),
    )

    memory_ledger.execute(PRINCIPAL, _close(rid, later(memory_ledger)))

    state = memory_ledger.subject(sid).state
    assert (state.erased, state.key_shredded) == (False, False)
    assert set(state.held) == {"network_log.usage"}
    erased = memory_ledger.history(sid)[-1]
    assert type(erased).__name__ == "DataErased"
    assert (erased.categories, erased.request_id) == (("network_log.ip_address",), rid)


def test_a_deletion_request_on_the_account_cancelled_ground_cancels_the_account__clause_6_3_5(
    memory_ledger,
):
    sid = subject(memory_ledger)
    rid = _request(memory_ledger, sid, RightKind.DELETION, ground="account_cancelled")

    memory_ledger.execute(PRINCIPAL, _close(rid, later(memory_ledger)))

    state = memory_ledger.subject(sid).state
    assert (state.cancelled, state.erased, state.key_shredded) == (True, True, True)


def test_a_person_asks_for_deletion_only_on_the_grounds_of_clause_6_3(memory_ledger):
    """`retention_expired` is the service's own rule (§7), not a ground a person asks on."""
    sid = subject(memory_ledger)

    refusal = refused(
        memory_ledger,
        _open(sid, later(memory_ledger), RightKind.DELETION, ground="retention_expired"),
    )

    assert (refusal.reason, refusal.clause) == (R.ERASURE_GROUND_NOT_DECLARED, "§6.3")


def test_a_cancellation_request_fulfilled_after_an_erasure_still_cancels_the_account__clause_6_4(
    memory_ledger,
):
    sid = subject(memory_ledger)
    rid = _request(memory_ledger, sid, RightKind.ACCOUNT_CANCELLATION)
    memory_ledger.execute(
        PRINCIPAL,
        erasure(sid, at=later(memory_ledger), ground="no_consent"),
    )

    memory_ledger.execute(PRINCIPAL, _close(rid, later(memory_ledger)))

    state = memory_ledger.subject(sid).state
    assert (state.cancelled, state.erased) == (True, True)
    cancelled = memory_ledger.history(sid)[-1]
    assert (type(cancelled).__name__, cancelled.request_id) == ("AccountCancelled", rid)


def test_a_correction_request_names_one_category__clause_6_2(memory_ledger):
    """One close corrects one category: a request naming two could close fulfilled with the
    second never corrected."""
    sid = subject(memory_ledger)
    before = written(memory_ledger)

    with pytest.raises(InvalidCommand) as caught:
        memory_ledger.execute(
            PRINCIPAL,
            _open(
                sid,
                later(memory_ledger),
                RightKind.CORRECTION,
                categories=("network_log.ip_address", "network_log.usage"),
            ),
        )

    assert caught.value.field == "categories"
    assert written(memory_ledger) == before


def test_a_request_of_another_kind_closed_with_corrections_is_invalid__clause_6_2(memory_ledger):
    sid = subject(memory_ledger)
    memory_ledger.execute(PRINCIPAL, collection(sid, at=later(memory_ledger)))
    rid = _request(memory_ledger, sid, RightKind.ACCESS)
    correction = c.Correction(
        category="network_log.ip_address", values={"ip": SecretStr(secret("ip"))}
    )

    with pytest.raises(InvalidCommand) as caught:
        memory_ledger.execute(PRINCIPAL, _close(rid, later(memory_ledger), correction=correction))

    assert caught.value.field == "correction"
    assert memory_ledger.rights_request(rid).status is RequestStatus.OPEN


def test_fulfilling_an_account_cancellation_request_cancels_and_erases__clause_6_4(
    memory_ledger,
):
    sid = subject(memory_ledger)
    rid = _request(memory_ledger, sid, RightKind.ACCOUNT_CANCELLATION)

    memory_ledger.execute(PRINCIPAL, _close(rid, later(memory_ledger)))

    state = memory_ledger.subject(sid).state
    assert (state.cancelled, state.erased, state.key_shredded) == (True, True, True)
    assert _types(memory_ledger, sid)[-3:] == ["AccountCancelled", "DataErased", "KeyShredded"]


def test_a_consent_withdrawal_request_withdraws_its_scope_at_receipt__clause_6_5(memory_ledger):
    sid = subject(memory_ledger)
    memory_ledger.execute(PRINCIPAL, consent(sid, at=later(memory_ledger)))
    received = later(memory_ledger)
    opening = _open(
        sid,
        later(memory_ledger, 3600),
        RightKind.CONSENT_WITHDRAWAL,
        received_at=received,
        **_SCOPES[RightKind.CONSENT_WITHDRAWAL],
    )
    rid = memory_ledger.execute(PRINCIPAL, opening).aggregate_id

    withdrawn = memory_ledger.history(sid)[-1]
    assert type(withdrawn).__name__ == "ConsentWithdrawn"
    assert (withdrawn.purposes, withdrawn.categories, withdrawn.request_id) == (
        ("customer_service",),
        ("location.gps",),
        rid,
    )
    assert withdrawn.occurred_at == received
    refusal = refused(memory_ledger, gps_collection(sid, at=later(memory_ledger)))
    assert refusal.reason is R.CONSENT_WITHDRAWN
    events = len(memory_ledger.history(sid))
    memory_ledger.execute(PRINCIPAL, _close(rid, later(memory_ledger)))
    assert len(memory_ledger.history(sid)) == events  # closing answers it; nothing more to do


def test_fulfilling_a_correction_request_records_the_correction__clause_6_2(memory_ledger):
    sid = subject(memory_ledger)
    memory_ledger.execute(PRINCIPAL, collection(sid, at=later(memory_ledger)))
    rid = _request(memory_ledger, sid, RightKind.CORRECTION, **_SCOPES[RightKind.CORRECTION])
    fixed = secret("ip")
    correction = c.Correction(category="network_log.ip_address", values={"ip": SecretStr(fixed)})

    memory_ledger.execute(PRINCIPAL, _close(rid, later(memory_ledger), correction=correction))

    corrected = memory_ledger.history(sid)[-1]
    assert type(corrected).__name__ == "DataCorrected"
    assert (corrected.category, corrected.request_id) == ("network_log.ip_address", rid)
    assert memory_ledger.reveal(corrected) == {"ip": fixed}


def test_fulfilling_a_correction_request_without_values_is_invalid__clause_6_2(memory_ledger):
    sid = subject(memory_ledger)
    memory_ledger.execute(PRINCIPAL, collection(sid, at=later(memory_ledger)))
    rid = _request(memory_ledger, sid, RightKind.CORRECTION, **_SCOPES[RightKind.CORRECTION])
    before = written(memory_ledger)

    with pytest.raises(InvalidCommand) as caught:
        memory_ledger.execute(PRINCIPAL, _close(rid, later(memory_ledger)))

    assert caught.value.field == "correction"
    assert written(memory_ledger) == before
    assert memory_ledger.rights_request(rid).status is RequestStatus.OPEN


@pytest.mark.parametrize(
    "kind", [RightKind.DELETION, RightKind.ACCOUNT_CANCELLATION, RightKind.CONSENT_WITHDRAWAL]
)
def test_refusing_a_request_changes_nothing_on_the_subject__clause_6(memory_ledger, kind):
    sid = subject(memory_ledger)
    memory_ledger.execute(PRINCIPAL, consent(sid, at=later(memory_ledger)))
    memory_ledger.execute(PRINCIPAL, collection(sid, at=later(memory_ledger)))
    rid = _request(memory_ledger, sid, kind, **_SCOPES[kind])
    subject_before = memory_ledger.subject(sid).state

    memory_ledger.execute(PRINCIPAL, _close(rid, later(memory_ledger), RequestOutcome.REFUSED))

    assert memory_ledger.subject(sid).state == subject_before
    assert memory_ledger.rights_request(rid).outcome is RequestOutcome.REFUSED


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda rid, at: _extend(rid, at, 1), id="extend"),
        pytest.param(_pause, id="pause"),
        pytest.param(_resume, id="resume"),
        pytest.param(_close, id="close"),
    ],
)
def test_a_command_for_an_unknown_request_raises_rights_request_not_found(memory_ledger, make):
    unknown = uuid4()
    before = written(memory_ledger)

    with pytest.raises(RightsRequestNotFound) as caught:
        memory_ledger.execute(PRINCIPAL, make(unknown, later(memory_ledger)))

    assert caught.value.request_id == unknown
    assert written(memory_ledger) == before


def test_querying_an_unknown_request_raises_rights_request_not_found(memory_ledger):
    with pytest.raises(RightsRequestNotFound):
        memory_ledger.rights_request(uuid4())

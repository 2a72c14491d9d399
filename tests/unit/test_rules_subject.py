"""The rules of a subject's life: withdrawal of consent (§6.5), correction (§6.2), erasure and
cancellation (§6.3, §6.4), unknown and duplicate subjects, and batches of commands.

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
    gps_collection,
    key,
    later,
    refused,
    register,
    secret,
    share,
    subject,
    use,
    withdrawal,
    written,
)

from ledger import commands as c
from ledger.application import BatchAborted, Ledger
from ledger.errors import InvalidCommand, Refused, SubjectNotFound
from ledger.errors import RefusalReason as R
from ledger.policy import load_seed_policy

# --- helpers ------------------------------------------------------------------------------


def _ref(sid: UUID) -> c.SubjectRef:
    return c.SubjectRef(subject_id=sid)


def _erase(sid: UUID, at: datetime, **fields: Any) -> c.EraseSubject:
    fields.setdefault("ground", "no_consent")
    return c.EraseSubject(idempotency_key=key("era"), occurred_at=at, subject=_ref(sid), **fields)


def _cancel(sid: UUID, at: datetime) -> c.CancelAccount:
    return c.CancelAccount(idempotency_key=key("can"), occurred_at=at, subject=_ref(sid))


def _correct(sid: UUID, at: datetime, category: str = "network_log.ip_address") -> c.CorrectData:
    return c.CorrectData(
        idempotency_key=key("cor"),
        occurred_at=at,
        subject=_ref(sid),
        category=category,
        values={"ip": SecretStr(secret("ip"))},
    )


def _gps_use(sid: UUID, at: datetime) -> c.RecordUse:
    return use(
        sid, at=at, categories=("location.gps",), purpose="customer_service", legal_basis="consent"
    )


def _types(ledger: Ledger, sid: UUID) -> list[str]:
    return [type(e).__name__ for e in ledger.history(sid)]


# --- §6.5: withdrawal of consent ----------------------------------------------------------


def test_use_after_withdrawal_is_refused_and_history_stays__clause_6_5(memory_ledger):
    sid = subject(memory_ledger)
    memory_ledger.execute(PRINCIPAL, consent(sid, at=later(memory_ledger)))
    memory_ledger.execute(PRINCIPAL, gps_collection(sid, at=later(memory_ledger)))
    memory_ledger.execute(PRINCIPAL, _gps_use(sid, later(memory_ledger)))
    before = memory_ledger.history(sid)

    memory_ledger.execute(PRINCIPAL, withdrawal(sid, at=later(memory_ledger)))
    refusal = refused(memory_ledger, _gps_use(sid, later(memory_ledger)))

    assert refusal.reason is R.CONSENT_WITHDRAWN
    assert memory_ledger.history(sid)[: len(before)] == before
    assert _types(memory_ledger, sid)[-1] == "ConsentWithdrawn"


def test_use_after_withdrawal_is_refused_citing_the_withdrawal_clause__clause_6_5(memory_ledger):
    """§6.5 grants the withdrawal; the refusal it causes should cite §6.5, not §1."""
    sid = subject(memory_ledger)
    memory_ledger.execute(PRINCIPAL, consent(sid, at=later(memory_ledger)))
    memory_ledger.execute(PRINCIPAL, gps_collection(sid, at=later(memory_ledger)))
    memory_ledger.execute(PRINCIPAL, withdrawal(sid, at=later(memory_ledger)))

    refusal = refused(memory_ledger, _gps_use(sid, later(memory_ledger)))

    assert refusal.clause == "§6.5"


def test_use_backfilled_before_the_withdrawal_is_accepted__clause_6_5(memory_ledger):
    """§6.5: the withdrawal does not affect the legality of earlier processing."""
    sid = subject(memory_ledger)
    memory_ledger.execute(PRINCIPAL, consent(sid, at=later(memory_ledger)))
    memory_ledger.execute(PRINCIPAL, gps_collection(sid, at=later(memory_ledger)))
    used_at = later(memory_ledger)
    memory_ledger.execute(PRINCIPAL, withdrawal(sid, at=later(memory_ledger)))

    recorded = memory_ledger.execute(PRINCIPAL, _gps_use(sid, used_at))

    assert recorded.event_type == "DataUsed"


@pytest.mark.parametrize(
    ("category", "make_collection"),
    [
        ("location.gps", gps_collection),
        ("network_log.ip_address", collection),
    ],
    ids=["sensitive", "non-sensitive-by-default"],
)
def test_withdrawing_a_category_stops_its_collection__clauses_0_6_5(
    memory_ledger, category, make_collection
):
    sid = subject(memory_ledger)
    memory_ledger.execute(PRINCIPAL, consent(sid, at=later(memory_ledger)))
    memory_ledger.execute(PRINCIPAL, make_collection(sid, at=later(memory_ledger)))
    memory_ledger.execute(
        PRINCIPAL, withdrawal(sid, at=later(memory_ledger), purposes=(), categories=(category,))
    )

    refusal = refused(memory_ledger, make_collection(sid, at=later(memory_ledger)))

    assert refusal.reason is R.CONSENT_WITHDRAWN


def test_consent_given_again_after_a_withdrawal_allows_collection_again__clause_6_5(
    memory_ledger,
):
    sid = subject(memory_ledger)
    memory_ledger.execute(PRINCIPAL, consent(sid, at=later(memory_ledger)))
    memory_ledger.execute(PRINCIPAL, withdrawal(sid, at=later(memory_ledger)))
    memory_ledger.execute(PRINCIPAL, consent(sid, at=later(memory_ledger)))

    recorded = memory_ledger.execute(PRINCIPAL, gps_collection(sid, at=later(memory_ledger)))

    assert recorded.event_type == "DataCollected"


# --- §6.2: correction ---------------------------------------------------------------------


def test_correcting_a_category_not_held_is_refused__clause_6_2(memory_ledger):
    sid = subject(memory_ledger)

    refusal = refused(memory_ledger, _correct(sid, later(memory_ledger)))

    assert (refusal.reason, refusal.clause) == (R.DATA_NOT_HELD, "§6.2")


def test_correcting_an_undeclared_category_is_refused__clause_1(memory_ledger):
    sid = subject(memory_ledger)

    refusal = refused(memory_ledger, _correct(sid, later(memory_ledger), "biometrics.face"))

    assert (refusal.reason, refusal.clause) == (R.CATEGORY_NOT_DECLARED, "§1")


def test_correcting_a_held_category_is_accepted__clause_6_2(memory_ledger):
    sid = subject(memory_ledger)
    memory_ledger.execute(PRINCIPAL, collection(sid, at=later(memory_ledger)))

    recorded = memory_ledger.execute(PRINCIPAL, _correct(sid, later(memory_ledger)))

    assert recorded.event_type == "DataCorrected"


# --- §6.3/§6.4: erasure and cancellation close the subject --------------------------------

_LATER_COMMANDS = [
    pytest.param(lambda sid, at: collection(sid, at=at), id="collect"),
    pytest.param(
        lambda sid, at: collection(sid, at=at, values={}, fields=("ip",)), id="collect-no-value"
    ),
    pytest.param(lambda sid, at: use(sid, at=at), id="use"),
    pytest.param(lambda sid, at: share(sid, at=at), id="share"),
    pytest.param(lambda sid, at: consent(sid, at=at), id="consent"),
    pytest.param(lambda sid, at: withdrawal(sid, at=at), id="withdraw"),
    pytest.param(_correct, id="correct"),
    pytest.param(_erase, id="erase"),
    pytest.param(_cancel, id="cancel"),
    pytest.param(
        lambda sid, at: c.OpenRightsRequest(
            idempotency_key=key("req"), occurred_at=at, subject=_ref(sid), kind="access"
        ),
        id="open-request",
    ),
    pytest.param(
        lambda sid, at: c.NotifyPolicy(
            idempotency_key=key("not"), occurred_at=at, subject=_ref(sid), version="1"
        ),
        id="notify",
    ),
    pytest.param(
        lambda sid, at: c.AcknowledgePolicy(
            idempotency_key=key("ack"), occurred_at=at, subject=_ref(sid), version="1"
        ),
        id="acknowledge",
    ),
]


@pytest.mark.parametrize("make", _LATER_COMMANDS)
def test_every_command_for_an_erased_subject_is_refused__clause_6_3(memory_ledger, make):
    sid = subject(memory_ledger)
    memory_ledger.execute(PRINCIPAL, collection(sid, at=later(memory_ledger)))
    memory_ledger.execute(PRINCIPAL, _erase(sid, later(memory_ledger)))

    refusal = refused(memory_ledger, make(sid, later(memory_ledger)))

    assert (refusal.reason, refusal.clause) == (R.SUBJECT_ERASED, "§6.3")


def test_erasure_empties_the_held_data_and_shreds_the_key__clause_6_3(memory_ledger):
    sid = subject(memory_ledger)
    memory_ledger.execute(PRINCIPAL, collection(sid, at=later(memory_ledger)))

    memory_ledger.execute(PRINCIPAL, _erase(sid, later(memory_ledger)))

    state = memory_ledger.subject(sid).state
    assert (state.erased, state.key_shredded, state.held) == (True, True, {})
    assert _types(memory_ledger, sid)[-2:] == ["DataErased", "KeyShredded"]


@pytest.mark.parametrize("make", _LATER_COMMANDS)
def test_every_command_for_a_cancelled_account_is_refused_as_erased__clauses_6_3_6_4(
    memory_ledger, make
):
    """§6.4 + §6.3(5): cancelling erases too, so the erasure is the reason given.

    `ACCOUNT_CANCELLED` (rules.check_open) is therefore unreachable through commands.
    """
    sid = subject(memory_ledger)
    memory_ledger.execute(PRINCIPAL, collection(sid, at=later(memory_ledger)))
    memory_ledger.execute(PRINCIPAL, _cancel(sid, later(memory_ledger)))

    refusal = refused(memory_ledger, make(sid, later(memory_ledger)))

    assert (refusal.reason, refusal.clause) == (R.SUBJECT_ERASED, "§6.3")


def test_cancelling_an_account_cancels_erases_and_shreds__clause_6_4(memory_ledger):
    sid = subject(memory_ledger)

    memory_ledger.execute(PRINCIPAL, _cancel(sid, later(memory_ledger)))

    state = memory_ledger.subject(sid).state
    assert (state.cancelled, state.erased, state.key_shredded) == (True, True, True)
    assert _types(memory_ledger, sid)[-3:] == ["AccountCancelled", "DataErased", "KeyShredded"]
    assert memory_ledger.history(sid)[-2].ground == "account_cancelled"


def test_a_partial_erasure_removes_the_categories_but_keeps_the_subject_open__clause_7(
    memory_ledger,
):
    sid = subject(memory_ledger)
    memory_ledger.execute(PRINCIPAL, collection(sid, at=later(memory_ledger)))
    partial = _erase(
        sid,
        later(memory_ledger),
        ground="retention_expired",
        categories=("network_log.ip_address",),
    )

    memory_ledger.execute(PRINCIPAL, partial)

    state = memory_ledger.subject(sid).state
    assert (state.erased, state.key_shredded, state.held) == (False, False, {})
    refusal = refused(memory_ledger, use(sid, at=later(memory_ledger)))
    assert refusal.reason is R.DATA_NOT_HELD
    recorded = memory_ledger.execute(PRINCIPAL, collection(sid, at=later(memory_ledger)))
    assert recorded.event_type == "DataCollected"


@pytest.mark.parametrize(
    ("fields", "reason", "clause"),
    [
        ({"ground": "boredom"}, R.ERASURE_GROUND_NOT_DECLARED, "§6.3"),
        ({"categories": ("biometrics.face",)}, R.CATEGORY_NOT_DECLARED, "§1"),
    ],
    ids=["ground", "category"],
)
def test_erasure_on_an_undeclared_ground_or_category_is_refused__clause_6_3(
    memory_ledger, fields, reason, clause
):
    sid = subject(memory_ledger)

    refusal = refused(memory_ledger, _erase(sid, later(memory_ledger), **fields))

    assert (refusal.reason, refusal.clause) == (reason, clause)
    assert memory_ledger.subject(sid).state.erased is False


# --- §0: a person's events are dated from their registration -------------------------------

_DATED_COMMANDS = {
    "collection": lambda sid, at: collection(sid, at=at),
    "use": lambda sid, at: use(sid, at=at),
    "share": lambda sid, at: share(sid, at=at),
    "consent": lambda sid, at: consent(sid, at=at),
    "withdrawal": lambda sid, at: withdrawal(sid, at=at),
    "correction": _correct,
    "erasure": _erase,
    "cancellation": _cancel,
    "rights request": lambda sid, at: c.OpenRightsRequest(
        idempotency_key=key("req"), occurred_at=at, subject=_ref(sid), kind="access"
    ),
    "policy acknowledgement": lambda sid, at: c.AcknowledgePolicy(
        idempotency_key=key("ack"), occurred_at=at, subject=_ref(sid), version="1"
    ),
}


@pytest.mark.parametrize("kind", list(_DATED_COMMANDS))
def test_an_event_dated_before_the_persons_registration_is_refused__clause_0(memory_ledger, kind):
    """An erasure or a collection dated before the person existed in the ledger would be
    judged by a policy and an agreement by use that never applied to them (§0, §8)."""
    sid = subject(memory_ledger)
    registered = memory_ledger.subject(sid).state.registered_at
    later(memory_ledger)

    refusal = refused(
        memory_ledger,
        _DATED_COMMANDS[kind](sid, registered - timedelta(minutes=5, seconds=1)),
    )

    assert (refusal.reason, refusal.clause) == (R.OCCURRED_BEFORE_REGISTRATION, "§0")


@pytest.mark.parametrize("kind", ["collection", "erasure"])
def test_an_event_4_minutes_before_registration_is_accepted_as_clock_skew__clause_0(
    memory_ledger, kind
):
    sid = subject(memory_ledger)
    registered = memory_ledger.subject(sid).state.registered_at
    later(memory_ledger)

    recorded = memory_ledger.execute(
        PRINCIPAL, _DATED_COMMANDS[kind](sid, registered - timedelta(minutes=4))
    )

    assert recorded.position > 0


# --- unknown and duplicate subjects -------------------------------------------------------


@pytest.mark.parametrize(
    "subject",
    [
        c.SubjectRef(subject_id=uuid4()),
        c.SubjectRef(namespace="app", account_id=SecretStr("nobody-registered-this")),
    ],
    ids=["by-subject-id", "by-account"],
)
def test_a_command_for_an_unknown_subject_raises_subject_not_found(memory_ledger, subject):
    before = written(memory_ledger)
    unknown = c.RecordCollection(
        idempotency_key=key("col"),
        occurred_at=later(memory_ledger),
        subject=subject,
        category="network_log.ip_address",
        source="server_logs",
        purposes=("security_detection",),
    )

    with pytest.raises(SubjectNotFound):
        memory_ledger.execute(PRINCIPAL, unknown)

    assert written(memory_ledger) == before


def test_registering_the_same_account_twice_is_refused__clause_6_1(memory_ledger):
    account = SecretStr(secret("account"))
    first = register(memory_ledger, account_id=account)
    again = c.RegisterSubject(
        idempotency_key=key("reg"),
        occurred_at=later(memory_ledger),
        namespace="app",
        account_id=account,
    )

    refusal = refused(memory_ledger, again)

    assert (refusal.reason, refusal.clause) == (R.SUBJECT_ALREADY_REGISTERED, "§6.1")
    found = memory_ledger.resolve(c.SubjectRef(namespace="app", account_id=account))
    assert found == first.subject_id


def test_a_refused_registration_leaves_nothing_in_the_key_store__clause_5(memory_ledger):
    """A refused command writes nothing: not even the account's lookup and data key."""
    account = secret("account")
    minor = c.RegisterSubject(
        idempotency_key=key("reg"),
        occurred_at=later(memory_ledger),
        namespace="app",
        account_id=SecretStr(account),
        minor=True,
    )

    refusal = refused(memory_ledger, minor)

    assert refusal.reason is R.MINOR_WITHOUT_GUARDIAN
    sealer = memory_ledger.sealer
    assert sealer.store.find(sealer.master.lookup("app", account)) is None


def test_the_same_account_in_another_namespace_is_another_subject(memory_ledger):
    account = SecretStr(secret("account"))
    first = register(memory_ledger, account_id=account)

    second = register(memory_ledger, account_id=account, namespace="web")

    assert second.subject_id != first.subject_id


# --- batches ------------------------------------------------------------------------------


def test_a_batch_records_accepted_items_and_refuses_the_others_each_with_its_outcome(
    memory_ledger,
):
    sid = subject(memory_ledger)
    at = later(memory_ledger)
    items = [
        collection(sid, at=at),
        collection(sid, at=at, category="biometrics.face"),
        use(sid, at=at),
        gps_collection(sid, at=at),
    ]

    outcomes = memory_ledger.execute_batch(PRINCIPAL, items)

    assert [o.recorded.event_type if o.recorded else None for o in outcomes] == [
        "DataCollected",
        None,
        "DataUsed",
        None,
    ]
    assert isinstance(outcomes[1].error, Refused)
    assert outcomes[1].error.reason is R.CATEGORY_NOT_DECLARED
    assert isinstance(outcomes[3].error, Refused)
    assert outcomes[3].error.reason is R.SENSITIVE_CATEGORY_WITHOUT_CONSENT
    assert _types(memory_ledger, sid) == ["SubjectRegistered", "DataCollected", "DataUsed"]


def test_an_all_or_nothing_batch_with_one_refused_item_writes_nothing(memory_ledger):
    sid = subject(memory_ledger)
    at = later(memory_ledger)
    items = [collection(sid, at=at), gps_collection(sid, at=at), use(sid, at=at)]
    before = written(memory_ledger)

    outcomes = memory_ledger.execute_batch(PRINCIPAL, items, all_or_nothing=True)

    assert isinstance(outcomes[1].error, Refused)
    assert outcomes[1].error.reason is R.SENSITIVE_CATEGORY_WITHOUT_CONSENT
    for aborted in (outcomes[0], outcomes[2]):
        assert aborted.recorded is None
        assert isinstance(aborted.error, BatchAborted)
        assert aborted.error.index == 1
    assert written(memory_ledger) == before
    assert _types(memory_ledger, sid) == ["SubjectRegistered"]


def test_cancellation_without_its_erasure_ground_is_refused_before_anything_is_recorded(
    memory_ledger,
):
    """§6.3(5), §6.4: cancelling erases, so a policy version without the ground refuses the
    whole cancellation; and closing commands cannot ride in a batch beside other items."""
    seed = load_seed_policy()
    grounds = tuple(g for g in seed.erasure_grounds if g.id != "account_cancelled")
    now = memory_ledger.clock.now()
    memory_ledger.execute(
        PRINCIPAL,
        c.PublishPolicy(
            idempotency_key=key("pub"),
            occurred_at=now,
            policy=seed.model_copy(update={"version": "2", "erasure_grounds": grounds}),
            effective_at=now + timedelta(minutes=1),
            major=True,
        ),
    )
    sid = subject(memory_ledger)
    at = later(memory_ledger, 120)
    memory_ledger.execute(PRINCIPAL, collection(sid, at=at))
    before = memory_ledger.recorder.max_notification_id()

    with pytest.raises(InvalidCommand):
        memory_ledger.execute_batch(PRINCIPAL, [use(sid, at=at), _cancel(sid, at)])
    with pytest.raises(Refused) as refused:
        memory_ledger.execute(PRINCIPAL, _cancel(sid, at))

    assert refused.value.reason is R.ERASURE_GROUND_NOT_DECLARED
    assert memory_ledger.recorder.max_notification_id() == before
    assert memory_ledger.subject(sid).state.cancelled is False


@pytest.mark.parametrize("command", [c.NotifyPolicy, c.AcknowledgePolicy])
def test_a_person_is_told_of_and_acknowledges_only_a_published_version__clause_8(
    memory_ledger, command
):
    sid = subject(memory_ledger)
    before = memory_ledger.recorder.max_notification_id()

    refusal = refused(
        memory_ledger,
        command(
            idempotency_key=key("v"),
            occurred_at=later(memory_ledger),
            subject=_ref(sid),
            version="2",
        ),
    )

    assert (refusal.reason, refusal.clause) == (R.POLICY_VERSION_NOT_PUBLISHED, "§8")
    assert memory_ledger.recorder.max_notification_id() == before
    accepted = memory_ledger.execute(
        PRINCIPAL,
        command(
            idempotency_key=key("v"),
            occurred_at=later(memory_ledger),
            subject=_ref(sid),
            version="1",
        ),
    )
    assert accepted.position > before

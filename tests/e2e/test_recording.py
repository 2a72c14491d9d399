"""Every RPC of LedgerService on a real server, on SQLite and PostgreSQL: what it records, and
each status it answers instead, with its rich details. After every refused or invalid call the
log is exactly as long as before: nothing was written.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from e2e_requests import IP as _IP
from e2e_requests import ip_collection
from outcomes import assert_refused, bad_fields, log_end, nothing_written, reason_of
from scenario import secret

from server._pb.pdl.v1 import common_pb2 as cpb
from server._pb.pdl.v1 import ledger_service_pb2 as lpb
from server._pb.pdl.v1 import query_service_pb2 as qpb
from server.client import LedgerClient, meta, subject

if TYPE_CHECKING:
    from conftest import Served

_GPS = "location.gps"
_UNKNOWN_SUBJECT = "00000000-0000-4000-8000-000000000000"


def held(state: qpb.SubjectState) -> dict[str, qpb.HeldCategory]:
    return {h.category: h for h in state.held}


def assert_recorded(recorded: cpb.Recorded, event_type: str) -> None:
    assert recorded.position > 0
    assert recorded.version > 0
    assert recorded.event_type == event_type
    assert recorded.replayed is False


# --- requests -----------------------------------------------------------------------------


def register(client: LedgerClient, **fields: Any) -> str:
    return client.register_subject("app", secret("account"), **fields).subject_id


def gps_collection(subject_id: str, **fields: Any) -> lpb.RecordCollectionRequest:
    return lpb.RecordCollectionRequest(
        meta=meta(),
        subject=subject(subject_id),
        category=_GPS,
        source="app",
        purposes=["customer_service"],
        with_consent=True,
        values={"fix": secret("gps")},
        **fields,
    )


def gps_consent(subject_id: str) -> lpb.GiveConsentRequest:
    return lpb.GiveConsentRequest(
        meta=meta(),
        subject=subject(subject_id),
        purposes=["customer_service"],
        categories=[_GPS],
        method="device_permission",
    )


def gps_share(subject_id: str, **fields: Any) -> lpb.RecordShareRequest:
    fields.setdefault("recipient", "Example Support Ltd")
    fields.setdefault("purpose", "customer_service")
    return lpb.RecordShareRequest(
        meta=meta(),
        subject=subject(subject_id),
        categories=[_GPS],
        recipient_class="third_party_partners",
        **fields,
    )


def ip_use(subject_id: str) -> lpb.RecordUseRequest:
    return lpb.RecordUseRequest(
        meta=meta(),
        subject=subject(subject_id),
        categories=[_IP],
        purpose="security_detection",
        legal_basis="contract",
    )


def record(client: LedgerClient, method: str, request: Any) -> cpb.Recorded:
    """Call a LedgerService method with the client's token; the answer's `Recorded`."""
    return getattr(client.ledger, method)(request, **client.options).recorded


def with_gps_held(client: LedgerClient) -> str:
    """A registered person who consented to GPS for customer service, with GPS collected."""
    sid = register(client)
    record(client, "GiveConsent", gps_consent(sid))
    record(client, "RecordCollection", gps_collection(sid))
    return sid


# --- success, read back -------------------------------------------------------------------


def test_registering_a_subject_is_recorded_and_readable_by_pseudonym_and_by_account(
    client: LedgerClient,
) -> None:
    account = secret("account")
    request = lpb.RegisterSubjectRequest(
        meta=meta(), account=cpb.AccountRef(namespace="app", account_id=account), birth_year=1990
    )

    recorded = record(client, "RegisterSubject", request)

    assert_recorded(recorded, "SubjectRegistered")
    assert recorded.subject_id == recorded.aggregate_id
    assert recorded.version == 1
    by_id = client.subject_state(recorded.subject_id)
    by_account = client.query.GetSubjectState(
        qpb.GetSubjectStateRequest(
            subject=cpb.SubjectRef(account=cpb.AccountRef(namespace="app", account_id=account))
        ),
        **client.options,
    ).state
    assert by_id == by_account
    assert (by_id.subject_id, by_id.namespace, by_id.birth_year) == (
        recorded.subject_id,
        "app",
        1990,
    )
    assert (by_id.storage_region, by_id.events) == ("cn-mainland", 1)
    [event] = client.history(recorded.subject_id)
    assert (event.event_type, event.principal, event.policy_version) == (
        "SubjectRegistered",
        "everything",
        "1",
    )
    assert account not in event.payload_json


def test_a_collection_is_recorded_and_shows_as_held(client: LedgerClient) -> None:
    sid = register(client)
    value = secret("ip")

    recorded = record(client, "RecordCollection", ip_collection(sid, values={"ip": value}))

    assert_recorded(recorded, "DataCollected")
    assert (recorded.subject_id, recorded.version) == (sid, 2)
    ip = held(client.subject_state(sid))[_IP]
    assert (list(ip.sources), list(ip.purposes), ip.collections) == (
        ["server_logs"],
        ["security_detection"],
        1,
    )
    event = client.history(sid)[-1]
    assert event.event_type == "DataCollected"
    assert value not in event.payload_json


def test_a_use_of_held_data_is_recorded_and_shows_its_purpose(client: LedgerClient) -> None:
    sid = register(client)
    record(client, "RecordCollection", ip_collection(sid))

    recorded = record(client, "RecordUse", ip_use(sid))

    assert_recorded(recorded, "DataUsed")
    assert list(client.subject_state(sid).purposes_used) == ["security_detection"]
    assert [e.event_type for e in client.history(sid, "DataUsed")] == ["DataUsed"]


def test_a_share_is_recorded_and_shows_the_recipient(client: LedgerClient) -> None:
    sid = with_gps_held(client)

    recorded = record(client, "RecordShare", gps_share(sid))

    assert_recorded(recorded, "DataShared")
    [shared] = client.subject_state(sid).shared_with
    assert (shared.recipient_class, list(shared.recipients)) == (
        "third_party_partners",
        ["Example Support Ltd"],
    )


def test_a_consent_and_its_withdrawal_are_recorded_and_show_in_the_state(
    client: LedgerClient,
) -> None:
    sid = register(client)

    given = record(client, "GiveConsent", gps_consent(sid))
    withdrawn = record(
        client,
        "WithdrawConsent",
        lpb.WithdrawConsentRequest(
            meta=meta(), subject=subject(sid), purposes=["customer_service"], categories=[_GPS]
        ),
    )

    assert_recorded(given, "ConsentGiven")
    assert_recorded(withdrawn, "ConsentWithdrawn")
    assert withdrawn.position > given.position
    state = client.subject_state(sid)
    [consent] = state.consents
    assert (list(consent.purposes), list(consent.categories), consent.policy_version) == (
        ["customer_service"],
        [_GPS],
        "1",
    )
    assert consent.given_by == cpb.CONSENT_GIVER_SUBJECT
    [withdrawal] = state.withdrawals
    assert (list(withdrawal.purposes), list(withdrawal.categories)) == (
        ["customer_service"],
        [_GPS],
    )


def test_a_correction_of_held_data_is_recorded_in_the_history(client: LedgerClient) -> None:
    sid = register(client)
    record(client, "RecordCollection", ip_collection(sid))
    collected_last = held(client.subject_state(sid))[_IP].last_at
    corrected_value = secret("corrected")

    recorded = record(
        client,
        "CorrectData",
        lpb.CorrectDataRequest(
            meta=meta(), subject=subject(sid), category=_IP, values={"ip": corrected_value}
        ),
    )

    assert_recorded(recorded, "DataCorrected")
    [event] = client.history(sid, "DataCorrected")
    assert event.version == recorded.version
    assert corrected_value not in event.payload_json
    assert held(client.subject_state(sid))[_IP].last_at == collected_last  # §7: not a collection


def test_erasing_some_categories_forgets_them_and_erasing_all_shreds_the_key(
    client: LedgerClient,
) -> None:
    sid = with_gps_held(client)
    record(client, "RecordCollection", ip_collection(sid))

    partial = record(
        client,
        "EraseSubject",
        lpb.EraseSubjectRequest(
            meta=meta(), subject=subject(sid), ground="no_consent", categories=[_GPS]
        ),
    )
    state = client.subject_state(sid)
    full = record(
        client,
        "EraseSubject",
        lpb.EraseSubjectRequest(meta=meta(), subject=subject(sid), ground="retention_expired"),
    )

    assert_recorded(partial, "DataErased")
    assert list(held(state)) == [_IP]
    assert (state.erased, state.key_shredded) == (False, False)
    assert_recorded(full, "KeyShredded")
    after = client.subject_state(sid)
    assert (after.erased, after.key_shredded, list(after.held)) == (True, True, [])
    types = [e.event_type for e in client.history(sid)]
    assert types[-3:] == ["DataErased", "DataErased", "KeyShredded"]


def test_cancelling_an_account_erases_it_and_shreds_its_key(client: LedgerClient) -> None:
    sid = with_gps_held(client)

    recorded = record(
        client, "CancelAccount", lpb.CancelAccountRequest(meta=meta(), subject=subject(sid))
    )

    assert_recorded(recorded, "KeyShredded")
    state = client.subject_state(sid)
    assert (state.cancelled, state.erased, state.key_shredded) == (True, True, True)
    assert [e.event_type for e in client.history(sid)][-3:] == [
        "AccountCancelled",
        "DataErased",
        "KeyShredded",
    ]


def test_a_batch_records_every_item_in_order(client: LedgerClient) -> None:
    sid = register(client)
    items = [
        lpb.BatchItem(collection=ip_collection(sid)),
        lpb.BatchItem(consent=gps_consent(sid)),
        lpb.BatchItem(collection=gps_collection(sid)),
        lpb.BatchItem(use=ip_use(sid)),
        lpb.BatchItem(share=gps_share(sid)),
        lpb.BatchItem(
            correction=lpb.CorrectDataRequest(
                meta=meta(), subject=subject(sid), category=_IP, values={"ip": secret("ip")}
            )
        ),
        lpb.BatchItem(
            withdrawal=lpb.WithdrawConsentRequest(
                meta=meta(), subject=subject(sid), purposes=["customer_service"]
            )
        ),
    ]

    answer = client.ledger.RecordBatch(lpb.RecordBatchRequest(items=items), **client.options)

    assert answer.recorded_count == len(items)
    kinds = [o.recorded.event_type for o in answer.outcomes]
    assert kinds == [
        "DataCollected",
        "ConsentGiven",
        "DataCollected",
        "DataUsed",
        "DataShared",
        "DataCorrected",
        "ConsentWithdrawn",
    ]
    positions = [o.recorded.position for o in answer.outcomes]
    assert positions == sorted(positions)
    assert all(o.recorded.replayed is False for o in answer.outcomes)
    assert [e.event_type for e in client.history(sid)][1:] == kinds


def test_a_subject_with_more_events_than_a_snapshot_interval_is_recorded_and_read(
    client: LedgerClient,
) -> None:
    sid = register(client)
    items = [lpb.BatchItem(collection=ip_collection(sid)) for _ in range(250)]

    answer = client.ledger.RecordBatch(lpb.RecordBatchRequest(items=items), **client.options)
    after = record(client, "RecordCollection", ip_collection(sid))

    assert answer.recorded_count == 250
    assert after.version == 252
    state = client.subject_state(sid)
    assert (state.events, held(state)[_IP].collections) == (252, 251)
    assert len(client.history(sid)) == 252


# --- refusals under the policy ------------------------------------------------------------


def test_gps_collection_before_consent_is_refused_under_clause_1_5(client: LedgerClient) -> None:
    sid = register(client)

    with nothing_written(client), pytest.raises(grpc.RpcError) as refused:
        record(client, "RecordCollection", gps_collection(sid))

    assert_refused(refused.value, "SENSITIVE_CATEGORY_WITHOUT_CONSENT", "§1(5)")
    assert _GPS not in held(client.subject_state(sid))


def test_sharing_gps_with_an_advertising_partner_is_refused_under_clause_4_2(
    client: LedgerClient,
) -> None:
    sid = with_gps_held(client)

    with nothing_written(client), pytest.raises(grpc.RpcError) as refused:
        record(
            client,
            "RecordShare",
            gps_share(sid, recipient="Example Ads Ltd", purpose="advertising"),
        )

    assert_refused(refused.value, "CATEGORY_NOT_NEEDED_FOR_PURPOSE", "§4.2")
    assert not client.subject_state(sid).shared_with


def test_a_sale_of_data_is_refused_under_clause_4(client: LedgerClient) -> None:
    sid = with_gps_held(client)

    with nothing_written(client), pytest.raises(grpc.RpcError) as refused:
        record(client, "RecordShare", gps_share(sid, sale=True))

    assert_refused(refused.value, "SALE_PROHIBITED", "§4")


def test_collection_and_use_after_consent_is_withdrawn_are_refused_under_clause_6_5(
    client: LedgerClient,
) -> None:
    sid = with_gps_held(client)
    record(
        client,
        "WithdrawConsent",
        lpb.WithdrawConsentRequest(
            meta=meta(), subject=subject(sid), purposes=["customer_service"], categories=[_GPS]
        ),
    )
    use = lpb.RecordUseRequest(
        meta=meta(), subject=subject(sid), categories=[_GPS], purpose="customer_service"
    )

    for method, request in [("RecordCollection", gps_collection(sid)), ("RecordUse", use)]:
        with nothing_written(client), pytest.raises(grpc.RpcError) as refused:
            record(client, method, request)
        assert_refused(refused.value, "CONSENT_WITHDRAWN", "§6.5")


def test_nothing_more_is_recorded_for_an_erased_subject_under_clause_6_3(
    client: LedgerClient,
) -> None:
    sid = with_gps_held(client)
    record(
        client,
        "EraseSubject",
        lpb.EraseSubjectRequest(meta=meta(), subject=subject(sid), ground="no_consent"),
    )
    attempts = [
        ("RecordCollection", ip_collection(sid)),
        ("GiveConsent", gps_consent(sid)),
        ("RecordShare", gps_share(sid)),
        (
            "EraseSubject",
            lpb.EraseSubjectRequest(meta=meta(), subject=subject(sid), ground="no_consent"),
        ),
        ("CancelAccount", lpb.CancelAccountRequest(meta=meta(), subject=subject(sid))),
        (
            "WithdrawConsent",
            lpb.WithdrawConsentRequest(
                meta=meta(), subject=subject(sid), purposes=["customer_service"], categories=[_GPS]
            ),
        ),
        (
            "RecordUse",
            lpb.RecordUseRequest(
                meta=meta(), subject=subject(sid), categories=[_GPS], purpose="customer_service"
            ),
        ),
    ]

    for method, request in attempts:
        with nothing_written(client), pytest.raises(grpc.RpcError) as refused:
            record(client, method, request)
        assert_refused(refused.value, "SUBJECT_ERASED", "§6.3")


def test_correcting_data_that_is_not_held_is_refused_under_clause_6_2(
    client: LedgerClient,
) -> None:
    sid = register(client)
    request = lpb.CorrectDataRequest(
        meta=meta(), subject=subject(sid), category=_GPS, values={"fix": secret("gps")}
    )

    with nothing_written(client), pytest.raises(grpc.RpcError) as refused:
        record(client, "CorrectData", request)

    assert_refused(refused.value, "DATA_NOT_HELD", "§6.2")


def test_registering_a_minor_without_a_guardian_is_refused_under_clause_5(
    client: LedgerClient,
) -> None:
    request = lpb.RegisterSubjectRequest(
        meta=meta(), account=cpb.AccountRef(namespace="app", account_id=secret("minor")), minor=True
    )

    with nothing_written(client), pytest.raises(grpc.RpcError) as refused:
        record(client, "RegisterSubject", request)

    assert_refused(refused.value, "MINOR_WITHOUT_GUARDIAN", "§5")


def test_registering_an_account_twice_is_refused(client: LedgerClient) -> None:
    account = secret("account")
    client.register_subject("app", account)

    with nothing_written(client), pytest.raises(grpc.RpcError) as refused:
        client.register_subject("app", account)

    assert_refused(refused.value, "SUBJECT_ALREADY_REGISTERED", "§6.1")


def test_erasure_on_an_undeclared_ground_is_refused_under_clause_6_3(
    client: LedgerClient,
) -> None:
    sid = register(client)
    request = lpb.EraseSubjectRequest(meta=meta(), subject=subject(sid), ground="because")

    with nothing_written(client), pytest.raises(grpc.RpcError) as refused:
        record(client, "EraseSubject", request)

    assert_refused(refused.value, "ERASURE_GROUND_NOT_DECLARED", "§6.3")
    assert client.subject_state(sid).erased is False


# --- invalid requests ---------------------------------------------------------------------


def every_rpc(subject_id: str, envelope: cpb.CommandMeta | None = None) -> list[tuple[str, Any]]:
    """One valid-looking request for every unary LedgerService RPC naming a subject."""
    ref = subject(subject_id)
    m = envelope if envelope is not None else meta()
    return [
        ("RecordCollection", ip_collection(subject_id, meta=m)),
        (
            "RecordUse",
            lpb.RecordUseRequest(
                meta=m, subject=ref, categories=[_IP], purpose="security_detection"
            ),
        ),
        (
            "RecordShare",
            lpb.RecordShareRequest(
                meta=m,
                subject=ref,
                categories=[_GPS],
                recipient="Example Support Ltd",
                recipient_class="third_party_partners",
                purpose="customer_service",
            ),
        ),
        (
            "GiveConsent",
            lpb.GiveConsentRequest(
                meta=m, subject=ref, purposes=["customer_service"], categories=[_GPS]
            ),
        ),
        ("WithdrawConsent", lpb.WithdrawConsentRequest(meta=m, subject=ref, purposes=["ads"])),
        (
            "CorrectData",
            lpb.CorrectDataRequest(meta=m, subject=ref, category=_IP, values={"ip": "x"}),
        ),
        ("EraseSubject", lpb.EraseSubjectRequest(meta=m, subject=ref, ground="no_consent")),
        ("CancelAccount", lpb.CancelAccountRequest(meta=m, subject=ref)),
    ]


def test_every_recording_rpc_without_an_idempotency_key_names_meta_idempotency_key(
    client: LedgerClient,
) -> None:
    sid = register(client)
    no_key = cpb.CommandMeta()
    calls = [
        *every_rpc(sid, no_key),
        (
            "RegisterSubject",
            lpb.RegisterSubjectRequest(
                meta=no_key, account=cpb.AccountRef(namespace="app", account_id=secret("a"))
            ),
        ),
    ]

    for method, request in calls:
        with nothing_written(client), pytest.raises(grpc.RpcError) as invalid:
            record(client, method, request)
        assert "meta.idempotency_key" in bad_fields(invalid.value), method


def test_a_subject_id_that_is_not_a_uuid_is_invalid_and_names_subject_subject_id(
    client: LedgerClient,
) -> None:
    for method, request in every_rpc("not-a-uuid"):
        with nothing_written(client), pytest.raises(grpc.RpcError) as invalid:
            record(client, method, request)
        assert bad_fields(invalid.value) == ["subject.subject_id"], method


def test_an_unknown_enum_number_is_invalid_and_names_the_enum_field(
    client: LedgerClient,
) -> None:
    sid = register(client)
    consent = gps_consent(sid)
    consent.given_by = 7  # type: ignore[assignment]
    withdrawal = lpb.WithdrawConsentRequest(
        meta=meta(), subject=subject(sid), purposes=["customer_service"], withdrawn_by=9
    )

    for method, request, field in [
        ("GiveConsent", consent, "given_by"),
        ("WithdrawConsent", withdrawal, "withdrawn_by"),
    ]:
        with nothing_written(client), pytest.raises(grpc.RpcError) as invalid:
            record(client, method, request)
        assert bad_fields(invalid.value) == [field]


def test_empty_purposes_are_invalid_and_name_purposes(client: LedgerClient) -> None:
    sid = register(client)
    collection = ip_collection(sid)
    del collection.purposes[:]
    consent = gps_consent(sid)
    del consent.purposes[:]

    for method, request in [("RecordCollection", collection), ("GiveConsent", consent)]:
        with nothing_written(client), pytest.raises(grpc.RpcError) as invalid:
            record(client, method, request)
        assert bad_fields(invalid.value) == ["purposes"], method


def test_a_withdrawal_naming_nothing_is_invalid(client: LedgerClient) -> None:
    sid = register(client)
    request = lpb.WithdrawConsentRequest(meta=meta(), subject=subject(sid))

    with nothing_written(client), pytest.raises(grpc.RpcError) as invalid:
        record(client, "WithdrawConsent", request)

    assert bad_fields(invalid.value) == ["purposes"]


def test_a_batch_over_max_batch_items_or_empty_is_invalid_and_names_items(
    serve_with: Callable[..., Served],
) -> None:
    running = serve_with(max_batch_items=5)
    with running.client() as client:
        sid = register(client)

        def batch(n: int) -> lpb.RecordBatchRequest:
            return lpb.RecordBatchRequest(
                items=[lpb.BatchItem(collection=ip_collection(sid)) for _ in range(n)]
            )

        for size in (6, 0):
            with nothing_written(client), pytest.raises(grpc.RpcError) as invalid:
                client.ledger.RecordBatch(batch(size), **client.options)
            assert bad_fields(invalid.value) == ["items"], size
        assert client.ledger.RecordBatch(batch(5), **client.options).recorded_count == 5


def test_an_invalid_batch_item_is_named_by_its_index_and_nothing_is_written(
    client: LedgerClient,
) -> None:
    sid = register(client)
    no_purposes = gps_consent(sid)
    del no_purposes.purposes[:]
    request = lpb.RecordBatchRequest(
        items=[
            lpb.BatchItem(collection=ip_collection(sid)),
            lpb.BatchItem(consent=no_purposes),
            lpb.BatchItem(),
        ]
    )

    with nothing_written(client), pytest.raises(grpc.RpcError) as invalid:
        client.ledger.RecordBatch(request, **client.options)

    assert bad_fields(invalid.value) == ["items[1].consent.purposes", "items[2].command"]


# --- unknown subjects ---------------------------------------------------------------------


def test_every_recording_rpc_answers_not_found_for_an_unknown_subject(
    client: LedgerClient,
) -> None:
    by_account = ip_collection(_UNKNOWN_SUBJECT)
    by_account.subject.CopyFrom(
        cpb.SubjectRef(account=cpb.AccountRef(namespace="app", account_id=secret("nobody")))
    )

    for method, request in [*every_rpc(_UNKNOWN_SUBJECT), ("RecordCollection", by_account)]:
        with nothing_written(client), pytest.raises(grpc.RpcError) as missing:
            record(client, method, request)
        assert missing.value.code() is grpc.StatusCode.NOT_FOUND, method
        assert reason_of(missing.value) == "SUBJECT_NOT_FOUND"


# --- idempotency --------------------------------------------------------------------------


def test_a_retry_with_the_same_key_and_payload_replays_the_first_answer(
    client: LedgerClient,
) -> None:
    at = datetime.now(UTC) - timedelta(seconds=1)
    account = cpb.AccountRef(namespace="app", account_id=secret("account"))
    registration = lpb.RegisterSubjectRequest(meta=meta(uuid.uuid4().hex, at), account=account)
    first_registration = record(client, "RegisterSubject", registration)
    collection = ip_collection(first_registration.subject_id, meta=meta(uuid.uuid4().hex, at))
    first_collection = record(client, "RecordCollection", collection)

    with nothing_written(client):
        again_registration = record(client, "RegisterSubject", registration)
        again_collection = record(client, "RecordCollection", collection)

    for first, again in [
        (first_registration, again_registration),
        (first_collection, again_collection),
    ]:
        assert first.replayed is False
        assert again.replayed is True
        assert (again.position, again.version, again.aggregate_id, again.event_type) == (
            first.position,
            first.version,
            first.aggregate_id,
            first.event_type,
        )
    assert len(client.history(first_registration.subject_id, "DataCollected")) == 1


def test_a_retry_without_occurred_at_replays_the_first_answer(client: LedgerClient) -> None:
    sid = register(client)
    collection = ip_collection(sid, meta=meta(uuid.uuid4().hex))
    first = record(client, "RecordCollection", collection)

    again = record(client, "RecordCollection", collection)

    assert (again.replayed, again.position) == (True, first.position)


def test_reusing_a_key_for_a_different_payload_is_already_exists(client: LedgerClient) -> None:
    at = datetime.now(UTC) - timedelta(seconds=1)
    sid = register(client)
    key = uuid.uuid4().hex
    record(client, "RecordCollection", ip_collection(sid, meta=meta(key, at)))
    other = ip_collection(sid, meta=meta(key, at))

    with nothing_written(client), pytest.raises(grpc.RpcError) as conflict:
        record(client, "RecordCollection", other)

    assert conflict.value.code() is grpc.StatusCode.ALREADY_EXISTS
    assert reason_of(conflict.value) == "IDEMPOTENCY_CONFLICT"


def test_the_same_key_of_two_principals_is_two_commands(served: Served) -> None:
    at = datetime.now(UTC) - timedelta(seconds=1)
    with served.client("everything") as everything, served.client("recorder") as recorder:
        sid = register(everything)
        key = uuid.uuid4().hex

        first = record(everything, "RecordCollection", ip_collection(sid, meta=meta(key, at)))
        second = record(recorder, "RecordCollection", ip_collection(sid, meta=meta(key, at)))

        assert (first.replayed, second.replayed) == (False, False)
        assert second.position > first.position
        principals = [e.principal for e in everything.history(sid, "DataCollected")]
        assert principals == ["everything", "recorder"]


# --- credentials and scopes ---------------------------------------------------------------


def test_a_call_without_a_token_is_unauthenticated(client: LedgerClient) -> None:
    sid = register(client)

    with nothing_written(client), pytest.raises(grpc.RpcError) as denied:
        client.ledger.RecordCollection(ip_collection(sid), timeout=10)

    assert denied.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert reason_of(denied.value) == "UNAUTHENTICATED"


def test_a_call_with_an_unknown_token_is_unauthenticated(served: Served) -> None:
    with served.client() as client, LedgerClient(served.target, "not-a-known-token") as stranger:
        sid = register(client)

        with nothing_written(client), pytest.raises(grpc.RpcError) as denied:
            record(stranger, "RecordCollection", ip_collection(sid))

        assert denied.value.code() is grpc.StatusCode.UNAUTHENTICATED
        assert "not-a-known-token" not in (denied.value.details() or "")


def test_a_call_with_a_malformed_authorization_header_is_unauthenticated(
    client: LedgerClient,
) -> None:
    sid = register(client)

    for header in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer    ", "tok-everything-0123456789abcdef"]:
        with nothing_written(client), pytest.raises(grpc.RpcError) as denied:
            client.ledger.RecordCollection(
                ip_collection(sid), metadata=(("authorization", header),), timeout=10
            )
        assert denied.value.code() is grpc.StatusCode.UNAUTHENTICATED, header
        assert reason_of(denied.value) == "UNAUTHENTICATED"


def test_two_authorization_headers_are_unauthenticated_whichever_is_good(
    client: LedgerClient,
) -> None:
    """A proxy in front could read the first while the server read the last."""
    sid = register(client)
    (good,) = client.options["metadata"]

    for headers in [(("authorization", "Basic zzz"), good), (good, ("authorization", "Bearer x"))]:
        with nothing_written(client), pytest.raises(grpc.RpcError) as denied:
            client.ledger.RecordCollection(ip_collection(sid), metadata=headers, timeout=10)
        assert denied.value.code() is grpc.StatusCode.UNAUTHENTICATED
        assert "more than one" in (denied.value.details() or "")


def test_a_principal_without_the_record_scope_cannot_record(served: Served) -> None:
    with served.client() as client:
        sid = register(client)

        for who in ("reader", "auditor", "admin"):
            with served.client(who) as other:
                for method, request in [
                    ("RecordCollection", ip_collection(sid)),
                    ("RecordBatch", lpb.RecordBatchRequest(items=[lpb.BatchItem(use=ip_use(sid))])),
                ]:
                    with nothing_written(client), pytest.raises(grpc.RpcError) as denied:
                        getattr(other.ledger, method)(request, **other.options)
                    assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED, (who, method)
                    assert reason_of(denied.value) == "PERMISSION_DENIED"


# --- concurrent unary calls: group commit ---------------------------------------------------


def test_concurrent_unary_calls_share_commits_and_each_gets_its_own_answer(served: Served) -> None:
    with served.client() as client:
        sid = register(client)
        kinds = ["ip", "gps", "unknown", "ip"] * 8
        requests = {
            "ip": lambda: ip_collection(sid),
            "gps": lambda: gps_collection(sid),  # no consent: refused, alone
            "unknown": lambda: ip_collection(_UNKNOWN_SUBJECT),
        }
        committer = served.serving.committer
        before, groups, items = log_end(client), committer.groups, committer.items

        calls = [
            client.ledger.RecordCollection.future(requests[kind](), **client.options)
            for kind in kinds
        ]
        answers = []
        for call in calls:
            try:
                answers.append(call.result(30).recorded.event_type)
            except grpc.RpcError as error:
                answers.append(reason_of(error))

        expected = {
            "ip": "DataCollected",
            "gps": "SENSITIVE_CATEGORY_WITHOUT_CONSENT",
            "unknown": "SUBJECT_NOT_FOUND",
        }
        assert answers == [expected[kind] for kind in kinds]
        assert log_end(client) == before + kinds.count("ip")
        assert committer.items - items == len(kinds)
        assert committer.groups - groups < len(kinds)  # calls in flight together shared commits


# --- batches ------------------------------------------------------------------------------


def test_a_batch_with_mixed_outcomes_records_the_accepted_items_and_explains_the_refused(
    client: LedgerClient,
) -> None:
    sid = register(client)
    items = [
        lpb.BatchItem(collection=ip_collection(sid)),
        lpb.BatchItem(collection=gps_collection(sid)),
        lpb.BatchItem(consent=gps_consent(sid)),
        lpb.BatchItem(use=ip_use(_UNKNOWN_SUBJECT)),
        lpb.BatchItem(use=ip_use(sid)),
    ]
    before = log_end(client)

    answer = client.ledger.RecordBatch(lpb.RecordBatchRequest(items=items), **client.options)

    outcomes = [o.WhichOneof("outcome") for o in answer.outcomes]
    assert outcomes == ["recorded", "refusal", "recorded", "refusal", "recorded"]
    assert answer.recorded_count == 3
    gps = answer.outcomes[1].refusal
    assert (gps.code, gps.reason, gps.clause) == (
        "FAILED_PRECONDITION",
        "SENSITIVE_CATEGORY_WITHOUT_CONSENT",
        "§1(5)",
    )
    assert gps.message
    unknown = answer.outcomes[3].refusal
    assert (unknown.code, unknown.reason, unknown.clause) == ("NOT_FOUND", "SUBJECT_NOT_FOUND", "")
    assert log_end(client) == before + 3
    assert [e.event_type for e in client.history(sid)][1:] == [
        "DataCollected",
        "ConsentGiven",
        "DataUsed",
    ]
    assert _GPS not in held(client.subject_state(sid))


def test_a_retried_batch_replays_each_item_and_a_reused_key_with_another_payload_conflicts(
    client: LedgerClient,
) -> None:
    """A retry of a whole batch records nothing again: each item answers with its first
    answer. A later batch that reuses one of its keys for another command gets that item
    refused as a conflict, and its other items recorded."""
    sid = register(client)
    items = [lpb.BatchItem(collection=ip_collection(sid)) for _ in range(3)]
    request = lpb.RecordBatchRequest(items=items)

    first = client.ledger.RecordBatch(request, **client.options)
    again = client.ledger.RecordBatch(request, **client.options)
    reused = ip_collection(sid, meta=items[1].collection.meta)  # a new value under an old key
    mixed = client.ledger.RecordBatch(
        lpb.RecordBatchRequest(
            items=[lpb.BatchItem(collection=reused), lpb.BatchItem(collection=ip_collection(sid))]
        ),
        **client.options,
    )

    assert [o.recorded.replayed for o in first.outcomes] == [False] * 3
    assert [o.recorded.replayed for o in again.outcomes] == [True] * 3
    assert [o.recorded.position for o in again.outcomes] == [
        o.recorded.position for o in first.outcomes
    ]
    assert [o.WhichOneof("outcome") for o in mixed.outcomes] == ["refusal", "recorded"]
    assert (mixed.outcomes[0].refusal.code, mixed.outcomes[0].refusal.reason) == (
        "ALREADY_EXISTS",
        "IDEMPOTENCY_CONFLICT",
    )
    assert len(client.history(sid)) == 1 + 3 + 1


def test_an_all_or_nothing_batch_with_one_refusal_writes_nothing(client: LedgerClient) -> None:
    sid = register(client)
    items = [
        lpb.BatchItem(collection=ip_collection(sid)),
        lpb.BatchItem(consent=gps_consent(sid)),
        lpb.BatchItem(share=gps_share(sid, sale=True)),
        lpb.BatchItem(use=ip_use(sid)),
    ]

    with nothing_written(client):
        answer = client.ledger.RecordBatch(
            lpb.RecordBatchRequest(items=items, all_or_nothing=True), **client.options
        )

    assert answer.recorded_count == 0
    refusals = [o.refusal for o in answer.outcomes]
    assert [(r.code, r.reason) for r in refusals] == [
        ("ABORTED", "BATCH_ABORTED"),
        ("ABORTED", "BATCH_ABORTED"),
        ("FAILED_PRECONDITION", "SALE_PROHIBITED"),
        ("ABORTED", "BATCH_ABORTED"),
    ]
    assert refusals[2].clause == "§4"
    state = client.subject_state(sid)
    assert (list(state.held), list(state.consents), state.events) == ([], [], 1)

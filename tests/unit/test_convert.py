"""Proto ↔ ledger conversion (`server.convert`): every request into the right command with the
right defaults, every bad field named by its proto path without its value, and the results
back into proto messages. Pure functions: no ledger, no server.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from scenario import START, key, secret

from ledger import commands as c
from ledger.application import BatchAborted, ItemOutcome, Recorded
from ledger.errors import RefusalReason, Refused
from ledger.events import (
    CollectionMode,
    ConsentGiver,
    DataCollected,
    RequestOutcome,
)
from ledger.policy import RightKind, load_seed_policy
from ledger.policy_book import PublishedVersion
from ledger.rights import RequestState, RequestStatus
from ledger.subject_state import ConsentGrant, ConsentWithdrawal, HeldCategory, SubjectState
from server import convert
from server._pb.pdl.v1 import common_pb2 as cpb
from server._pb.pdl.v1 import ledger_service_pb2 as lpb
from server._pb.pdl.v1 import policy_service_pb2 as ppb
from server._pb.pdl.v1 import query_service_pb2 as qpb
from server._pb.pdl.v1 import rights_service_pb2 as rpb
from server.convert_results import (
    CONSENT_GIVERS,
    REQUEST_OUTCOMES,
    REQUEST_STATUSES,
    RIGHT_KINDS,
)
from server.errors import InvalidRequest
from server.request_reader import Draft

NOW = START
SUBJECT_ID = UUID("6f1c1f7e-2b5a-4c1e-9a53-3d5f0a2b7c11")
REQUEST_ID = UUID("0d8e5b2a-7c4f-4e1a-b6d3-9f2c8a1e5b70")
_MAX_SECONDS = 253_402_300_799
_MIN_SECONDS = -62_135_596_800

# --- helpers ------------------------------------------------------------------------------


def _ts(instant: datetime) -> Timestamp:
    return convert.timestamp(instant)


def _meta(at: datetime | None = None, idempotency_key: str | None = None) -> cpb.CommandMeta:
    meta = cpb.CommandMeta(idempotency_key=idempotency_key or key("conv"))
    if at is not None:
        meta.occurred_at.CopyFrom(_ts(at))
    return meta


def _by_id(subject_id: UUID = SUBJECT_ID) -> cpb.SubjectRef:
    return cpb.SubjectRef(subject_id=str(subject_id))


def _by_account(account_id: str, namespace: str = "app") -> cpb.SubjectRef:
    return cpb.SubjectRef(account=cpb.AccountRef(namespace=namespace, account_id=account_id))


def _fields(exc: pytest.ExceptionInfo[InvalidRequest]) -> dict[str, str]:
    """Violations by field; each field is named once."""
    found = {v.field: v.description for v in exc.value.violations}
    assert len(found) == len(exc.value.violations)
    return found


def _assert_private(exc: pytest.ExceptionInfo[InvalidRequest], *values: str) -> None:
    """No personal value shows in the error's text or in any of its violations."""
    texts = [str(exc.value)] + [f"{v.field} {v.description}" for v in exc.value.violations]
    for value in values:
        for text in texts:
            assert value not in text


def _secret(value: SecretStr | None) -> str:
    assert value is not None
    return value.get_secret_value()


def _collection(**fields: Any) -> lpb.RecordCollectionRequest:
    fields.setdefault("meta", _meta())
    fields.setdefault("subject", _by_id())
    fields.setdefault("category", "network_log.ip_address")
    fields.setdefault("source", "server_logs")
    fields.setdefault("purposes", ["security_detection"])
    return lpb.RecordCollectionRequest(**fields)


def _share(**fields: Any) -> lpb.RecordShareRequest:
    fields.setdefault("meta", _meta())
    fields.setdefault("subject", _by_id())
    fields.setdefault("categories", ["network_log.ip_address"])
    fields.setdefault("recipient", "Acme Analytics Ltd")
    fields.setdefault("recipient_class", "third_party_partners")
    fields.setdefault("purpose", "security_detection")
    return lpb.RecordShareRequest(**fields)


def _seed_document() -> dict[str, Any]:
    document: dict[str, Any] = load_seed_policy().model_dump(mode="json")
    return document


# --- LedgerService requests ---------------------------------------------------------------


def test_register_subject_carries_every_field_and_converts_occurred_at_to_utc() -> None:
    account, guardian = secret("account"), secret("guardian")
    at = datetime(2026, 10, 31, 8, 30, 15, 123456, tzinfo=UTC)
    command = convert.register_subject(
        lpb.RegisterSubjectRequest(
            meta=_meta(at, "reg-1"),
            account=cpb.AccountRef(namespace="app", account_id=account),
            birth_year=2012,
            minor=True,
            guardian_account_id=guardian,
            jurisdiction="eu",
            storage_region="eu-west",
            cross_border_basis="contract",
        ),
        NOW,
    )
    assert isinstance(command, c.RegisterSubject)
    assert command.idempotency_key == "reg-1"
    assert command.occurred_at == at
    assert command.occurred_at.tzinfo is UTC
    assert command.namespace == "app"
    assert _secret(command.account_id) == account
    assert (command.birth_year, command.minor) == (2012, True)
    assert _secret(command.guardian_account_id) == guardian
    assert (command.jurisdiction, command.storage_region) == ("eu", "eu-west")
    assert command.cross_border_basis == "contract"
    by_pseudonym = convert.register_subject(
        lpb.RegisterSubjectRequest(
            meta=_meta(at, "reg-2"),
            account=cpb.AccountRef(namespace="app", account_id=account),
            minor=True,
            guardian_subject_id=str(SUBJECT_ID),
        ),
        NOW,
    )
    assert isinstance(by_pseudonym, c.RegisterSubject)
    assert by_pseudonym.guardian_subject_id == SUBJECT_ID


def test_a_guardian_named_both_ways_is_invalid_and_names_the_pseudonym() -> None:
    """A registered guardian's account id would be sealed under the minor's key, and outlive
    the guardian's own erasure."""
    with pytest.raises(InvalidRequest) as both:
        convert.register_subject(
            lpb.RegisterSubjectRequest(
                meta=_meta(),
                account=cpb.AccountRef(namespace="app", account_id=secret("a")),
                minor=True,
                guardian_account_id=secret("guardian"),
                guardian_subject_id=str(SUBJECT_ID),
            ),
            NOW,
        )
    assert [v.field for v in both.value.violations] == ["guardian_subject_id"]


@pytest.mark.parametrize("name", sorted(c.RESERVED_FIELDS))
def test_a_collected_field_may_not_take_a_name_the_ledger_seals_its_own_values_under(
    name: str,
) -> None:
    with pytest.raises(InvalidRequest) as reserved:
        convert.record_collection(
            lpb.RecordCollectionRequest(
                meta=_meta(),
                subject=_by_id(),
                category="network_log.ip_address",
                source="server_logs",
                purposes=["security_detection"],
                values={name: "203.0.113.7"},
            ),
            NOW,
        )
    assert [v.field for v in reserved.value.violations] == [f"values.{name}"]
    assert "203.0.113.7" not in str(reserved.value)


def test_register_subject_zero_values_mean_the_commands_defaults() -> None:
    command = convert.register_subject(
        lpb.RegisterSubjectRequest(
            meta=_meta(), account=cpb.AccountRef(namespace="app", account_id=secret("a"))
        ),
        NOW,
    )
    assert command.occurred_at == NOW
    assert command.birth_year is None
    assert command.minor is False
    assert command.guardian_account_id is None
    assert command.guardian_subject_id is None
    assert command.jurisdiction == "cn"
    assert command.storage_region is None
    assert command.cross_border_basis is None


def test_record_collection_carries_every_field() -> None:
    ip, where = secret("ip"), secret("reference")
    command = convert.record_collection(
        _collection(
            subject=_by_account(secret("acct")),
            with_consent=True,
            values={"ip": ip},
            fields=["ip", "port"],
            reference=where,
            storage_region="eu-west",
            cross_border_basis="contract",
        ),
        NOW,
    )
    assert isinstance(command, c.RecordCollection)
    assert command.subject.namespace == "app"
    assert command.category == "network_log.ip_address"
    assert command.source == "server_logs"
    assert command.purposes == ("security_detection",)
    assert command.mode is CollectionMode.CONSENT
    assert {k: v.get_secret_value() for k, v in command.values.items()} == {"ip": ip}
    assert command.fields == ("ip", "port")
    assert _secret(command.reference) == where
    assert (command.storage_region, command.cross_border_basis) == ("eu-west", "contract")


def test_record_collection_without_consent_is_automatic_and_empty_fields_are_defaults() -> None:
    command = convert.record_collection(_collection(), NOW)
    assert command.subject.subject_id == SUBJECT_ID
    assert command.mode is CollectionMode.AUTOMATIC
    assert command.values == {}
    assert command.fields == ()
    assert command.reference is None
    assert command.storage_region is None


def test_record_use_defaults_the_legal_basis_to_consent() -> None:
    request = lpb.RecordUseRequest(
        meta=_meta(), subject=_by_id(), categories=["a.b", "c.d"], purpose="analytics"
    )
    command = convert.record_use(request, NOW)
    assert isinstance(command, c.RecordUse)
    assert (command.categories, command.purpose) == (("a.b", "c.d"), "analytics")
    assert command.legal_basis == "consent"
    request.legal_basis = "contract"
    assert convert.record_use(request, NOW).legal_basis == "contract"


def test_record_share_carries_every_field() -> None:
    command = convert.record_share(
        _share(
            legal_basis="legal_obligation",
            legal_ground="court_order",
            destination_region="eu-west",
            cross_border_basis="contract",
            anonymised=True,
            sale=True,
        ),
        NOW,
    )
    assert isinstance(command, c.RecordShare)
    assert command.categories == ("network_log.ip_address",)
    assert command.recipient == "Acme Analytics Ltd"
    assert command.recipient_class == "third_party_partners"
    assert command.purpose == "security_detection"
    assert (command.legal_basis, command.legal_ground) == ("legal_obligation", "court_order")
    assert (command.destination_region, command.cross_border_basis) == ("eu-west", "contract")
    assert (command.anonymised, command.sale) == (True, True)


def test_record_share_zero_values_mean_the_commands_defaults() -> None:
    command = convert.record_share(_share(), NOW)
    assert command.legal_basis == "consent"
    assert command.legal_ground is None
    assert command.destination_region is None
    assert (command.anonymised, command.sale) == (False, False)


def test_give_consent_unspecified_giver_is_the_person_and_method_defaults_to_popup() -> None:
    request = lpb.GiveConsentRequest(
        meta=_meta(), subject=_by_id(), purposes=["p"], categories=["x.y"]
    )
    command = convert.give_consent(request, NOW)
    assert isinstance(command, c.GiveConsent)
    assert (command.purposes, command.categories) == (("p",), ("x.y",))
    assert command.given_by is ConsentGiver.SUBJECT
    assert command.method == "popup"
    request.given_by = cpb.CONSENT_GIVER_GUARDIAN
    request.method = "settings"
    command = convert.give_consent(request, NOW)
    assert (command.given_by, command.method) == (ConsentGiver.GUARDIAN, "settings")


def test_withdraw_consent_defaults_and_guardian() -> None:
    request = lpb.WithdrawConsentRequest(meta=_meta(), subject=_by_id(), categories=["x.y"])
    command = convert.withdraw_consent(request, NOW)
    assert isinstance(command, c.WithdrawConsent)
    assert (command.purposes, command.categories) == ((), ("x.y",))
    assert (command.withdrawn_by, command.method) == (ConsentGiver.SUBJECT, "settings")
    request.withdrawn_by = cpb.CONSENT_GIVER_GUARDIAN
    assert convert.withdraw_consent(request, NOW).withdrawn_by is ConsentGiver.GUARDIAN


def test_correct_data_carries_the_values_as_secrets() -> None:
    value = secret("phone")
    command = convert.correct_data(
        lpb.CorrectDataRequest(
            meta=_meta(), subject=_by_id(), category="account.phone", values={"phone": value}
        ),
        NOW,
    )
    assert isinstance(command, c.CorrectData)
    assert command.category == "account.phone"
    assert command.values["phone"].get_secret_value() == value


def test_erase_subject_without_categories_erases_everything() -> None:
    request = lpb.EraseSubjectRequest(meta=_meta(), subject=_by_id(), ground="no_consent")
    command = convert.erase_subject(request, NOW)
    assert isinstance(command, c.EraseSubject)
    assert (command.ground, command.categories) == ("no_consent", ())
    request.categories.append("location.gps")
    assert convert.erase_subject(request, NOW).categories == ("location.gps",)


def test_cancel_account_by_account_reference() -> None:
    account = secret("acct")
    command = convert.cancel_account(
        lpb.CancelAccountRequest(meta=_meta(), subject=_by_account(account)), NOW
    )
    assert isinstance(command, c.CancelAccount)
    assert command.subject.namespace == "app"
    assert _secret(command.subject.account_id) == account
    assert command.subject.subject_id is None


def _batch_members() -> list[tuple[str, Any, type[c.RecordingCommand]]]:
    subject = _by_id()
    return [
        ("collection", _collection(), c.RecordCollection),
        ("use", lpb.RecordUseRequest(subject=subject, categories=["a"], purpose="p"), c.RecordUse),
        ("share", _share(), c.RecordShare),
        (
            "consent",
            lpb.GiveConsentRequest(subject=subject, purposes=["p"], categories=["a"]),
            c.GiveConsent,
        ),
        (
            "withdrawal",
            lpb.WithdrawConsentRequest(subject=subject, purposes=["p"]),
            c.WithdrawConsent,
        ),
        (
            "correction",
            lpb.CorrectDataRequest(subject=subject, category="a", values={"f": "v"}),
            c.CorrectData,
        ),
    ]


@pytest.mark.parametrize(("member", "request_", "command_type"), _batch_members())
def test_batch_item_converts_each_member_of_the_oneof(
    member: str, request_: Any, command_type: type[c.RecordingCommand]
) -> None:
    request_.meta.CopyFrom(_meta())
    item = lpb.BatchItem(**{member: request_})
    assert isinstance(convert.batch_item(item, NOW), command_type)


def test_batch_item_names_bad_fields_under_its_oneof_member() -> None:
    item = lpb.BatchItem(collection=_collection(category=""))
    with pytest.raises(InvalidRequest) as exc:
        convert.batch_item(item, NOW)
    assert set(_fields(exc)) == {"collection.category"}


def test_an_empty_batch_item_is_a_violation_on_command() -> None:
    with pytest.raises(InvalidRequest) as exc:
        convert.batch_item(lpb.BatchItem(), NOW)
    assert set(_fields(exc)) == {"command"}


# --- RightsRequestService and PolicyService requests ---------------------------------------


@pytest.mark.parametrize("kind", list(RightKind))
def test_open_rights_request_maps_every_right_kind(kind: RightKind) -> None:
    number = cpb.RightKind.Value(f"RIGHT_KIND_{kind.name}")
    received = NOW - timedelta(days=1)
    command = convert.open_rights_request(
        rpb.OpenRightsRequestRequest(
            meta=_meta(),
            subject=_by_id(),
            kind=number,
            ground="no_consent",
            purposes=["p"],
            categories=["a.b"],
            received_at=_ts(received),
        ),
        NOW,
    )
    assert isinstance(command, c.OpenRightsRequest)
    assert command.kind is kind
    assert (command.ground, command.purposes, command.categories) == (
        "no_consent",
        ("p",),
        ("a.b",),
    )
    assert command.received_at == received


def test_open_rights_request_without_received_at_leaves_it_to_occurred_at() -> None:
    command = convert.open_rights_request(
        rpb.OpenRightsRequestRequest(meta=_meta(), subject=_by_id(), kind=cpb.RIGHT_KIND_ACCESS),
        NOW,
    )
    assert (command.received_at, command.ground, command.purposes) == (None, None, ())


def test_extend_pause_and_resume_carry_the_request_id() -> None:
    extend = convert.extend_rights_request(
        rpb.ExtendRightsRequestRequest(
            meta=_meta(), request_id=str(REQUEST_ID), days=15, reason="complex request"
        ),
        NOW,
    )
    assert isinstance(extend, c.ExtendRightsRequest)
    assert (extend.request_id, extend.days, extend.reason) == (REQUEST_ID, 15, "complex request")
    pause = convert.pause_rights_request(
        rpb.PauseRightsRequestRequest(meta=_meta(), request_id=str(REQUEST_ID), reason="identity"),
        NOW,
    )
    assert isinstance(pause, c.PauseRightsRequest)
    assert (pause.request_id, pause.reason) == (REQUEST_ID, "identity")
    resume = convert.resume_rights_request(
        rpb.ResumeRightsRequestRequest(meta=_meta(), request_id=str(REQUEST_ID).upper()), NOW
    )
    assert isinstance(resume, c.ResumeRightsRequest)
    assert resume.request_id == REQUEST_ID


@pytest.mark.parametrize("outcome", list(RequestOutcome))
def test_close_rights_request_maps_every_outcome(outcome: RequestOutcome) -> None:
    number = rpb.RequestOutcome.Value(f"REQUEST_OUTCOME_{outcome.name}")
    command = convert.close_rights_request(
        rpb.CloseRightsRequestRequest(
            meta=_meta(), request_id=str(REQUEST_ID), outcome=number, reason="done"
        ),
        NOW,
    )
    assert isinstance(command, c.CloseRightsRequest)
    assert (command.outcome, command.reason, command.correction) == (outcome, "done", None)


def test_close_rights_request_with_a_correction() -> None:
    value = secret("email")
    command = convert.close_rights_request(
        rpb.CloseRightsRequestRequest(
            meta=_meta(),
            request_id=str(REQUEST_ID),
            outcome=rpb.REQUEST_OUTCOME_FULFILLED,
            reason="corrected",
            correction_category="account.email",
            correction_values={"email": value},
        ),
        NOW,
    )
    assert command.correction is not None
    assert command.correction.category == "account.email"
    assert command.correction.values["email"].get_secret_value() == value


def test_publish_policy_parses_the_document() -> None:
    effective = NOW + timedelta(days=30)
    document = _seed_document()
    command = convert.publish_policy(
        ppb.PublishPolicyRequest(
            meta=_meta(),
            document_json=json.dumps(document),
            effective_at=_ts(effective),
            major=True,
            changes=["new purpose", "longer retention"],
        ),
        NOW,
    )
    assert isinstance(command, c.PublishPolicy)
    assert command.policy == load_seed_policy()
    assert (command.effective_at, command.major) == (effective, True)
    assert command.changes == ("new purpose", "longer retention")


# --- violations ---------------------------------------------------------------------------


def test_a_missing_meta_is_a_violation_on_the_idempotency_key() -> None:
    request = _collection()
    request.ClearField("meta")
    with pytest.raises(InvalidRequest) as exc:
        convert.record_collection(request, NOW)
    assert set(_fields(exc)) == {"meta.idempotency_key"}


@pytest.mark.parametrize("idempotency_key", ["", "k" * 129])
def test_an_empty_or_overlong_idempotency_key_is_named(idempotency_key: str) -> None:
    meta = cpb.CommandMeta(idempotency_key=idempotency_key)
    with pytest.raises(InvalidRequest) as exc:
        convert.record_collection(_collection(meta=meta), NOW)
    assert set(_fields(exc)) == {"meta.idempotency_key"}


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [
        (_MAX_SECONDS + 1, 0),
        (_MIN_SECONDS - 1, 0),
        (2**63 - 1, 0),
        (-(2**63), 0),
        (0, -1),
        (0, 1_000_000_000),
        (0, 2**31 - 1),
    ],
)
def test_an_out_of_range_occurred_at_is_a_violation_not_an_exception(
    seconds: int, nanos: int
) -> None:
    meta = _meta()
    meta.occurred_at.seconds = seconds
    meta.occurred_at.nanos = nanos
    with pytest.raises(InvalidRequest) as exc:
        convert.record_collection(_collection(meta=meta), NOW)
    assert set(_fields(exc)) == {"meta.occurred_at"}


def test_the_edges_of_datetimes_range_are_accepted() -> None:
    for seconds, nanos in [(_MAX_SECONDS, 999_999_999), (_MIN_SECONDS, 0)]:
        meta = _meta()
        meta.occurred_at.seconds, meta.occurred_at.nanos = seconds, nanos
        command = convert.record_collection(_collection(meta=meta), NOW)
        assert command.occurred_at.year in (1, 9999)


def test_an_invalid_subject_id_is_named_without_its_value() -> None:
    bad = secret("not-a-uuid")
    with pytest.raises(InvalidRequest) as exc:
        convert.record_use(
            lpb.RecordUseRequest(
                meta=_meta(), subject=cpb.SubjectRef(subject_id=bad), categories=["a"], purpose="p"
            ),
            NOW,
        )
    assert set(_fields(exc)) == {"subject.subject_id"}
    _assert_private(exc, bad)


def test_a_missing_subject_is_named() -> None:
    request = _collection()
    request.ClearField("subject")
    with pytest.raises(InvalidRequest) as exc:
        convert.record_collection(request, NOW)
    assert set(_fields(exc)) == {"subject"}


def test_an_overlong_account_id_is_named_by_its_proto_path_without_its_value() -> None:
    account = secret("account") * 60  # beyond the 4096 characters a secret may have
    with pytest.raises(InvalidRequest) as exc:
        convert.record_collection(_collection(subject=_by_account(account)), NOW)
    assert set(_fields(exc)) == {"subject.account.account_id"}
    _assert_private(exc, account)


def test_an_account_ref_needs_both_parts() -> None:
    with pytest.raises(InvalidRequest) as exc:
        convert.cancel_account(
            lpb.CancelAccountRequest(meta=_meta(), subject=_by_account("", namespace="Bad NS")),
            NOW,
        )
    assert set(_fields(exc)) == {"subject.account.namespace", "subject.account.account_id"}


def test_register_subject_names_account_fields_by_their_proto_paths() -> None:
    with pytest.raises(InvalidRequest) as exc:
        convert.register_subject(lpb.RegisterSubjectRequest(meta=_meta()), NOW)
    assert set(_fields(exc)) == {"account.namespace", "account.account_id"}


def test_register_subject_bad_guardian_id_and_birth_year_are_named() -> None:
    guardian = secret("guardian-uuid")
    with pytest.raises(InvalidRequest) as exc:
        convert.register_subject(
            lpb.RegisterSubjectRequest(
                meta=_meta(),
                account=cpb.AccountRef(namespace="app", account_id=secret("a")),
                birth_year=1800,
                guardian_subject_id=guardian,
            ),
            NOW,
        )
    assert set(_fields(exc)) == {"guardian_subject_id", "birth_year"}
    _assert_private(exc, guardian)


def test_a_nul_character_is_refused_without_echoing_the_value() -> None:
    recipient = secret("recipient") + "\x00"
    with pytest.raises(InvalidRequest) as exc:
        convert.record_share(_share(recipient=recipient, purpose="has\x00nul"), NOW)
    assert set(_fields(exc)) == {"recipient", "purpose"}
    _assert_private(exc, recipient.rstrip("\x00"))


def test_an_overlong_recipient_is_named_without_its_value() -> None:
    recipient = secret("recipient") * 10  # beyond 500 characters
    with pytest.raises(InvalidRequest) as exc:
        convert.record_share(_share(recipient=recipient), NOW)
    assert set(_fields(exc)) == {"recipient"}
    _assert_private(exc, recipient)


def test_bad_values_are_named_by_field_name_and_unsafe_keys_are_left_out() -> None:
    long_value, odd_key = secret("v") * 60, secret("key with spaces")
    with pytest.raises(InvalidRequest) as exc:
        convert.record_collection(
            _collection(values={"phone": long_value, odd_key: "x"}, purposes=["Bad Purpose"]),
            NOW,
        )
    assert set(_fields(exc)) == {"values.phone", "values", "purposes[0]"}
    _assert_private(exc, long_value, odd_key)


def test_nul_in_a_value_is_named_on_the_map() -> None:
    value = secret("v")
    with pytest.raises(InvalidRequest) as exc:
        convert.correct_data(
            lpb.CorrectDataRequest(
                meta=_meta(), subject=_by_id(), category="a", values={"f": value + "\x00"}
            ),
            NOW,
        )
    assert set(_fields(exc)) == {"values"}
    _assert_private(exc, value)


def test_empty_required_fields_are_reported_together() -> None:
    request = lpb.RecordCollectionRequest(meta=_meta(), subject=_by_id())
    with pytest.raises(InvalidRequest) as exc:
        convert.record_collection(request, NOW)
    assert set(_fields(exc)) == {"category", "source", "purposes"}


def test_a_pre_parse_problem_and_a_model_problem_are_reported_together() -> None:
    meta = _meta()
    meta.occurred_at.nanos = -5
    request = _collection(meta=meta, subject=cpb.SubjectRef(subject_id="x"), source="")
    with pytest.raises(InvalidRequest) as exc:
        convert.record_collection(request, NOW)
    assert set(_fields(exc)) == {"meta.occurred_at", "subject.subject_id", "source"}


def test_a_withdrawal_without_scope_is_named_on_purposes() -> None:
    with pytest.raises(InvalidRequest) as exc:
        convert.withdraw_consent(lpb.WithdrawConsentRequest(meta=_meta(), subject=_by_id()), NOW)
    assert set(_fields(exc)) == {"purposes"}


@pytest.mark.parametrize("number", [99, -1])
def test_an_unknown_consent_giver_is_a_violation(number: int) -> None:
    request = lpb.GiveConsentRequest(
        meta=_meta(), subject=_by_id(), purposes=["p"], categories=["a"]
    )
    request.given_by = number  # type: ignore[assignment]
    with pytest.raises(InvalidRequest) as exc:
        convert.give_consent(request, NOW)
    assert _fields(exc)["given_by"].startswith("must be one of CONSENT_GIVER_SUBJECT")


@pytest.mark.parametrize("number", [0, 99])
def test_an_unspecified_or_unknown_right_kind_is_a_violation(number: int) -> None:
    request = rpb.OpenRightsRequestRequest(meta=_meta(), subject=_by_id())
    request.kind = number  # type: ignore[assignment]
    with pytest.raises(InvalidRequest) as exc:
        convert.open_rights_request(request, NOW)
    assert set(_fields(exc)) == {"kind"}
    assert "RIGHT_KIND_ACCESS" in _fields(exc)["kind"]


def test_a_consent_withdrawal_request_without_scope_is_named_on_purposes() -> None:
    request = rpb.OpenRightsRequestRequest(
        meta=_meta(), subject=_by_id(), kind=cpb.RIGHT_KIND_CONSENT_WITHDRAWAL
    )
    with pytest.raises(InvalidRequest) as exc:
        convert.open_rights_request(request, NOW)
    assert set(_fields(exc)) == {"purposes"}


def test_an_out_of_range_received_at_is_named() -> None:
    request = rpb.OpenRightsRequestRequest(
        meta=_meta(), subject=_by_id(), kind=cpb.RIGHT_KIND_ACCESS
    )
    request.received_at.seconds = _MAX_SECONDS + 1
    with pytest.raises(InvalidRequest) as exc:
        convert.open_rights_request(request, NOW)
    assert set(_fields(exc)) == {"received_at"}


@pytest.mark.parametrize("number", [0, 7])
def test_an_unspecified_or_unknown_outcome_is_a_violation(number: int) -> None:
    request = rpb.CloseRightsRequestRequest(meta=_meta(), request_id=str(REQUEST_ID), reason="r")
    request.outcome = number  # type: ignore[assignment]
    with pytest.raises(InvalidRequest) as exc:
        convert.close_rights_request(request, NOW)
    assert set(_fields(exc)) == {"outcome"}
    assert "REQUEST_OUTCOME_FULFILLED" in _fields(exc)["outcome"]


def test_a_bad_correction_is_named_by_its_proto_fields() -> None:
    value = secret("email") * 60
    with pytest.raises(InvalidRequest) as exc:
        convert.close_rights_request(
            rpb.CloseRightsRequestRequest(
                meta=_meta(),
                request_id=str(REQUEST_ID),
                outcome=rpb.REQUEST_OUTCOME_FULFILLED,
                reason="r",
                correction_values={"email": value},
            ),
            NOW,
        )
    assert set(_fields(exc)) == {"correction_category", "correction_values.email"}
    _assert_private(exc, value)


@pytest.mark.parametrize(
    "request_id", ["", "not-a-uuid", f"{{{REQUEST_ID}}}", f"urn:uuid:{REQUEST_ID}"]
)
def test_a_missing_or_non_canonical_request_id_is_named(request_id: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        convert.pause_rights_request(
            rpb.PauseRightsRequestRequest(meta=_meta(), request_id=request_id, reason="r"), NOW
        )
    assert set(_fields(exc)) == {"request_id"}


@pytest.mark.parametrize(("days", "expected"), [(0, "Field required"), (400, "less than")])
def test_extension_days_out_of_range_are_named(days: int, expected: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        convert.extend_rights_request(
            rpb.ExtendRightsRequestRequest(
                meta=_meta(), request_id=str(REQUEST_ID), days=days, reason="r"
            ),
            NOW,
        )
    assert expected in _fields(exc)["days"]


@pytest.mark.parametrize("document_json", ["{not json", "[1, 2]", "[" * 100_000, ""])
def test_a_document_that_is_not_a_json_object_is_named(document_json: str) -> None:
    request = ppb.PublishPolicyRequest(
        meta=_meta(), document_json=document_json, effective_at=_ts(NOW)
    )
    with pytest.raises(InvalidRequest) as exc:
        convert.publish_policy(request, NOW)
    assert set(_fields(exc)) == {"document_json"}


def test_a_policy_with_an_unknown_category_in_a_recipient_class_names_the_policy_field() -> None:
    document = _seed_document()
    document["recipient_classes"][0]["categories"].append("no_such.category")
    request = ppb.PublishPolicyRequest(
        meta=_meta(), document_json=json.dumps(document), effective_at=_ts(NOW)
    )
    with pytest.raises(InvalidRequest) as exc:
        convert.publish_policy(request, NOW)
    description = _fields(exc)["document_json"]
    assert "recipient_classes.0.categories" in description
    assert "no_such.category" in description  # a policy id, not a personal value


def test_a_policy_too_large_for_every_reader_is_refused_and_names_its_field() -> None:
    """A version is re-read by every process and sent whole by GetPolicy and the audit
    stream; a document or a list of changes past the bounds would not fit one message."""
    document = _seed_document()
    first = document["categories"][0]
    document["categories"].extend(  # valid categories, each a few hundred characters
        {**first, "id": f"{first['group']}.padding{n:05d}", "name": "x" * 200} for n in range(5000)
    )
    assert convert.publish_policy(  # under the bound, the same categories are a policy
        ppb.PublishPolicyRequest(
            meta=_meta(),
            document_json=json.dumps({**document, "categories": document["categories"][:50]}),
            effective_at=_ts(NOW),
        ),
        NOW,
    )
    huge = ppb.PublishPolicyRequest(
        meta=_meta(), document_json=json.dumps(document), effective_at=_ts(NOW)
    )
    wordy = ppb.PublishPolicyRequest(
        meta=_meta(),
        document_json=json.dumps(_seed_document()),
        effective_at=_ts(NOW),
        changes=["a change"] * (c.CHANGES_MAX_LINES + 1),
    )
    for request, field in ((huge, "document_json"), (wordy, "changes")):
        with pytest.raises(InvalidRequest) as exc:
            convert.publish_policy(request, NOW)
        assert set(_fields(exc)) == {field}


def test_a_policy_without_effective_at_is_named() -> None:
    request = ppb.PublishPolicyRequest(meta=_meta(), document_json=json.dumps(_seed_document()))
    with pytest.raises(InvalidRequest) as exc:
        convert.publish_policy(request, NOW)
    assert set(_fields(exc)) == {"effective_at"}


# --- helpers for query requests -----------------------------------------------------------


def test_subject_ref_by_id_and_by_account() -> None:
    assert convert.subject_ref(_by_id(), "subject").subject_id == SUBJECT_ID
    account = secret("acct")
    ref = convert.subject_ref(_by_account(account), "subject")
    assert (ref.namespace, _secret(ref.account_id)) == ("app", account)


def test_subject_ref_violations_are_named_under_the_given_field() -> None:
    account = secret("acct") * 60
    with pytest.raises(InvalidRequest) as exc:
        convert.subject_ref(_by_account(account, namespace=""), "subject")
    assert set(_fields(exc)) == {"subject.account.namespace", "subject.account.account_id"}
    _assert_private(exc, account)
    with pytest.raises(InvalidRequest) as exc:
        convert.subject_ref(cpb.SubjectRef(), "subject")
    assert set(_fields(exc)) == {"subject"}


def test_uuid_field_accepts_the_canonical_form_in_either_case() -> None:
    assert convert.uuid_field(str(REQUEST_ID).upper(), "request_id") == REQUEST_ID
    for bad in ["", REQUEST_ID.hex, "x" * 36]:
        with pytest.raises(InvalidRequest) as exc:
            convert.uuid_field(bad, "request_id")
        assert set(_fields(exc)) == {"request_id"}


def test_instant_is_none_when_unset_and_utc_when_set() -> None:
    request = qpb.GetSubjectStateRequest(subject=_by_id())
    assert convert.instant(request, "as_of") is None
    request.as_of.seconds = 1_700_000_000
    request.as_of.nanos = 123_456_789
    at = convert.instant(request, "as_of")
    assert at == datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=UTC)
    request.as_of.nanos = -1
    with pytest.raises(InvalidRequest) as exc:
        convert.instant(request, "as_of")
    assert set(_fields(exc)) == {"as_of"}


# --- results ------------------------------------------------------------------------------


def test_recorded_carries_every_field() -> None:
    result = Recorded(
        aggregate_id=REQUEST_ID,
        subject_id=SUBJECT_ID,
        version=3,
        position=42,
        event_type="DataCollected",
        replayed=True,
    )
    assert convert.recorded(result) == cpb.Recorded(
        aggregate_id=str(REQUEST_ID),
        subject_id=str(SUBJECT_ID),
        version=3,
        position=42,
        event_type="DataCollected",
        replayed=True,
    )
    no_subject = result.model_copy(update={"subject_id": None})
    assert convert.recorded(no_subject).subject_id == ""


def test_item_outcome_of_a_refusal_carries_code_reason_clause_and_message() -> None:
    error = Refused(RefusalReason.SENSITIVE_CATEGORY_WITHOUT_CONSENT, "§4.2", "no consent")
    outcome = convert.item_outcome(ItemOutcome(error=error))
    assert outcome.WhichOneof("outcome") == "refusal"
    assert outcome.refusal == lpb.ItemRefusal(
        code="FAILED_PRECONDITION",
        reason="SENSITIVE_CATEGORY_WITHOUT_CONSENT",
        clause="§4.2",
        message=str(error),
    )


def test_item_outcome_of_an_aborted_item_and_of_a_recorded_one() -> None:
    aborted = convert.item_outcome(ItemOutcome(error=BatchAborted(2))).refusal
    assert (aborted.code, aborted.reason, aborted.clause) == ("ABORTED", "BATCH_ABORTED", "")
    result = Recorded(
        aggregate_id=SUBJECT_ID,
        subject_id=SUBJECT_ID,
        version=1,
        position=1,
        event_type="DataUsed",
        replayed=False,
    )
    done = convert.item_outcome(ItemOutcome(recorded=result))
    assert done.WhichOneof("outcome") == "recorded"
    assert done.recorded.event_type == "DataUsed"
    with pytest.raises(ValueError, match="result or an error"):
        convert.item_outcome(ItemOutcome())


def test_batch_response_answers_each_item_as_item_outcome_does_and_counts_the_recorded() -> None:
    recorded = Recorded(
        aggregate_id=SUBJECT_ID,
        subject_id=SUBJECT_ID,
        version=4,
        position=17,
        event_type="DataCollected",
        replayed=False,
    )
    outcomes = [
        ItemOutcome(recorded=recorded),
        ItemOutcome(recorded=recorded.model_copy(update={"aggregate_id": REQUEST_ID})),
        ItemOutcome(recorded=recorded.model_copy(update={"subject_id": None, "replayed": True})),
        ItemOutcome(error=Refused(RefusalReason.SENSITIVE_CATEGORY_WITHOUT_CONSENT, "§4.2", "x")),
        ItemOutcome(error=BatchAborted(3)),
    ]
    assert convert.batch_response(outcomes) == lpb.RecordBatchResponse(
        outcomes=[convert.item_outcome(o) for o in outcomes], recorded_count=3
    )
    assert convert.batch_response([]) == lpb.RecordBatchResponse()


def test_subject_state_sorts_every_set_and_converts_datetimes() -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    consent_id = uuid4()
    state = SubjectState(
        subject_id=SUBJECT_ID,
        namespace="app",
        registered_at=at,
        birth_year=None,
        minor=True,
        has_guardian=True,
        storage_region="cn",
        held={
            "z.cat": HeldCategory(
                first_at=at,
                last_at=at + timedelta(days=1),
                sources={"sdk", "app"},
                purposes={"b", "a"},
                regions={"cn"},
                collections=2,
            ),
            "a.cat": HeldCategory(
                first_at=at, last_at=at, sources={"app"}, purposes={"a"}, regions={"cn"},
                collections=1,
            ),
        },
        consents=[
            ConsentGrant(
                consent_id=consent_id,
                purposes={"y", "x"},
                categories={"z.cat", "a.cat"},
                given_at=at,
                given_by=ConsentGiver.GUARDIAN,
                policy_version="1",
            )
        ],
        withdrawals=[ConsentWithdrawal(purposes=set(), categories={"z", "a"}, at=at)],
        shared_with={"partners": {"Zeta", "Alpha"}, "affiliates": {"Beta"}},
        purposes_used={"q", "p"},
        notified_versions={"2", "1.1"},
        acknowledged_versions={"2"},
        events=7,
    )  # fmt: skip
    message = convert.subject_state(state)
    assert message.subject_id == str(SUBJECT_ID)
    assert (message.birth_year, message.minor, message.has_guardian) == (0, True, True)
    assert message.registered_at == _ts(at)
    assert [h.category for h in message.held] == ["a.cat", "z.cat"]
    z = message.held[1]
    assert (list(z.sources), list(z.purposes), z.collections) == (["app", "sdk"], ["a", "b"], 2)
    assert z.last_at.ToDatetime(tzinfo=UTC) == at + timedelta(days=1)
    assert list(message.consents[0].categories) == ["a.cat", "z.cat"]
    assert message.consents[0].given_by == cpb.CONSENT_GIVER_GUARDIAN
    assert message.consents[0].consent_id == str(consent_id)
    assert list(message.withdrawals[0].categories) == ["a", "z"]
    assert [(r.recipient_class, list(r.recipients)) for r in message.shared_with] == [
        ("affiliates", ["Beta"]),
        ("partners", ["Alpha", "Zeta"]),
    ]
    assert list(message.purposes_used) == ["p", "q"]
    assert list(message.notified_versions) == ["1.1", "2"]
    assert message.events == 7
    assert convert.subject_state(state).SerializeToString(deterministic=True) == (
        message.SerializeToString(deterministic=True)
    )


def test_subject_state_carries_closed_at_only_once_the_subject_closed() -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    state = SubjectState(
        subject_id=SUBJECT_ID,
        namespace="app",
        registered_at=at,
        birth_year=1990,
        minor=False,
        has_guardian=False,
        storage_region="cn",
    )
    closed = replace(state, erased=True, key_shredded=True, closed_at=at + timedelta(days=3))

    assert not convert.subject_state(state).HasField("closed_at")
    message = convert.subject_state(closed)
    assert message.closed_at == _ts(at + timedelta(days=3))
    assert (message.erased, message.key_shredded) == (True, True)


_RECEIVED = datetime(2026, 3, 1, tzinfo=UTC)


def _request_state(**fields: Any) -> RequestState:
    """A rights request received on 1 March 2026, due 15 days later, with `fields`."""
    return RequestState(
        request_id=REQUEST_ID,
        subject_id=SUBJECT_ID,
        received_at=_RECEIVED,
        due_at=_RECEIVED + timedelta(days=15),
        **fields,
    )


def test_rights_request_open_and_closed() -> None:
    received = _RECEIVED
    state = _request_state(
        kind=RightKind.DELETION,
        ground="no_consent",
        purposes=(),
        categories=(),
        deadline_kind="working",
    )
    message = convert.rights_request(state)
    assert (message.request_id, message.subject_id) == (str(REQUEST_ID), str(SUBJECT_ID))
    assert (message.kind, message.ground) == (cpb.RIGHT_KIND_DELETION, "no_consent")
    assert message.due_at == _ts(received + timedelta(days=15))
    assert (message.deadline_kind, message.status) == ("working", rpb.REQUEST_STATUS_OPEN)
    assert message.outcome == rpb.REQUEST_OUTCOME_UNSPECIFIED
    assert not message.HasField("closed_at")
    closed = state.model_copy(
        update={
            "status": RequestStatus.CLOSED,
            "outcome": RequestOutcome.REFUSED,
            "closed_at": received + timedelta(days=20),
            "late": True,
            "extended_days": 3,
        }
    )
    message = convert.rights_request(closed)
    assert (message.status, message.outcome) == (
        rpb.REQUEST_STATUS_CLOSED,
        rpb.REQUEST_OUTCOME_REFUSED,
    )
    assert message.closed_at == _ts(received + timedelta(days=20))
    assert (message.late, message.extended_days) == (True, 3)


def test_rights_request_carries_its_scope_as_named_and_paused_at_only_while_paused() -> None:
    received = _RECEIVED
    state = _request_state(
        kind=RightKind.CONSENT_WITHDRAWAL,
        ground=None,
        purposes=("marketing", "analytics"),
        categories=("location.gps",),
        deadline_kind="calendar",
    )
    paused = state.model_copy(
        update={"status": RequestStatus.PAUSED, "paused_at": received + timedelta(hours=5)}
    )

    message = convert.rights_request(state)
    assert (list(message.purposes), list(message.categories)) == (
        ["marketing", "analytics"],
        ["location.gps"],
    )
    assert not message.HasField("paused_at")
    while_paused = convert.rights_request(paused)
    assert while_paused.status == rpb.REQUEST_STATUS_PAUSED
    assert while_paused.paused_at == _ts(received + timedelta(hours=5))
    assert list(while_paused.purposes) == ["marketing", "analytics"]


def test_policy_version_carries_every_field() -> None:
    version = PublishedVersion(
        version="2.1",
        effective_at=datetime(2026, 5, 1, tzinfo=UTC),
        digest="d" * 64,
        text_sha256="t" * 64,
        major=True,
        changes=("one", "two"),
        published_at=datetime(2026, 4, 1, tzinfo=UTC),
    )
    assert convert.policy_version(version) == ppb.PolicyVersion(
        version="2.1",
        effective_at=_ts(datetime(2026, 5, 1, tzinfo=UTC)),
        digest="d" * 64,
        text_sha256="t" * 64,
        major=True,
        changes=["one", "two"],
        published_at=_ts(datetime(2026, 4, 1, tzinfo=UTC)),
    )


def test_history_event_keeps_sealed_values_sealed_and_leaves_out_envelope_fields() -> None:
    occurred, recorded_at = datetime(2026, 6, 1, tzinfo=UTC), datetime(2026, 6, 2, tzinfo=UTC)
    sealed = "s1:" + "A" * 40
    payload = DataCollected(
        occurred_at=occurred,
        recorded_at=recorded_at,
        principal="app-backend",
        policy_version="1",
        idempotency_key="col-1",
        subject_id=SUBJECT_ID,
        category="network_log.ip_address",
        fields=("ip",),
        source="server_logs",
        mode=CollectionMode.AUTOMATIC,
        purposes=("security_detection",),
        storage_region="cn",
        cross_border_basis=None,
        values={"ip": sealed},
        reference=None,
    )
    message = convert.history_event(5, payload)
    assert (message.version, message.event_type) == (5, "DataCollected")
    assert (message.principal, message.policy_version) == ("app-backend", "1")
    assert message.occurred_at == _ts(occurred)
    assert message.recorded_at == _ts(recorded_at)
    body = json.loads(message.payload_json)
    assert not {"occurred_at", "recorded_at", "principal", "policy_version"} & set(body)
    assert body["values"] == {"ip": sealed}
    assert body["category"] == "network_log.ip_address"


def test_timestamp_is_exact_to_the_microsecond() -> None:
    at = datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    assert convert.timestamp(at) == Timestamp(seconds=-1, nanos=999_999_000)


@pytest.mark.parametrize(
    ("table", "members"),
    [
        (CONSENT_GIVERS, ConsentGiver),
        (RIGHT_KINDS, RightKind),
        (REQUEST_OUTCOMES, RequestOutcome),
        (REQUEST_STATUSES, RequestStatus),
    ],
)
def test_every_ledger_enum_member_has_its_own_nonzero_proto_number(
    table: dict[int, Any], members: Any
) -> None:
    assert set(table.values()) == set(members)
    assert 0 not in table
    assert len(table) == len(members)


# --- property: conversion never fails in any other way -------------------------------------

_ids = st.from_regex(r"[a-z][a-z0-9_.-]{0,70}", fullmatch=True)
_noise = st.just("") | st.text(max_size=80) | st.text(min_size=400, max_size=5000)


def _mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`good` four times in five, so whole requests are often valid and both paths run."""
    return st.integers(0, 4).flatmap(lambda n: good if n else bad)


_text = _mostly(_ids, _noise)
_texts = _mostly(st.lists(_ids, min_size=1, max_size=3), st.lists(_text, max_size=4))
_timestamp = _mostly(
    st.builds(
        Timestamp,
        seconds=st.integers(_MIN_SECONDS, _MAX_SECONDS),
        nanos=st.integers(0, 999_999_999),
    ),
    st.builds(
        Timestamp, seconds=st.integers(-(2**63), 2**63 - 1), nanos=st.integers(-(2**31), 2**31 - 1)
    ),
)
_metas = _mostly(
    st.builds(cpb.CommandMeta, idempotency_key=_text, occurred_at=st.none() | _timestamp),
    st.none(),
)
_subjects = _mostly(
    st.builds(cpb.SubjectRef, subject_id=st.uuids().map(str))
    | st.builds(
        cpb.SubjectRef, account=st.builds(cpb.AccountRef, namespace=_ids, account_id=_text)
    ),
    st.none()
    | st.builds(cpb.SubjectRef, subject_id=_text)
    | st.builds(
        cpb.SubjectRef, account=st.builds(cpb.AccountRef, namespace=_text, account_id=_text)
    ),
)
_optional = _mostly(st.just(""), _text)


def _assert_command_or_invalid(convert_: Any, request: Any, command_type: type[Any]) -> None:
    try:
        command = convert_(request, NOW)
    except InvalidRequest as exc:
        violations = exc.violations
    else:
        assert isinstance(command, command_type)
        return
    assert violations
    assert all(v.field and v.description for v in violations)


@settings(max_examples=300, deadline=None)
@given(
    meta=_metas,
    subject=_subjects,
    category=_text,
    source=_text,
    purposes=_texts,
    with_consent=st.booleans(),
    values=_mostly(
        st.dictionaries(_ids, _ids, max_size=3), st.dictionaries(_text, _text, max_size=4)
    ),
    fields=_mostly(st.just([]), _texts),
    reference=_optional,
    storage_region=_optional,
    cross_border_basis=_optional,
)
def test_any_record_collection_request_converts_or_is_invalid(**fields: Any) -> None:
    request = lpb.RecordCollectionRequest(**fields)
    _assert_command_or_invalid(convert.record_collection, request, c.RecordCollection)


@settings(max_examples=300, deadline=None)
@given(
    meta=_metas,
    subject=_subjects,
    categories=_texts,
    recipient=_text,
    recipient_class=_text,
    purpose=_text,
    legal_basis=_optional,
    legal_ground=_optional,
    destination_region=_optional,
    cross_border_basis=_optional,
    anonymised=st.booleans(),
    sale=st.booleans(),
)
def test_any_record_share_request_converts_or_is_invalid(**fields: Any) -> None:
    request = lpb.RecordShareRequest(**fields)
    _assert_command_or_invalid(convert.record_share, request, c.RecordShare)


# --- property: the direct path answers exactly as the reader ------------------------------


def _seldom(bad: st.SearchStrategy[Any], good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`bad` once in ten, so about a third of whole requests are well-formed."""
    return st.integers(0, 9).flatmap(lambda n: good if n else bad)


_nul = st.text(max_size=8).map(lambda text: f"{text}\x00")
_edgy = _seldom(_noise | _nul, _ids)
_edgy_texts = _seldom(st.lists(_edgy, max_size=4), st.lists(_ids, min_size=1, max_size=3))
_edgy_values = _seldom(
    st.dictionaries(_edgy, _edgy, max_size=4), st.dictionaries(_ids, _ids, min_size=1, max_size=3)
)
_edgy_metas = _seldom(
    _metas | st.builds(cpb.CommandMeta, idempotency_key=_nul),
    st.builds(
        cpb.CommandMeta,
        idempotency_key=_ids,
        occurred_at=st.none() | st.builds(Timestamp, seconds=st.integers(0, 2**33)),
    ),
)
_edgy_subjects = _seldom(
    _subjects
    | st.builds(cpb.SubjectRef, subject_id=st.uuids().map(lambda u: u.hex))
    | st.builds(cpb.SubjectRef, account=st.builds(cpb.AccountRef, namespace=_nul, account_id=_ids)),
    st.builds(cpb.SubjectRef, subject_id=st.uuids().map(str))
    | st.builds(cpb.SubjectRef, subject_id=st.uuids().map(lambda u: str(u).upper()))
    | st.builds(cpb.SubjectRef, account=st.builds(cpb.AccountRef, namespace=_ids, account_id=_ids)),
)
_givers = _seldom(st.sampled_from([7, -1]), st.sampled_from([0, *CONSENT_GIVERS]))
_edgy_optional = _seldom(_edgy, st.just("") | _ids)


def _answers_as_the_reader(convert_: Any, request: Any) -> None:
    """Equal commands, or the very violations the reader names: a request the reader refuses
    is never built directly."""
    try:
        expected = convert_.__wrapped__(request, NOW)
    except InvalidRequest as refused:
        named = refused.violations
    else:
        assert convert_(request, NOW) == expected
        return
    with pytest.raises(InvalidRequest) as exc:
        convert_(request, NOW)
    assert exc.value.violations == named


@settings(max_examples=300, deadline=None)
@given(
    meta=_edgy_metas,
    subject=_edgy_subjects,
    category=_edgy,
    source=_edgy,
    purposes=_edgy_texts,
    with_consent=st.booleans(),
    values=st.just({}) | _edgy_values,
    fields=st.just([]) | _edgy_texts,
    reference=_edgy_optional,
    storage_region=_edgy_optional,
    cross_border_basis=_edgy_optional,
)
def test_a_collection_is_built_directly_only_as_the_reader_would(**fields: Any) -> None:
    _answers_as_the_reader(convert.record_collection, lpb.RecordCollectionRequest(**fields))


@settings(max_examples=200, deadline=None)
@given(
    meta=_edgy_metas,
    subject=_edgy_subjects,
    categories=_edgy_texts,
    purpose=_edgy,
    legal_basis=_edgy_optional,
)
def test_a_use_is_built_directly_only_as_the_reader_would(**fields: Any) -> None:
    _answers_as_the_reader(convert.record_use, lpb.RecordUseRequest(**fields))


@settings(max_examples=200, deadline=None)
@given(
    meta=_edgy_metas,
    subject=_edgy_subjects,
    categories=_edgy_texts,
    recipient=_seldom(_edgy, st.just("Acme Analytics Ltd")),
    recipient_class=_edgy,
    purpose=_edgy,
    legal_basis=_edgy_optional,
    legal_ground=_edgy_optional,
    destination_region=_edgy_optional,
    cross_border_basis=_edgy_optional,
    anonymised=st.booleans(),
    sale=st.booleans(),
)
def test_a_share_is_built_directly_only_as_the_reader_would(**fields: Any) -> None:
    _answers_as_the_reader(convert.record_share, lpb.RecordShareRequest(**fields))


@settings(max_examples=200, deadline=None)
@given(
    meta=_edgy_metas,
    subject=_edgy_subjects,
    purposes=_edgy_texts,
    categories=_edgy_texts,
    given_by=_givers,
    method=_edgy_optional,
)
def test_a_consent_is_built_directly_only_as_the_reader_would(**fields: Any) -> None:
    _answers_as_the_reader(convert.give_consent, lpb.GiveConsentRequest(**fields))


@settings(max_examples=200, deadline=None)
@given(
    meta=_edgy_metas,
    subject=_edgy_subjects,
    purposes=_seldom(st.just([]), _edgy_texts),
    categories=_seldom(st.just([]), _edgy_texts),
    withdrawn_by=_givers,
    method=_edgy_optional,
)
def test_a_withdrawal_is_built_directly_only_as_the_reader_would(**fields: Any) -> None:
    _answers_as_the_reader(convert.withdraw_consent, lpb.WithdrawConsentRequest(**fields))


@settings(max_examples=200, deadline=None)
@given(meta=_edgy_metas, subject=_edgy_subjects, category=_edgy, values=_edgy_values)
def test_a_correction_is_built_directly_only_as_the_reader_would(**fields: Any) -> None:
    _answers_as_the_reader(convert.correct_data, lpb.CorrectDataRequest(**fields))


@pytest.mark.parametrize(("member", "request_", "command_type"), _batch_members())
@pytest.mark.parametrize("subject", [_by_id(), _by_id().subject_id.upper(), _by_account("a-1")])
def test_a_well_formed_high_rate_request_never_reaches_the_reader(
    member: str,
    request_: Any,
    command_type: type[c.RecordingCommand],
    subject: cpb.SubjectRef | str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    request_.meta.CopyFrom(_meta(at=NOW - timedelta(minutes=1)))
    if isinstance(subject, str):
        request_.subject.subject_id = subject
    else:
        request_.subject.CopyFrom(subject)
    item = lpb.BatchItem(**{member: request_})
    expected = convert.batch_item(item, NOW)
    assert isinstance(expected, command_type)

    def no_reader(*_: object, **__: object) -> None:
        raise AssertionError("a well-formed request went to the reader")

    monkeypatch.setattr(Draft, "__init__", no_reader)
    assert convert.batch_item(item, NOW) == expected

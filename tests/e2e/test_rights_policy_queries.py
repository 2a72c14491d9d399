"""RightsRequestService, PolicyService and QueryService on a real server, on SQLite and
PostgreSQL: the life of a rights request and its refusals, the policy book, a person's state
and history, and the audit stream (in pages, filtered, and followed live).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from conftest import e2e_settings, start_server, stop_server
from google.protobuf import timestamp_pb2
from outcomes import assert_refused, bad_fields, log_end, nothing_written, reason_of
from scenario import secret

from server import queries
from server._pb.pdl.v1 import common_pb2 as cpb
from server._pb.pdl.v1 import ledger_service_pb2 as lpb
from server._pb.pdl.v1 import policy_service_pb2 as ppb
from server._pb.pdl.v1 import query_service_pb2 as qpb
from server._pb.pdl.v1 import rights_service_pb2 as rpb
from server.client import LedgerClient, meta, subject, timestamp

if TYPE_CHECKING:
    from conftest import Served

_GPS = "location.gps"
_IP = "network_log.ip_address"
_SEED_EFFECTIVE_AT = datetime(2023, 10, 25, 16, 0, tzinfo=UTC)  # 2023-10-26 in Asia/Shanghai


def instant(stamp: timestamp_pb2.Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


def register(client: LedgerClient, days_ago: float = 0) -> str:
    at = datetime.now(UTC) - timedelta(days=days_ago)
    request = lpb.RegisterSubjectRequest(
        meta=meta(occurred_at=at), account=cpb.AccountRef(namespace="app", account_id=secret("a"))
    )
    return client.ledger.RegisterSubject(request, **client.options).recorded.subject_id


def collect_ip(client: LedgerClient, subject_id: str, value: str | None = None) -> cpb.Recorded:
    return client.record_collection(
        subject_id, _IP, "server_logs", ["security_detection"], values={"ip": value or secret("ip")}
    )


def consent_to_gps(client: LedgerClient, subject_id: str) -> cpb.Recorded:
    return client.give_consent(subject_id, ["customer_service"], [_GPS], "device_permission")


def collect_gps(client: LedgerClient, subject_id: str) -> cpb.Recorded:
    return client.record_collection(
        subject_id,
        _GPS,
        "app",
        ["customer_service"],
        values={"fix": secret("gps")},
        with_consent=True,
    )


# --- rights requests ----------------------------------------------------------------------


def rights(client: LedgerClient, method: str, request: Any) -> Any:
    """Call a RightsRequestService method with the client's token."""
    return getattr(client.rights, method)(request, **client.options)


def open_request(
    client: LedgerClient, subject_id: str, kind: int = cpb.RIGHT_KIND_ACCESS, **fields: Any
) -> rpb.OpenRightsRequestResponse:
    return rights(
        client,
        "OpenRightsRequest",
        rpb.OpenRightsRequestRequest(meta=meta(), subject=subject(subject_id), kind=kind, **fields),
    )


def test_opening_a_request_makes_it_due_15_calendar_days_after_receipt(
    client: LedgerClient,
) -> None:
    sid = register(client, days_ago=3)
    received = (datetime.now(UTC) - timedelta(days=2)).replace(microsecond=0)

    opened = open_request(client, sid, received_at=timestamp(received))
    by_default = open_request(client, sid, kind=cpb.RIGHT_KIND_CORRECTION, categories=[_IP])

    request = opened.request
    assert opened.recorded.event_type == "RightsRequestOpened"
    assert opened.recorded.position > 0
    assert opened.recorded.replayed is False
    assert (opened.recorded.aggregate_id, opened.recorded.subject_id) == (request.request_id, sid)
    assert (request.subject_id, request.kind, request.status) == (
        sid,
        cpb.RIGHT_KIND_ACCESS,
        rpb.REQUEST_STATUS_OPEN,
    )
    assert instant(request.received_at) == received
    assert instant(request.due_at) == received + timedelta(days=15)
    assert request.deadline_kind == "calendar"
    assert not request.HasField("paused_at")
    other = by_default.request
    assert instant(other.due_at) - instant(other.received_at) == timedelta(days=15)
    assert (list(other.purposes), list(other.categories)) == ([], [_IP])
    assert abs(instant(other.received_at) - datetime.now(UTC)) < timedelta(minutes=1)
    got = client.rights.GetRightsRequest(
        rpb.GetRightsRequestRequest(request_id=request.request_id), **client.options
    ).request
    assert got == request


def test_a_request_is_extended_paused_resumed_and_closed_and_refuses_what_its_state_forbids(
    client: LedgerClient,
) -> None:
    sid = register(client)
    opened = open_request(client, sid).request
    rid = opened.request_id

    def extend(days: int) -> Any:
        return rights(
            client,
            "ExtendRightsRequest",
            rpb.ExtendRightsRequestRequest(
                meta=meta(), request_id=rid, days=days, reason="records held by a processor"
            ),
        )

    def pause() -> Any:
        return rights(
            client,
            "PauseRightsRequest",
            rpb.PauseRightsRequestRequest(meta=meta(), request_id=rid, reason="verifying identity"),
        )

    def resume() -> Any:
        return rights(
            client,
            "ResumeRightsRequest",
            rpb.ResumeRightsRequestRequest(meta=meta(), request_id=rid),
        )

    def close() -> Any:
        return rights(
            client,
            "CloseRightsRequest",
            rpb.CloseRightsRequestRequest(
                meta=meta(),
                request_id=rid,
                outcome=rpb.REQUEST_OUTCOME_REFUSED,
                reason="identity not verified",
            ),
        )

    def refused(step: Any, reason: str, clause: str) -> None:
        with nothing_written(client), pytest.raises(grpc.RpcError) as failed:
            step()
        assert_refused(failed.value, reason, clause)

    extended = extend(10)
    assert extended.recorded.event_type == "RightsRequestExtended"
    assert extended.request.extended_days == 10
    assert instant(extended.request.due_at) == instant(opened.due_at) + timedelta(days=10)
    refused(lambda: extend(6), "EXTENSION_TOO_LONG", "§6.4")

    paused = pause()
    assert paused.recorded.event_type == "RightsRequestPaused"
    assert paused.request.status == rpb.REQUEST_STATUS_PAUSED
    refused(pause, "REQUEST_PAUSED", "§6")
    refused(close, "REQUEST_PAUSED", "§6")

    resumed = resume()
    assert resumed.recorded.event_type == "RightsRequestResumed"
    assert resumed.request.status == rpb.REQUEST_STATUS_OPEN
    moved = instant(resumed.request.due_at) - instant(extended.request.due_at)
    assert timedelta(0) <= moved < timedelta(minutes=1)
    refused(resume, "REQUEST_NOT_PAUSED", "§6")
    before_receipt = rpb.CloseRightsRequestRequest(
        meta=meta(occurred_at=instant(opened.received_at) - timedelta(days=1)),
        request_id=rid,
        outcome=rpb.REQUEST_OUTCOME_REFUSED,
        reason="identity not verified",
    )
    refused(
        lambda: rights(client, "CloseRightsRequest", before_receipt),
        "REQUEST_OUT_OF_ORDER",
        "§6.4",
    )

    closed = close()
    assert closed.recorded.event_type == "RightsRequestClosed"
    state = closed.request
    assert (state.status, state.outcome, state.late) == (
        rpb.REQUEST_STATUS_CLOSED,
        rpb.REQUEST_OUTCOME_REFUSED,
        False,
    )
    assert state.HasField("closed_at")
    for step in (close, lambda: extend(1), pause):
        refused(step, "REQUEST_CLOSED", "§6")
    refused(resume, "REQUEST_NOT_PAUSED", "§6")

    positions = [r.recorded.position for r in (extended, paused, resumed, closed)]
    assert positions == sorted(positions)
    got = client.rights.GetRightsRequest(
        rpb.GetRightsRequestRequest(request_id=rid), **client.options
    )
    assert got.request == state


def test_a_request_answers_with_the_scope_it_named_and_its_pause_instant_only_while_paused(
    client: LedgerClient,
) -> None:
    sid = register(client)
    purposes, categories = ["security_detection", "customer_service"], [_GPS]
    opened = open_request(
        client,
        sid,
        kind=cpb.RIGHT_KIND_CONSENT_WITHDRAWAL,
        purposes=purposes,
        categories=categories,
    )
    rid = opened.request.request_id
    paused_at = datetime.now(UTC)

    paused = rights(
        client,
        "PauseRightsRequest",
        rpb.PauseRightsRequestRequest(
            meta=meta(occurred_at=paused_at), request_id=rid, reason="verifying identity"
        ),
    )
    while_paused = client.rights.GetRightsRequest(
        rpb.GetRightsRequestRequest(request_id=rid), **client.options
    ).request
    resumed = rights(
        client, "ResumeRightsRequest", rpb.ResumeRightsRequestRequest(meta=meta(), request_id=rid)
    )
    extended = rights(
        client,
        "ExtendRightsRequest",
        rpb.ExtendRightsRequestRequest(meta=meta(), request_id=rid, days=1, reason="more time"),
    )
    closed = rights(
        client,
        "CloseRightsRequest",
        rpb.CloseRightsRequestRequest(
            meta=meta(), request_id=rid, outcome=rpb.REQUEST_OUTCOME_REFUSED, reason="not verified"
        ),
    )
    got = client.rights.GetRightsRequest(
        rpb.GetRightsRequestRequest(request_id=rid), **client.options
    ).request

    answers = [opened.request, paused.request, while_paused, resumed.request]
    answers += [extended.request, closed.request, got]
    assert [(list(a.purposes), list(a.categories)) for a in answers] == [
        (purposes, categories)
    ] * len(answers)
    assert paused.request.status == rpb.REQUEST_STATUS_PAUSED
    assert instant(paused.request.paused_at) == paused_at
    assert while_paused == paused.request
    assert [a.HasField("paused_at") for a in answers] == [False, True, True, *[False] * 4]


def test_a_consent_withdrawal_request_stops_what_rests_on_that_consent_at_once(
    client: LedgerClient,
) -> None:
    sid = register(client)
    consent_to_gps(client, sid)
    collect_gps(client, sid)
    opened = open_request(
        client,
        sid,
        kind=cpb.RIGHT_KIND_CONSENT_WITHDRAWAL,
        purposes=["customer_service"],
        categories=[_GPS],
    )

    with nothing_written(client), pytest.raises(grpc.RpcError) as refused:
        collect_gps(client, sid)  # before anyone closed the request

    assert_refused(refused.value, "CONSENT_WITHDRAWN", "§6.5")
    withdrawn = client.history(sid)[-1]
    assert withdrawn.event_type == "ConsentWithdrawn"
    payload = json.loads(withdrawn.payload_json)
    assert payload["request_id"] == opened.request.request_id
    assert instant(withdrawn.occurred_at) == instant(opened.request.received_at)


def test_fulfilling_a_deletion_request_erases_the_subject_and_shreds_its_key(
    client: LedgerClient,
) -> None:
    sid = register(client)
    collect_ip(client, sid)
    consent_to_gps(client, sid)
    collect_gps(client, sid)
    opened = open_request(client, sid, kind=cpb.RIGHT_KIND_DELETION, ground="no_consent")

    closed = rights(
        client,
        "CloseRightsRequest",
        rpb.CloseRightsRequestRequest(
            meta=meta(),
            request_id=opened.request.request_id,
            outcome=rpb.REQUEST_OUTCOME_FULFILLED,
            reason="erased on request",
        ),
    )

    assert closed.recorded.event_type == "RightsRequestClosed"
    assert closed.request.outcome == rpb.REQUEST_OUTCOME_FULFILLED
    state = client.subject_state(sid)
    assert (state.erased, state.key_shredded, list(state.held)) == (True, True, [])
    assert [e.event_type for e in client.history(sid)][-2:] == ["DataErased", "KeyShredded"]
    erased = client.history(sid, "DataErased")[0]
    assert json.loads(erased.payload_json)["request_id"] == opened.request.request_id


def test_a_deletion_request_without_a_declared_ground_is_refused_under_clause_6_3(
    client: LedgerClient,
) -> None:
    sid = register(client)

    for ground in ("", "because"):
        with nothing_written(client), pytest.raises(grpc.RpcError) as failed:
            open_request(client, sid, kind=cpb.RIGHT_KIND_DELETION, ground=ground)
        assert_refused(failed.value, "ERASURE_GROUND_NOT_DECLARED", "§6.3")


def test_an_unknown_request_id_is_not_found_and_a_malformed_one_invalid(
    client: LedgerClient,
) -> None:
    unknown = str(uuid.uuid4())
    calls = [
        ("GetRightsRequest", lambda rid: rpb.GetRightsRequestRequest(request_id=rid)),
        (
            "ExtendRightsRequest",
            lambda rid: rpb.ExtendRightsRequestRequest(
                meta=meta(), request_id=rid, days=1, reason="more time"
            ),
        ),
        (
            "PauseRightsRequest",
            lambda rid: rpb.PauseRightsRequestRequest(meta=meta(), request_id=rid, reason="wait"),
        ),
        (
            "ResumeRightsRequest",
            lambda rid: rpb.ResumeRightsRequestRequest(meta=meta(), request_id=rid),
        ),
        (
            "CloseRightsRequest",
            lambda rid: rpb.CloseRightsRequestRequest(
                meta=meta(), request_id=rid, outcome=rpb.REQUEST_OUTCOME_REFUSED, reason="no"
            ),
        ),
    ]

    for method, build in calls:
        with nothing_written(client), pytest.raises(grpc.RpcError) as missing:
            rights(client, method, build(unknown))
        assert missing.value.code() is grpc.StatusCode.NOT_FOUND, method
        assert reason_of(missing.value) == "RIGHTS_REQUEST_NOT_FOUND"
        with nothing_written(client), pytest.raises(grpc.RpcError) as invalid:
            rights(client, method, build("not-a-request-id"))
        assert bad_fields(invalid.value) == ["request_id"], method


def test_opening_a_request_for_an_unknown_subject_is_not_found(client: LedgerClient) -> None:
    with nothing_written(client), pytest.raises(grpc.RpcError) as missing:
        open_request(client, str(uuid.uuid4()))

    assert missing.value.code() is grpc.StatusCode.NOT_FOUND
    assert reason_of(missing.value) == "SUBJECT_NOT_FOUND"


def test_opening_a_request_of_no_kind_is_invalid_and_names_kind(client: LedgerClient) -> None:
    sid = register(client)

    for kind in (cpb.RIGHT_KIND_UNSPECIFIED, 42):
        with nothing_written(client), pytest.raises(grpc.RpcError) as invalid:
            open_request(client, sid, kind=kind)
        assert bad_fields(invalid.value) == ["kind"]


def test_a_reader_may_read_a_request_but_not_open_one(served: Served) -> None:
    with served.client() as client, served.client("reader") as reader:
        sid = register(client)
        opened = open_request(client, sid).request

        got = reader.rights.GetRightsRequest(
            rpb.GetRightsRequestRequest(request_id=opened.request_id), **reader.options
        )
        with nothing_written(client), pytest.raises(grpc.RpcError) as denied:
            open_request(reader, sid)

        assert got.request == opened
        assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED


# --- the policy book ----------------------------------------------------------------------


def get_policy(client: LedgerClient, at: datetime | None = None) -> ppb.GetPolicyResponse:
    request = ppb.GetPolicyRequest(at=timestamp(at)) if at else ppb.GetPolicyRequest()
    return client.policy.GetPolicy(request, **client.options)


def publish(client: LedgerClient, document: dict[str, Any] | str, effective: datetime) -> Any:
    text = document if isinstance(document, str) else json.dumps(document)
    request = ppb.PublishPolicyRequest(
        meta=meta(),
        document_json=text,
        effective_at=timestamp(effective),
        major=True,
        changes=["clarified the retention of network logs"],
    )
    return client.policy.PublishPolicy(request, **client.options)


def test_the_seed_policy_is_in_force_now_and_none_before_2023_10_26(
    client: LedgerClient,
) -> None:
    now = get_policy(client)
    before = _SEED_EFFECTIVE_AT - timedelta(days=1)

    with pytest.raises(grpc.RpcError) as none:
        get_policy(client, before)

    assert now.version.version == "1"
    assert instant(now.version.effective_at) == _SEED_EFFECTIVE_AT
    assert len(now.version.digest) == 64
    document = json.loads(now.document_json)
    assert (document["policy_id"], document["version"]) == ("sossen-privacy-policy", "1")
    assert get_policy(client, _SEED_EFFECTIVE_AT).version == now.version
    assert_refused(none.value, "NO_POLICY_IN_FORCE", "§8")


def test_an_admin_publishes_a_new_version_that_takes_effect_tomorrow(served: Served) -> None:
    with served.client("admin") as admin:
        document = json.loads(get_policy(admin).document_json)
        document["version"] = "2"
        tomorrow = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)

        published = publish(admin, document, tomorrow)

        assert published.recorded.event_type == "PolicyPublished"
        assert published.recorded.position > 0
        assert published.recorded.replayed is False
        version = published.version
        assert (version.version, version.major, list(version.changes)) == (
            "2",
            True,
            ["clarified the retention of network logs"],
        )
        assert instant(version.effective_at) == tomorrow
        assert get_policy(admin).version.version == "1"
        later = get_policy(admin, tomorrow + timedelta(hours=1))
        assert later.version == version
        assert json.loads(later.document_json)["version"] == "2"


def test_publishing_needs_the_admin_scope(served: Served) -> None:
    with served.client("everything") as client:
        document = json.loads(get_policy(client).document_json)
        document["version"] = "2"
        tomorrow = datetime.now(UTC) + timedelta(days=1)

        for who in ("recorder", "reader", "auditor"):
            with served.client(who) as other:
                with nothing_written(client), pytest.raises(grpc.RpcError) as denied:
                    publish(other, document, tomorrow)
                assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED, who


def test_an_invalid_policy_document_is_invalid_and_names_document_json(served: Served) -> None:
    with served.client("admin") as admin, served.client() as client:
        tomorrow = datetime.now(UTC) + timedelta(days=1)

        for document_json in ["{not json", "[]", '"a string"', '{"version": "2"}', ""]:
            with nothing_written(client), pytest.raises(grpc.RpcError) as invalid:
                publish(admin, document_json, tomorrow)
            assert bad_fields(invalid.value) == ["document_json"], document_json


def test_a_version_not_newer_or_taking_effect_in_the_past_is_refused_under_clause_8(
    served: Served,
) -> None:
    with served.client("admin") as admin, served.client() as client:
        document = json.loads(get_policy(admin).document_json)
        tomorrow = datetime.now(UTC) + timedelta(days=1)
        in_a_week = tomorrow + timedelta(days=6)
        publish(admin, {**document, "version": "2"}, in_a_week)

        for version, effective, reason in [
            ("1", tomorrow, "POLICY_VERSION_NOT_NEWER"),
            ("0.9", tomorrow, "POLICY_VERSION_NOT_NEWER"),
            ("3", datetime.now(UTC) - timedelta(days=1), "POLICY_RETROACTIVE"),
            ("3", tomorrow, "POLICY_EFFECTIVE_BEFORE_SCHEDULED"),
        ]:
            with nothing_written(client), pytest.raises(grpc.RpcError) as refused:
                publish(admin, {**document, "version": version}, effective)
            assert_refused(refused.value, reason, "§8")


# --- a person's state and history ---------------------------------------------------------


def four_events(client: LedgerClient) -> tuple[str, list[qpb.HistoryEvent]]:
    """A person registered, with an IP collected, GPS consented to and GPS collected."""
    sid = register(client)
    collect_ip(client, sid)
    consent_to_gps(client, sid)
    collect_gps(client, sid)
    events = client.history(sid)
    assert [e.version for e in events] == [1, 2, 3, 4]
    return sid, events


def state_at(
    client: LedgerClient, subject_id: str, as_of: timestamp_pb2.Timestamp
) -> qpb.SubjectState:
    request = qpb.GetSubjectStateRequest(subject=subject(subject_id), as_of=as_of)
    return client.query.GetSubjectState(request, **client.options).state


def test_a_subjects_state_is_read_now_and_as_the_ledger_held_it_at_an_instant(
    client: LedgerClient,
) -> None:
    sid, events = four_events(client)

    now = client.subject_state(sid)
    then = state_at(client, sid, events[1].recorded_at)

    assert now.events == 4
    assert [h.category for h in now.held] == [_GPS, _IP]
    assert len(now.consents) == 1
    assert then.events == 2
    assert [h.category for h in then.held] == [_IP]
    assert list(then.consents) == []
    assert then.registered_at == now.registered_at
    before = timestamp(instant(events[0].recorded_at) - timedelta(seconds=1))
    with pytest.raises(grpc.RpcError) as missing:
        state_at(client, sid, before)
    assert missing.value.code() is grpc.StatusCode.NOT_FOUND
    soon = state_at(client, sid, timestamp(datetime.now(UTC) + timedelta(minutes=1)))
    assert soon.events == now.events  # within the clocks' tolerance: as recorded so far
    with pytest.raises(grpc.RpcError) as future:
        state_at(client, sid, timestamp(datetime.now(UTC) + timedelta(hours=1)))
    assert bad_fields(future.value) == ["as_of"]


def erase(
    client: LedgerClient, subject_id: str, *categories: str, at: datetime | None = None
) -> cpb.Recorded:
    request = lpb.EraseSubjectRequest(
        meta=meta(occurred_at=at),
        subject=subject(subject_id),
        ground="retention_expired",
        categories=list(categories),
    )
    return client.ledger.EraseSubject(request, **client.options).recorded


def test_a_subject_is_closed_at_the_instant_of_its_erasure_and_open_before_it(
    client: LedgerClient,
) -> None:
    sid = register(client)
    collect_ip(client, sid)
    consent_to_gps(client, sid)
    collect_gps(client, sid)
    erase(client, sid, _GPS)
    partly = client.subject_state(sid)
    erased_at = datetime.now(UTC)

    erase(client, sid, at=erased_at)

    now = client.subject_state(sid)
    assert (partly.erased, partly.HasField("closed_at")) == (False, False)
    assert now.erased
    assert instant(now.closed_at) == erased_at
    [partial, full] = client.history(sid, "DataErased")
    assert not state_at(client, sid, partial.recorded_at).HasField("closed_at")
    assert instant(state_at(client, sid, full.recorded_at).closed_at) == erased_at


def test_a_cancelled_account_is_closed_at_the_instant_of_its_cancellation(
    client: LedgerClient,
) -> None:
    sid = register(client)
    collect_ip(client, sid)
    cancelled_at = datetime.now(UTC)

    client.ledger.CancelAccount(
        lpb.CancelAccountRequest(meta=meta(occurred_at=cancelled_at), subject=subject(sid)),
        **client.options,
    )

    state = client.subject_state(sid)
    assert (state.cancelled, state.erased) == (True, True)
    assert instant(state.closed_at) == cancelled_at
    [cancelled] = client.history(sid, "AccountCancelled")
    before = timestamp(instant(cancelled.recorded_at) - timedelta(microseconds=1))
    assert not state_at(client, sid, before).HasField("closed_at")


def history_pages(
    client: LedgerClient, subject_id: str, **fields: Any
) -> list[list[qpb.HistoryEvent]]:
    """Every page of a person's history, following next_page_token."""
    pages, token = [], ""
    while True:
        request = qpb.ListSubjectHistoryRequest(
            subject=subject(subject_id), page_token=token, **fields
        )
        page = client.query.ListSubjectHistory(request, **client.options)
        pages.append(list(page.events))
        token = page.next_page_token
        if not token:
            return pages


def test_history_is_paged_one_event_at_a_time_through_next_page_token(
    client: LedgerClient,
) -> None:
    sid, events = four_events(client)

    pages = history_pages(client, sid, page_size=1)

    assert [len(p) for p in pages] == [1, 1, 1, 1]
    assert [p[0] for p in pages] == events
    assert [e.event_type for e in events] == [
        "SubjectRegistered",
        "DataCollected",
        "ConsentGiven",
        "DataCollected",
    ]
    assert {e.principal for e in events} == {"everything"}
    assert {e.policy_version for e in events} == {"1"}


def test_history_is_filtered_by_event_type_and_by_recording_time(client: LedgerClient) -> None:
    sid, events = four_events(client)

    collected = history_pages(client, sid, page_size=1, event_types=["DataCollected"])
    window = history_pages(
        client, sid, recorded_from=events[1].recorded_at, recorded_to=events[3].recorded_at
    )
    from_third = history_pages(client, sid, recorded_from=events[2].recorded_at)

    assert [[e.version for e in p] for p in collected] == [[2], [4]]
    assert [[e.version for e in p] for p in window] == [[2, 3]]
    assert [[e.version for e in p] for p in from_third] == [[3, 4]]


def test_history_bounds_between_two_microseconds_round_up(client: LedgerClient) -> None:
    """Events are recorded to the microsecond: one recorded at t is before t + 500 ns."""
    sid, events = four_events(client)

    def half_past(event: qpb.HistoryEvent) -> Any:
        bound = type(event.recorded_at)()
        bound.CopyFrom(event.recorded_at)
        bound.nanos += 500
        return bound

    window = history_pages(
        client, sid, recorded_from=half_past(events[0]), recorded_to=half_past(events[2])
    )
    last = timestamp_pb2.Timestamp(seconds=253_402_300_799, nanos=999_999_500)  # 9999-12-31

    assert [[e.version for e in p] for p in window] == [[2, 3]]
    assert [len(p) for p in history_pages(client, sid, recorded_to=last)] == [4]


def test_a_bad_history_request_is_invalid_and_names_its_field(client: LedgerClient) -> None:
    sid = register(client)

    for fields, field in [
        ({"event_types": ["DataCollected", "DataStolen"]}, "event_types"),
        ({"event_types": ["RightsRequestOpened"]}, "event_types"),  # the request's own stream
        ({"event_types": ["PolicyPublished"]}, "event_types"),
        ({"event_types": ["Created"]}, "event_types"),  # the library's, never recorded
        ({"event_types": ["Event"]}, "event_types"),
        ({"page_size": 1001}, "page_size"),
        ({"page_size": -1}, "page_size"),
        ({"page_token": "not-a-token"}, "page_token"),
        ({"page_token": "2"}, "page_token"),  # a bare version is not a token
        (
            {
                "recorded_from": timestamp(datetime.now(UTC)),
                "recorded_to": timestamp(datetime.now(UTC) - timedelta(days=1)),
            },
            "recorded_to",
        ),
    ]:
        with pytest.raises(grpc.RpcError) as invalid:
            client.query.ListSubjectHistory(
                qpb.ListSubjectHistoryRequest(subject=subject(sid), **fields), **client.options
            )
        assert bad_fields(invalid.value) == [field], fields


def test_a_history_page_token_is_refused_by_another_person_or_other_filters(
    client: LedgerClient,
) -> None:
    first, _ = four_events(client)
    other, _ = four_events(client)
    token = client.query.ListSubjectHistory(
        qpb.ListSubjectHistoryRequest(subject=subject(first), page_size=1), **client.options
    ).next_page_token

    for ref, fields in [(other, {}), (first, {"event_types": ["DataCollected"]})]:
        with pytest.raises(grpc.RpcError) as invalid:
            client.query.ListSubjectHistory(
                qpb.ListSubjectHistoryRequest(subject=subject(ref), page_token=token, **fields),
                **client.options,
            )
        assert bad_fields(invalid.value) == ["page_token"]


def test_reading_an_unknown_subject_is_not_found(client: LedgerClient) -> None:
    unknown = subject(str(uuid.uuid4()))

    for call in (
        lambda: client.query.GetSubjectState(
            qpb.GetSubjectStateRequest(subject=unknown), **client.options
        ),
        lambda: client.query.ListSubjectHistory(
            qpb.ListSubjectHistoryRequest(subject=unknown), **client.options
        ),
    ):
        with pytest.raises(grpc.RpcError) as missing:
            call()
        assert missing.value.code() is grpc.StatusCode.NOT_FOUND
        assert reason_of(missing.value) == "SUBJECT_NOT_FOUND"


# --- the audit stream ---------------------------------------------------------------------


def audit_pages(client: LedgerClient, **fields: Any) -> list[qpb.StreamAuditLogResponse]:
    request = qpb.StreamAuditLogRequest(**fields)
    return list(client.query.StreamAuditLog(request, **client.options))


def test_the_audit_stream_sends_pages_of_stored_events_from_a_position(served: Served) -> None:
    with served.client() as client, served.client("auditor") as auditor:
        values = [secret("ip") for _ in range(5)]
        sid = register(client)
        for value in values:
            collect_ip(client, sid, value)
        start = log_end(client) - 4

        pages = audit_pages(auditor, from_position=start, page_size=2)
        [whole] = audit_pages(auditor)

        assert [len(p.events) for p in pages] == [2, 2, 1]
        events = [e for p in pages for e in p.events]
        positions = [e.position for e in events]
        assert positions[0] == start
        assert positions == sorted(set(positions))
        assert [p.next_position for p in pages] == [p.events[-1].position + 1 for p in pages]
        assert {e.event_type for e in events} == {"DataCollected"}
        assert {e.aggregate_id for e in events} == {sid}
        assert [e.version for e in events] == [2, 3, 4, 5, 6]
        stored = b"".join(e.stored_state for e in events)
        assert all(value.encode() not in stored for value in values)
        assert all(json.loads(e.stored_state) for e in events)
        assert [e.position for e in whole.events][-5:] == positions
        assert whole.events[0].position == 1


def test_the_audit_stream_is_filtered_by_event_type(client: LedgerClient) -> None:
    sid, _ = four_events(client)

    pages = audit_pages(client, event_types=["DataCollected", "ConsentGiven"], page_size=1000)

    events = [e for p in pages for e in p.events]
    assert [(e.event_type, e.version) for e in events] == [
        ("DataCollected", 2),
        ("ConsentGiven", 3),
        ("DataCollected", 4),
    ]
    assert {e.aggregate_id for e in events} == {sid}
    for unknown in ("DataStolen", "Created", "Event"):  # the last two: the library's own
        with pytest.raises(grpc.RpcError) as invalid:
            audit_pages(client, event_types=[unknown])
        assert bad_fields(invalid.value) == ["event_types"]


def test_the_audit_stream_needs_the_audit_scope(served: Served) -> None:
    for who in ("reader", "recorder"):
        with served.client(who) as other, pytest.raises(grpc.RpcError) as denied:
            audit_pages(other)
        assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED, who
        assert reason_of(denied.value) == "PERMISSION_DENIED"


def test_followed_audit_streams_beyond_the_servers_most_are_resource_exhausted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each follower polls the store on the threads every read shares: a server tails a
    bounded number at once, and a stream read without follow is never turned away."""
    monkeypatch.setattr(queries, "MOST_FOLLOWERS", 2)
    served = start_server(e2e_settings(tmp_path, "sqlite"))
    try:
        with served.client("auditor") as auditor:

            def follow() -> Any:
                return auditor.query.StreamAuditLog(
                    qpb.StreamAuditLogRequest(follow=True),
                    metadata=auditor.options["metadata"],
                    timeout=30,
                )

            held = [follow(), follow()]
            for call in held:
                next(iter(call))  # each is tailing the log now
            with pytest.raises(grpc.RpcError) as third:
                next(iter(follow()))
            assert third.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert reason_of(third.value) == "TOO_MANY_FOLLOWERS"
            assert audit_pages(auditor)  # without follow: served
            held[0].cancel()
            deadline = time.monotonic() + 10
            while True:  # the cancelled one's place is free once the server has seen it go
                try:
                    again = follow()
                    next(iter(again))
                    break
                except grpc.RpcError as error:
                    if error.code() is not grpc.StatusCode.RESOURCE_EXHAUSTED:
                        raise
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
            for call in (held[1], again):
                call.cancel()
    finally:
        stop_server(served)


def test_a_followed_audit_stream_delivers_new_events_until_cancelled(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pdl.access")
    with served.client() as client, served.client("auditor") as auditor:
        start = log_end(client) + 1
        call = auditor.query.StreamAuditLog(
            qpb.StreamAuditLogRequest(from_position=start, follow=True),
            metadata=auditor.options["metadata"],
            timeout=30,
        )
        seen: list[qpb.AuditEvent] = []
        ended: list[grpc.StatusCode] = []

        def follow() -> None:
            try:
                for page in call:
                    seen.extend(page.events)
            except grpc.RpcError as error:
                ended.append(error.code())

        follower = threading.Thread(target=follow, daemon=True)
        follower.start()
        sid = register(client)
        recorded = [collect_ip(client, sid) for _ in range(3)]
        wanted = {r.position for r in recorded}
        deadline = time.monotonic() + 10
        while not wanted <= {e.position for e in seen} and time.monotonic() < deadline:
            time.sleep(0.02)

        call.cancel()
        follower.join(10)

        assert not follower.is_alive()
        assert ended == [grpc.StatusCode.CANCELLED]
        assert [e.event_type for e in seen] == ["SubjectRegistered", *["DataCollected"] * 3]
        assert seen[0].position == start
        assert collect_ip(client, sid).position > max(wanted)
    assert followed_stream_status(caplog) == "CANCELLED"


def followed_stream_status(caplog: pytest.LogCaptureFixture) -> str:
    """The status the server logged for the auditor's audit stream, once it has noticed the
    cancellation and written its line."""
    deadline = time.monotonic() + 5
    while True:
        calls = [json.loads(r.getMessage()) for r in caplog.records if r.name == "pdl.access"]
        followed = [
            c["status"]
            for c in calls
            if c["principal"] == "auditor" and c["method"].endswith("/StreamAuditLog")
        ]
        if followed or time.monotonic() > deadline:
            assert len(followed) == 1
            return str(followed[0])
        time.sleep(0.01)

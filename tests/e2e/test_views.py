"""ViewService and PolicyNoticeService on a real server, on SQLite and PostgreSQL: each view read
after the write it must see (read-your-writes), revealing values only with the `reveal` scope,
the notification stream and acknowledgements, and every refusal: UNAUTHENTICATED,
PERMISSION_DENIED, INVALID_ARGUMENT with field violations, NOT_FOUND, and UNAVAILABLE
VIEW_BEHIND when the views cannot reach the asked position in time (OUT_OF_RANGE when no write
reached it).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf.message import Message
from outcomes import assert_refused, bad_fields, log_end, nothing_written, reason_of
from scenario import secret

from ledger.policy import load_seed_policy
from server._pb.pdl.v1 import common_pb2 as cpb
from server._pb.pdl.v1 import ledger_service_pb2 as lpb
from server._pb.pdl.v1 import notice_service_pb2 as npb
from server._pb.pdl.v1 import policy_service_pb2 as ppb
from server._pb.pdl.v1 import rights_service_pb2 as rpb
from server._pb.pdl.v1 import view_service_pb2 as vpb
from server.client import LedgerClient, meta, refusal_of, subject, timestamp

if TYPE_CHECKING:
    from conftest import Served

_IP = "network_log.ip_address"
_GPS = "location.gps"
_NO_SUCH_SUBJECT = "00000000-0000-4000-8000-000000000000"


def register(client: LedgerClient, account: str | None = None, days_ago: float = 0) -> str:
    request = lpb.RegisterSubjectRequest(
        meta=meta(occurred_at=datetime.now(UTC) - timedelta(days=days_ago)),
        account=cpb.AccountRef(namespace="app", account_id=account or secret("account")),
    )
    return client.ledger.RegisterSubject(request, **client.options).recorded.subject_id


def collect_ip(client: LedgerClient, sid: str, ip: str, days_ago: float = 0) -> cpb.Recorded:
    at = datetime.now(UTC) - timedelta(days=days_ago)
    request = lpb.RecordCollectionRequest(
        meta=meta(occurred_at=at),
        subject=subject(sid),
        category=_IP,
        source="server_logs",
        purposes=["security_detection"],
        values={"ip": ip},
    )
    return client.ledger.RecordCollection(request, **client.options).recorded


def view_call(client: LedgerClient, method: str, request: Message, **options: Any) -> Any:
    return getattr(client.views, method)(request, **{**client.options, **options})


def publish_v2(client: LedgerClient) -> cpb.Recorded:
    document = load_seed_policy().model_copy(update={"version": "2"}).model_dump_json()
    request = ppb.PublishPolicyRequest(
        meta=meta(),
        document_json=document,
        effective_at=timestamp(datetime.now(UTC) + timedelta(days=30)),
        major=True,
        changes=["clarified wording"],
    )
    return client.policy.PublishPolicy(request, **client.options).recorded


def _every_page(client: LedgerClient, method: str, request: Any) -> list[Any]:
    """Every row of a ViewService list, page by page (the rows are the answer's first field)."""
    rows: list[Any] = []
    while True:
        page = getattr(client.views, method)(request, **client.options)
        rows.extend(getattr(page, page.DESCRIPTOR.fields[0].name))
        if not page.next_page_token:
            return rows
        request.page_token = page.next_page_token


# --- read-your-writes -----------------------------------------------------------------------


def test_a_view_read_with_the_position_of_a_write_sees_that_write(client: LedgerClient) -> None:
    sid = register(client)
    for _ in range(3):
        written = collect_ip(client, sid, secret("ip"))
        consented = client.give_consent(sid, ["customer_service"], [_GPS], "device_permission")

        view = client.subject_view(sid, min_position=written.position)
        grants = client.consents(sid, min_position=consented.position)

        (held,) = view.categories
        assert held.category == _IP
        assert view.last_position >= written.position
        assert grants[-1].position == consented.position
    assert held.collections == 3
    assert len(grants) == 3
    register_rows = client.processing_register(min_position=written.position, category=_IP)
    assert any(r.activity == vpb.PROCESSING_ACTIVITY_COLLECTION for r in register_rows)


def test_get_subject_view_answers_the_position_the_views_had_reached(
    client: LedgerClient,
) -> None:
    sid = register(client)
    written = collect_ip(client, sid, secret("ip"))

    answer = client.views.GetSubjectView(
        vpb.GetSubjectViewRequest(subject=subject(sid), min_position=written.position),
        **client.options,
    )

    assert answer.position >= written.position
    assert answer.view.subject_id == sid


def test_a_position_the_views_cannot_reach_in_time_is_unavailable_view_behind(
    serve_with: Callable[..., Served],
) -> None:
    served = serve_with(projections="external")  # and no worker: the views stay where they are
    with served.client() as client:
        sid = register(client)
        written = collect_ip(client, sid, secret("ip")).position
        started = time.monotonic()

        with pytest.raises(grpc.RpcError) as behind:
            view_call(
                client,
                "GetSubjectView",
                vpb.GetSubjectViewRequest(subject=subject(sid), min_position=written),
                timeout=1.0,
            )

    assert behind.value.code() is grpc.StatusCode.UNAVAILABLE
    info = refusal_of(behind.value)
    assert info is not None
    assert (info.reason, info.domain) == ("VIEW_BEHIND", "pdl")
    assert int(info.metadata["position"]) == written
    assert 0 <= int(info.metadata["reached"]) < written
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize("past_the_end", [1, 2**63 - 1])
def test_a_position_no_write_reached_is_out_of_range_at_once(
    client: LedgerClient, past_the_end: int
) -> None:
    """Waiting for it could only end in VIEW_BEHIND, which says "retry"."""
    sid = register(client)
    end = log_end(client)
    position = min(end + past_the_end, 2**63 - 1)
    started = time.monotonic()

    with pytest.raises(grpc.RpcError) as beyond:
        view_call(
            client,
            "GetSubjectView",
            vpb.GetSubjectViewRequest(subject=subject(sid), min_position=position),
            timeout=30,
        )

    assert beyond.value.code() is grpc.StatusCode.OUT_OF_RANGE
    info = refusal_of(beyond.value)
    assert info is not None
    assert (info.reason, info.domain) == ("POSITION_NOT_WRITTEN", "pdl")
    assert int(info.metadata["position"]) == position
    assert int(info.metadata["written"]) >= end
    assert time.monotonic() - started < 5


def test_the_server_bounds_the_wait_for_views_by_view_wait_seconds(
    serve_with: Callable[..., Served],
) -> None:
    served = serve_with(view_wait_seconds=0.3, projections="external")
    with served.client() as client:
        written = collect_ip(client, register(client), secret("ip")).position
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as behind:
            view_call(
                client,
                "ListPolicyVersions",
                vpb.ListPolicyVersionsRequest(min_position=written),
                timeout=30,
            )
        assert behind.value.code() is grpc.StatusCode.UNAVAILABLE
        assert reason_of(behind.value) == "VIEW_BEHIND"
        assert time.monotonic() - started < 5


# --- a person's view and revealing values ---------------------------------------------------


def test_a_subject_view_names_fields_without_values_unless_revealed(served: Served) -> None:
    account, ip = secret("account"), secret("ip")
    with served.client() as client, served.client("reader") as reader:
        sid = register(client, account)
        written = collect_ip(client, sid, ip)

        plain = reader.views.GetSubjectView(
            vpb.GetSubjectViewRequest(subject=subject(sid), min_position=written.position),
            **reader.options,
        )
        revealed = client.subject_view(sid, reveal=True, min_position=written.position)

    (field,) = plain.view.categories[0].fields
    assert (field.field, field.revealed, field.value) == ("ip", False, "")
    assert not plain.view.revealed
    assert plain.view.account_id == ""
    raw = plain.SerializeToString()
    assert ip.encode() not in raw
    assert account.encode() not in raw
    assert b"s1:" not in raw
    (opened,) = revealed.categories[0].fields
    assert (opened.field, opened.revealed, opened.value) == ("ip", True, ip)
    assert revealed.revealed
    assert revealed.account_id == account


def test_a_subject_view_names_each_recipient_with_its_class(client: LedgerClient) -> None:
    sid = register(client)
    collect_ip(client, sid, secret("ip"))
    shared = None
    for recipient in ("Hosting Staff", "Affiliate SOC"):
        request = lpb.RecordShareRequest(
            meta=meta(),
            subject=subject(sid),
            categories=[_IP],
            recipient=recipient,
            recipient_class="employees_affiliates",
            purpose="security_detection",
            legal_basis="contract",
        )
        shared = client.ledger.RecordShare(request, **client.options).recorded
    assert shared is not None

    view = client.subject_view(sid, min_position=shared.position)

    staff = [("employees_affiliates", ["Affiliate SOC", "Hosting Staff"])]
    (held,) = view.categories
    assert [(w.recipient_class, list(w.recipients)) for w in held.shared_with] == staff
    assert [(w.recipient_class, list(w.recipients)) for w in view.shared_with] == staff
    assert list(view.recipients) == ["Affiliate SOC", "Hosting Staff"]


def test_a_subject_view_by_account_reference_finds_the_same_person(client: LedgerClient) -> None:
    account = secret("account")
    registered = client.register_subject("app", account)
    request = vpb.GetSubjectViewRequest(
        subject=cpb.SubjectRef(account=cpb.AccountRef(namespace="app", account_id=account)),
        min_position=registered.position,
    )

    view = client.views.GetSubjectView(request, **client.options).view

    assert view.subject_id == registered.subject_id


def test_after_erasure_a_revealed_view_has_no_values_and_says_the_key_is_shredded(
    client: LedgerClient,
) -> None:
    sid = register(client)
    collect_ip(client, sid, secret("ip"))
    erased = client.ledger.EraseSubject(
        lpb.EraseSubjectRequest(meta=meta(), subject=subject(sid), ground="no_consent"),
        **client.options,
    ).recorded

    view = client.subject_view(sid, reveal=True, min_position=erased.position)

    assert view.key_shredded
    assert view.erased
    assert not view.revealed
    assert view.account_id == ""
    assert list(view.categories) == []


def test_revealing_without_the_reveal_scope_is_permission_denied(served: Served) -> None:
    with served.client() as client:
        sid = register(client)
        collect_ip(client, sid, secret("ip"))
    for who in ("reader", "admin"):
        with served.client(who) as caller, pytest.raises(grpc.RpcError) as denied:
            caller.subject_view(sid, reveal=True)
        assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED, who
        assert reason_of(denied.value) == "PERMISSION_DENIED"
        assert "reveal" in (denied.value.details() or "")


def test_no_revealed_value_reaches_the_logs(
    client: LedgerClient, caplog: pytest.LogCaptureFixture
) -> None:
    account, ip = secret("account"), secret("ip")
    sid = register(client, account)
    written = collect_ip(client, sid, ip)

    with caplog.at_level(logging.DEBUG):
        client.subject_view(sid, reveal=True, min_position=written.position)

    logged = caplog.text + "".join(str(r.__dict__) for r in caplog.records)
    assert ip not in logged
    assert account not in logged
    (line,) = [r.getMessage() for r in caplog.records if r.name == "pdl.reveal"]
    assert f'"subject":"{sid}"' in line  # who opened whose values, in the line itself
    assert '"principal":"' in line


# --- consents, register, deadlines, retention -----------------------------------------------


def test_consents_list_withdrawn_ones_only_when_asked(client: LedgerClient) -> None:
    sid = register(client)
    client.give_consent(sid, ["customer_service", "advertising"], [_GPS], "device_permission")
    withdrawn = client.ledger.WithdrawConsent(
        lpb.WithdrawConsentRequest(meta=meta(), subject=subject(sid), purposes=["advertising"]),
        **client.options,
    ).recorded

    in_force = client.consents(sid, min_position=withdrawn.position)
    everything = client.consents(sid, include_withdrawn=True)
    advertising = client.consents(sid, include_withdrawn=True, purpose="advertising")

    assert [(g.purpose, g.in_force) for g in in_force] == [("customer_service", True)]
    assert len(everything) == 2
    (ended,) = advertising
    assert not ended.in_force
    assert ended.HasField("withdrawn_at")
    assert ended.given_by == cpb.CONSENT_GIVER_SUBJECT


def test_deadlines_show_an_overdue_request_and_the_summary(client: LedgerClient) -> None:
    sid = register(client, days_ago=21)
    received = datetime.now(UTC) - timedelta(days=20)
    opened = client.rights.OpenRightsRequest(
        rpb.OpenRightsRequestRequest(
            meta=meta(),
            subject=subject(sid),
            kind=cpb.RIGHT_KIND_ACCESS,
            received_at=timestamp(received),
        ),
        **client.options,
    )

    page = client.request_deadlines(
        vpb.DEADLINE_STATUS_OVERDUE, min_position=opened.recorded.position
    )

    ids = [r.request_id for r in page.requests]
    assert opened.request.request_id in ids
    row = page.requests[ids.index(opened.request.request_id)]
    assert (row.kind, row.status, row.overdue) == (
        cpb.RIGHT_KIND_ACCESS,
        rpb.REQUEST_STATUS_OPEN,
        True,
    )
    every = _every_page(
        client, "ListRequestDeadlines", vpb.ListRequestDeadlinesRequest(page_size=1)
    )
    assert len({r.request_id for r in every}) == len(every) >= 1
    assert [r.due_at.ToDatetime() for r in every] == sorted(r.due_at.ToDatetime() for r in every)
    (access,) = [s for s in page.summary if s.kind == cpb.RIGHT_KIND_ACCESS]
    assert access.overdue >= 1
    assert access.total >= access.open >= access.overdue
    assert page.as_of.seconds > 0


def test_data_collected_past_its_retention_period_is_listed_as_due(
    client: LedgerClient,
) -> None:
    sid = register(client, days_ago=101)
    written = collect_ip(client, sid, secret("ip"), days_ago=100)

    due = client.retention_due(_IP, min_position=written.position)

    mine = [r for r in due if r.subject_id == sid]
    assert [(r.category, r.retention_days, r.in_policy) for r in mine] == [(_IP, 90, True)]
    answer = client.views.ListRetentionDue(vpb.ListRetentionDueRequest(), **client.options)
    assert answer.policy_version == "1"


def test_register_pages_follow_their_tokens(client: LedgerClient) -> None:
    sid = register(client)
    collect_ip(client, sid, secret("ip"))
    written = client.record_use(sid, [_IP], "security_detection", "contract")
    first = client.views.ListProcessingRegister(
        vpb.ListProcessingRegisterRequest(page_size=1, min_position=written.position),
        **client.options,
    )

    rest = client.views.ListProcessingRegister(
        vpb.ListProcessingRegisterRequest(page_size=1000, page_token=first.next_page_token),
        **client.options,
    )

    assert len(first.entries) == 1
    assert first.next_page_token
    assert rest.entries
    assert first.entries[0] not in rest.entries


# --- policy notices -------------------------------------------------------------------------


def test_notices_are_streamed_acknowledged_and_listed_per_version(served: Served) -> None:
    with (
        served.client() as client,
        served.client("admin") as admin,
        served.client("recorder") as recorder,
        served.client("reader") as reader,
    ):
        told, acknowledging = register(client), register(client)
        publish_v2(admin)
        start = log_end(client) + 1
        notified = [admin.notify_policy(sid, "2", "email") for sid in (told, acknowledging)]
        ack = recorder.acknowledge_policy(acknowledging, "2", idempotency_key="ack-1")
        again = recorder.acknowledge_policy(acknowledging, "2", idempotency_key="ack-1")

        streamed = list(reader.policy_notifications(start, version="2"))
        other_version = list(reader.policy_notifications(start, version="3"))
        unacknowledged = reader.policy_notices(
            "2", vpb.NOTICE_STATUS_UNACKNOWLEDGED, min_position=ack.position
        )
        acknowledged = reader.policy_notices("2", vpb.NOTICE_STATUS_ACKNOWLEDGED)
        versions = reader.policy_versions(min_position=ack.position)
        one_by_one = _every_page(
            reader, "ListPolicyNotices", vpb.ListPolicyNoticesRequest(version="2", page_size=1)
        )

    assert [(n.subject_id, n.method, n.position) for n in streamed] == [
        (told, "email", notified[0].position),
        (acknowledging, "email", notified[1].position),
    ]
    assert other_version == []
    assert (ack.event_type, again.replayed, again.position) == (
        "PolicyAcknowledged",
        True,
        ack.position,
    )
    assert told in {n.subject_id for n in unacknowledged}
    assert acknowledging not in {n.subject_id for n in unacknowledged}
    (row,) = [n for n in acknowledged if n.subject_id == acknowledging]
    assert row.acknowledged_position == ack.position
    paged_ids = [n.subject_id for n in one_by_one]
    assert paged_ids == sorted(set(paged_ids))  # by pseudonym, each once
    assert {told, acknowledging} <= set(paged_ids)
    v2 = next(v for v in versions if v.version == "2")
    assert (v2.previous_version, v2.major) == ("1", True)
    assert v2.notified >= 2
    assert v2.acknowledged == 1


def test_the_notification_stream_follows_new_notifications(served: Served) -> None:
    with served.client() as client, served.client("admin") as admin:
        sid = register(client)
        publish_v2(admin)
        request = npb.StreamPolicyNotificationsRequest(
            from_position=log_end(client) + 1, version="2", follow=True
        )
        call = client.notices.StreamPolicyNotifications(request, **client.options)
        got: list[npb.PolicyNotification] = []

        def read() -> None:
            for page in call:
                got.extend(page.notifications)
                return

        reader = threading.Thread(target=read)
        reader.start()
        time.sleep(0.3)
        notified = admin.notify_policy(sid, "2")
        reader.join(10)
        call.cancel()

    assert [(n.subject_id, n.position) for n in got] == [(sid, notified.position)]


def test_acknowledging_for_an_erased_person_is_refused_and_writes_nothing(
    client: LedgerClient,
) -> None:
    sid = register(client)
    client.ledger.CancelAccount(
        lpb.CancelAccountRequest(meta=meta(), subject=subject(sid)), **client.options
    )

    with nothing_written(client), pytest.raises(grpc.RpcError) as refused:
        client.acknowledge_policy(sid, "1")

    assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(refused.value)


@pytest.mark.parametrize("method", ["acknowledge_policy", "notify_policy"])
def test_a_version_never_published_is_refused_and_writes_nothing__clause_8(
    client: LedgerClient, method: str
) -> None:
    sid = register(client)

    with nothing_written(client), pytest.raises(grpc.RpcError) as refused:
        getattr(client, method)(sid, "9.9")

    assert_refused(refused.value, "POLICY_VERSION_NOT_PUBLISHED", "§8")


# --- refusals -------------------------------------------------------------------------------

_READS: dict[str, Callable[[str], Message]] = {
    "GetSubjectView": lambda sid: vpb.GetSubjectViewRequest(subject=subject(sid)),
    "ListConsents": lambda sid: vpb.ListConsentsRequest(subject=subject(sid)),
    "ListProcessingRegister": lambda _: vpb.ListProcessingRegisterRequest(),
    "ListRequestDeadlines": lambda _: vpb.ListRequestDeadlinesRequest(),
    "ListRetentionDue": lambda _: vpb.ListRetentionDueRequest(),
    "ListPolicyVersions": lambda _: vpb.ListPolicyVersionsRequest(),
    "ListPolicyNotices": lambda _: vpb.ListPolicyNoticesRequest(version="1"),
}


def _call(client: LedgerClient, method: str, request: Message, **options: Any) -> Any:
    """Call a ViewService or PolicyNoticeService method (streams are read to their end)."""
    stub = client.views if method in _READS else client.notices
    answer = getattr(stub, method)(request, **{**client.options, **options})
    return list(answer) if method == "StreamPolicyNotifications" else answer


def _notice_requests(sid: str) -> dict[str, Message]:
    return {
        "StreamPolicyNotifications": npb.StreamPolicyNotificationsRequest(),
        "AcknowledgePolicy": npb.AcknowledgePolicyRequest(
            meta=meta(), subject=subject(sid), version="1"
        ),
        "NotifyPolicy": npb.NotifyPolicyRequest(meta=meta(), subject=subject(sid), version="1"),
    }


def test_every_new_rpc_answers_ok_to_a_principal_with_its_scope(served: Served) -> None:
    with served.client() as client:
        registered = client.register_subject("app", secret("account"))
    sid = registered.subject_id
    for method, build in _READS.items():
        request = build(sid)
        request.min_position = registered.position  # type: ignore[attr-defined]
        with served.client("reader") as reader:
            _call(reader, method, request)
    who = {"StreamPolicyNotifications": "reader", "AcknowledgePolicy": "recorder"}
    for method, request in _notice_requests(sid).items():
        with served.client(who.get(method, "admin")) as caller:
            _call(caller, method, request)


@pytest.mark.parametrize("method", [*_READS, "StreamPolicyNotifications", "AcknowledgePolicy"])
def test_every_new_rpc_without_a_token_is_unauthenticated(served: Served, method: str) -> None:
    with served.client() as client:
        sid = register(client)
        request = {**{m: b(sid) for m, b in _READS.items()}, **_notice_requests(sid)}[method]
        with nothing_written(client), pytest.raises(grpc.RpcError) as denied:
            _call(client, method, request, metadata=())
    assert denied.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert reason_of(denied.value) == "UNAUTHENTICATED"


@pytest.mark.parametrize(
    ("who", "method"),
    [
        *(("recorder", m) for m in _READS),
        ("auditor", "ListConsents"),
        ("recorder", "StreamPolicyNotifications"),
        ("reader", "AcknowledgePolicy"),
        ("reader", "NotifyPolicy"),
        ("recorder", "NotifyPolicy"),
    ],
)
def test_a_principal_without_the_scope_is_permission_denied(
    served: Served, who: str, method: str
) -> None:
    with served.client() as client, served.client(who) as other:
        sid = register(client)
        request = {**{m: b(sid) for m, b in _READS.items()}, **_notice_requests(sid)}[method]
        with nothing_written(client), pytest.raises(grpc.RpcError) as denied:
            _call(other, method, request)
    assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert reason_of(denied.value) == "PERMISSION_DENIED"


def test_unknown_people_and_versions_are_not_found(client: LedgerClient) -> None:
    stranger = cpb.SubjectRef(account=cpb.AccountRef(namespace="app", account_id=secret("nobody")))
    cases: list[tuple[str, Message, str]] = [
        ("GetSubjectView", _READS["GetSubjectView"](_NO_SUCH_SUBJECT), "SUBJECT_NOT_FOUND"),
        ("GetSubjectView", vpb.GetSubjectViewRequest(subject=stranger), "SUBJECT_NOT_FOUND"),
        ("ListConsents", _READS["ListConsents"](_NO_SUCH_SUBJECT), "SUBJECT_NOT_FOUND"),
        (
            "ListPolicyNotices",
            vpb.ListPolicyNoticesRequest(version="99"),
            "POLICY_VERSION_NOT_FOUND",
        ),
        (
            "AcknowledgePolicy",
            npb.AcknowledgePolicyRequest(
                meta=meta(), subject=subject(_NO_SUCH_SUBJECT), version="1"
            ),
            "SUBJECT_NOT_FOUND",
        ),
    ]
    for method, request, reason in cases:
        with nothing_written(client), pytest.raises(grpc.RpcError) as missing:
            _call(client, method, request)
        assert missing.value.code() is grpc.StatusCode.NOT_FOUND, method
        assert reason_of(missing.value) == reason, method


def _invalid(sid: str) -> list[tuple[str, Message, str]]:
    """Requests each with one bad argument, and the field its violation must name."""
    ref = subject(sid)
    return [
        ("GetSubjectView", vpb.GetSubjectViewRequest(), "subject"),
        ("GetSubjectView", vpb.GetSubjectViewRequest(subject=subject("not-a-uuid")), "subject"),
        ("GetSubjectView", vpb.GetSubjectViewRequest(subject=ref, min_position=-1), "min_position"),
        ("ListConsents", vpb.ListConsentsRequest(subject=ref, page_size=1001), "page_size"),
        ("ListConsents", vpb.ListConsentsRequest(subject=ref, page_token="nope"), "page_token"),
        ("ListConsents", vpb.ListConsentsRequest(subject=ref, purpose="a\x00"), "purpose"),
        ("ListProcessingRegister", vpb.ListProcessingRegisterRequest(activity=9), "activity"),  # type: ignore[arg-type]
        ("ListProcessingRegister", vpb.ListProcessingRegisterRequest(page_size=-1), "page_size"),
        ("ListProcessingRegister", vpb.ListProcessingRegisterRequest(region="r" * 200), "region"),
        ("ListRequestDeadlines", vpb.ListRequestDeadlinesRequest(status=99), "status"),  # type: ignore[arg-type]
        ("ListRequestDeadlines", vpb.ListRequestDeadlinesRequest(kind=99), "kind"),  # type: ignore[arg-type]
        (
            "ListRequestDeadlines",
            vpb.ListRequestDeadlinesRequest(due_within_days=400),
            "due_within_days",
        ),
        ("ListRetentionDue", vpb.ListRetentionDueRequest(page_token="W10"), "page_token"),
        ("ListPolicyVersions", vpb.ListPolicyVersionsRequest(page_size=5000), "page_size"),
        ("ListPolicyNotices", vpb.ListPolicyNoticesRequest(), "version"),
        ("ListPolicyNotices", vpb.ListPolicyNoticesRequest(version="1", status=7), "status"),  # type: ignore[arg-type]
        (
            "StreamPolicyNotifications",
            npb.StreamPolicyNotificationsRequest(from_position=-1),
            "from_position",
        ),
        (
            "StreamPolicyNotifications",
            npb.StreamPolicyNotificationsRequest(page_size=1001),
            "page_size",
        ),
        ("AcknowledgePolicy", npb.AcknowledgePolicyRequest(meta=meta(), subject=ref), "version"),
        (
            "AcknowledgePolicy",
            npb.AcknowledgePolicyRequest(subject=ref, version="1"),
            "meta.idempotency_key",
        ),
        ("NotifyPolicy", npb.NotifyPolicyRequest(meta=meta(), version="1"), "subject"),
    ]


def test_bad_filters_sizes_and_tokens_are_invalid_argument_naming_the_field(
    client: LedgerClient,
) -> None:
    sid = register(client)
    for method, request, expected in _invalid(sid):
        with nothing_written(client), pytest.raises(grpc.RpcError) as bad:
            _call(client, method, request)
        fields = bad_fields(bad.value)
        named = [f for f in fields if f == expected or f.startswith(f"{expected}.")]
        assert named, (method, expected, fields)

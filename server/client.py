"""A small typed client for the ledger's gRPC API.

    with LedgerClient("127.0.0.1:50051", token) as client:
        subject = client.register_subject("app", "account-42").subject_id
        client.record_collection(subject, "network_log.ip_address", "server_logs",
                                 ["security_detection"], values={"ip": "203.0.113.7"})
        state = client.subject_state(subject)

Every call sends the bearer token; errors arrive as `grpc.RpcError` whose status carries the
ledger's reason (`refusal_of` reads it). The raw stubs are there too for anything else.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any

import grpc
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2, status_pb2

from server._pb.pdl.v1 import common_pb2 as cpb
from server._pb.pdl.v1 import ledger_service_pb2 as lpb
from server._pb.pdl.v1 import ledger_service_pb2_grpc as lgrpc
from server._pb.pdl.v1 import notice_service_pb2 as npb
from server._pb.pdl.v1 import notice_service_pb2_grpc as ngrpc
from server._pb.pdl.v1 import policy_service_pb2_grpc as pgrpc
from server._pb.pdl.v1 import query_service_pb2 as qpb
from server._pb.pdl.v1 import query_service_pb2_grpc as qgrpc
from server._pb.pdl.v1 import rights_service_pb2_grpc as rgrpc
from server._pb.pdl.v1 import view_service_pb2 as vpb
from server._pb.pdl.v1 import view_service_pb2_grpc as vgrpc

_DETAILS_KEY = "grpc-status-details-bin"
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 32 * 1024 * 1024)]
"""The server sends messages of up to 32 MiB (a policy version with a long list of changes,
one large stored event in the audit stream); gRPC's default would refuse over 4 MiB."""


def meta(
    idempotency_key: str | None = None, occurred_at: datetime | None = None
) -> cpb.CommandMeta:
    """A command envelope; a fresh idempotency key unless one is given (give one to retry)."""
    envelope = cpb.CommandMeta(idempotency_key=idempotency_key or uuid.uuid4().hex)
    if occurred_at is not None:
        envelope.occurred_at.CopyFrom(timestamp(occurred_at))
    return envelope


def timestamp(instant: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(instant)
    return stamp


def subject(subject_id: str) -> cpb.SubjectRef:
    return cpb.SubjectRef(subject_id=subject_id)


def rich_status(error: grpc.RpcError) -> status_pb2.Status | None:
    """The `google.rpc.Status` a failed call carried, if any."""
    trailing: Any = error.trailing_metadata() if isinstance(error, grpc.Call) else None
    for key, value in trailing or ():
        if key == _DETAILS_KEY and isinstance(value, bytes):
            return status_pb2.Status.FromString(value)
    return None


def refusal_of(error: grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    """The `ErrorInfo` (reason, domain, clause) of a failed call, if it carried one."""
    status = rich_status(error)
    for detail in status.details if status is not None else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info
    return None


class LedgerClient:
    """A blocking client: one channel, the bearer token on every call (when given: under
    mutual TLS a client certificate, `certificate_chain` with its `private_key`, may name the
    principal instead)."""

    def __init__(
        self,
        target: str,
        token: str | None,
        *,
        root_certificates: bytes | None = None,
        certificate_chain: bytes | None = None,
        private_key: bytes | None = None,
        timeout: float = 30.0,
    ) -> None:
        if (certificate_chain is None) != (private_key is None):
            raise ValueError("certificate_chain and private_key go together")
        if root_certificates is None and certificate_chain is None:
            self.channel = grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
        else:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=root_certificates,
                private_key=private_key,
                certificate_chain=certificate_chain,
            )
            self.channel = grpc.secure_channel(target, credentials, options=CHANNEL_OPTIONS)
        self.ledger = lgrpc.LedgerServiceStub(self.channel)
        self.rights = rgrpc.RightsRequestServiceStub(self.channel)
        self.policy = pgrpc.PolicyServiceStub(self.channel)
        self.query = qgrpc.QueryServiceStub(self.channel)
        self.views = vgrpc.ViewServiceStub(self.channel)
        self.notices = ngrpc.PolicyNoticeServiceStub(self.channel)
        self.options: dict[str, Any] = {
            "metadata": () if token is None else (("authorization", f"Bearer {token}"),),
            "timeout": timeout,
        }

    def __enter__(self) -> LedgerClient:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def register_subject(
        self, namespace: str, account_id: str, *, idempotency_key: str | None = None, **fields: Any
    ) -> cpb.Recorded:
        request = lpb.RegisterSubjectRequest(
            meta=meta(idempotency_key),
            account=cpb.AccountRef(namespace=namespace, account_id=account_id),
            **fields,
        )
        return self.ledger.RegisterSubject(request, **self.options).recorded

    def record_collection(
        self,
        subject_id: str,
        category: str,
        source: str,
        purposes: Sequence[str],
        *,
        values: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        **fields: Any,
    ) -> cpb.Recorded:
        request = lpb.RecordCollectionRequest(
            meta=meta(idempotency_key),
            subject=subject(subject_id),
            category=category,
            source=source,
            purposes=list(purposes),
            values=dict(values or {}),
            **fields,
        )
        return self.ledger.RecordCollection(request, **self.options).recorded

    def record_use(
        self,
        subject_id: str,
        categories: Sequence[str],
        purpose: str,
        legal_basis: str = "",
        *,
        idempotency_key: str | None = None,
    ) -> cpb.Recorded:
        request = lpb.RecordUseRequest(
            meta=meta(idempotency_key),
            subject=subject(subject_id),
            categories=list(categories),
            purpose=purpose,
            legal_basis=legal_basis,
        )
        return self.ledger.RecordUse(request, **self.options).recorded

    def give_consent(
        self,
        subject_id: str,
        purposes: Sequence[str],
        categories: Sequence[str],
        method: str = "",
        *,
        idempotency_key: str | None = None,
    ) -> cpb.Recorded:
        request = lpb.GiveConsentRequest(
            meta=meta(idempotency_key),
            subject=subject(subject_id),
            purposes=list(purposes),
            categories=list(categories),
            method=method,
        )
        return self.ledger.GiveConsent(request, **self.options).recorded

    def subject_state(self, subject_id: str) -> qpb.SubjectState:
        request = qpb.GetSubjectStateRequest(subject=subject(subject_id))
        return self.query.GetSubjectState(request, **self.options).state

    def history(self, subject_id: str, *event_types: str) -> list[qpb.HistoryEvent]:
        """Every page of a person's history."""
        events: list[qpb.HistoryEvent] = []
        token = ""
        while True:
            request = qpb.ListSubjectHistoryRequest(
                subject=subject(subject_id), event_types=list(event_types), page_token=token
            )
            page = self.query.ListSubjectHistory(request, **self.options)
            events.extend(page.events)
            token = page.next_page_token
            if not token:
                return events

    def audit(self, from_position: int = 1, page_size: int = 0) -> Iterator[qpb.AuditEvent]:
        """The log from a position, as stored, to its current end."""
        request = qpb.StreamAuditLogRequest(from_position=from_position, page_size=page_size)
        for page in self.query.StreamAuditLog(request, **self.options):
            yield from page.events

    # --- views (read-your-writes: pass a Recorded.position as min_position) ---------------------

    def subject_view(
        self, subject_id: str, *, reveal: bool = False, min_position: int = 0
    ) -> vpb.SubjectView:
        """A person's current view; `reveal` opens their values (needs the `reveal` scope)."""
        request = vpb.GetSubjectViewRequest(
            subject=subject(subject_id), reveal=reveal, min_position=min_position
        )
        return self.views.GetSubjectView(request, **self.options).view

    def consents(
        self,
        subject_id: str,
        *,
        include_withdrawn: bool = False,
        min_position: int = 0,
        **filters: Any,
    ) -> list[vpb.ConsentGrant]:
        """Every page of a person's consents (filters: purpose, category)."""
        return self._pages(
            self.views.ListConsents,
            vpb.ListConsentsRequest(
                subject=subject(subject_id),
                include_withdrawn=include_withdrawn,
                min_position=min_position,
                **filters,
            ),
            "consents",
        )

    def processing_register(
        self, *, min_position: int = 0, **filters: Any
    ) -> list[vpb.RegisterEntry]:
        """Every page of the processing register (filters: activity, category, purpose,
        recipient_class, region)."""
        request = vpb.ListProcessingRegisterRequest(min_position=min_position, **filters)
        return self._pages(self.views.ListProcessingRegister, request, "entries")

    def request_deadlines(
        self,
        status: int = vpb.DEADLINE_STATUS_UNSPECIFIED,
        *,
        min_position: int = 0,
        **filters: Any,
    ) -> vpb.ListRequestDeadlinesResponse:
        """The first page of rights-request deadlines and the per-kind summary (filters: kind,
        due_within_days, page_size, page_token)."""
        request = vpb.ListRequestDeadlinesRequest(
            status=status,  # type: ignore[arg-type]
            min_position=min_position,
            **filters,
        )
        return self.views.ListRequestDeadlines(request, **self.options)

    def retention_due(self, category: str = "", *, min_position: int = 0) -> list[vpb.RetentionDue]:
        """Every page of data held past its retention period."""
        request = vpb.ListRetentionDueRequest(category=category, min_position=min_position)
        return self._pages(self.views.ListRetentionDue, request, "items")

    def policy_versions(self, *, min_position: int = 0) -> list[vpb.PolicyVersionNotices]:
        """Every published policy version with its notice counts."""
        request = vpb.ListPolicyVersionsRequest(min_position=min_position)
        return self._pages(self.views.ListPolicyVersions, request, "versions")

    def policy_notices(
        self,
        version: str,
        status: int = vpb.NOTICE_STATUS_UNSPECIFIED,
        *,
        min_position: int = 0,
    ) -> list[vpb.PolicyNotice]:
        """Every page of who was told of a version (and who acknowledged)."""
        request = vpb.ListPolicyNoticesRequest(
            version=version,
            status=status,  # type: ignore[arg-type]
            min_position=min_position,
        )
        return self._pages(self.views.ListPolicyNotices, request, "notices")

    def _pages(self, method: Any, request: Any, field: str) -> list[Any]:
        rows: list[Any] = []
        while True:
            page = method(request, **self.options)
            rows.extend(getattr(page, field))
            if not page.next_page_token:
                return rows
            request.page_token = page.next_page_token

    # --- policy notices ---------------------------------------------------------------------

    def policy_notifications(
        self, from_position: int = 1, version: str = ""
    ) -> Iterator[npb.PolicyNotification]:
        """The notifications recorded from a position to the log's current end."""
        request = npb.StreamPolicyNotificationsRequest(from_position=from_position, version=version)
        for page in self.notices.StreamPolicyNotifications(request, **self.options):
            yield from page.notifications

    def acknowledge_policy(
        self, subject_id: str, version: str, method: str = "", *, idempotency_key: str | None = None
    ) -> cpb.Recorded:
        request = npb.AcknowledgePolicyRequest(
            meta=meta(idempotency_key), subject=subject(subject_id), version=version, method=method
        )
        return self.notices.AcknowledgePolicy(request, **self.options).recorded

    def notify_policy(
        self, subject_id: str, version: str, method: str = "", *, idempotency_key: str | None = None
    ) -> cpb.Recorded:
        request = npb.NotifyPolicyRequest(
            meta=meta(idempotency_key), subject=subject(subject_id), version=version, method=method
        )
        return self.notices.NotifyPolicy(request, **self.options).recorded

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
from server._pb.pdl.v1 import policy_service_pb2_grpc as pgrpc
from server._pb.pdl.v1 import query_service_pb2 as qpb
from server._pb.pdl.v1 import query_service_pb2_grpc as qgrpc
from server._pb.pdl.v1 import rights_service_pb2_grpc as rgrpc

_DETAILS_KEY = "grpc-status-details-bin"


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
    """A blocking client: one channel, the bearer token on every call."""

    def __init__(
        self,
        target: str,
        token: str,
        *,
        root_certificates: bytes | None = None,
        timeout: float = 30.0,
    ) -> None:
        if root_certificates is None:
            self.channel = grpc.insecure_channel(target)
        else:
            credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates)
            self.channel = grpc.secure_channel(target, credentials)
        self.ledger = lgrpc.LedgerServiceStub(self.channel)
        self.rights = rgrpc.RightsRequestServiceStub(self.channel)
        self.policy = pgrpc.PolicyServiceStub(self.channel)
        self.query = qgrpc.QueryServiceStub(self.channel)
        self.options: dict[str, Any] = {
            "metadata": (("authorization", f"Bearer {token}"),),
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

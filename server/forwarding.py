"""The high-rate unary recording calls, served as bytes in and bytes out.

With the writer process (`server.writer_process`), the server hands these methods' requests,
as the bytes the client sent, to the writer, and answers with the response's bytes it gets
back: the servicer's four steps (CONVENTIONS §8) run there, with the same functions as the
servicers' methods (parse, `server.convert`, record in a group commit, result to proto). The
server's own core then does only what gRPC itself needs, with nothing pickled but bytes;
errors still become status in the interceptor, which wraps these handlers as it wraps every
other. With the thread writer the servicers' own methods serve these calls.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.message import DecodeError, Message

from ledger import commands as cmd
from ledger.application import Recorded
from server import convert
from server import convert_views as cv
from server._pb.pdl.v1 import common_pb2 as cpb
from server._pb.pdl.v1 import ledger_service_pb2 as lpb
from server._pb.pdl.v1 import notice_service_pb2 as npb
from server.auth import CURRENT_PRINCIPAL
from server.errors import FieldViolation, InvalidRequest

if TYPE_CHECKING:
    from server.writer_process import ProcessCommitter


@dataclass(frozen=True, slots=True)
class Route:
    """How one forwarded method's request becomes a command and its answer a response."""

    request: type[Message]
    command: Callable[[Any, datetime], cmd._Command]
    response: Callable[[cpb.Recorded], Message]

    def parse(self, data: bytes) -> Message:
        try:
            return self.request.FromString(data)
        except DecodeError:
            name = self.request.DESCRIPTOR.name
            raise InvalidRequest([FieldViolation("request", f"not a valid {name}")]) from None

    def to_command(self, data: bytes, now: datetime) -> cmd._Command:
        """Parse the request's bytes and convert it (`InvalidRequest` if it is bad)."""
        return self.command(self.parse(data), now)

    def answer(self, done: Recorded) -> bytes:
        return self.response(convert.recorded(done)).SerializeToString()


ROUTES: dict[str, Route] = {
    "/pdl.v1.LedgerService/RecordCollection": Route(
        lpb.RecordCollectionRequest,
        convert.record_collection,
        lambda r: lpb.RecordCollectionResponse(recorded=r),
    ),
    "/pdl.v1.LedgerService/RecordUse": Route(
        lpb.RecordUseRequest, convert.record_use, lambda r: lpb.RecordUseResponse(recorded=r)
    ),
    "/pdl.v1.LedgerService/RecordShare": Route(
        lpb.RecordShareRequest, convert.record_share, lambda r: lpb.RecordShareResponse(recorded=r)
    ),
    "/pdl.v1.LedgerService/GiveConsent": Route(
        lpb.GiveConsentRequest, convert.give_consent, lambda r: lpb.GiveConsentResponse(recorded=r)
    ),
    "/pdl.v1.LedgerService/WithdrawConsent": Route(
        lpb.WithdrawConsentRequest,
        convert.withdraw_consent,
        lambda r: lpb.WithdrawConsentResponse(recorded=r),
    ),
    "/pdl.v1.LedgerService/CorrectData": Route(
        lpb.CorrectDataRequest, convert.correct_data, lambda r: lpb.CorrectDataResponse(recorded=r)
    ),
    "/pdl.v1.PolicyNoticeService/AcknowledgePolicy": Route(
        npb.AcknowledgePolicyRequest,
        cv.acknowledge_policy,
        lambda r: npb.AcknowledgePolicyResponse(recorded=r),
    ),
}
"""The forwarded methods: the unary recording commands that share group commits."""


def generic_handlers(committer: ProcessCommitter) -> tuple[grpc.GenericRpcHandler, ...]:
    """Raw-bytes handlers of every route, one generic handler per service; registered before
    the generated ones, they serve these methods."""
    by_service: dict[str, dict[str, grpc.RpcMethodHandler[Any, Any]]] = {}
    for method in ROUTES:
        service, name = method.lstrip("/").split("/")
        by_service.setdefault(service, {})[name] = grpc.unary_unary_rpc_method_handler(
            _forwarder(committer, method)
        )
    return tuple(
        grpc.method_handlers_generic_handler(service, handlers)
        for service, handlers in by_service.items()
    )


def _forwarder(committer: ProcessCommitter, method: str) -> Callable[[bytes, Any], Any]:
    async def forward(request: bytes, _context: Any) -> bytes:
        return await committer.forward(method, CURRENT_PRINCIPAL.get().name, request)

    return forward

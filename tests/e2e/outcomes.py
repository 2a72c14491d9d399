"""What a call left behind, read the way a client reads it: the status and its rich details
(ErrorInfo for a refusal, BadRequest for bad input), and whether the log grew.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import grpc
from google.rpc import error_details_pb2

from server.client import LedgerClient, refusal_of, rich_status


def log_end(client: LedgerClient) -> int:
    """The position of the last event in the log (0 when it is empty)."""
    return max((e.position for e in client.audit(page_size=1000)), default=0)


@contextmanager
def nothing_written(client: LedgerClient) -> Iterator[None]:
    """Assert that the log is exactly as long after the block as before it."""
    before = log_end(client)
    yield
    assert log_end(client) == before, "a refused or invalid call wrote to the log"


def assert_refused(error: grpc.RpcError, reason: str, clause: str) -> None:
    """A refusal under the policy: FAILED_PRECONDITION with ErrorInfo(reason, "pdl", clause)."""
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION, error.details()
    info = refusal_of(error)
    assert info is not None
    assert (info.reason, info.domain, info.metadata["clause"]) == (reason, "pdl", clause)
    assert info.metadata["rule"]


def reason_of(error: grpc.RpcError) -> str:
    """The ErrorInfo reason of a failed call (its domain checked to be the ledger's)."""
    info = refusal_of(error)
    assert info is not None
    assert info.domain == "pdl"
    return info.reason


def bad_fields(error: grpc.RpcError) -> list[str]:
    """The fields an INVALID_ARGUMENT names in its BadRequest, each with a description."""
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error.details()
    status = rich_status(error)
    assert status is not None
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    found: list[str] = []
    for detail in status.details:
        request = error_details_pb2.BadRequest()
        if detail.Unpack(request):
            found.extend(v.field for v in request.field_violations)
            assert all(v.description for v in request.field_violations)
    return found

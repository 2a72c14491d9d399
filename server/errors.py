"""Errors to gRPC status, in one place: each ledger error gets its code and a rich status.

A refusal under the policy is FAILED_PRECONDITION with `google.rpc.ErrorInfo` (reason = the
refusal enum's name, domain "pdl", metadata clause and rule); bad input is INVALID_ARGUMENT
with `google.rpc.BadRequest` field violations; a view read whose views have not reached the
asked position in time is UNAVAILABLE with ErrorInfo reason VIEW_BEHIND (metadata position and
reached), and a call whose writer process died before answering is UNAVAILABLE with reason
WRITER_UNAVAILABLE (retry with the same idempotency key). A write that found no room left in
storage is RESOURCE_EXHAUSTED with reason STORAGE_FULL (nothing of it was written; retry once
there is room), one that could not reach PostgreSQL is UNAVAILABLE with reason
STORAGE_UNAVAILABLE (retry with the same key), and a sealed value that does not open is
DATA_LOSS. Messages never carry
personal values, and anything unexpected is INTERNAL with no internals.
"""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import psycopg
import psycopg_pool
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from pydantic import ValidationError

from ledger.application import BatchAborted
from ledger.errors import (
    ConcurrencyExhausted,
    IdempotencyConflict,
    InvalidCommand,
    KeyShreddedError,
    LedgerError,
    Refused,
    RightsRequestNotFound,
    SealingError,
    SubjectNotFound,
)
from projections.errors import BadQuery, PolicyVersionNotFound

DOMAIN = "pdl"


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad field of a request: its path and what is wrong, never its value."""

    field: str
    description: str


class InvalidRequest(LedgerError):
    """A request failed validation at the boundary; nothing was written."""

    def __init__(self, violations: list[FieldViolation]) -> None:
        self._violations = tuple(violations)
        fields = ", ".join(v.field for v in violations) or "request"
        super().__init__(f"invalid request: {fields}")

    @property
    def violations(self) -> tuple[FieldViolation, ...]:
        return self._violations


class Unauthenticated(LedgerError):
    """No credential, or one the server does not know."""


class PermissionDenied(LedgerError):
    """The authenticated principal lacks the scope the method needs."""


class WriterUnavailable(LedgerError):
    """The writer process stopped before it answered; the command may or may not have been
    recorded, and a retry with the same idempotency key is recorded at most once."""

    def __init__(self) -> None:
        super().__init__("the writer stopped before answering; retry with the same key")


class WriterFailed(LedgerError):
    """The writer hit an unexpected error it could not send back as it was."""

    def __init__(self, kind: str) -> None:
        self._kind = kind
        super().__init__(f"the writer failed: {kind}")

    @property
    def kind(self) -> str:
        return self._kind


class TooManyFollowers(LedgerError):
    """The server already tails the log for as many followed audit streams as it takes."""

    def __init__(self, most: int) -> None:
        super().__init__(
            f"this server follows at most {most} audit streams at once; retry later,"
            " or read without follow"
        )


class StorageFull(LedgerError):
    """A write found no room left in storage (the disk, a quota, the database's own limit);
    it was rolled back."""

    def __init__(self) -> None:
        super().__init__("no room left in storage; nothing was written, retry once there is")


class StorageUnavailable(LedgerError):
    """A write could not reach its storage (PostgreSQL down, unreachable, or restarting)."""

    def __init__(self) -> None:
        super().__init__(
            "storage could not be reached; retry with the same idempotency key, which is"
            " recorded at most once"
        )


_SQLSTATE_DISK_FULL = "53100"
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_SQLSTATES_UNAVAILABLE = ("08", "57P01", "57P02", "57P03")
"""PostgreSQL's connection exceptions (class 08) and shutdowns (admin, crash, starting up)."""


def _causes(error: BaseException) -> Iterator[BaseException]:
    """`error` and what it was raised from or wraps (the library's, SQLAlchemy's wrappers)."""
    current: BaseException | None = error
    for _ in range(8):  # a chain of wrappers is short
        if current is None:
            return
        yield current
        wrapped = getattr(current, "orig", None)
        if wrapped is None and current.args and isinstance(current.args[0], BaseException):
            wrapped = current.args[0]
        current = wrapped or current.__cause__ or current.__context__


def storage_full(error: BaseException) -> bool:
    """Whether `error`, or one it was raised from or wraps, says storage has no room left:
    SQLite's SQLITE_FULL, PostgreSQL's disk_full, or the system's ENOSPC / EDQUOT."""
    for current in _causes(error):
        if isinstance(current, StorageFull):
            return True
        if isinstance(current, OSError) and current.errno in _FULL_ERRNOS:
            return True
        if isinstance(current, sqlite3.Error):
            code = getattr(current, "sqlite_errorcode", None)
            if code == sqlite3.SQLITE_FULL or "database or disk is full" in str(current):
                return True
        if getattr(current, "sqlstate", None) == _SQLSTATE_DISK_FULL:
            return True
    return False


def storage_unavailable(error: BaseException) -> bool:
    """Whether `error`, or one it was raised from or wraps, says PostgreSQL could not be
    reached: a connection that failed or broke, no connection from the pool in time, or a
    server shutting down or starting up."""
    for current in _causes(error):
        if isinstance(current, StorageUnavailable | psycopg_pool.PoolTimeout):
            return True
        if isinstance(current, psycopg.Error):
            state = current.sqlstate
            if state is None:  # no answer from the server: the connection failed or broke
                return isinstance(current, psycopg.OperationalError | psycopg.InterfaceError)
            return state.startswith(_SQLSTATES_UNAVAILABLE)
    return False


class ViewBehind(LedgerError):
    """The views had not reached the asked log position within the time allowed."""

    def __init__(self, position: int, reached: int) -> None:
        self._position = position
        self._reached = reached
        super().__init__(f"the views reached position {reached}, not yet {position}; retry")

    @property
    def position(self) -> int:
        return self._position

    @property
    def reached(self) -> int:
        return self._reached


class PositionNotWritten(LedgerError):
    """A read asked to wait for a log position that no write has reached."""

    def __init__(self, position: int, written: int) -> None:
        self._position = position
        self._written = written
        super().__init__(f"the log ends at position {written}; {position} was never written")

    @property
    def position(self) -> int:
        return self._position

    @property
    def written(self) -> int:
        return self._written


def violations_of(exc: ValidationError, prefix: str = "") -> list[FieldViolation]:
    """Field violations of a pydantic error, without the offending values."""
    found = []
    for err in exc.errors(include_url=False, include_input=False):
        path = ".".join(str(p) for p in err["loc"] if p != "__root__")
        found.append(FieldViolation(_join(prefix, path), err["msg"]))
    return found or [FieldViolation(prefix or "request", "invalid")]


def _join(prefix: str, path: str) -> str:
    if prefix and path:
        return f"{prefix}.{path}"
    return prefix or path or "request"


@dataclass(frozen=True, slots=True)
class StatusParts:
    """What a failed call answers: the code, a safe message, and the rich status details."""

    code: grpc.StatusCode
    message: str
    reason: str
    details: tuple[any_pb2.Any, ...] = ()

    def rich_status(self) -> status_pb2.Status:
        return status_pb2.Status(
            code=self.code.value[0], message=self.message, details=list(self.details)
        )


def status_of(error: BaseException) -> StatusParts:
    """The gRPC status for an error raised while serving a call."""
    if isinstance(error, Refused):
        info = error_details_pb2.ErrorInfo(
            reason=error.reason.value,
            domain=DOMAIN,
            metadata={"clause": error.clause, "rule": error.detail or error.reason.value},
        )
        return StatusParts(
            grpc.StatusCode.FAILED_PRECONDITION, str(error), error.reason.value, (_pack(info),)
        )
    if isinstance(error, InvalidRequest):
        return _bad_request(list(error.violations))
    if isinstance(error, InvalidCommand):
        return _bad_request([FieldViolation(error.field, str(error))])
    if isinstance(error, ValidationError):
        return _bad_request(violations_of(error))
    if isinstance(error, BadQuery):
        return _bad_request([FieldViolation(error.field, error.problem)])
    if isinstance(error, ViewBehind):
        info = error_details_pb2.ErrorInfo(
            reason="VIEW_BEHIND",
            domain=DOMAIN,
            metadata={"position": str(error.position), "reached": str(error.reached)},
        )
        return StatusParts(grpc.StatusCode.UNAVAILABLE, str(error), "VIEW_BEHIND", (_pack(info),))
    if isinstance(error, PositionNotWritten):
        info = error_details_pb2.ErrorInfo(
            reason="POSITION_NOT_WRITTEN",
            domain=DOMAIN,
            metadata={"position": str(error.position), "written": str(error.written)},
        )
        return StatusParts(
            grpc.StatusCode.OUT_OF_RANGE, str(error), "POSITION_NOT_WRITTEN", (_pack(info),)
        )
    if storage_full(error):
        info = error_details_pb2.ErrorInfo(reason="STORAGE_FULL", domain=DOMAIN)
        return StatusParts(
            grpc.StatusCode.RESOURCE_EXHAUSTED, str(StorageFull()), "STORAGE_FULL", (_pack(info),)
        )
    if storage_unavailable(error):
        info = error_details_pb2.ErrorInfo(reason="STORAGE_UNAVAILABLE", domain=DOMAIN)
        return StatusParts(
            grpc.StatusCode.UNAVAILABLE,
            str(StorageUnavailable()),
            "STORAGE_UNAVAILABLE",
            (_pack(info),),
        )
    simple: list[tuple[type[BaseException], grpc.StatusCode, str]] = [
        (SubjectNotFound, grpc.StatusCode.NOT_FOUND, "SUBJECT_NOT_FOUND"),
        (RightsRequestNotFound, grpc.StatusCode.NOT_FOUND, "RIGHTS_REQUEST_NOT_FOUND"),
        (PolicyVersionNotFound, grpc.StatusCode.NOT_FOUND, "POLICY_VERSION_NOT_FOUND"),
        (IdempotencyConflict, grpc.StatusCode.ALREADY_EXISTS, "IDEMPOTENCY_CONFLICT"),
        (ConcurrencyExhausted, grpc.StatusCode.ABORTED, "CONCURRENCY_EXHAUSTED"),
        (KeyShreddedError, grpc.StatusCode.FAILED_PRECONDITION, "KEY_SHREDDED"),
        (BatchAborted, grpc.StatusCode.ABORTED, "BATCH_ABORTED"),
        (WriterUnavailable, grpc.StatusCode.UNAVAILABLE, "WRITER_UNAVAILABLE"),
        (TooManyFollowers, grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_FOLLOWERS"),
        (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED"),
        (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED"),
        (SealingError, grpc.StatusCode.DATA_LOSS, "SEALED_VALUE_UNREADABLE"),
    ]
    for kind, code, reason in simple:
        if isinstance(error, kind):
            info = error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN)
            return StatusParts(code, str(error), reason, (_pack(info),))
    return StatusParts(grpc.StatusCode.INTERNAL, "internal error", "INTERNAL")


_MOST_VIOLATIONS = 20
"""Violations reported per status: more would outgrow gRPC's trailer limit (16 KB)."""


def _bad_request(violations: list[FieldViolation]) -> StatusParts:
    if len(violations) > _MOST_VIOLATIONS:
        more = len(violations) - _MOST_VIOLATIONS + 1
        violations = [
            *violations[: _MOST_VIOLATIONS - 1],
            FieldViolation("request", f"and {more} more violations"),
        ]
    violations = [FieldViolation(v.field[:200], v.description[:300]) for v in violations]
    request = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
            for v in violations
        ]
    )
    fields = ", ".join(v.field for v in violations)
    return StatusParts(
        grpc.StatusCode.INVALID_ARGUMENT,
        f"invalid request: {fields}",
        "INVALID_ARGUMENT",
        (_pack(request),),
    )


def _pack(message: error_details_pb2.ErrorInfo | error_details_pb2.BadRequest) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed

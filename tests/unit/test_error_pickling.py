"""Every error of the ledger crosses from the writer process to the server's intact: pickled
and unpickled, it is of the same class, says the same, and keeps its typed attributes."""

from __future__ import annotations

import pickle
import uuid

import pytest

from ledger.errors import (
    ConcurrencyExhausted,
    ConfigurationError,
    IdempotencyConflict,
    InvalidCommand,
    KeyShreddedError,
    LedgerError,
    PolicyError,
    RefusalReason,
    Refused,
    RightsRequestNotFound,
    SealingError,
    SubjectNotFound,
)
from ledger.outcomes import BatchAborted
from server.errors import (
    FieldViolation,
    InvalidRequest,
    PermissionDenied,
    PositionNotWritten,
    StorageFull,
    StorageUnavailable,
    TooManyFollowers,
    Unauthenticated,
    ViewBehind,
    WriterFailed,
    WriterUnavailable,
)

_REQUEST = uuid.uuid4()

EXAMPLES: list[tuple[LedgerError, dict[str, object]]] = [
    (
        Refused(RefusalReason.SENSITIVE_CATEGORY_WITHOUT_CONSENT, "§1(5)", "needs consent"),
        {
            "reason": RefusalReason.SENSITIVE_CATEGORY_WITHOUT_CONSENT,
            "clause": "§1(5)",
            "detail": "needs consent",
        },
    ),
    (Refused(RefusalReason.SALE_PROHIBITED, "§4.2"), {"detail": ""}),
    (InvalidCommand("items.3", "cannot be batched"), {"field": "items.3"}),
    (SubjectNotFound(), {}),
    (SubjectNotFound("the subject was not registered at that instant"), {}),
    (RightsRequestNotFound(_REQUEST), {"request_id": _REQUEST}),
    (IdempotencyConflict("crm", "key-1"), {"principal": "crm", "key": "key-1"}),
    (ConcurrencyExhausted(6), {"attempts": 6}),
    (SealingError("tampered"), {}),
    (KeyShreddedError("no data key"), {}),
    (PolicyError("bad policy"), {}),
    (ConfigurationError("bad configuration"), {}),
    (BatchAborted(2), {}),
    (InvalidRequest([FieldViolation("meta.idempotency_key", "required")]), {}),
    (Unauthenticated("no credential"), {}),
    (PermissionDenied("needs record"), {}),
    (ViewBehind(10, 7), {"position": 10, "reached": 7}),
    (PositionNotWritten(10, 7), {"position": 10, "written": 7}),
    (StorageFull(), {}),
    (StorageUnavailable(), {}),
    (TooManyFollowers(64), {}),
    (WriterUnavailable(), {}),
    (WriterFailed("OperationalError"), {"kind": "OperationalError"}),
]


@pytest.mark.parametrize(("error", "attributes"), EXAMPLES, ids=lambda e: type(e).__name__)
def test_an_error_unpickles_as_the_same_error_with_its_attributes(
    error: LedgerError, attributes: dict[str, object]
) -> None:
    copy = pickle.loads(pickle.dumps(error, pickle.HIGHEST_PROTOCOL))  # noqa: S301 (our own bytes)

    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert copy.args == error.args
    for name, value in attributes.items():
        assert getattr(copy, name) == value


def test_every_error_class_has_an_example_here() -> None:
    def every(kind: type[LedgerError]) -> set[type[LedgerError]]:
        found = {kind}
        for sub in kind.__subclasses__():
            found |= every(sub)
        return found

    named = {type(error) for error, _ in EXAMPLES}
    crossing = {  # what the ledger and the server's error mapping define (not, say, the demo's)
        k
        for k in every(LedgerError)
        if k.__module__.startswith("ledger.") or k.__module__ == "server.errors"
    }
    assert crossing - {LedgerError} <= named

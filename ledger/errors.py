"""The ledger's one error hierarchy, rooted at ``LedgerError``, and the typed refusal reasons."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from uuid import UUID


class RefusalReason(StrEnum):
    """Why the policy in force forbids a command; each value names one rule."""

    NO_POLICY_IN_FORCE = "NO_POLICY_IN_FORCE"
    OCCURRED_IN_FUTURE = "OCCURRED_IN_FUTURE"
    OCCURRED_BEFORE_REGISTRATION = "OCCURRED_BEFORE_REGISTRATION"
    CATEGORY_NOT_DECLARED = "CATEGORY_NOT_DECLARED"
    SOURCE_NOT_DECLARED = "SOURCE_NOT_DECLARED"
    PURPOSE_NOT_DECLARED = "PURPOSE_NOT_DECLARED"
    LEGAL_BASIS_NOT_DECLARED = "LEGAL_BASIS_NOT_DECLARED"
    LEGAL_BASIS_NOT_ALLOWED_FOR_PURPOSE = "LEGAL_BASIS_NOT_ALLOWED_FOR_PURPOSE"
    CATEGORY_NOT_NEEDED_FOR_PURPOSE = "CATEGORY_NOT_NEEDED_FOR_PURPOSE"
    SENSITIVE_CATEGORY_WITHOUT_CONSENT = "SENSITIVE_CATEGORY_WITHOUT_CONSENT"
    CONSENT_WITHDRAWN = "CONSENT_WITHDRAWN"
    CONSENT_METHOD_NOT_DECLARED = "CONSENT_METHOD_NOT_DECLARED"
    DATA_NOT_HELD = "DATA_NOT_HELD"
    RECIPIENT_CLASS_NOT_DECLARED = "RECIPIENT_CLASS_NOT_DECLARED"
    RECIPIENT_CLASS_CATEGORY_NOT_ALLOWED = "RECIPIENT_CLASS_CATEGORY_NOT_ALLOWED"
    RECIPIENT_CLASS_PURPOSE_NOT_ALLOWED = "RECIPIENT_CLASS_PURPOSE_NOT_ALLOWED"
    ANONYMISATION_REQUIRED = "ANONYMISATION_REQUIRED"
    LEGAL_GROUND_REQUIRED = "LEGAL_GROUND_REQUIRED"
    SALE_PROHIBITED = "SALE_PROHIBITED"
    MINOR_WITHOUT_GUARDIAN = "MINOR_WITHOUT_GUARDIAN"
    MINOR_CONSENT_REQUIRES_GUARDIAN = "MINOR_CONSENT_REQUIRES_GUARDIAN"
    NO_GUARDIAN_ON_RECORD = "NO_GUARDIAN_ON_RECORD"
    GUARDIAN_CONSENT_FOR_ADULT = "GUARDIAN_CONSENT_FOR_ADULT"
    GUARDIAN_NOT_REGISTERED = "GUARDIAN_NOT_REGISTERED"
    GUARDIAN_IS_MINOR = "GUARDIAN_IS_MINOR"
    RETENTION_EXPIRED = "RETENTION_EXPIRED"
    NEW_PURPOSE_NEEDS_CONSENT = "NEW_PURPOSE_NEEDS_CONSENT"
    OUTSIDE_STORAGE_REGION = "OUTSIDE_STORAGE_REGION"
    CROSS_BORDER_WITHOUT_CONSENT = "CROSS_BORDER_WITHOUT_CONSENT"
    SUBJECT_ERASED = "SUBJECT_ERASED"
    CATEGORY_ERASED = "CATEGORY_ERASED"
    ACCOUNT_CANCELLED = "ACCOUNT_CANCELLED"
    SUBJECT_ALREADY_REGISTERED = "SUBJECT_ALREADY_REGISTERED"
    ERASURE_GROUND_NOT_DECLARED = "ERASURE_GROUND_NOT_DECLARED"
    RIGHT_NOT_DECLARED = "RIGHT_NOT_DECLARED"
    REQUEST_CLOSED = "REQUEST_CLOSED"
    REQUEST_PAUSED = "REQUEST_PAUSED"
    REQUEST_NOT_PAUSED = "REQUEST_NOT_PAUSED"
    EXTENSION_TOO_LONG = "EXTENSION_TOO_LONG"
    REQUEST_OUT_OF_ORDER = "REQUEST_OUT_OF_ORDER"
    REQUEST_OVERDUE = "REQUEST_OVERDUE"
    POLICY_VERSION_NOT_NEWER = "POLICY_VERSION_NOT_NEWER"
    POLICY_RETROACTIVE = "POLICY_RETROACTIVE"
    POLICY_EFFECTIVE_BEFORE_SCHEDULED = "POLICY_EFFECTIVE_BEFORE_SCHEDULED"
    POLICY_VERSION_NOT_PUBLISHED = "POLICY_VERSION_NOT_PUBLISHED"
    POLICY_ID_CHANGED = "POLICY_ID_CHANGED"


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a command is refused, and the clause that says so (what a rule returns)."""

    reason: RefusalReason
    clause: str
    detail: str = ""


def refuse_if(refusal: Refusal | None) -> None:
    """Raise the refusal a rule returned, if it returned one."""
    if refusal is not None:
        raise Refused(refusal.reason, refusal.clause, refusal.detail)


class LedgerError(Exception):
    """Base of every error the ledger raises on purpose."""

    def __reduce__(self) -> tuple[object, ...]:
        """Pickle by state, whatever the subclass's constructor takes (errors cross from the
        writer process to the server's)."""
        return (_rebuilt, (type(self), self.args, dict(self.__dict__)))


def _rebuilt(
    kind: type[LedgerError], args: tuple[object, ...], state: dict[str, object]
) -> LedgerError:
    error = kind.__new__(kind)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class Refused(LedgerError):
    """The policy in force forbids the command; nothing was written."""

    def __init__(self, reason: RefusalReason, clause: str, detail: str = "") -> None:
        self._reason = reason
        self._clause = clause
        self._detail = detail
        text = f"{reason.value} ({clause})"
        super().__init__(f"{text}: {detail}" if detail else text)

    @property
    def reason(self) -> RefusalReason:
        return self._reason

    @property
    def clause(self) -> str:
        return self._clause

    @property
    def detail(self) -> str:
        return self._detail


class InvalidCommand(LedgerError):
    """The command is malformed in a way only the ledger can tell; nothing was written."""

    def __init__(self, field: str, problem: str) -> None:
        self._field = field
        super().__init__(f"{field}: {problem}")

    @property
    def field(self) -> str:
        return self._field


class SubjectNotFound(LedgerError):
    """No subject is known by that id or account reference."""

    def __init__(self, detail: str = "unknown subject") -> None:
        super().__init__(detail)


class RightsRequestNotFound(LedgerError):
    """No rights request has that id."""

    def __init__(self, request_id: UUID) -> None:
        self._request_id = request_id
        super().__init__(f"unknown rights request {request_id}")

    @property
    def request_id(self) -> UUID:
        return self._request_id


class IdempotencyConflict(LedgerError):
    """The idempotency key was already used by this principal for a different command."""

    def __init__(self, principal: str, key: str) -> None:
        self._principal = principal
        self._key = key
        super().__init__(f"this idempotency key of {principal!r} was used for another command")

    @property
    def principal(self) -> str:
        return self._principal

    @property
    def key(self) -> str:
        return self._key


class ConcurrencyExhausted(LedgerError):
    """Concurrent writers kept winning; the command was retried and gave up, writing nothing."""

    def __init__(self, attempts: int) -> None:
        self._attempts = attempts
        super().__init__(f"gave up after {attempts} conflicting attempts")

    @property
    def attempts(self) -> int:
        return self._attempts


class SealingError(LedgerError):
    """A sealed value could not be sealed or opened (wrong key, tampered bytes, shredded key)."""


class KeyShreddedError(SealingError):
    """The subject's data key was destroyed by erasure; its sealed values are gone for good."""


class PolicyError(LedgerError):
    """A policy document is malformed or inconsistent."""


class ConfigurationError(LedgerError):
    """The ledger's storage or key configuration is unusable."""

"""Commands: what a caller asks the ledger to record, validated at the boundary.

Personal values arrive as `SecretStr`, so they never show in a repr, a log line or an error;
the application seals them with the subject's key before any event is triggered.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal, Self
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    SecretStr,
    SerializationInfo,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ledger.clock import ensure_utc
from ledger.events import CollectionMode, ConsentGiver, RequestOutcome
from ledger.policy import Policy, RightKind

UtcDatetime = Annotated[datetime, AfterValidator(ensure_utc)]
ID_MAX_LENGTH = 64
"""The longest identifier a command takes (a category, a purpose, a recipient class)."""
Id = Annotated[str, Field(min_length=1, max_length=ID_MAX_LENGTH, pattern=r"^[a-z][a-z0-9_.-]*$")]
Ids = Annotated[tuple[Id, ...], Field(max_length=64)]
TEXT_MAX_LENGTH = 500
"""The longest free text a command takes (a recipient, a reason)."""
Text = Annotated[
    str,
    Field(min_length=1, max_length=TEXT_MAX_LENGTH, pattern=r"^[^\x00]*[^\s\x00][^\x00]*$"),
]
"""Free text: something other than blanks, and no NUL."""
RESERVED_FIELDS = frozenset({"account_id", "guardian", "reference", "reason"})
"""The names the ledger seals its own values under (the account id, a guardian's, where a
value is kept, a request's reason): a collected field of the same name would be sealed with
the same associated data, so its ciphertext could stand in for theirs."""


def _not_reserved(name: str) -> str:
    if name in RESERVED_FIELDS:
        msg = f"a field may not be named {name!r}: the ledger seals its own values under it"
        raise ValueError(msg)
    return name


FieldName = Annotated[
    str,
    Field(min_length=1, max_length=64, pattern=r"^[A-Za-z][A-Za-z0-9_.-]*$"),
    AfterValidator(_not_reserved),
]


def _secret_json(value: SecretStr, info: SerializationInfo) -> str:
    """Secrets stay masked in JSON, except in the canonical form used for the keyed digest."""
    context = info.context
    if isinstance(context, dict) and context.get("reveal_secrets"):
        return value.get_secret_value()
    return str(value)


Secret = Annotated[
    SecretStr,
    Field(min_length=1, max_length=4096),
    PlainSerializer(_secret_json, when_used="json"),
]
Values = Annotated[dict[FieldName, Secret], Field(max_length=64)]


class _Command(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    idempotency_key: str = Field(
        min_length=1, max_length=128, description="Caller's key; a retry with it is recorded once."
    )
    occurred_at: UtcDatetime = Field(description="When it happened in the source system.")
    occurred_at_defaulted: bool = Field(
        default=False,
        description="True when the caller gave no occurred-at and the ledger's clock supplied "
        "it; it is then left out of the idempotency comparison, so a retry still matches.",
    )

    def canonical(self) -> bytes:
        """Canonical bytes of the whole command, secrets included, for the keyed digest."""
        exclude = {"occurred_at", "occurred_at_defaulted"} if self.occurred_at_defaulted else None
        body = self.model_dump_json(context={"reveal_secrets": True}, exclude=exclude)
        return type(self).__name__.encode() + b"\x00" + body.encode()


class SubjectRef(BaseModel):
    """A person, named by pseudonym or by the service's own (namespace, account id)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    subject_id: UUID | None = Field(default=None, description="The ledger's pseudonym.")
    namespace: Id | None = Field(default=None, description="The service's account namespace.")
    account_id: Secret | None = Field(default=None, description="The service's account id.")

    @model_validator(mode="after")
    def _one_form(self) -> Self:
        by_account = self.namespace is not None or self.account_id is not None
        if (self.subject_id is None) == (not by_account):
            msg = "give either subject_id, or namespace and account_id"
            raise ValueError(msg)
        if by_account and (self.namespace is None or self.account_id is None):
            msg = "namespace and account_id go together"
            raise ValueError(msg)
        return self


class RegisterSubject(_Command):
    """Register a person under the service's account id."""

    namespace: Id = Field(description="The service's account namespace.")
    account_id: Secret = Field(description="The service's account id for the person.")
    birth_year: int | None = Field(default=None, ge=1900, le=2200, description="Birth year.")
    minor: bool = Field(default=False, description="True when the person is a minor.")
    guardian_account_id: Secret | None = Field(default=None, description="Guardian's account id.")
    guardian_subject_id: UUID | None = Field(default=None, description="Guardian's pseudonym.")
    jurisdiction: Id = Field(default="cn", description="Jurisdiction whose law applies.")
    storage_region: Id | None = Field(default=None, description="Defaults to the policy's region.")
    cross_border_basis: Id | None = Field(default=None, description="Basis for another region.")

    @field_validator("guardian_subject_id")
    @classmethod
    def _one_guardian_form(cls, value: UUID | None, info: ValidationInfo) -> UUID | None:
        """A registered guardian is named by pseudonym alone: their account id, sealed in the
        minor's registration under the minor's key, would outlive their own erasure."""
        if value is not None and info.data.get("guardian_account_id") is not None:
            msg = "a registered guardian is named by pseudonym alone, without guardian_account_id"
            raise ValueError(msg)
        return value


class RecordCollection(_Command):
    """Record that data of one category was collected."""

    subject: SubjectRef = Field(description="The person.")
    category: Id = Field(description="The policy category.")
    source: Id = Field(description="The collection source.")
    purposes: Ids = Field(min_length=1, description="Purposes it is collected for.")
    mode: CollectionMode = Field(
        default=CollectionMode.AUTOMATIC, description="Default or consent."
    )
    values: Values = Field(default_factory=dict, description="Collected values by field.")
    fields: tuple[FieldName, ...] = Field(
        default=(), max_length=64, description="Field names without values."
    )
    reference: Secret | None = Field(default=None, description="Where the value is kept instead.")
    storage_region: Id | None = Field(default=None, description="Defaults to the policy's region.")
    cross_border_basis: Id | None = Field(default=None, description="Basis for another region.")


class RecordUse(_Command):
    """Record that held data was used for a purpose."""

    subject: SubjectRef = Field(description="The person.")
    categories: Ids = Field(min_length=1, description="Categories used.")
    purpose: Id = Field(description="The purpose.")
    legal_basis: Id = Field(default="consent", description="The legal basis.")


class RecordShare(_Command):
    """Record that data was disclosed to a recipient."""

    subject: SubjectRef = Field(description="The person.")
    categories: Ids = Field(min_length=1, description="Categories disclosed.")
    recipient: Text = Field(description="The recipient organisation.")
    recipient_class: Id = Field(description="The policy's recipient class.")
    purpose: Id = Field(description="The purpose.")
    legal_basis: Id = Field(default="consent", description="The legal basis.")
    legal_ground: Id | None = Field(default=None, description="Legal ground, for authorities.")
    destination_region: Id | None = Field(default=None, description="Defaults to the policy's.")
    cross_border_basis: Id | None = Field(default=None, description="Basis for another region.")
    anonymised: bool = Field(default=False, description="Only anonymised aggregates.")
    sale: bool = Field(default=False, description="True if the disclosure is for consideration.")


class GiveConsent(_Command):
    """Record a consent."""

    subject: SubjectRef = Field(description="The person.")
    purposes: Ids = Field(min_length=1, description="Purposes consented to.")
    categories: Ids = Field(min_length=1, description="Categories consented to.")
    given_by: ConsentGiver = Field(default=ConsentGiver.SUBJECT, description="Person or guardian.")
    method: Id = Field(default="popup", description="How it was given.")


class WithdrawConsent(_Command):
    """Record a withdrawal of consent; empty purposes or categories mean all."""

    subject: SubjectRef = Field(description="The person.")
    purposes: Ids = Field(default=(), description="Purposes withdrawn.")
    categories: Ids = Field(default=(), description="Categories withdrawn.")
    withdrawn_by: ConsentGiver = Field(default=ConsentGiver.SUBJECT, description="Who withdrew.")
    method: Id = Field(default="settings", description="How it was withdrawn.")

    @model_validator(mode="after")
    def _some_scope(self) -> Self:
        if not self.purposes and not self.categories:
            msg = "name at least one purpose or category to withdraw"
            raise ValueError(msg)
        return self


class CorrectData(_Command):
    """Record a correction of held data."""

    subject: SubjectRef = Field(description="The person.")
    category: Id = Field(description="The category corrected.")
    values: Values = Field(min_length=1, description="Corrected values by field.")


class EraseSubject(_Command):
    """Erase the person's data on a ground; with no categories, everything and the key."""

    subject: SubjectRef = Field(description="The person.")
    ground: Id = Field(description="The erasure ground.")
    categories: Ids = Field(default=(), description="Categories to erase; empty for all.")


class CancelAccount(_Command):
    """Cancel the person's account, erasing their data (§6.3(5), §6.4)."""

    subject: SubjectRef = Field(description="The person.")


class OpenRightsRequest(_Command):
    """Open a rights request; the due instant follows from the policy's deadline."""

    subject: SubjectRef = Field(description="The person.")
    kind: RightKind = Field(description="The right exercised.")
    ground: Id | None = Field(default=None, description="Deletion ground.")
    purposes: Ids = Field(default=(), description="Purposes, for a withdrawal.")
    categories: Ids = Field(default=(), description="Categories, for a withdrawal or correction.")
    received_at: UtcDatetime | None = Field(default=None, description="Defaults to occurred-at.")

    @model_validator(mode="after")
    def _withdrawal_has_scope(self) -> Self:
        if self.kind is RightKind.CONSENT_WITHDRAWAL and not self.purposes and not self.categories:
            msg = "a consent-withdrawal request names at least one purpose or category"
            raise ValueError(msg)
        return self


class ExtendRightsRequest(_Command):
    """Extend a request's deadline, with a reason."""

    request_id: UUID = Field(description="The request.")
    days: int = Field(gt=0, le=365, description="Days to add.")
    reason: Text = Field(description="Why.")


class PauseRightsRequest(_Command):
    """Pause a request, with a reason."""

    request_id: UUID = Field(description="The request.")
    reason: Text = Field(description="Why.")


class ResumeRightsRequest(_Command):
    """Resume a paused request."""

    request_id: UUID = Field(description="The request.")


class Correction(BaseModel):
    """The values a fulfilled correction request records."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    category: Id = Field(description="The category corrected.")
    values: Values = Field(min_length=1, description="Corrected values by field.")


class CloseRightsRequest(_Command):
    """Close a request; fulfilling a deletion or cancellation carries out the erasure."""

    request_id: UUID = Field(description="The request.")
    outcome: RequestOutcome = Field(description="Fulfilled or refused.")
    reason: Text = Field(description="Why.")
    correction: Correction | None = Field(default=None, description="For a correction request.")


POLICY_DOCUMENT_MAX_CHARS = 1 << 20
"""The largest policy document a version may hold, as JSON (the seed policy is about 26 KB)."""
CHANGES_MAX_LINES = 500
"""The most lines of changes a publisher may describe a version with."""


class PublishPolicy(_Command):
    """Publish a policy version."""

    policy: Policy = Field(description="The policy document.")
    effective_at: UtcDatetime = Field(description="When it takes effect.")
    major: bool | None = Field(
        default=None,
        description="None lets the ledger classify the change against the version it replaces "
        "(`ledger.policy_diff`); True forces a major change (affected people must be told, §8) "
        "even when the computed changes are minor. A computed major change is never downgraded.",
    )
    changes: tuple[Text, ...] = Field(
        default=(),
        max_length=CHANGES_MAX_LINES,
        description="What changed, in the publisher's words; the ledger adds its own.",
    )

    @model_validator(mode="after")
    def _bounded_document(self) -> Self:
        """A version is read by every process every second and sent whole by GetPolicy and
        the audit stream: it must stay well inside one message."""
        if len(self.policy.model_dump_json()) > POLICY_DOCUMENT_MAX_CHARS:
            msg = f"a policy document is at most {POLICY_DOCUMENT_MAX_CHARS} characters of JSON"
            raise ValueError(msg)
        return self


class NotifyPolicy(_Command):
    """Record that the person was told of a policy version."""

    subject: SubjectRef = Field(description="The person.")
    version: str = Field(min_length=1, max_length=32, description="The version.")
    method: Id = Field(default="popup", description="How.")


class AcknowledgePolicy(_Command):
    """Record that the person acknowledged a policy version."""

    subject: SubjectRef = Field(description="The person.")
    version: str = Field(min_length=1, max_length=32, description="The version.")
    method: Id = Field(default="popup", description="How.")


RecordingCommand = (
    RecordCollection
    | RecordUse
    | RecordShare
    | GiveConsent
    | WithdrawConsent
    | CorrectData
    | NotifyPolicy
    | AcknowledgePolicy
)
"""Commands that may travel together in a batch."""

CommandKind = Literal[
    "RegisterSubject",
    "RecordCollection",
    "RecordUse",
    "RecordShare",
    "GiveConsent",
    "WithdrawConsent",
    "CorrectData",
    "EraseSubject",
    "CancelAccount",
    "OpenRightsRequest",
    "ExtendRightsRequest",
    "PauseRightsRequest",
    "ResumeRightsRequest",
    "CloseRightsRequest",
    "PublishPolicy",
    "NotifyPolicy",
    "AcknowledgePolicy",
]

"""Event payloads: the past-tense facts of the ledger, as frozen pydantic models.

Every payload carries the common envelope (who recorded it, when it happened and when it was
recorded, under which policy version, with which idempotency key). Personal values appear only
as sealed strings (`Sealed`); everything else is the readable audit trail.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from ledger.clock import ensure_utc
from ledger.policy import ResponseDeadline, RightKind

Sealed = Annotated[
    str,
    Field(
        pattern=r"^s[12]:[A-Za-z0-9_-]+=*$",
        description="A personal value sealed with the subject's data key (AES-256-GCM).",
    ),
]
UtcDatetime = Annotated[datetime, AfterValidator(ensure_utc)]


class Payload(BaseModel):
    """Base of every payload: frozen, no unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Envelope(Payload):
    """Fields every event carries."""

    occurred_at: UtcDatetime = Field(description="When it happened in the source system (UTC).")
    recorded_at: UtcDatetime = Field(description="When the ledger recorded it (UTC).")
    principal: str = Field(
        min_length=1,
        description="The authenticated service that recorded it, never a request field.",
    )
    policy_version: str = Field(description="Version of the policy in force at occurred-at.")
    idempotency_key: str = Field(
        min_length=1, description="The recording principal's idempotency key for the command."
    )


class SubjectEnvelope(Envelope):
    """Envelope of an event about one person."""

    subject_id: UUID = Field(description="The person's pseudonym: a random UUID.")


class ConsentGiver(StrEnum):
    """Who gave or withdrew a consent."""

    SUBJECT = "subject"
    GUARDIAN = "guardian"


class CollectionMode(StrEnum):
    """Whether data was collected by default or on the strength of a consent."""

    AUTOMATIC = "automatic"
    CONSENT = "consent"


class RequestOutcome(StrEnum):
    """How a rights request was closed."""

    FULFILLED = "fulfilled"
    REFUSED = "refused"


Ids = tuple[str, ...]


class SubjectRegistered(SubjectEnvelope):
    """A service registered a person under its own account id."""

    namespace: str = Field(description="The service's account namespace (e.g. 'app').")
    account_id: Sealed = Field(description="The service's account id for the person, sealed.")
    birth_year: int | None = Field(description="Birth year, when known; decides minority.")
    minor: bool = Field(description="True when the person was a minor at registration.")
    guardian: Sealed | None = Field(description="The guardian's account id, sealed.")
    guardian_subject_id: UUID | None = Field(description="The guardian's pseudonym, if registered.")
    jurisdiction: str = Field(description="Jurisdiction whose law applies (e.g. 'cn').")
    storage_region: str = Field(description="Region the person's data is stored in.")
    cross_border_basis: str | None = Field(description="Basis for storage outside the region.")


class DataCollected(SubjectEnvelope):
    """Data of one category was collected about the person."""

    category: str = Field(description="The policy category collected.")
    fields: Ids = Field(description="Names of the fields collected.")
    source: str = Field(description="The collection source (app, website, SDK, cookie, ...).")
    mode: CollectionMode = Field(description="Collected by default or with consent.")
    purposes: Ids = Field(description="Purposes the data is collected for.")
    storage_region: str = Field(description="Where it is stored.")
    cross_border_basis: str | None = Field(description="Basis for storage outside the region.")
    values: dict[str, Sealed] = Field(description="Collected values by field, sealed.")
    reference: Sealed | None = Field(description="Where the value is kept instead, sealed.")


class DataUsed(SubjectEnvelope):
    """The person's data was used for a purpose."""

    categories: Ids = Field(description="Categories used.")
    purpose: str = Field(description="The declared purpose.")
    legal_basis: str = Field(description="The legal basis relied on.")


class DataShared(SubjectEnvelope):
    """The person's data was disclosed to a recipient."""

    categories: Ids = Field(description="Categories disclosed.")
    recipient: str = Field(description="The recipient organisation (not a person).")
    recipient_class: str = Field(description="The policy's recipient class.")
    purpose: str = Field(description="The declared purpose of the disclosure.")
    legal_basis: str = Field(description="The legal basis relied on.")
    legal_ground: str | None = Field(description="Legal ground for a disclosure to authorities.")
    destination_region: str = Field(description="Region the recipient holds the data in.")
    cross_border_basis: str | None = Field(description="Basis for a transfer out of the region.")
    anonymised: bool = Field(description="True when only anonymised aggregates were disclosed.")


class ConsentGiven(SubjectEnvelope):
    """The person (or their guardian) consented to purposes and categories."""

    consent_id: UUID = Field(description="Id of this consent.")
    purposes: Ids = Field(description="Purposes consented to.")
    categories: Ids = Field(description="Categories consented to.")
    given_by: ConsentGiver = Field(description="The person or their guardian.")
    method: str = Field(description="How: pop-up, settings, device permission.")


class ConsentWithdrawn(SubjectEnvelope):
    """The person withdrew consent; past processing stays valid, future processing stops."""

    purposes: Ids = Field(description="Purposes withdrawn; empty means every purpose.")
    categories: Ids = Field(description="Categories withdrawn; empty means every category.")
    withdrawn_by: ConsentGiver = Field(description="The person or their guardian.")
    method: str = Field(description="How: settings, device permission, request.")
    request_id: UUID | None = Field(description="The rights request it fulfils, if any.")


class DataCorrected(SubjectEnvelope):
    """Values of a held category were corrected."""

    category: str = Field(description="The category corrected.")
    values: dict[str, Sealed] = Field(description="Corrected values by field, sealed.")
    request_id: UUID | None = Field(description="The rights request it fulfils, if any.")


class DataErased(SubjectEnvelope):
    """The person's data was erased on a ground of the policy."""

    ground: str = Field(description="The erasure ground.")
    categories: Ids = Field(description="Categories erased; empty means all of the person's data.")
    request_id: UUID | None = Field(description="The rights request it fulfils, if any.")


class AccountCancelled(SubjectEnvelope):
    """The person's account was cancelled."""

    request_id: UUID | None = Field(description="The rights request it fulfils, if any.")


class KeyShredded(SubjectEnvelope):
    """The person's data key was destroyed: their sealed values are unreadable everywhere."""

    request_id: UUID | None = Field(description="The rights request it fulfils, if any.")
    not_reached: str = Field(description="What shredding cannot reach (e.g. delivered exports).")


class PolicyNotified(SubjectEnvelope):
    """The person was told of a major policy change."""

    version: str = Field(description="The new policy version.")
    method: str = Field(description="How the person was told.")


class PolicyAcknowledged(SubjectEnvelope):
    """The person acknowledged a policy version."""

    version: str = Field(description="The policy version acknowledged.")
    method: str = Field(description="How the acknowledgement was given.")


class RightsRequestOpened(SubjectEnvelope):
    """The person asked to exercise a right."""

    request_id: UUID = Field(description="Id of the request.")
    kind: RightKind = Field(description="The right exercised.")
    ground: str | None = Field(description="Deletion ground, for a deletion request.")
    purposes: Ids = Field(description="Purposes a withdrawal request covers.")
    categories: Ids = Field(description="Categories a withdrawal or correction covers.")
    received_at: UtcDatetime = Field(description="When the request was received.")
    due_at: UtcDatetime = Field(description="When it must be answered.")
    deadline_kind: str = Field(description="'calendar' or 'working' days.")
    deadline_clause: str = Field(description="The clause setting the deadline.")
    withdrew_at_receipt: bool = Field(
        default=False,
        description="A withdrawal request whose ConsentWithdrawn was recorded with it, dated "
        "at receipt (§6.5: a withdrawal takes effect at once); closing it withdraws nothing "
        "more. False on requests opened before withdrawals took effect at receipt.",
    )
    latest_due_at: UtcDatetime | None = Field(
        default=None,
        description="The latest it may ever be due: extensions and pauses together never move "
        "its due instant past this (§6.4), so once it has passed the request is late whatever "
        "happens next, paused or not. None on requests opened before it was recorded.",
    )
    deadline: ResponseDeadline | None = Field(
        default=None,
        description="The deadline's terms, as the policy in force at receipt set them: its "
        "extensions and pauses are counted under these, whatever a later version says. None "
        "on requests opened before they were recorded (the version in force at receipt then).",
    )


_CLEAR_REASON = "Why, in clear: only in events recorded before reasons were sealed (empty since)."
_SEALED_REASON = (
    "Why, sealed with the person's data key: staff write it, and free text may name the "
    "person. None in older events, or when the person's key was already shredded."
)


class RightsRequestExtended(SubjectEnvelope):
    """A request's deadline was extended, with a reason."""

    request_id: UUID = Field(description="Id of the request.")
    days: int = Field(gt=0, description="Days added.")
    reason: str = Field(default="", description=_CLEAR_REASON)
    sealed_reason: Sealed | None = Field(default=None, description=_SEALED_REASON)
    due_at: UtcDatetime = Field(description="The new due instant.")


class RightsRequestPaused(SubjectEnvelope):
    """A request was paused (e.g. awaiting identity verification), with a reason."""

    request_id: UUID = Field(description="Id of the request.")
    reason: str = Field(default="", description=_CLEAR_REASON)
    sealed_reason: Sealed | None = Field(default=None, description=_SEALED_REASON)


class RightsRequestResumed(SubjectEnvelope):
    """A paused request was resumed; the deadline moves by the paused time."""

    request_id: UUID = Field(description="Id of the request.")
    due_at: UtcDatetime = Field(description="The new due instant.")


class RightsRequestClosed(SubjectEnvelope):
    """A request was closed as fulfilled or refused."""

    request_id: UUID = Field(description="Id of the request.")
    outcome: RequestOutcome = Field(description="Fulfilled or refused.")
    reason: str = Field(default="", description=_CLEAR_REASON)
    sealed_reason: Sealed | None = Field(default=None, description=_SEALED_REASON)
    late: bool = Field(description="True when closed after its due instant.")


class PolicyPublished(Envelope):
    """A policy version was published."""

    version: str = Field(description="The version published.")
    effective_at: UtcDatetime = Field(description="When it takes effect.")
    digest: str = Field(description="SHA-256 of the canonical policy document.")
    text_sha256: str = Field(description="SHA-256 of the human-readable text.")
    major: bool = Field(description="True for a major change (people must be told).")
    changes: tuple[str, ...] = Field(description="What changed, one line each.")
    document: dict[str, Any] = Field(description="The policy document itself.")
    previous_version: str | None = Field(
        default=None,
        description="The version the changes were computed against; None for the first version "
        "and in events recorded before changes were computed.",
    )


SUBJECT_PAYLOADS: tuple[type[Payload], ...] = (
    SubjectRegistered,
    DataCollected,
    DataUsed,
    DataShared,
    ConsentGiven,
    ConsentWithdrawn,
    DataCorrected,
    DataErased,
    AccountCancelled,
    KeyShredded,
    PolicyNotified,
    PolicyAcknowledged,
)
REQUEST_PAYLOADS: tuple[type[Payload], ...] = (
    RightsRequestOpened,
    RightsRequestExtended,
    RightsRequestPaused,
    RightsRequestResumed,
    RightsRequestClosed,
)
ALL_PAYLOADS: tuple[type[Payload], ...] = (
    *SUBJECT_PAYLOADS,
    *REQUEST_PAYLOADS,
    PolicyPublished,
)

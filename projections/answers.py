"""What the view queries answer: frozen, self-describing models, one per kind of row.

Instants are aware UTC datetimes (the views store microseconds). Personal values appear only
sealed (`HeldField.sealed`, `SubjectViewAnswer.account_id_sealed`): opening them is the
caller's business, and only for a principal allowed to.
"""

from __future__ import annotations

from datetime import datetime
from typing import Generic, TypeVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from ledger.events import ConsentGiver, RequestOutcome
from ledger.policy import RightKind
from ledger.rights import RequestStatus

__all__ = [
    "ConsentRow",
    "DeadlineCounts",
    "DeadlinePage",
    "HeldCategoryView",
    "HeldField",
    "NoticeRow",
    "Paged",
    "RegisterRow",
    "RetentionPage",
    "RetentionRow",
    "SharedWith",
    "SubjectViewAnswer",
    "VersionRow",
]

_R = TypeVar("_R", bound=BaseModel)


class _Answer(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Paged(_Answer, Generic[_R]):
    """One page of rows and the token of the next."""

    items: tuple[_R, ...] = Field(description="The rows of this page, in the query's order.")
    next_page_token: str = Field(description="Token of the next page; empty at the end.")


# --- a person's view ----------------------------------------------------------------------------


class HeldField(_Answer):
    """One field held for a category: its latest sealed value."""

    field: str = Field(description="Field name; '@reference' for a collection's reference.")
    seal_field: str = Field(description="The field name the value was sealed under.")
    sealed: str = Field(description="The value, sealed with the person's data key.")
    set_at: datetime = Field(description="When it was last collected or corrected.")
    position: int = Field(description="Log position of the event that set it.")


class SharedWith(_Answer):
    """The recipients of one recipient class that data went to."""

    recipient_class: str = Field(description="The policy's recipient class.")
    recipients: tuple[str, ...] = Field(description="Its recipients data went to, sorted.")


class HeldCategoryView(_Answer):
    """A category held about a person and everything known of its processing."""

    category: str = Field(description="The policy category.")
    first_at: datetime | None = Field(description="First collection; None if only used/shared.")
    last_at: datetime | None = Field(description="Latest collection; None if only used/shared.")
    collections: int = Field(description="Number of collections.")
    sources: tuple[str, ...] = Field(description="Sources it came from.")
    purposes: tuple[str, ...] = Field(description="Purposes it was collected, used or shared for.")
    bases: tuple[str, ...] = Field(description="Collection modes and legal bases.")
    regions: tuple[str, ...] = Field(description="Regions stored in or shared to.")
    recipient_classes: tuple[str, ...] = Field(description="Recipient classes it went to.")
    recipients: tuple[str, ...] = Field(description="Recipients it went to.")
    shared_with: tuple[SharedWith, ...] = Field(description="Its recipients by class.")
    fields: tuple[HeldField, ...] = Field(description="Fields held, by name.")


class SubjectViewAnswer(_Answer):
    """One person as the subject view holds them."""

    subject_id: UUID = Field(description="The pseudonym.")
    namespace: str = Field(description="Account namespace of the registering service.")
    account_id_sealed: str | None = Field(description="Sealed account id; None once shredded.")
    registered_at: datetime = Field(description="When the person registered.")
    minor: bool = Field(description="Minor at registration.")
    has_guardian: bool = Field(description="A guardian is on record.")
    storage_region: str = Field(description="Region the person's data is stored in.")
    erased: bool = Field(description="All data erased.")
    cancelled: bool = Field(description="Account cancelled.")
    key_shredded: bool = Field(description="Data key destroyed.")
    closed_at: datetime | None = Field(description="When erased or cancelled.")
    events: int = Field(description="The person's events folded.")
    last_position: int = Field(description="Log position of the person's last event folded.")
    categories: tuple[HeldCategoryView, ...] = Field(description="Categories held, by name.")
    recipient_classes: tuple[str, ...] = Field(description="Every recipient class data went to.")
    recipients: tuple[str, ...] = Field(description="Every recipient data went to.")
    shared_with: tuple[SharedWith, ...] = Field(
        description="Every recipient data went to, by class."
    )


# --- lists --------------------------------------------------------------------------------------


class ConsentRow(_Answer):
    """A consent for one purpose and category, in force over [given_at, withdrawn_at)."""

    consent_id: UUID = Field(description="Id of the consent.")
    purpose: str = Field(description="The purpose.")
    category: str = Field(description="The category.")
    given_at: datetime = Field(description="When it was given.")
    given_by: ConsentGiver = Field(description="The person or their guardian.")
    method: str = Field(description="How it was given.")
    policy_version: str = Field(description="Policy version it was given under.")
    position: int = Field(description="Log position of the ConsentGiven event.")
    withdrawn_at: datetime | None = Field(description="When a withdrawal ended it.")
    in_force: bool = Field(description="In force at the query's instant.")


class RegisterRow(_Answer):
    """A row of the record of processing activities."""

    activity: str = Field(description="collection, use or share.")
    category: str = Field(description="The category.")
    purpose: str = Field(description="The purpose.")
    legal_basis: str = Field(description="The legal basis (a collection's: its mode).")
    recipient_class: str = Field(description="The recipient class; empty unless shared.")
    region: str = Field(description="Storage or destination region; empty for uses.")
    subjects: int = Field(description="People it covers.")
    events: int = Field(description="Events it covers.")
    first_seen: datetime = Field(description="First seen (occurred-at).")
    last_seen: datetime = Field(description="Last seen (occurred-at).")


class DeadlineRow(_Answer):
    """A rights request against its deadline."""

    request_id: UUID = Field(description="Id of the request.")
    subject_id: UUID = Field(description="The person who asked.")
    kind: RightKind = Field(description="The right exercised.")
    status: RequestStatus = Field(description="Where it stands.")
    received_at: datetime = Field(description="When it was received.")
    due_at: datetime = Field(description="When it must be answered.")
    deadline_kind: str = Field(description="'calendar' or 'working' days.")
    deadline_clause: str = Field(description="Clause the deadline comes from.")
    extended_days: int = Field(description="Days of extension so far.")
    paused_at: datetime | None = Field(description="When paused, if paused.")
    closed_at: datetime | None = Field(description="When closed, if closed.")
    outcome: RequestOutcome | None = Field(description="How it closed, if closed.")
    late: bool = Field(description="Closed after its due instant.")
    overdue: bool = Field(description="Running and past its due instant now.")
    due_soon: bool = Field(description="Running and due within the asked days.")


class DeadlineCounts(_Answer):
    """How many requests of one kind stand where."""

    kind: RightKind = Field(description="The kind of request.")
    open: int = Field(description="Not closed (running or paused).")
    paused: int = Field(description="Paused.")
    due_soon: int = Field(description="Running and due soon.")
    overdue: int = Field(description="Running and overdue.")
    closed: int = Field(description="Closed.")
    closed_late: int = Field(description="Closed late.")
    total: int = Field(description="All of this kind.")


class DeadlinePage(Paged[DeadlineRow]):
    """A page of deadlines, with the per-kind summary and the instant it was judged at."""

    summary: tuple[DeadlineCounts, ...] = Field(description="Counts per kind, by kind.")
    as_of: datetime = Field(description="The instant 'now' was.")


class RetentionRow(_Answer):
    """A person's category held past its retention period."""

    subject_id: UUID = Field(description="The person.")
    category: str = Field(description="The category.")
    first_at: datetime = Field(description="First collection.")
    last_at: datetime = Field(description="Last collection: the period runs from here.")
    retention_days: int = Field(description="The period under the policy applied; 0 if none.")
    due_at: datetime = Field(description="When the period ended.")
    in_policy: bool = Field(description="False when the policy applied no longer declares it.")


class RetentionPage(Paged[RetentionRow]):
    """A page of retention due and the instant it was judged at."""

    as_of: datetime = Field(description="The instant 'now' was.")


class VersionRow(_Answer):
    """A published policy version, its change, and its notices so far."""

    version: str = Field(description="The version.")
    previous_version: str | None = Field(description="The version it replaced.")
    major: bool = Field(description="A major change.")
    effective_at: datetime = Field(description="When it takes effect.")
    published_at: datetime = Field(description="When it was published.")
    reasons: tuple[str, ...] = Field(description="What changed, one line each.")
    affected: int = Field(description="People affected when it was published.")
    notified: int = Field(description="People told so far.")
    acknowledged: int = Field(description="People who acknowledged so far.")
    position: int = Field(description="Log position of the PolicyPublished event.")


class NoticeRow(_Answer):
    """One person's notice of one version."""

    subject_id: UUID = Field(description="The person.")
    version: str = Field(description="The version.")
    notified_at: datetime | None = Field(description="When told; None if never.")
    method: str | None = Field(description="How told; None if never.")
    notified_position: int | None = Field(description="Log position of PolicyNotified.")
    acknowledged_at: datetime | None = Field(description="When acknowledged; None if not yet.")
    acknowledged_position: int | None = Field(description="Log position of PolicyAcknowledged.")

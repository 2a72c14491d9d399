"""A subject's compact state: what is held, the consents in force, and the closing flags.

The state is folded from events only; it keeps no personal value (those stay sealed in the
events), so snapshots of it carry none either.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from ledger import events as ev


class _State(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HeldCategory(_State):
    """A category of data held about the person."""

    first_at: datetime = Field(description="First collection (occurred-at).")
    last_at: datetime = Field(description="Latest collection or correction (occurred-at).")
    sources: set[str] = Field(description="Sources it came from.")
    purposes: set[str] = Field(description="Purposes it was collected for.")
    regions: set[str] = Field(description="Regions it is stored in.")
    collections: int = Field(description="How many collections recorded it.")


class ConsentGrant(_State):
    """A consent given, as recorded."""

    consent_id: UUID = Field(description="Id of the consent.")
    purposes: set[str] = Field(description="Purposes covered.")
    categories: set[str] = Field(description="Categories covered.")
    given_at: datetime = Field(description="When it was given (occurred-at).")
    given_by: ev.ConsentGiver = Field(description="The person or their guardian.")
    policy_version: str = Field(description="Policy version it was given under.")


class ConsentWithdrawal(_State):
    """A withdrawal, as recorded; an empty set means 'every'."""

    purposes: set[str] = Field(description="Purposes withdrawn; empty means all.")
    categories: set[str] = Field(description="Categories withdrawn; empty means all.")
    at: datetime = Field(description="When it was withdrawn (occurred-at).")


class ConsentStatus(Enum):
    """Where consent stands for one purpose and category at one instant."""

    GIVEN = "given"
    WITHDRAWN = "withdrawn"
    NONE = "none"


class SubjectState(_State):
    """Everything the rules need to know about one person, and no personal value."""

    subject_id: UUID = Field(description="The person's pseudonym.")
    namespace: str = Field(description="Account namespace of the registering service.")
    registered_at: datetime = Field(description="When the person registered (occurred-at).")
    birth_year: int | None = Field(description="Birth year, when known.")
    minor: bool = Field(description="Minor at registration.")
    has_guardian: bool = Field(description="A guardian is on record.")
    storage_region: str = Field(description="Region the person's data is stored in.")
    held: dict[str, HeldCategory] = Field(default_factory=dict, description="Held categories.")
    consents: list[ConsentGrant] = Field(default_factory=list, description="Consents given.")
    withdrawals: list[ConsentWithdrawal] = Field(default_factory=list, description="Withdrawals.")
    shared_with: dict[str, set[str]] = Field(
        default_factory=dict, description="Recipients by recipient class."
    )
    purposes_used: set[str] = Field(default_factory=set, description="Purposes data was used for.")
    erased: bool = Field(default=False, description="All data erased.")
    cancelled: bool = Field(default=False, description="Account cancelled.")
    key_shredded: bool = Field(default=False, description="Data key destroyed.")
    closed_at: datetime | None = Field(default=None, description="When erased or cancelled.")
    notified_versions: set[str] = Field(default_factory=set, description="Policy versions told.")
    acknowledged_versions: set[str] = Field(
        default_factory=set, description="Policy versions acknowledged."
    )
    events: int = Field(default=1, description="Number of events folded.")

    # --- queries ---------------------------------------------------------------------------

    def consent_status(self, purpose: str, category: str, at: datetime) -> ConsentStatus:
        """The latest consent act covering (purpose, category) at or before `at`.

        A grant and a withdrawal at the same instant resolve to the withdrawal.
        """
        latest: tuple[datetime, int] | None = None
        for g in self.consents:
            if g.given_at <= at and purpose in g.purposes and category in g.categories:
                candidate = (g.given_at, 0)
                latest = candidate if latest is None or candidate > latest else latest
        for w in self.withdrawals:
            if w.at <= at and _covers(w.purposes, purpose) and _covers(w.categories, category):
                candidate = (w.at, 1)
                latest = candidate if latest is None or candidate > latest else latest
        if latest is None:
            return ConsentStatus.NONE
        return ConsentStatus.WITHDRAWN if latest[1] == 1 else ConsentStatus.GIVEN

    # --- folds -------------------------------------------------------------------------------

    @classmethod
    def registered(cls, e: ev.SubjectRegistered) -> SubjectState:
        return cls(
            subject_id=e.subject_id,
            namespace=e.namespace,
            registered_at=e.occurred_at,
            birth_year=e.birth_year,
            minor=e.minor,
            has_guardian=e.guardian is not None or e.guardian_subject_id is not None,
            storage_region=e.storage_region,
        )

    def on_collected(self, e: ev.DataCollected) -> None:
        held = self.held.get(e.category)
        if held is None:
            self.held[e.category] = HeldCategory(
                first_at=e.occurred_at,
                last_at=e.occurred_at,
                sources={e.source},
                purposes=set(e.purposes),
                regions={e.storage_region},
                collections=1,
            )
        else:
            held.first_at = min(held.first_at, e.occurred_at)
            held.last_at = max(held.last_at, e.occurred_at)
            held.sources.add(e.source)
            held.purposes.update(e.purposes)
            held.regions.add(e.storage_region)
            held.collections += 1
        self.events += 1

    def on_used(self, e: ev.DataUsed) -> None:
        self.purposes_used.add(e.purpose)
        self.events += 1

    def on_shared(self, e: ev.DataShared) -> None:
        self.shared_with.setdefault(e.recipient_class, set()).add(e.recipient)
        self.events += 1

    def on_consent_given(self, e: ev.ConsentGiven) -> None:
        self.consents.append(
            ConsentGrant(
                consent_id=e.consent_id,
                purposes=set(e.purposes),
                categories=set(e.categories),
                given_at=e.occurred_at,
                given_by=e.given_by,
                policy_version=e.policy_version,
            )
        )
        self.events += 1

    def on_consent_withdrawn(self, e: ev.ConsentWithdrawn) -> None:
        self.withdrawals.append(
            ConsentWithdrawal(
                purposes=set(e.purposes), categories=set(e.categories), at=e.occurred_at
            )
        )
        self.events += 1

    def on_corrected(self, e: ev.DataCorrected) -> None:
        held = self.held.get(e.category)
        if held is not None:
            held.last_at = max(held.last_at, e.occurred_at)
        self.events += 1

    def on_erased(self, e: ev.DataErased) -> None:
        if e.categories:
            for category in e.categories:
                self.held.pop(category, None)
        else:
            self.held.clear()
            self.erased = True
            self.closed_at = self.closed_at or e.occurred_at
        self.events += 1

    def on_cancelled(self, e: ev.AccountCancelled) -> None:
        self.cancelled = True
        self.closed_at = self.closed_at or e.occurred_at
        self.events += 1

    def on_key_shredded(self, _: ev.KeyShredded) -> None:
        self.key_shredded = True
        self.events += 1

    def on_notified(self, e: ev.PolicyNotified) -> None:
        self.notified_versions.add(e.version)
        self.events += 1

    def on_acknowledged(self, e: ev.PolicyAcknowledged) -> None:
        self.acknowledged_versions.add(e.version)
        self.events += 1


def minor_at(birth_year: int | None, minor: bool, instant: datetime, age_of_majority: int) -> bool:
    """Minority at an instant. A known birth year decides, and in doubt (the year of the
    birthday itself) the person is a minor; without one, the flag given at registration."""
    if birth_year is not None:
        return instant.year - birth_year <= age_of_majority
    return minor


def _covers(scope: set[str], item: str) -> bool:
    return not scope or item in scope

"""A subject's compact state: what is held, the consents in force, and the closing flags.

The state is folded from events only; it keeps no personal value (those stay sealed in the
events), so snapshots of it carry none either. It is made of slotted dataclasses, not pydantic
models: it is changed on every recorded event, and stored (in snapshots) through a pydantic
`TypeAdapter` (see `ledger.transcoding`).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from uuid import UUID

from ledger import events as ev


@dataclass(slots=True)
class HeldCategory:
    """A category of data held about the person: first and latest collection (occurred-at;
    a correction moves neither), the sources, purposes and regions, and how many collections.

    `collected` keeps every collection's occurred-at, in order, so that an event dated before
    the latest collection is judged by the collections up to its own instant (retention runs
    from the last one before it, §7), and a partial erasure dated before some of them keeps
    those (§6.3). A snapshot made before it was kept has it empty; `instants` then gives the
    first and latest collection.
    """

    first_at: datetime
    last_at: datetime
    sources: set[str]
    purposes: set[str]
    regions: set[str]
    collections: int
    collected: list[datetime] = field(default_factory=list)

    def instants(self) -> list[datetime]:
        """Every collection's occurred-at, in order (or the first and latest, from a snapshot
        made before they were kept)."""
        if not self.collected:
            self.collected = sorted({self.first_at, self.last_at})
        return self.collected

    def last_collected_at_or_before(self, at: datetime) -> datetime | None:
        """The latest collection dated at or before `at`, if any."""
        if at >= self.last_at:
            return self.last_at
        instants = self.instants()
        index = bisect.bisect_right(instants, at)
        return instants[index - 1] if index else None


@dataclass(slots=True)
class ConsentGrant:
    """A consent given, as recorded: its scope, when (occurred-at), by whom, under which
    policy version."""

    consent_id: UUID
    purposes: set[str]
    categories: set[str]
    given_at: datetime
    given_by: ev.ConsentGiver
    policy_version: str


@dataclass(slots=True)
class ConsentWithdrawal:
    """A withdrawal, as recorded (occurred-at); an empty set means 'every'."""

    purposes: set[str]
    categories: set[str]
    at: datetime


class ConsentStatus(Enum):
    """Where consent stands for one purpose and category at one instant."""

    GIVEN = "given"
    WITHDRAWN = "withdrawn"
    NONE = "none"


@dataclass(slots=True)
class SubjectState:
    """Everything the rules need to know about one person, and no personal value.

    Registration facts (namespace, occurred-at, birth year, minority, guardian, region); the
    categories held; consents and withdrawals; recipients by class; purposes used; the closing
    flags and when the subject closed; policy versions told and acknowledged; events folded.
    """

    subject_id: UUID
    namespace: str
    registered_at: datetime
    birth_year: int | None
    minor: bool
    has_guardian: bool
    storage_region: str
    held: dict[str, HeldCategory] = field(default_factory=dict)
    consents: list[ConsentGrant] = field(default_factory=list)
    withdrawals: list[ConsentWithdrawal] = field(default_factory=list)
    shared_with: dict[str, set[str]] = field(default_factory=dict)
    purposes_used: set[str] = field(default_factory=set)
    erased: bool = False
    cancelled: bool = False
    key_shredded: bool = False
    closed_at: datetime | None = None
    notified_versions: set[str] = field(default_factory=set)
    acknowledged_versions: set[str] = field(default_factory=set)
    events: int = 1
    erased_categories: dict[str, datetime] = field(default_factory=dict)
    """Categories erased on their own (a partial erasure), with its occurred-at: values of
    theirs collected or corrected up to then are not revealed any more (§6.3, §7)."""

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

    def value_erased(self, category: str, at: datetime) -> bool:
        """Whether values of `category` collected or corrected at `at` were erased since."""
        erased_at = self.erased_categories.get(category)
        return erased_at is not None and at <= erased_at

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
        at = e.occurred_at
        if held is None:
            self.held[e.category] = HeldCategory(
                first_at=at,
                last_at=at,
                sources={e.source},
                purposes=set(e.purposes),
                regions={e.storage_region},
                collections=1,
                collected=[at],
            )
        else:
            instants = held.instants()
            if at >= instants[-1]:
                instants.append(at)
            else:
                bisect.insort_right(instants, at)
            held.first_at = min(held.first_at, at)
            held.last_at = max(held.last_at, at)
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

    def on_corrected(self, _: ev.DataCorrected) -> None:
        """A correction replaces values; it is not a collection, from the last of which the
        category's retention runs (§7), so `last_at` stays."""
        self.events += 1

    def on_erased(self, e: ev.DataErased) -> None:
        if e.categories:
            for category in e.categories:
                self._erase_held(category, e.occurred_at)
                erased_at = self.erased_categories.get(category, e.occurred_at)
                self.erased_categories[category] = max(erased_at, e.occurred_at)
        else:
            self.held.clear()
            self.erased = True
            self.closed_at = self.closed_at or e.occurred_at
        self.events += 1

    def _erase_held(self, category: str, at: datetime) -> None:
        """A partial erasure at `at` erases the values collected up to then (§6.3): the
        category stays held only by collections dated after it."""
        held = self.held.get(category)
        if held is None:
            return
        instants = held.instants()
        kept = instants[bisect.bisect_right(instants, at) :]
        if not kept:
            del self.held[category]
            return
        held.collected = kept
        held.first_at = kept[0]
        held.collections = len(kept)

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

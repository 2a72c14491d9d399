"""The policy book: every published policy version, and which was in force at an instant."""

from __future__ import annotations

import bisect
from datetime import datetime, timedelta
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event
from pydantic import BaseModel, ConfigDict, Field

from ledger import events as ev
from ledger.errors import RefusalReason as R
from ledger.errors import Refused
from ledger.policy import Policy, parse_policy

POLICY_BOOK_ID = uuid5(UUID("0b7e8a52-7a8c-5d7e-8f0e-2a4b6c8d0e1f"), "policy-book")
_RETROACTIVE_TOLERANCE = timedelta(minutes=5)
TAKES_EFFECT_AFTER = timedelta(seconds=3)
"""The soonest a new version takes effect after it is recorded: longer than any writer's
interval between two reads of the policy book (`ledger.application`, 1 s), with margin."""


class PublishedVersion(BaseModel):
    """One published version, without its document."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str = Field(description="The version.")
    effective_at: datetime = Field(description="When it takes effect.")
    digest: str = Field(description="SHA-256 of the canonical document.")
    text_sha256: str = Field(description="SHA-256 of the human-readable text.")
    major: bool = Field(description="Major change.")
    changes: tuple[str, ...] = Field(description="What changed.")
    published_at: datetime = Field(description="When it was recorded.")


def version_key(version: str) -> tuple[int, ...]:
    """A version number's order: its parts as numbers, trailing zeros left out ("4.0" is
    "4", not a newer version)."""
    parts = [int(part) for part in version.split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


class PolicyBook(Aggregate):
    """All versions of the policy; there is one book per ledger."""

    versions: list[PublishedVersion]
    documents: dict[str, dict[str, object]]

    @staticmethod
    def create_id() -> UUID:
        return POLICY_BOOK_ID

    @event("PolicyBookOpened")
    def __init__(self) -> None:
        self.versions = []
        self.documents = {}

    def effective_instant(self, requested: datetime, now: datetime) -> datetime:
        """When a version asked to take effect at `requested` takes effect: an instant within
        the clocks' skew before now, or sooner than `TAKES_EFFECT_AFTER` from now, is taken as
        that much after now, so no version ever reaches back over events already recorded
        under the one before, and every writer on the store (each re-reads the book every
        second) knows of it before it is in force (the first version may reach into the past:
        it is the policy already in use)."""
        soonest = now + TAKES_EFFECT_AFTER
        if self.versions and now - _RETROACTIVE_TOLERANCE <= requested < soonest:
            return soonest
        return requested

    def publish(self, payload: ev.PolicyPublished, now: datetime) -> None:
        """Publish a version newer than all others, taking effect no earlier than now nor than
        any version already published (§8), so that versions take effect in the order of their
        numbers and each replaces the one it was classified against; the very first version may
        reach into the past, since it is the policy already in use."""
        if self.versions:
            latest = max(self.versions, key=lambda v: version_key(v.version))
            if version_key(payload.version) <= version_key(latest.version):
                raise Refused(
                    R.POLICY_VERSION_NOT_NEWER, "§8", f"version must be newer than {latest.version}"
                )
            first_id = next(iter(self.documents.values())).get("policy_id")
            if payload.document.get("policy_id") != first_id:
                raise Refused(
                    R.POLICY_ID_CHANGED, "§8", f"this book holds versions of policy {first_id!r}"
                )
            if payload.effective_at < now - _RETROACTIVE_TOLERANCE:
                raise Refused(
                    R.POLICY_RETROACTIVE, "§8", "a new version cannot take effect in the past"
                )
            scheduled = self.taking_effect_last()
            if scheduled is not None and payload.effective_at <= scheduled.effective_at:
                # It would be replaced by an older version when that one takes effect: a change
                # never classified against it, and nobody told (§8).
                raise Refused(
                    R.POLICY_EFFECTIVE_BEFORE_SCHEDULED,
                    "§8",
                    f"version {scheduled.version} takes effect then or later; a newer version "
                    "must take effect after it",
                )
        self._published(payload)

    @event("PolicyPublished")
    def _published(self, payload: ev.PolicyPublished) -> None:
        self.versions.append(
            PublishedVersion(
                version=payload.version,
                effective_at=payload.effective_at,
                digest=payload.digest,
                text_sha256=payload.text_sha256,
                major=payload.major,
                changes=payload.changes,
                published_at=payload.recorded_at,
            )
        )
        self.documents[payload.version] = payload.document

    def in_force_at(self, instant: datetime) -> PublishedVersion | None:
        """The version in force at an instant: the latest effective at or before it."""
        candidates = [v for v in self.versions if v.effective_at <= instant]
        if not candidates:
            return None
        return max(candidates, key=_effect_order)

    def taking_effect_last(self) -> PublishedVersion | None:
        """The version that takes effect last, and so the one a new version replaces (versions
        take effect in the order of their numbers, `publish`); None before the first."""
        return max(self.versions, key=_effect_order, default=None)

    def policy(self, version: str) -> Policy:
        """The policy document of a version, validated."""
        return parse_policy(self.documents[version])


def _effect_order(v: PublishedVersion) -> tuple[datetime, tuple[int, ...]]:
    """Versions in the order they take effect (by number among those of one instant)."""
    return (v.effective_at, version_key(v.version))


class VersionIndex:
    """The book's versions by effective instant, for a quick 'in force at' (usually the latest)."""

    def __init__(self, book: PolicyBook | None) -> None:
        versions = [] if book is None else list(book.versions)
        versions.sort(key=_effect_order)
        self._versions = versions
        self._starts = [v.effective_at for v in versions]

    def at(self, instant: datetime) -> PublishedVersion | None:
        if self._starts and instant >= self._starts[-1]:
            return self._versions[-1]
        index = bisect.bisect_right(self._starts, instant)
        return self._versions[index - 1] if index else None

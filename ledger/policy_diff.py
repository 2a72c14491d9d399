"""Policy changes: what differs between two versions, which differences are major (§8), and
whose data a major change reaches.

`diff_policies(old, new)` compares the provisions of two versions, one `PolicyChange` per
difference. Cosmetic fields (title, names, examples, members, descriptions, clause numbers,
interpretations) are not compared; a new `text_sha256` alone is one minor "policy text
revised". Narrowings with no kind of their own (a shorter deadline, a category made sensitive)
are not reported.

A change is **major** when it widens processing or weakens the person's position, **minor**
otherwise. Each major change *touches* items; minor changes touch nothing:

    major, touching everyone: first_version, legal_basis_weakened, erasure_ground_removed,
        right_removed, deadline_lengthened, minors_weakened, sale_allowed,
        consent_default_enabled, change_notice_dropped
    major, touching ids:
        purpose_added               the purpose and all its categories
        purpose_widened             the purpose and the categories gained (all its categories
                                    when it gained a legal basis)
        category_added, category_sensitivity_lowered, retention_lengthened: the category
        recipient_class_added       the class and all its categories
        recipient_class_widened     the class and the categories gained (all its categories
                                    when it gained a purpose, legal basis or legal ground, or
                                    lost anonymisation, need-to-know or all legal grounds)
        storage_region_changed, cross_border_basis_added, cross_border_consent_dropped: the
                                    old region
    minor: purpose_removed, purpose_narrowed, category_removed, retention_shortened,
        recipient_class_removed, recipient_class_narrowed, right_added, text_revised

`PolicyDiff.touched()` is the union of what the major changes touch, and
`PolicyDiff.affects(footprint)` is true exactly when `touched().everyone` is set or one of its
four sets shares an id with the same set of the footprint (`Touched.meets`). A projection that
selects people with `touched()` must apply that same rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from ledger.policy import Policy, ResponseDeadline


class ChangeKind(StrEnum):
    """What kind of difference between two policy versions a change is."""

    FIRST_VERSION = "first_version"
    PURPOSE_ADDED = "purpose_added"
    PURPOSE_REMOVED = "purpose_removed"
    PURPOSE_WIDENED = "purpose_widened"
    PURPOSE_NARROWED = "purpose_narrowed"
    CATEGORY_ADDED = "category_added"
    CATEGORY_REMOVED = "category_removed"
    CATEGORY_SENSITIVITY_LOWERED = "category_sensitivity_lowered"
    RETENTION_LENGTHENED = "retention_lengthened"
    RETENTION_SHORTENED = "retention_shortened"
    RECIPIENT_CLASS_ADDED = "recipient_class_added"
    RECIPIENT_CLASS_REMOVED = "recipient_class_removed"
    RECIPIENT_CLASS_WIDENED = "recipient_class_widened"
    RECIPIENT_CLASS_NARROWED = "recipient_class_narrowed"
    STORAGE_REGION_CHANGED = "storage_region_changed"
    CROSS_BORDER_BASIS_ADDED = "cross_border_basis_added"
    CROSS_BORDER_CONSENT_DROPPED = "cross_border_consent_dropped"
    LEGAL_BASIS_WEAKENED = "legal_basis_weakened"
    ERASURE_GROUND_REMOVED = "erasure_ground_removed"
    RIGHT_REMOVED = "right_removed"
    RIGHT_ADDED = "right_added"
    DEADLINE_LENGTHENED = "deadline_lengthened"
    MINORS_WEAKENED = "minors_weakened"
    SALE_ALLOWED = "sale_allowed"
    CONSENT_DEFAULT_ENABLED = "consent_default_enabled"
    SOURCE_ADDED = "source_added"
    CONSENT_METHOD_ADDED = "consent_method_added"
    CHANGE_NOTICE_DROPPED = "change_notice_dropped"
    TEXT_REVISED = "text_revised"


_K = ChangeKind
_MINOR = frozenset({
    _K.PURPOSE_REMOVED, _K.PURPOSE_NARROWED, _K.CATEGORY_REMOVED, _K.RETENTION_SHORTENED,
    _K.RECIPIENT_CLASS_REMOVED, _K.RECIPIENT_CLASS_NARROWED, _K.RIGHT_ADDED, _K.TEXT_REVISED,
})  # fmt: skip
"""The kinds that neither widen processing nor weaken the person; all others are major."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _Ids(_Frozen):
    categories: frozenset[str] = Field(default=frozenset(), description="Category ids.")
    purposes: frozenset[str] = Field(default=frozenset(), description="Purpose ids.")
    recipient_classes: frozenset[str] = Field(
        default=frozenset(), description="Recipient class ids."
    )
    regions: frozenset[str] = Field(default=frozenset(), description="Storage region ids.")


class Footprint(_Ids):
    """What one person's data is involved in: the categories held, the purposes it served, the
    recipient classes it went to and the regions it is stored in."""


class Touched(_Ids):
    """What the major changes of a new version reach: ids of each kind, or everyone."""

    everyone: bool = Field(default=False, description="True when every person is affected.")

    def meets(self, footprint: Footprint) -> bool:
        """True when `everyone`, or when a set shares an id with the footprint's same set."""
        return self.everyone or not (
            self.categories.isdisjoint(footprint.categories)
            and self.purposes.isdisjoint(footprint.purposes)
            and self.recipient_classes.isdisjoint(footprint.recipient_classes)
            and self.regions.isdisjoint(footprint.regions)
        )


_NOTHING = Touched()
_EVERYONE = Touched(everyone=True)


def _touch(
    *,
    categories: Iterable[str] = (),
    purposes: Iterable[str] = (),
    classes: Iterable[str] = (),
    regions: Iterable[str] = (),
) -> Touched:
    return Touched(
        categories=frozenset(categories),
        purposes=frozenset(purposes),
        recipient_classes=frozenset(classes),
        regions=frozenset(regions),
    )


class PolicyChange(_Frozen):
    """One difference between two policy versions."""

    kind: ChangeKind = Field(description="What kind of difference it is.")
    item: str = Field(description="The id that changed: purpose, category, class, region, ...")
    major: bool = Field(description="True when it widens processing or weakens the person.")
    clause: str = Field(description="The clause of the entry in the new version (old if removed).")
    reason: str = Field(description="One human line naming what changed, with its clause.")
    touches: Touched = Field(
        default=_NOTHING, description="What the change reaches; nothing for a minor change."
    )


def _change(
    kind: ChangeKind, item: str, clause: str, what: str, touches: Touched = _NOTHING
) -> PolicyChange:
    major = kind not in _MINOR
    return PolicyChange(
        kind=kind,
        item=item,
        major=major,
        clause=clause,
        reason=f"{what} ({clause})",
        touches=touches if major else _NOTHING,
    )


class PolicyDiff(_Frozen):
    """The changes from one policy version to the next, major ones first."""

    changes: tuple[PolicyChange, ...] = Field(description="Every change, major ones first.")

    @property
    def major(self) -> bool:
        """True when any change is major: affected people must be told (§8)."""
        return any(c.major for c in self.changes)

    @property
    def reasons(self) -> tuple[str, ...]:
        """Every change's reason, major ones first."""
        return tuple(c.reason for c in self.changes)

    def touched(self) -> Touched:
        """The union of what the major changes touch."""
        majors = [c.touches for c in self.changes if c.major]
        return Touched(
            categories=frozenset().union(*(t.categories for t in majors)),
            purposes=frozenset().union(*(t.purposes for t in majors)),
            recipient_classes=frozenset().union(*(t.recipient_classes for t in majors)),
            regions=frozenset().union(*(t.regions for t in majors)),
            everyone=any(t.everyone for t in majors),
        )

    def affects(self, footprint: Footprint) -> bool:
        """True when the change reaches a person with this footprint: `touched().meets(fp)`."""
        return self.touched().meets(footprint)


def diff_policies(old: Policy | None, new: Policy) -> PolicyDiff:
    """The changes from `old` to `new`; with no `old`, one major "first version" change."""
    notice = new.change_notice.clause
    if old is None:  # the reason is the line `Ledger.ensure_policy` records, so the two merge
        first = PolicyChange(
            kind=_K.FIRST_VERSION,
            item=new.policy_id,
            major=True,
            clause=notice,
            reason="first version",
            touches=_EVERYONE,
        )
        return PolicyDiff(changes=(first,))
    changes = [
        *_purposes(old, new),
        *_categories(old, new),
        *_recipient_classes(old, new),
        *_storage(old, new),
        *_grounds_and_rights(old, new),
        *_safeguards(old, new),
    ]
    if old.text_sha256 != new.text_sha256:
        changes.append(_change(_K.TEXT_REVISED, "text", notice, "policy text revised"))
    return PolicyDiff(changes=tuple(sorted(changes, key=lambda c: not c.major)))


def _new(before: Iterable[str], after: Iterable[str]) -> tuple[str, ...]:
    """The ids of `after` missing from `before`, in the order of `after`."""
    seen = set(before)
    return tuple(i for i in after if i not in seen)


def _ids(label: str, ids: tuple[str, ...]) -> tuple[bool, str]:
    """A note naming `ids` after `label`, which holds when there are any."""
    return bool(ids), f"{label} {', '.join(repr(i) for i in ids)}"


def _when(*notes: tuple[bool, str]) -> str:
    """The notes whose condition holds, joined by '; ' ('' when none holds)."""
    return "; ".join(note for holds, note in notes if holds)


def _purposes(old: Policy, new: Policy) -> Iterator[PolicyChange]:
    for p in new.purposes:
        was, name = old.purpose(p.id), f"purpose '{p.id}'"
        if was is None:
            touches = _touch(purposes=[p.id], categories=p.categories)
            yield _change(_K.PURPOSE_ADDED, p.id, p.clause, f"{name} added", touches)
            continue
        categories, bases = _new(was.categories, p.categories), _new(was.legal_bases, p.legal_bases)
        if gained := _when(
            _ids("gained categories", categories), _ids("gained legal bases", bases)
        ):
            touches = _touch(purposes=[p.id], categories=p.categories if bases else categories)
            yield _change(_K.PURPOSE_WIDENED, p.id, p.clause, f"{name} widened: {gained}", touches)
        if lost := _when(
            _ids("lost categories", _new(p.categories, was.categories)),
            _ids("lost legal bases", _new(p.legal_bases, was.legal_bases)),
        ):
            yield _change(_K.PURPOSE_NARROWED, p.id, p.clause, f"{name} narrowed: {lost}")
    for p in old.purposes:
        if new.purpose(p.id) is None:
            yield _change(_K.PURPOSE_REMOVED, p.id, p.clause, f"purpose '{p.id}' removed")


def _categories(old: Policy, new: Policy) -> Iterator[PolicyChange]:
    for c in new.categories:
        was, name, touches = old.category(c.id), f"category '{c.id}'", _touch(categories=[c.id])
        if was is None:
            yield _change(_K.CATEGORY_ADDED, c.id, c.clause, f"{name} added", touches)
            continue
        if was.sensitive and not c.sensitive:
            what = f"{name} no longer sensitive: collected without prior consent"
            yield _change(_K.CATEGORY_SENSITIVITY_LOWERED, c.id, c.clause, what, touches)
        span = f"from {was.retention_days} to {c.retention_days} days"
        if c.retention_days > was.retention_days:
            what = f"retention of {name} lengthened {span}"
            yield _change(_K.RETENTION_LENGTHENED, c.id, c.clause, what, touches)
        elif c.retention_days < was.retention_days:
            what = f"retention of {name} shortened {span}"
            yield _change(_K.RETENTION_SHORTENED, c.id, c.clause, what)
    for c in old.categories:
        if new.category(c.id) is None:
            yield _change(_K.CATEGORY_REMOVED, c.id, c.clause, f"category '{c.id}' removed")


def _recipient_classes(old: Policy, new: Policy) -> Iterator[PolicyChange]:
    for r in new.recipient_classes:
        was, name = old.recipient_class(r.id), f"recipient class '{r.id}'"
        if was is None:
            touches = _touch(classes=[r.id], categories=r.categories)
            yield _change(_K.RECIPIENT_CLASS_ADDED, r.id, r.clause, f"{name} added", touches)
            continue
        categories = _new(was.categories, r.categories)
        footing = _when(  # a new footing for disclosure reaches every category the class receives
            _ids("gained purposes", _new(was.purposes, r.purposes)),
            _ids("gained legal bases", _new(was.legal_bases, r.legal_bases)),
            (was.requires_anonymised and not r.requires_anonymised, "no longer anonymised only"),
            (was.need_to_know and not r.need_to_know, "no longer need-to-know"),
            (bool(was.legal_grounds and not r.legal_grounds), "no longer requires a legal ground"),
            _ids(
                "gained legal grounds",
                _new(was.legal_grounds, r.legal_grounds) if was.legal_grounds else (),
            ),
        )
        if gained := _when(_ids("gained categories", categories), (bool(footing), footing)):
            touches = _touch(classes=[r.id], categories=r.categories if footing else categories)
            what = f"{name} widened: {gained}"
            yield _change(_K.RECIPIENT_CLASS_WIDENED, r.id, r.clause, what, touches)
        if lost := _when(
            _ids("lost categories", _new(r.categories, was.categories)),
            _ids("lost purposes", _new(r.purposes, was.purposes)),
            _ids("lost legal bases", _new(r.legal_bases, was.legal_bases)),
        ):
            yield _change(_K.RECIPIENT_CLASS_NARROWED, r.id, r.clause, f"{name} narrowed: {lost}")
    for r in old.recipient_classes:
        if new.recipient_class(r.id) is None:
            what = f"recipient class '{r.id}' removed"
            yield _change(_K.RECIPIENT_CLASS_REMOVED, r.id, r.clause, what)


def _storage(old: Policy, new: Policy) -> Iterator[PolicyChange]:
    region, clause = old.storage.region, new.storage.clause
    touches = _touch(regions=[region])
    if new.storage.region != region:
        what = f"storage region changed from '{region}' to '{new.storage.region}'"
        yield _change(_K.STORAGE_REGION_CHANGED, new.storage.region, clause, what, touches)
    for basis in _new(old.storage.cross_border_bases, new.storage.cross_border_bases):
        what = f"cross-border basis '{basis}' added"
        yield _change(_K.CROSS_BORDER_BASIS_ADDED, basis, clause, what, touches)
    if old.storage.cross_border_consent and not new.storage.cross_border_consent:
        what = "data leaves the region without the person's consent"
        yield _change(_K.CROSS_BORDER_CONSENT_DROPPED, region, clause, what, touches)


def _grounds_and_rights(old: Policy, new: Policy) -> Iterator[PolicyChange]:
    for b in new.legal_bases:
        was = old.legal_basis(b.id)
        if was is not None and (
            (was.requires_consent and not b.requires_consent)
            or (b.independent_of_consent and not was.independent_of_consent)
            or (was.follows_collection_consent and not b.follows_collection_consent)
        ):
            what = f"legal basis '{b.id}' no longer stopped by a missing or withdrawn consent"
            yield _change(_K.LEGAL_BASIS_WEAKENED, b.id, b.clause, what, _EVERYONE)
    for g in old.erasure_grounds:
        if new.erasure_ground(g.id) is None:
            what = f"erasure ground '{g.id}' removed"
            yield _change(_K.ERASURE_GROUND_REMOVED, g.id, g.clause, what, _EVERYONE)
    for right in old.rights:
        if new.right(right.kind) is None:
            what = f"right '{right.kind}' removed"
            yield _change(_K.RIGHT_REMOVED, right.kind.value, right.clause, what, _EVERYONE)
    for right in new.rights:
        if old.right(right.kind) is None:
            what = f"right '{right.kind}' added"
            yield _change(_K.RIGHT_ADDED, right.kind.value, right.clause, what)


def _deadline(d: ResponseDeadline) -> str:
    calendar = f" of {d.holiday_calendar} in {d.time_zone}" if d.kind == "working" else ""
    return f"{d.days} {d.kind} days{calendar} (extendable by {d.max_extension_days})"


def _safeguards(old: Policy, new: Policy) -> Iterator[PolicyChange]:
    was, now = old.response_deadline, new.response_deadline
    if (
        now.days > was.days
        or (was.kind, now.kind) == ("calendar", "working")
        or now.max_extension_days > was.max_extension_days
        # another country's public holidays can put more days off within the deadline
        or (now.kind == "working" and now.holiday_calendar != was.holiday_calendar)
        # another zone ends every working day at another instant, hours later to the west
        or (now.kind == "working" and now.time_zone != was.time_zone)
    ):
        what = f"response deadline lengthened from {_deadline(was)} to {_deadline(now)}"
        yield _change(_K.DEADLINE_LENGTHENED, "response_deadline", now.clause, what, _EVERYONE)
    m0, m1 = old.minors, new.minors
    if weakened := _when(
        (
            m1.age_of_majority < m0.age_of_majority,
            f"age of majority lowered from {m0.age_of_majority} to {m1.age_of_majority}",
        ),
        (m0.guardian_required and not m1.guardian_required, "guardian no longer required"),
        (
            m0.guardian_consent_required and not m1.guardian_consent_required,
            "guardian consent no longer required",
        ),
    ):
        what = f"protection of minors weakened: {weakened}"
        yield _change(_K.MINORS_WEAKENED, "minors", m1.clause, what, _EVERYONE)
    if old.sale.prohibited and not new.sale.prohibited:
        what = "sale of personal data no longer prohibited"
        yield _change(_K.SALE_ALLOWED, "sale", new.sale.clause, what, _EVERYONE)
    for source in new.sources:
        if old.source(source.id) is None:
            what = f"data collected through a new source '{source.id}'"
            yield _change(_K.SOURCE_ADDED, source.id, source.clause, what, _EVERYONE)
    if methods := _new(old.consent.methods, new.consent.methods):
        what = f"consent may be given in new ways: {', '.join(repr(m) for m in methods)}"
        yield _change(_K.CONSENT_METHOD_ADDED, "consent", new.consent.clause, what, _EVERYONE)
    if new.consent.default_for_non_sensitive and not old.consent.default_for_non_sensitive:
        what = "non-sensitive data processed by default, without express consent"
        yield _change(_K.CONSENT_DEFAULT_ENABLED, "consent", new.consent.clause, what, _EVERYONE)
    if old.change_notice.notify_on_major_change and not new.change_notice.notify_on_major_change:
        what = "major changes no longer notified to the people affected"
        clause = new.change_notice.clause
        yield _change(_K.CHANGE_NOTICE_DROPPED, "change_notice", clause, what, _EVERYONE)

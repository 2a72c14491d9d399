"""The rules of the policy, as pure functions checked before any event is triggered.

Each function takes the policy in force, the subject's state (if any), the event about to be
recorded and the current instant, and returns `None` when the event may be recorded or a
`Refusal` naming the reason and the clause of the policy that forbids it. What consent
processing rests on is checked in `ledger.consent_rules`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from ledger import events as ev
from ledger.consent_rules import Agreed, check_carried_consent, check_consent
from ledger.errors import Refusal, refuse_if
from ledger.errors import RefusalReason as R
from ledger.policy import LegalBasis, Policy, Purpose, RecipientClass, RightKind
from ledger.subject_state import ConsentStatus, SubjectState, minor_at

__all__ = [
    "FUTURE_TOLERANCE",
    "Agreed",
    "Refusal",
    "check_after_registration",
    "check_collection",
    "check_consent_given",
    "check_consent_withdrawn",
    "check_correction",
    "check_erasure",
    "check_occurred_at",
    "check_open",
    "check_registration",
    "check_request_opened",
    "check_share",
    "check_use",
    "refuse_if",
]

FUTURE_TOLERANCE = timedelta(minutes=5)
"""How far ahead of the ledger's clock an occurred-at may be before it is implausible; also
how far before a person's registration an event of theirs may be dated (the services' clocks
differ by that much)."""


def check_occurred_at(occurred_at: datetime, now: datetime) -> Refusal | None:
    """An event cannot be recorded as having happened in the future (clock skew allowed)."""
    if occurred_at > now + FUTURE_TOLERANCE:
        return Refusal(R.OCCURRED_IN_FUTURE, "§0", "occurred-at is ahead of the ledger's clock")
    return None


def check_after_registration(state: SubjectState, occurred_at: datetime) -> Refusal | None:
    """A person's events are dated from their registration on, give or take the clocks' skew:
    the policy that applies to them, and what the agreement by use covers (§8), are those in
    force from then."""
    if occurred_at < state.registered_at - FUTURE_TOLERANCE:
        return Refusal(
            R.OCCURRED_BEFORE_REGISTRATION, "§0", "occurred-at is before the person's registration"
        )
    return None


def check_open(state: SubjectState) -> Refusal | None:
    """Nothing but closing events is recorded for an erased or cancelled subject (§6.3, §6.4)."""
    if state.erased or state.key_shredded:
        return Refusal(R.SUBJECT_ERASED, "§6.3", "the subject's data was erased")
    if state.cancelled:
        return Refusal(R.ACCOUNT_CANCELLED, "§6.4", "the subject's account was cancelled")
    return None


def check_registration(
    policy: Policy,
    *,
    occurred_at: datetime,
    birth_year: int | None,
    minor: bool,
    has_guardian: bool,
    region: str,
    cross_border_basis: str | None,
    guardian: SubjectState | None = None,
) -> Refusal | None:
    """A minor needs a guardian on record (§5); storage stays in the policy's region (§7).
    A guardian named by pseudonym (`guardian`, their state; None when named by account id
    only) is a registered person, not erased, and of age at occurred-at (§5: parents or
    guardians)."""
    is_minor = minor_at(birth_year, minor, occurred_at, policy.minors.age_of_majority)
    if is_minor and policy.minors.guardian_required and not has_guardian:
        return Refusal(R.MINOR_WITHOUT_GUARDIAN, policy.minors.clause, "a minor needs a guardian")
    if guardian is not None:
        refusal = _check_guardian(policy, guardian, occurred_at)
        if refusal is not None:
            return refusal
    return _check_region(policy, region, cross_border_basis)


def guardian_not_registered(policy: Policy) -> Refusal:
    """The guardian named by pseudonym is no registered person (§5)."""
    return Refusal(
        R.GUARDIAN_NOT_REGISTERED, policy.minors.clause, "the guardian named is not registered"
    )


def _check_guardian(policy: Policy, guardian: SubjectState, at: datetime) -> Refusal | None:
    if check_open(guardian) is not None or at < guardian.registered_at:
        return guardian_not_registered(policy)
    if minor_at(guardian.birth_year, guardian.minor, at, policy.minors.age_of_majority):
        return Refusal(
            R.GUARDIAN_IS_MINOR,
            policy.minors.clause,
            "the guardian named is a minor at occurred-at",
        )
    return None


def check_collection(
    policy: Policy, state: SubjectState, e: ev.DataCollected, agreed: Agreed | None = None
) -> Refusal | None:
    """Collect only declared categories from declared sources for purposes that need them
    (§1-§3); sensitive categories need consent in force at occurred-at (§1); withdrawn
    purposes stop (§6.5). `agreed` finds the policy the person agreed to by registering:
    a purpose it lacks needs fresh consent (§8)."""
    category = policy.category(e.category)
    if category is None:
        return Refusal(R.CATEGORY_NOT_DECLARED, "§1", f"category {e.category!r}")
    if state.value_erased(e.category, e.occurred_at):
        return _erased_since(e.category)
    if policy.source(e.source) is None:
        return Refusal(R.SOURCE_NOT_DECLARED, "§3", f"source {e.source!r}")
    for purpose_id in e.purposes:
        purpose = policy.purpose(purpose_id)
        if purpose is None:
            return Refusal(R.PURPOSE_NOT_DECLARED, "§2", f"purpose {purpose_id!r}")
        if e.category not in purpose.categories:
            return Refusal(
                R.CATEGORY_NOT_NEEDED_FOR_PURPOSE,
                purpose.clause,
                f"purpose {purpose_id!r} does not need {e.category!r}",
            )
        refusal = check_consent(policy, state, purpose_id, e.category, e.occurred_at, None, agreed)
        if refusal is not None:
            return refusal
    return _check_region(policy, e.storage_region, e.cross_border_basis) or _check_leaving(
        policy, state, e.storage_region, e.purposes, (e.category,), e.occurred_at
    )


def check_use(
    policy: Policy, state: SubjectState, e: ev.DataUsed, agreed: Agreed | None = None
) -> Refusal | None:
    """Use held data only for a declared purpose that needs it, on a basis it allows (§2),
    within its retention period unless the law requires it (§7), with consent in force for
    sensitive data (§1), never after a withdrawal (§6.5), and with fresh consent for a
    purpose the policy the person agreed to (`agreed`) lacks (§8)."""
    purpose = policy.purpose(e.purpose)
    if purpose is None:
        return Refusal(R.PURPOSE_NOT_DECLARED, "§2", f"purpose {e.purpose!r}")
    basis = policy.legal_basis(e.legal_basis)
    if basis is None:
        return Refusal(R.LEGAL_BASIS_NOT_DECLARED, "§2", f"legal basis {e.legal_basis!r}")
    if e.legal_basis not in purpose.legal_bases:
        return Refusal(
            R.LEGAL_BASIS_NOT_ALLOWED_FOR_PURPOSE,
            purpose.clause,
            f"{e.legal_basis!r} does not support {e.purpose!r}",
        )
    for category_id in e.categories:
        refusal = _check_category_for(
            policy, state, category_id, e.purpose, purpose.categories, purpose.clause, e.occurred_at
        ) or _check_held_data(policy, state, category_id, e.occurred_at, basis)
        if refusal is not None:
            return refusal
        refusal = check_consent(policy, state, e.purpose, category_id, e.occurred_at, basis, agreed)
        if refusal is not None:
            return refusal
    return None


def check_share(
    policy: Policy,
    state: SubjectState,
    e: ev.DataShared,
    *,
    sale: bool,
    agreed: Agreed | None = None,
) -> Refusal | None:
    """Disclose only to a declared recipient class, for a purpose it may receive, only the
    categories that purpose needs (§4.1-§4.5), within their retention period unless the law
    requires it (§7); never sell (§4)."""
    if sale and policy.sale.prohibited:
        return Refusal(R.SALE_PROHIBITED, policy.sale.clause, "personal data is never sold")
    rc = policy.recipient_class(e.recipient_class)
    if rc is None:
        return Refusal(R.RECIPIENT_CLASS_NOT_DECLARED, "§4", f"class {e.recipient_class!r}")
    purpose = policy.purpose(e.purpose)
    if purpose is None:
        return Refusal(R.PURPOSE_NOT_DECLARED, "§2", f"purpose {e.purpose!r}")
    if e.purpose not in rc.purposes:
        return Refusal(
            R.RECIPIENT_CLASS_PURPOSE_NOT_ALLOWED,
            rc.clause,
            f"{e.recipient_class!r} may not receive data for {e.purpose!r}",
        )
    basis = policy.legal_basis(e.legal_basis)
    if basis is None:
        return Refusal(R.LEGAL_BASIS_NOT_DECLARED, "§4", f"legal basis {e.legal_basis!r}")
    refusal = _check_disclosure_terms(rc, purpose, e)
    if refusal is not None:
        return refusal
    for category_id in e.categories:
        if category_id not in rc.categories and policy.category(category_id) is not None:
            return Refusal(
                R.RECIPIENT_CLASS_CATEGORY_NOT_ALLOWED,
                rc.clause,
                f"{e.recipient_class!r} may not receive {category_id!r}",
            )
        refusal = _check_category_for(
            policy, state, category_id, e.purpose, purpose.categories, rc.clause, e.occurred_at
        ) or _check_held_data(policy, state, category_id, e.occurred_at, basis)
        if refusal is not None:
            return refusal
        refusal = check_consent(policy, state, e.purpose, category_id, e.occurred_at, basis, agreed)
        if refusal is not None:
            return refusal
    return _check_region(policy, e.destination_region, e.cross_border_basis) or _check_leaving(
        policy, state, e.destination_region, (e.purpose,), e.categories, e.occurred_at
    )


def _check_disclosure_terms(
    rc: RecipientClass, purpose: Purpose, e: ev.DataShared
) -> Refusal | None:
    """The basis must suit both the class and the purpose; grounds and anonymity as required."""
    if e.legal_basis not in rc.legal_bases:
        return Refusal(
            R.LEGAL_BASIS_NOT_ALLOWED_FOR_PURPOSE,
            rc.clause,
            f"{e.legal_basis!r} does not support disclosure to {e.recipient_class!r}",
        )
    if e.legal_basis not in purpose.legal_bases:
        return Refusal(
            R.LEGAL_BASIS_NOT_ALLOWED_FOR_PURPOSE,
            purpose.clause,
            f"{e.legal_basis!r} does not support {e.purpose!r}",
        )
    if rc.legal_grounds and e.legal_ground not in rc.legal_grounds:
        return Refusal(R.LEGAL_GROUND_REQUIRED, rc.clause, "name one of the class's legal grounds")
    if rc.requires_anonymised and not e.anonymised:
        return Refusal(R.ANONYMISATION_REQUIRED, rc.clause, "only anonymised aggregates")
    return None


def check_consent_given(policy: Policy, state: SubjectState, e: ev.ConsentGiven) -> Refusal | None:
    """Consent names declared purposes and categories, each category needed by a purpose
    (§1, §2); it comes from the person (§1) or, for a minor, from the guardian on record (§5)."""
    refusal = _check_declared(policy, e.purposes, e.categories)
    if refusal is not None:
        return refusal
    if e.method not in policy.consent.methods:
        return Refusal(R.CONSENT_METHOD_NOT_DECLARED, policy.consent.clause, f"method {e.method!r}")
    needed = {c for p in e.purposes if (pp := policy.purpose(p)) for c in pp.categories}
    for category_id in e.categories:
        if category_id not in needed:
            return Refusal(
                R.CATEGORY_NOT_NEEDED_FOR_PURPOSE, "§2", f"no purpose named needs {category_id!r}"
            )
    if e.given_by is ev.ConsentGiver.GUARDIAN and not state.has_guardian:
        return Refusal(
            R.NO_GUARDIAN_ON_RECORD,
            policy.consent.clause,
            "consent given by a guardian, but the person has no guardian on record",
        )
    is_minor = minor_at(state.birth_year, state.minor, e.occurred_at, policy.minors.age_of_majority)
    if e.given_by is ev.ConsentGiver.GUARDIAN and not is_minor:
        return Refusal(
            R.GUARDIAN_CONSENT_FOR_ADULT,
            policy.consent.clause,
            "consent given by a guardian, but the person is of age at occurred-at and consents"
            " themselves",
        )
    if (
        policy.minors.guardian_consent_required
        and is_minor
        and e.given_by is not ev.ConsentGiver.GUARDIAN
    ):
        return Refusal(
            R.MINOR_CONSENT_REQUIRES_GUARDIAN,
            policy.minors.clause,
            "a minor's consent must be given by their guardian",
        )
    return None


def check_consent_withdrawn(policy: Policy, e: ev.ConsentWithdrawn) -> Refusal | None:
    """A withdrawal names declared purposes and categories (§6.5)."""
    return _check_declared(policy, e.purposes, e.categories)


def check_correction(policy: Policy, state: SubjectState, e: ev.DataCorrected) -> Refusal | None:
    """Only held data can be corrected (§6.2)."""
    if policy.category(e.category) is None:
        return Refusal(R.CATEGORY_NOT_DECLARED, "§1", f"category {e.category!r}")
    if e.category not in state.held:
        return Refusal(R.DATA_NOT_HELD, "§6.2", f"{e.category!r} is not held")
    if state.value_erased(e.category, e.occurred_at):
        return _erased_since(e.category)
    return None


def _erased_since(category: str) -> Refusal:
    """A value dated at or before its category's erasure was erased by it (§6.3): recorded
    now, it would make the category held again, so it is refused, and the service that
    reports it still has data to erase."""
    return Refusal(R.CATEGORY_ERASED, "§6.3", f"{category!r} was erased after this is dated")


def check_erasure(policy: Policy, state: SubjectState, e: ev.DataErased) -> Refusal | None:
    """Erasure rests on a declared ground (§6.3, §7); an erased subject cannot be erased again."""
    if state.erased or state.key_shredded:
        return Refusal(R.SUBJECT_ERASED, "§6.3", "the subject's data was already erased")
    if policy.erasure_ground(e.ground) is None:
        return Refusal(R.ERASURE_GROUND_NOT_DECLARED, "§6.3", f"ground {e.ground!r}")
    return _check_declared(policy, (), e.categories)


def check_request_opened(policy: Policy, e: ev.RightsRequestOpened) -> Refusal | None:
    """A request exercises a declared right (§6); deletion names one of its grounds (§6.3)."""
    right = policy.right(e.kind)
    if right is None:
        return Refusal(R.RIGHT_NOT_DECLARED, "§6", f"right {e.kind.value!r}")
    if e.kind is RightKind.DELETION:
        ground = None if e.ground is None else policy.erasure_ground(e.ground)
        if ground is None:
            return Refusal(R.ERASURE_GROUND_NOT_DECLARED, right.clause, "deletion needs a ground")
        if not ground.clause.startswith(right.clause):  # the person's grounds are the right's
            return Refusal(
                R.ERASURE_GROUND_NOT_DECLARED,
                right.clause,
                f"ground {ground.id!r} ({ground.clause}) is not one a person asks on",
            )
    return _check_declared(policy, e.purposes, e.categories)


# --- shared checks ------------------------------------------------------------------------


def _check_declared(
    policy: Policy, purposes: Iterable[str], categories: Iterable[str]
) -> Refusal | None:
    for p in purposes:
        if policy.purpose(p) is None:
            return Refusal(R.PURPOSE_NOT_DECLARED, "§2", f"purpose {p!r}")
    for c in categories:
        if policy.category(c) is None:
            return Refusal(R.CATEGORY_NOT_DECLARED, "§1", f"category {c!r}")
    return None


def _check_category_for(
    policy: Policy,
    state: SubjectState,
    category_id: str,
    purpose_id: str,
    needed: Iterable[str],
    clause: str,
    at: datetime,
) -> Refusal | None:
    if policy.category(category_id) is None:
        return Refusal(R.CATEGORY_NOT_DECLARED, "§1", f"category {category_id!r}")
    if category_id not in needed:
        return Refusal(
            R.CATEGORY_NOT_NEEDED_FOR_PURPOSE,
            clause,
            f"purpose {purpose_id!r} does not need {category_id!r}",
        )
    held = state.held.get(category_id)
    if held is None or at < held.first_at:
        return Refusal(R.DATA_NOT_HELD, "§1", f"{category_id!r} was not held at occurred-at")
    return None


def _check_held_data(
    policy: Policy, state: SubjectState, category_id: str, at: datetime, basis: LegalBasis
) -> Refusal | None:
    """What held data may still be used or disclosed for: within its retention (§7), and on
    a basis that moves it as it stands, only what its consent still covers (§4.4)."""
    return _check_retention(policy, state, category_id, at, basis) or check_carried_consent(
        policy, state, category_id, at, basis
    )


def _check_retention(
    policy: Policy, state: SubjectState, category_id: str, at: datetime, basis: LegalBasis
) -> Refusal | None:
    """Held data is used or disclosed only within its category's retention period, counted
    from its last collection (§7), unless the law requires it ("unless extended or permitted
    by law": a basis independent of consent)."""
    category = policy.category(category_id)
    held = state.held.get(category_id)
    if basis.independent_of_consent or category is None or held is None:
        return None
    last = held.last_collected_at_or_before(at)  # a later collection does not reach back
    if last is not None and at > last + timedelta(days=category.retention_days):
        return Refusal(
            R.RETENTION_EXPIRED,
            policy.storage.clause,
            f"{category_id!r} was past its {category.retention_days}-day retention at occurred-at",
        )
    return None


def _check_leaving(
    policy: Policy,
    state: SubjectState,
    region: str,
    purposes: Iterable[str],
    categories: Iterable[str],
    at: datetime,
) -> Refusal | None:
    """Data that leaves the policy's region goes, beside its basis, only on the person's
    consent in force for each purpose and category (§7 reading; PIPL Art. 39)."""
    if region == policy.storage.region or not policy.storage.cross_border_consent:
        return None
    for purpose in purposes:
        for category in categories:
            if state.consent_status(purpose, category, at) is not ConsentStatus.GIVEN:
                return Refusal(
                    R.CROSS_BORDER_WITHOUT_CONSENT,
                    policy.storage.clause,
                    f"{category!r} leaves {policy.storage.region!r} for {purpose!r} only on the"
                    " person's separate consent",
                )
    return None


def _check_region(policy: Policy, region: str, basis: str | None) -> Refusal | None:
    if region == policy.storage.region:
        return None
    if basis is None or basis not in policy.storage.cross_border_bases:
        return Refusal(
            R.OUTSIDE_STORAGE_REGION,
            policy.storage.clause,
            f"region {region!r} needs a recorded cross-border basis",
        )
    return None

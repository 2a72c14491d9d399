"""What consent a collection, use or disclosure rests on: consent in force for sensitive data
(§1), no processing after a withdrawal (§6.5), and the default agreement by use (§0) with its
limits: a minor's is not the guardian's (§5), and it never reaches a purpose newer than the
policy the person agreed to (§8). Also what an acquirer may take (§4.4).

Pure functions, as in `ledger.rules`, which calls them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from ledger.errors import Refusal
from ledger.errors import RefusalReason as R
from ledger.policy import LegalBasis, Policy, RightKind
from ledger.subject_state import ConsentStatus, SubjectState, minor_at

Agreed = Callable[[], Policy | None]
"""Looks up, when a rule needs it, the policy the person agreed to by registering (the version
in force at their registration), or None if there was none."""


def check_consent(
    policy: Policy,
    state: SubjectState,
    purpose_id: str,
    category_id: str,
    at: datetime,
    basis: LegalBasis | None,
    agreed: Agreed | None = None,
) -> Refusal | None:
    """Sensitive data needs consent in force; a withdrawal stops what rests on consent.

    `basis` None means collection, which always rests on consent (given, or by default for
    non-sensitive data). A basis independent of consent (a legal duty) is not stopped.
    Without a consent given, non-sensitive data rests on the agreement by use
    (`_check_by_use`).
    """
    if basis is not None and basis.independent_of_consent:
        return None
    category = policy.category(category_id)
    if category is None:
        return Refusal(R.CATEGORY_NOT_DECLARED, "§1", f"category {category_id!r}")
    status = state.consent_status(purpose_id, category_id, at)
    if status is ConsentStatus.GIVEN:
        return None
    if status is ConsentStatus.WITHDRAWN:
        withdrawal = policy.right(RightKind.CONSENT_WITHDRAWAL)
        return Refusal(
            R.CONSENT_WITHDRAWN,
            withdrawal.clause if withdrawal is not None else policy.consent.clause,
            f"consent for {purpose_id!r} / {category_id!r} was withdrawn",
        )
    if category.sensitive:
        return Refusal(
            R.SENSITIVE_CATEGORY_WITHOUT_CONSENT,
            category.clause,
            f"{category_id!r} needs consent in force for {purpose_id!r}",
        )
    if not policy.consent.default_for_non_sensitive:
        return Refusal(
            R.SENSITIVE_CATEGORY_WITHOUT_CONSENT,
            policy.consent.clause,
            f"{category_id!r} needs consent under this policy",
        )
    return _check_by_use(policy, state, purpose_id, at, basis, agreed)


def _check_by_use(
    policy: Policy,
    state: SubjectState,
    purpose_id: str,
    at: datetime,
    basis: LegalBasis | None,
    agreed: Agreed | None,
) -> Refusal | None:
    """Where processing rests on consent, the default agreement by use (§0) is the person's
    own act: for a minor it does not stand in for the guardian's consent (§5), and it does not
    reach a purpose that the policy the person agreed to (what `agreed` finds: the one in
    force at their registration) did not declare (§8: continued use never extends consent to
    a new purpose)."""
    if not _rests_on_consent(policy, purpose_id, basis):
        return None
    if policy.minors.guardian_consent_required and minor_at(
        state.birth_year, state.minor, at, policy.minors.age_of_majority
    ):
        return Refusal(
            R.MINOR_CONSENT_REQUIRES_GUARDIAN,
            policy.minors.clause,
            f"{purpose_id!r} rests on consent, which for a minor the guardian gives",
        )
    agreed_to = agreed() if agreed is not None else None
    if agreed_to is not None and agreed_to.purpose(purpose_id) is None:
        return Refusal(
            R.NEW_PURPOSE_NEEDS_CONSENT,
            policy.change_notice.clause,
            f"{purpose_id!r} is newer than the policy the person agreed to",
        )
    return None


def check_carried_consent(
    policy: Policy, state: SubjectState, category_id: str, at: datetime, basis: LegalBasis
) -> Refusal | None:
    """On a basis that moves data as it stands (`follows_collection_consent`: a transfer to
    an acquirer, §4.4), a category goes only while one of the purposes it was collected for
    still stands: one not resting on consent alone, or one whose consent was not withdrawn."""
    held = state.held.get(category_id)
    if not basis.follows_collection_consent or held is None:
        return None
    for purpose_id in held.purposes:
        if not policy.rests_on_consent_alone(purpose_id):
            return None
        if state.consent_status(purpose_id, category_id, at) is not ConsentStatus.WITHDRAWN:
            return None
    return Refusal(
        R.CONSENT_WITHDRAWN,
        basis.clause,
        f"consent was withdrawn for every purpose {category_id!r} was collected for",
    )


def _rests_on_consent(policy: Policy, purpose_id: str, basis: LegalBasis | None) -> bool:
    """Whether the processing rests on the person's consent: its basis is consent, or, for a
    collection (no basis named), every basis its purpose allows is."""
    if basis is not None:
        return basis.requires_consent
    return policy.rests_on_consent_alone(purpose_id)

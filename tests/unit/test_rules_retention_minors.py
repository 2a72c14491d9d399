"""Retention limits on use and disclosure (§7), agreement by use for minors (§0, §5), who may
give a consent (§1, §5), values of a partially erased category (§6.3, §7), purposes added after a
person agreed (§8), and what an acquirer receives (§4.4).

Every refusal is checked three ways: the reason, the clause, and that nothing was written.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest
from pydantic import SecretStr
from scenario import (
    PRINCIPAL,
    collection,
    consent,
    erasure,
    key,
    later,
    ref,
    refused,
    secret,
    share,
    subject,
    use,
    withdrawal,
)

from ledger import commands as c
from ledger.application import Ledger
from ledger.errors import KeyShreddedError
from ledger.errors import RefusalReason as R
from ledger.events import ConsentGiver
from ledger.policy import load_seed_policy, parse_policy
from ledger.policy_book import TAKES_EFFECT_AFTER
from ledger.subject_state import HeldCategory

_DAY = 24 * 3600


def _usage(ledger: Ledger, sid: UUID, *purposes: str) -> c.RecordCollection:
    """A collection of the person's usage log (non-sensitive, 180 days) for the purposes."""
    return collection(
        sid,
        at=later(ledger),
        category="network_log.usage",
        source="sdk",
        purposes=purposes,
        values={"page": SecretStr(secret("page"))},
    )


# --- §7: no use or disclosure after the retention period ------------------------------------


def _ip_collected(ledger: Ledger) -> UUID:
    """A subject whose IP address (90 days of retention) was collected just now."""
    sid = subject(ledger)
    ledger.execute(PRINCIPAL, collection(sid, at=later(ledger)))
    return sid


@pytest.mark.parametrize(("days", "accepted"), [(89, True), (91, False)])
def test_held_data_is_used_only_within_its_retention_period__clause_7(
    memory_ledger, days, accepted
):
    sid = _ip_collected(memory_ledger)
    command = use(sid, at=later(memory_ledger, days * _DAY))

    if accepted:
        assert memory_ledger.execute(PRINCIPAL, command).event_type == "DataUsed"
    else:
        refusal = refused(memory_ledger, command)
        assert (refusal.reason, refusal.clause) == (R.RETENTION_EXPIRED, "§7")


def test_retention_runs_from_the_last_collection__clause_7(memory_ledger):
    sid = _ip_collected(memory_ledger)
    memory_ledger.execute(PRINCIPAL, collection(sid, at=later(memory_ledger, 80 * _DAY)))

    recorded = memory_ledger.execute(PRINCIPAL, use(sid, at=later(memory_ledger, 80 * _DAY)))

    assert recorded.event_type == "DataUsed"


def test_a_use_dated_before_a_later_collection_is_judged_by_the_collections_before_it__clause_7(
    memory_ledger,
):
    """Retention runs from the last collection at or before the use: one recorded later but
    dated after it does not reach back to make expired data usable again."""
    sid = _ip_collected(memory_ledger)
    start = memory_ledger.clock.now()
    memory_ledger.execute(PRINCIPAL, collection(sid, at=later(memory_ledger, 200 * _DAY)))
    within = use(sid, at=start + timedelta(days=80))
    expired = use(sid, at=start + timedelta(days=150))

    assert memory_ledger.execute(PRINCIPAL, within).event_type == "DataUsed"
    refusal = refused(memory_ledger, expired)
    assert (refusal.reason, refusal.clause) == (R.RETENTION_EXPIRED, "§7")


def test_a_correction_does_not_restart_retention__clause_7(memory_ledger):
    """§7's reading counts from the last collection, not from a correction."""
    sid = _ip_collected(memory_ledger)
    memory_ledger.execute(
        PRINCIPAL,
        c.CorrectData(
            idempotency_key=key("cor"),
            occurred_at=later(memory_ledger, 80 * _DAY),
            subject=ref(sid),
            category="network_log.ip_address",
            values={"ip": SecretStr(secret("ip"))},
        ),
    )

    refusal = refused(memory_ledger, use(sid, at=later(memory_ledger, 20 * _DAY)))

    assert (refusal.reason, refusal.clause) == (R.RETENTION_EXPIRED, "§7")


def test_held_data_past_its_retention_is_not_disclosed__clause_7(memory_ledger):
    sid = subject(memory_ledger)
    memory_ledger.execute(PRINCIPAL, _usage(memory_ledger, sid, "advertising"))

    refusal = refused(memory_ledger, share(sid, at=later(memory_ledger, 181 * _DAY)))

    assert (refusal.reason, refusal.clause) == (R.RETENTION_EXPIRED, "§7")


def test_a_disclosure_the_law_requires_is_not_stopped_by_retention__clauses_4_3_7(
    memory_ledger,
):
    sid = _ip_collected(memory_ledger)
    to_court = share(
        sid,
        at=later(memory_ledger, 200 * _DAY),
        categories=("network_log.ip_address",),
        recipient="People's Court",
        recipient_class="authorities",
        purpose="legal_compliance",
        legal_basis="legal_obligation",
        legal_ground="court_order",
    )

    assert memory_ledger.execute(PRINCIPAL, to_court).event_type == "DataShared"


# --- §0, §5: agreement by use is the minor's own, so it does not stand for the guardian -----


def _minor(ledger: Ledger) -> UUID:
    return subject(ledger, birth_year=2015, guardian_account_id=SecretStr(secret("guardian")))


def test_a_minors_data_for_a_consent_purpose_needs_the_guardians_consent__clauses_0_5(
    memory_ledger,
):
    sid = _minor(memory_ledger)

    refusal = refused(memory_ledger, _usage(memory_ledger, sid, "promotions"))

    assert (refusal.reason, refusal.clause) == (R.MINOR_CONSENT_REQUIRES_GUARDIAN, "§5")


def test_a_minors_data_is_collected_and_used_on_the_guardians_consent__clause_5(memory_ledger):
    sid = _minor(memory_ledger)
    by_guardian = consent(
        sid,
        at=later(memory_ledger),
        purposes=("promotions",),
        categories=("network_log.usage",),
        method="popup",
        given_by=ConsentGiver.GUARDIAN,
    )
    memory_ledger.execute(PRINCIPAL, by_guardian)

    memory_ledger.execute(PRINCIPAL, _usage(memory_ledger, sid, "promotions"))
    used = use(
        sid,
        at=later(memory_ledger),
        categories=("network_log.usage",),
        purpose="promotions",
        legal_basis="consent",
    )

    assert memory_ledger.execute(PRINCIPAL, used).event_type == "DataUsed"


def test_a_minors_data_for_the_service_they_use_needs_no_consent__clauses_2_5(memory_ledger):
    sid = _minor(memory_ledger)

    recorded = memory_ledger.execute(PRINCIPAL, collection(sid, at=later(memory_ledger)))

    assert recorded.event_type == "DataCollected"  # security detection rests on the contract


def test_an_adults_data_for_a_consent_purpose_is_collected_by_default__clause_0(memory_ledger):
    sid = subject(memory_ledger, birth_year=1980)

    recorded = memory_ledger.execute(PRINCIPAL, _usage(memory_ledger, sid, "promotions"))

    assert recorded.event_type == "DataCollected"


# --- §1, §5: who gives a consent --------------------------------------------------------------


def test_a_consent_by_a_guardian_the_person_does_not_have_is_refused__clauses_1_5(memory_ledger):
    sid = subject(memory_ledger, birth_year=1980)

    refusal = refused(
        memory_ledger, consent(sid, at=later(memory_ledger), given_by=ConsentGiver.GUARDIAN)
    )

    assert (refusal.reason, refusal.clause) == (R.NO_GUARDIAN_ON_RECORD, "§1")


def test_a_consent_by_a_guardian_for_a_person_of_age_is_refused__clauses_1_5(memory_ledger):
    """§5 gives guardians the consent of minors only; of age, the person consents (§1)."""
    adult = subject(memory_ledger, birth_year=1990, guardian_account_id=SecretStr(secret("g")))
    child = subject(memory_ledger, birth_year=2012, guardian_account_id=SecretStr(secret("g")))
    given = consent(child, at=later(memory_ledger), given_by=ConsentGiver.GUARDIAN)
    assert memory_ledger.execute(PRINCIPAL, given).event_type == "ConsentGiven"

    for sid, seconds in ((adult, 1.0), (child, 12 * 365 * 86_400.0)):  # the child is now 26
        refusal = refused(
            memory_ledger,
            consent(sid, at=later(memory_ledger, seconds), given_by=ConsentGiver.GUARDIAN),
        )
        assert (refusal.reason, refusal.clause) == (R.GUARDIAN_CONSENT_FOR_ADULT, "§1")


# --- §6.3, §7: a partial erasure closes the values it erased ----------------------------------


def test_a_partial_erasure_dated_before_a_later_collection_keeps_that_one_held__clauses_6_3_7(
    memory_ledger,
):
    """The erasure takes what was collected up to its instant; a value collected after it
    stays held (and readable), so it may be used and corrected."""
    sid = _ip_collected(memory_ledger)
    erased_at = later(memory_ledger, 10)
    kept_at = later(memory_ledger, 10)
    memory_ledger.execute(PRINCIPAL, collection(sid, at=kept_at))
    memory_ledger.execute(
        PRINCIPAL,
        erasure(
            sid, at=erased_at, ground="retention_expired", categories=("network_log.ip_address",)
        ),
    )
    held = memory_ledger.subject(sid).state.held["network_log.ip_address"]
    assert (held.first_at, held.last_at, held.collections) == (kept_at, kept_at, 1)

    now = later(memory_ledger)
    assert memory_ledger.execute(PRINCIPAL, use(sid, at=now)).event_type == "DataUsed"
    corrected = memory_ledger.execute(
        PRINCIPAL,
        c.CorrectData(
            idempotency_key=key("cor"),
            occurred_at=now,
            subject=ref(sid),
            category="network_log.ip_address",
            values={"ip": SecretStr(secret("ip"))},
        ),
    )
    assert corrected.event_type == "DataCorrected"
    between = use(sid, at=erased_at + timedelta(seconds=5))  # after the erasure, before kept_at
    refusal = refused(memory_ledger, between)
    assert (refusal.reason, refusal.clause) == (R.DATA_NOT_HELD, "§1")


def test_values_of_an_erased_category_are_not_revealed_but_later_ones_are__clauses_6_3_7(
    memory_ledger,
):
    sid = _ip_collected(memory_ledger)
    memory_ledger.execute(
        PRINCIPAL,
        erasure(
            sid,
            at=later(memory_ledger),
            ground="retention_expired",
            categories=("network_log.ip_address",),
        ),
    )
    memory_ledger.execute(PRINCIPAL, collection(sid, at=later(memory_ledger)))
    before, after = [p for p in memory_ledger.history(sid) if type(p).__name__ == "DataCollected"]

    with pytest.raises(KeyShreddedError):
        memory_ledger.reveal(before)
    assert set(memory_ledger.reveal(after)) == {"ip"}
    assert memory_ledger.subject(sid).state.erased_categories == {
        "network_log.ip_address": before.occurred_at + timedelta(seconds=1)
    }


def _erase_ip(ledger: Ledger, sid: UUID) -> None:
    ledger.execute(
        PRINCIPAL,
        erasure(
            sid,
            at=later(ledger),
            ground="retention_expired",
            categories=("network_log.ip_address",),
        ),
    )


def test_a_collection_dated_before_its_categorys_erasure_is_refused__clause_6_3(memory_ledger):
    """Reported after the erasure, it would make the erased category held again."""
    sid = _ip_collected(memory_ledger)
    _erase_ip(memory_ledger, sid)
    erased_at = memory_ledger.subject(sid).state.erased_categories["network_log.ip_address"]
    later(memory_ledger)

    refusal = refused(memory_ledger, collection(sid, at=erased_at))

    assert (refusal.reason, refusal.clause) == (R.CATEGORY_ERASED, "§6.3")
    assert "network_log.ip_address" not in memory_ledger.subject(sid).state.held
    after = memory_ledger.execute(PRINCIPAL, collection(sid, at=erased_at + timedelta(seconds=1)))
    assert after.event_type == "DataCollected"


def test_a_correction_dated_before_its_categorys_erasure_is_refused__clause_6_3(memory_ledger):
    sid = _ip_collected(memory_ledger)
    _erase_ip(memory_ledger, sid)
    erased_at = memory_ledger.subject(sid).state.erased_categories["network_log.ip_address"]
    memory_ledger.execute(PRINCIPAL, collection(sid, at=later(memory_ledger)))

    refusal = refused(
        memory_ledger,
        c.CorrectData(
            idempotency_key=key("cor"),
            occurred_at=erased_at,
            subject=ref(sid),
            category="network_log.ip_address",
            values={"ip": SecretStr(secret("ip"))},
        ),
    )

    assert (refusal.reason, refusal.clause) == (R.CATEGORY_ERASED, "§6.3")


# --- §8: continued use never extends consent to a new purpose ---------------------------------


def _publish_credit_scoring(ledger: Ledger) -> None:
    """Version 2 adds a purpose resting on consent alone, in force from now."""
    data = load_seed_policy().model_dump(mode="json")
    data["version"] = "2"
    data["purposes"].append(
        {
            "id": "credit_scoring",
            "name": "Credit scoring of the person",
            "categories": ["network_log.usage"],
            "legal_bases": ["consent"],
            "clause": "§2",
        }
    )
    effective = later(ledger)
    ledger.execute(
        PRINCIPAL,
        c.PublishPolicy(
            idempotency_key=key("pub"),
            occurred_at=effective,
            policy=parse_policy(data),
            effective_at=effective,
        ),
    )
    later(ledger, TAKES_EFFECT_AFTER.total_seconds())  # in force from here on


def test_a_purpose_added_after_registration_needs_fresh_consent__clause_8(memory_ledger):
    sid = subject(memory_ledger)
    _publish_credit_scoring(memory_ledger)

    refusal = refused(memory_ledger, _usage(memory_ledger, sid, "credit_scoring"))

    assert (refusal.reason, refusal.clause) == (R.NEW_PURPOSE_NEEDS_CONSENT, "§8")


def test_a_new_purpose_is_served_once_the_person_consents_to_it__clause_8(memory_ledger):
    sid = subject(memory_ledger)
    _publish_credit_scoring(memory_ledger)
    fresh = consent(
        sid,
        at=later(memory_ledger),
        purposes=("credit_scoring",),
        categories=("network_log.usage",),
        method="popup",
    )
    memory_ledger.execute(PRINCIPAL, fresh)

    recorded = memory_ledger.execute(PRINCIPAL, _usage(memory_ledger, sid, "credit_scoring"))

    assert recorded.event_type == "DataCollected"


def test_a_person_registered_under_the_new_version_agreed_to_its_purposes__clauses_0_8(
    memory_ledger,
):
    _publish_credit_scoring(memory_ledger)
    later(memory_ledger)
    sid = subject(memory_ledger)

    recorded = memory_ledger.execute(PRINCIPAL, _usage(memory_ledger, sid, "credit_scoring"))

    assert recorded.event_type == "DataCollected"


# --- §4.4: data whose consent was withdrawn does not pass to an acquirer -----------------------


def _to_acquirer(sid: UUID, ledger: Ledger) -> c.RecordShare:
    return share(
        sid,
        at=later(ledger),
        recipient="Acquiring Corp",
        recipient_class="acquirer",
        purpose="business_transfer",
        legal_basis="corporate_transaction",
    )


def test_data_whose_only_consent_was_withdrawn_stays_behind_in_a_transfer__clause_4_4(
    memory_ledger,
):
    sid = subject(memory_ledger)
    memory_ledger.execute(PRINCIPAL, _usage(memory_ledger, sid, "product_analysis"))
    memory_ledger.execute(
        PRINCIPAL, withdrawal(sid, at=later(memory_ledger), purposes=("product_analysis",))
    )

    refusal = refused(memory_ledger, _to_acquirer(sid, memory_ledger))

    assert (refusal.reason, refusal.clause) == (R.CONSENT_WITHDRAWN, "§4.4")


def test_data_still_resting_on_another_purpose_passes_in_a_transfer__clause_4_4(memory_ledger):
    sid = subject(memory_ledger)
    both = _usage(memory_ledger, sid, "product_analysis", "performance_optimisation")
    memory_ledger.execute(PRINCIPAL, both)
    memory_ledger.execute(
        PRINCIPAL, withdrawal(sid, at=later(memory_ledger), purposes=("product_analysis",))
    )

    recorded = memory_ledger.execute(PRINCIPAL, _to_acquirer(sid, memory_ledger))

    assert recorded.event_type == "DataShared"


def test_a_category_from_a_snapshot_without_its_collection_instants_uses_first_and_last():
    """Snapshots made before every collection's instant was kept hold only the first and the
    latest; a back-dated event is then judged by those two."""
    first, last = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 6, 1, tzinfo=UTC)
    held = HeldCategory(
        first_at=first, last_at=last, sources=set(), purposes=set(), regions=set(), collections=7
    )

    assert held.last_collected_at_or_before(first - timedelta(seconds=1)) is None
    assert held.last_collected_at_or_before(first + timedelta(days=30)) == first
    assert held.last_collected_at_or_before(last + timedelta(days=30)) == last
    assert held.collected == [first, last]

"""The policy's rules for collection, use, disclosure, consent, minors, region, time and the
policy book: one test per rule and per refusal reason, each naming its clause of the seed policy.

Every refusal is checked three ways: the reason, the clause, and that nothing was written.
The rules do not depend on storage, so these tests run on the in-memory ledger only.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from pydantic import SecretStr
from scenario import (
    PRINCIPAL,
    collection,
    consent,
    erasure,
    gps_collection,
    key,
    later,
    refused,
    register,
    secret,
    share,
    subject,
    usage_collection,
    use,
    withdrawal,
    written,
)

from ledger import commands as c
from ledger.application import Ledger
from ledger.errors import RefusalReason as R
from ledger.events import CollectionMode, ConsentGiver
from ledger.policy import SEED_EFFECTIVE_AT, load_seed_policy
from ledger.policy_book import TAKES_EFFECT_AFTER

# --- helpers ------------------------------------------------------------------------------


def _registration(ledger: Ledger, **fields: Any) -> c.RegisterSubject:
    fields.setdefault("namespace", "app")
    fields.setdefault("account_id", SecretStr(secret("account")))
    fields.setdefault("occurred_at", ledger.clock.now())
    return c.RegisterSubject(idempotency_key=key("reg"), **fields)


def _publish(ledger: Ledger, version: str, effective_at: datetime) -> c.PublishPolicy:
    return c.PublishPolicy(
        idempotency_key=key("pub"),
        occurred_at=ledger.clock.now(),
        policy=load_seed_policy().model_copy(update={"version": version}),
        effective_at=effective_at,
        major=True,
        changes=(f"version {version}",),
    )


# --- §1: sensitive categories need consent in force at occurred-at -----------------------


def test_gps_collection_without_prior_consent_is_refused__clause_1_5(memory_ledger):
    sid = subject(memory_ledger)

    refusal = refused(memory_ledger, gps_collection(sid, at=later(memory_ledger)))

    assert (refusal.reason, refusal.clause) == (R.SENSITIVE_CATEGORY_WITHOUT_CONSENT, "§1(5)")


def test_imei_collection_without_prior_consent_is_refused__clause_1_3(memory_ledger):
    sid = subject(memory_ledger)
    imei = collection(
        sid, at=later(memory_ledger), category="device_id.imei", source="app", values={}
    )

    refusal = refused(memory_ledger, imei)

    assert (refusal.reason, refusal.clause) == (R.SENSITIVE_CATEGORY_WITHOUT_CONSENT, "§1(3)")


def test_gps_collection_after_consent_is_accepted__clause_1(memory_ledger):
    sid = subject(memory_ledger)
    memory_ledger.execute(PRINCIPAL, consent(sid, at=later(memory_ledger)))

    recorded = memory_ledger.execute(
        PRINCIPAL, gps_collection(sid, at=later(memory_ledger), mode=CollectionMode.CONSENT)
    )

    assert recorded.event_type == "DataCollected"
    assert "location.gps" in memory_ledger.subject(sid).state.held


def test_consent_given_after_a_backfilled_collection_does_not_cover_it__clause_1(memory_ledger):
    """§1: consent must come *before* collection; a later consent is not retroactive."""
    now = memory_ledger.clock.now()
    sid = subject(memory_ledger, at=now - timedelta(days=2))
    memory_ledger.execute(PRINCIPAL, consent(sid, at=later(memory_ledger)))

    refusal = refused(memory_ledger, gps_collection(sid, at=now - timedelta(days=1)))

    assert (refusal.reason, refusal.clause) == (R.SENSITIVE_CATEGORY_WITHOUT_CONSENT, "§1(5)")


def test_consent_for_another_purpose_does_not_cover_gps_collection__clause_1(memory_ledger):
    sid = subject(memory_ledger)
    memory_ledger.execute(
        PRINCIPAL,
        consent(sid, at=later(memory_ledger), purposes=("legal_compliance",)),
    )

    refusal = refused(memory_ledger, gps_collection(sid, at=later(memory_ledger)))

    assert refusal.reason is R.SENSITIVE_CATEGORY_WITHOUT_CONSENT


def test_non_sensitive_ip_address_is_collected_by_default_without_consent__clauses_0_1(
    memory_ledger,
):
    sid = subject(memory_ledger)

    recorded = memory_ledger.execute(PRINCIPAL, collection(sid, at=later(memory_ledger)))

    assert recorded.event_type == "DataCollected"
    assert "network_log.ip_address" in memory_ledger.subject(sid).state.held


# --- §1-§3: collection of declared categories, from declared sources, for needing purposes


@pytest.mark.parametrize(
    ("fields", "reason", "clause"),
    [
        ({"category": "biometrics.face"}, R.CATEGORY_NOT_DECLARED, "§1"),
        ({"source": "telepathy"}, R.SOURCE_NOT_DECLARED, "§3"),
        ({"purposes": ("profiling",)}, R.PURPOSE_NOT_DECLARED, "§2"),
        ({"purposes": ("notifications",)}, R.CATEGORY_NOT_NEEDED_FOR_PURPOSE, "§2"),
        (
            {"purposes": ("security_detection", "advertising")},
            R.CATEGORY_NOT_NEEDED_FOR_PURPOSE,
            "§3.2",
        ),
    ],
    ids=["category", "source", "purpose", "not-needed", "one-purpose-not-needing-it"],
)
def test_collection_outside_the_declared_categories_sources_and_purposes_is_refused__clauses_1_3(
    memory_ledger, fields, reason, clause
):
    sid = subject(memory_ledger)

    refusal = refused(memory_ledger, collection(sid, at=later(memory_ledger), **fields))

    assert (refusal.reason, refusal.clause) == (reason, clause)


# --- §2: use for a declared purpose, on a basis it allows, of data it needs and is held ---


@pytest.mark.parametrize(
    ("fields", "reason", "clause"),
    [
        ({"purpose": "profiling"}, R.PURPOSE_NOT_DECLARED, "§2"),
        ({"legal_basis": "legitimate_interest"}, R.LEGAL_BASIS_NOT_DECLARED, "§2"),
        (
            {"purpose": "product_analysis", "categories": ("network_log.usage",)},
            R.LEGAL_BASIS_NOT_ALLOWED_FOR_PURPOSE,
            "§2",
        ),
        ({"categories": ("biometrics.face",)}, R.CATEGORY_NOT_DECLARED, "§1"),
        ({"purpose": "notifications"}, R.CATEGORY_NOT_NEEDED_FOR_PURPOSE, "§2"),
    ],
    ids=["purpose", "basis", "basis-for-purpose", "category", "not-needed"],
)
def test_use_outside_the_declared_purposes_bases_and_categories_is_refused__clause_2(
    memory_ledger, fields, reason, clause
):
    sid = subject(memory_ledger)
    memory_ledger.execute(PRINCIPAL, collection(sid, at=later(memory_ledger)))

    refusal = refused(memory_ledger, use(sid, at=later(memory_ledger), **fields))

    assert (refusal.reason, refusal.clause) == (reason, clause)


def test_use_of_data_never_collected_is_refused_as_not_held__clause_1(memory_ledger):
    sid = subject(memory_ledger)

    refusal = refused(memory_ledger, use(sid, at=later(memory_ledger)))

    assert (refusal.reason, refusal.clause) == (R.DATA_NOT_HELD, "§1")


def test_use_of_held_data_for_a_purpose_needing_it_on_an_allowed_basis_is_accepted__clause_2(
    memory_ledger,
):
    sid = subject(memory_ledger)
    memory_ledger.execute(PRINCIPAL, collection(sid, at=later(memory_ledger)))

    recorded = memory_ledger.execute(PRINCIPAL, use(sid, at=later(memory_ledger)))

    assert recorded.event_type == "DataUsed"
    assert memory_ledger.subject(sid).state.purposes_used == {"security_detection"}


def test_use_backfilled_before_the_data_was_first_collected_is_refused__clause_1(memory_ledger):
    """§1: data cannot have been used at an instant the ledger says it was not yet held."""
    now = memory_ledger.clock.now()
    sid = subject(memory_ledger, at=now - timedelta(days=10))
    memory_ledger.execute(PRINCIPAL, collection(sid, at=later(memory_ledger)))

    refusal = refused(memory_ledger, use(sid, at=now - timedelta(days=5)))

    assert refusal.reason is R.DATA_NOT_HELD


def test_use_of_held_gps_for_a_purpose_without_consent_is_refused__clause_1_5(memory_ledger):
    sid = subject(memory_ledger)
    memory_ledger.execute(PRINCIPAL, consent(sid, at=later(memory_ledger)))
    memory_ledger.execute(PRINCIPAL, gps_collection(sid, at=later(memory_ledger)))
    transfer = use(
        sid,
        at=later(memory_ledger),
        categories=("location.gps",),
        purpose="business_transfer",
        legal_basis="corporate_transaction",
    )

    refusal = refused(memory_ledger, transfer)

    assert (refusal.reason, refusal.clause) == (R.SENSITIVE_CATEGORY_WITHOUT_CONSENT, "§1(5)")


# --- §4: disclosure -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "reason", "clause"),
    [
        ({"recipient_class": "data_brokers"}, R.RECIPIENT_CLASS_NOT_DECLARED, "§4"),
        ({"purpose": "profiling"}, R.PURPOSE_NOT_DECLARED, "§2"),
        ({"purpose": "customer_surveys"}, R.RECIPIENT_CLASS_PURPOSE_NOT_ALLOWED, "§4.2"),
        ({"legal_basis": "whim"}, R.LEGAL_BASIS_NOT_DECLARED, "§4"),
        ({"legal_basis": "legal_obligation"}, R.LEGAL_BASIS_NOT_ALLOWED_FOR_PURPOSE, "§4.2"),
        (
            {"categories": ("device.installed_apps",), "purpose": "security_detection"},
            R.RECIPIENT_CLASS_CATEGORY_NOT_ALLOWED,
            "§4.2",
        ),
        ({"categories": ("biometrics.face",)}, R.CATEGORY_NOT_DECLARED, "§1"),
    ],
    ids=[
        "class",
        "purpose",
        "purpose-for-class",
        "basis",
        "basis-for-class",
        "cat-for-class",
        "cat",
    ],
)
def test_share_outside_the_recipient_class_is_refused__clause_4(
    memory_ledger, fields, reason, clause
):
    sid = subject(memory_ledger)
    memory_ledger.execute(
        PRINCIPAL, usage_collection(sid, at=later(memory_ledger), purpose="advertising")
    )

    refusal = refused(memory_ledger, share(sid, at=later(memory_ledger), **fields))

    assert (refusal.reason, refusal.clause) == (reason, clause)


def test_advertising_partner_receiving_gps_for_advertising_is_refused__clause_4_2(memory_ledger):
    """§4.2: partners get only the data necessary for the purpose; advertising needs no GPS."""
    sid = subject(memory_ledger)
    memory_ledger.execute(PRINCIPAL, consent(sid, at=later(memory_ledger)))
    memory_ledger.execute(PRINCIPAL, gps_collection(sid, at=later(memory_ledger)))

    refusal = refused(
        memory_ledger, share(sid, at=later(memory_ledger), categories=("location.gps",))
    )

    assert (refusal.reason, refusal.clause) == (R.CATEGORY_NOT_NEEDED_FOR_PURPOSE, "§4.2")


def test_advertising_partner_receiving_usage_for_advertising_on_consent_is_accepted__clause_4_2(
    memory_ledger,
):
    sid = subject(memory_ledger)
    memory_ledger.execute(
        PRINCIPAL, usage_collection(sid, at=later(memory_ledger), purpose="advertising")
    )

    recorded = memory_ledger.execute(PRINCIPAL, share(sid, at=later(memory_ledger)))

    assert recorded.event_type == "DataShared"
    assert memory_ledger.subject(sid).state.shared_with == {
        "third_party_partners": {"Example Ads Ltd"}
    }


def test_share_for_a_purpose_without_data_held_is_refused__clause_4_2(memory_ledger):
    sid = subject(memory_ledger)

    refusal = refused(memory_ledger, share(sid, at=later(memory_ledger)))

    assert refusal.reason is R.DATA_NOT_HELD


def test_share_on_a_basis_the_purpose_does_not_allow_is_refused__clauses_3_2_4_2(memory_ledger):
    """§3.2/§4.2: advertising rests on consent only; 'contract' must not carry it to partners."""
    sid = subject(memory_ledger)
    memory_ledger.execute(
        PRINCIPAL, usage_collection(sid, at=later(memory_ledger), purpose="advertising")
    )

    refusal = refused(memory_ledger, share(sid, at=later(memory_ledger), legal_basis="contract"))

    assert refusal.reason is R.LEGAL_BASIS_NOT_ALLOWED_FOR_PURPOSE


def test_sale_is_refused_even_with_consent__clause_4(memory_ledger):
    sid = subject(memory_ledger)
    memory_ledger.execute(
        PRINCIPAL,
        consent(
            sid,
            at=later(memory_ledger),
            purposes=("advertising",),
            categories=("network_log.usage",),
            method="popup",
        ),
    )
    memory_ledger.execute(
        PRINCIPAL, usage_collection(sid, at=later(memory_ledger), purpose="advertising")
    )

    refusal = refused(memory_ledger, share(sid, at=later(memory_ledger), sale=True))

    assert (refusal.reason, refusal.clause) == (R.SALE_PROHIBITED, "§4")


@pytest.mark.parametrize(("anonymised", "accepted"), [(False, False), (True, True)])
def test_aggregate_recipients_receive_only_anonymised_data__clause_4_5(
    memory_ledger, anonymised, accepted
):
    sid = subject(memory_ledger)
    memory_ledger.execute(
        PRINCIPAL, usage_collection(sid, at=later(memory_ledger), purpose="product_analysis")
    )
    aggregate = share(
        sid,
        at=later(memory_ledger),
        recipient="University research group",
        recipient_class="anonymised_aggregate_recipients",
        purpose="product_analysis",
        anonymised=anonymised,
    )

    if accepted:
        assert memory_ledger.execute(PRINCIPAL, aggregate).event_type == "DataShared"
    else:
        refusal = refused(memory_ledger, aggregate)
        assert (refusal.reason, refusal.clause) == (R.ANONYMISATION_REQUIRED, "§4.5")


def _gps_held_without_consent(ledger: Ledger) -> UUID:
    """A subject whose GPS was collected on consent, and who then withdrew it."""
    sid = subject(ledger)
    ledger.execute(PRINCIPAL, consent(sid, at=later(ledger)))
    ledger.execute(PRINCIPAL, gps_collection(sid, at=later(ledger)))
    ledger.execute(PRINCIPAL, withdrawal(sid, at=later(ledger), categories=("location.gps",)))
    return sid


def _to_authorities(sid: UUID, at: datetime, **fields: Any) -> c.RecordShare:
    fields.setdefault("legal_basis", "legal_obligation")
    return share(
        sid,
        at=at,
        categories=("location.gps",),
        recipient="Municipal court",
        recipient_class="authorities",
        purpose="legal_compliance",
        **fields,
    )


def test_disclosure_to_authorities_without_a_legal_ground_is_refused__clause_4_3(memory_ledger):
    sid = _gps_held_without_consent(memory_ledger)

    refusal = refused(memory_ledger, _to_authorities(sid, later(memory_ledger)))

    assert (refusal.reason, refusal.clause) == (R.LEGAL_GROUND_REQUIRED, "§4.3")


def test_authorities_get_gps_on_a_legal_obligation_without_consent__clause_4_3(memory_ledger):
    """§4.3: a legal obligation is independent of consent; a withdrawal does not stop it."""
    sid = _gps_held_without_consent(memory_ledger)

    recorded = memory_ledger.execute(
        PRINCIPAL, _to_authorities(sid, later(memory_ledger), legal_ground="court_order")
    )

    assert recorded.event_type == "DataShared"


def test_authorities_cannot_receive_on_consent__clause_4_3(memory_ledger):
    sid = _gps_held_without_consent(memory_ledger)
    on_consent = _to_authorities(
        sid, later(memory_ledger), legal_ground="court_order", legal_basis="consent"
    )

    refusal = refused(memory_ledger, on_consent)

    assert (refusal.reason, refusal.clause) == (R.LEGAL_BASIS_NOT_ALLOWED_FOR_PURPOSE, "§4.3")


@pytest.mark.parametrize(
    ("purpose", "basis", "refused_with"),
    [
        ("business_transfer", "corporate_transaction", None),
        ("advertising", "consent", R.RECIPIENT_CLASS_PURPOSE_NOT_ALLOWED),
    ],
)
def test_acquirer_receives_data_only_for_a_business_transfer__clause_4_4(
    memory_ledger, purpose, basis, refused_with
):
    sid = subject(memory_ledger)
    memory_ledger.execute(PRINCIPAL, collection(sid, at=later(memory_ledger)))
    transfer = share(
        sid,
        at=later(memory_ledger),
        categories=("network_log.ip_address",),
        recipient="Acquiring Corp",
        recipient_class="acquirer",
        purpose=purpose,
        legal_basis=basis,
    )

    if refused_with is None:
        assert memory_ledger.execute(PRINCIPAL, transfer).event_type == "DataShared"
    else:
        refusal = refused(memory_ledger, transfer)
        assert (refusal.reason, refusal.clause) == (refused_with, "§4.4")


# --- §1/§2/§5: consents -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "reason", "clause"),
    [
        ({"method": "pre_ticked_box"}, R.CONSENT_METHOD_NOT_DECLARED, "§1"),
        ({"purposes": ("profiling",)}, R.PURPOSE_NOT_DECLARED, "§2"),
        ({"categories": ("biometrics.face",)}, R.CATEGORY_NOT_DECLARED, "§1"),
        ({"purposes": ("advertising",)}, R.CATEGORY_NOT_NEEDED_FOR_PURPOSE, "§2"),
    ],
    ids=["method", "purpose", "category", "not-needed"],
)
def test_consent_outside_the_declared_methods_purposes_and_categories_is_refused__clauses_1_2(
    memory_ledger, fields, reason, clause
):
    sid = subject(memory_ledger)

    refusal = refused(memory_ledger, consent(sid, at=later(memory_ledger), **fields))

    assert (refusal.reason, refusal.clause) == (reason, clause)


def test_withdrawal_of_an_undeclared_purpose_is_refused__clause_6_5(memory_ledger):
    sid = subject(memory_ledger)

    refusal = refused(
        memory_ledger, withdrawal(sid, at=later(memory_ledger), purposes=("profiling",))
    )

    assert (refusal.reason, refusal.clause) == (R.PURPOSE_NOT_DECLARED, "§2")


# --- §5: minors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields", [{"minor": True}, {"birth_year": 2010}], ids=["flagged", "by-birth-year"]
)
def test_registering_a_minor_without_a_guardian_is_refused__clause_5(memory_ledger, fields):
    refusal = refused(memory_ledger, _registration(memory_ledger, **fields))

    assert (refusal.reason, refusal.clause) == (R.MINOR_WITHOUT_GUARDIAN, "§5")


def test_registering_a_minor_with_a_guardian_is_accepted__clause_5(memory_ledger):
    guardian = subject(memory_ledger)

    by_account = register(
        memory_ledger, minor=True, guardian_account_id=SecretStr(secret("guardian"))
    )
    by_pseudonym = register(memory_ledger, birth_year=2012, guardian_subject_id=guardian)

    assert by_account.event_type == by_pseudonym.event_type == "SubjectRegistered"


def test_a_minors_guardian_named_by_pseudonym_is_a_registered_person_of_age__clause_5(
    memory_ledger,
):
    other_minor = subject(memory_ledger, birth_year=2015, guardian_account_id=SecretStr("g"))
    erased = subject(memory_ledger)
    memory_ledger.execute(
        PRINCIPAL,
        erasure(erased, at=later(memory_ledger), ground="retention_expired"),
    )
    for guardian, reason in (
        (UUID(int=7), R.GUARDIAN_NOT_REGISTERED),  # no such person
        (erased, R.GUARDIAN_NOT_REGISTERED),
        (other_minor, R.GUARDIAN_IS_MINOR),
    ):
        refusal = refused(
            memory_ledger,
            _registration(
                memory_ledger,
                birth_year=2012,
                guardian_subject_id=guardian,
                occurred_at=later(memory_ledger),
            ),
        )
        assert (refusal.reason, refusal.clause) == (reason, "§5")


def test_registering_an_adult_by_birth_year_needs_no_guardian__clause_5(memory_ledger):
    recorded = register(memory_ledger, birth_year=2000)

    assert recorded.event_type == "SubjectRegistered"


def _minor(ledger: Ledger) -> UUID:
    return subject(ledger, birth_year=2012, guardian_account_id=SecretStr(secret("guardian")))


def test_a_minors_consent_given_by_the_minor_is_refused__clause_5(memory_ledger):
    sid = _minor(memory_ledger)

    refusal = refused(memory_ledger, consent(sid, at=later(memory_ledger)))

    assert (refusal.reason, refusal.clause) == (R.MINOR_CONSENT_REQUIRES_GUARDIAN, "§5")


def test_a_minors_consent_given_by_the_guardian_is_accepted__clause_5(memory_ledger):
    sid = _minor(memory_ledger)

    recorded = memory_ledger.execute(
        PRINCIPAL, consent(sid, at=later(memory_ledger), given_by=ConsentGiver.GUARDIAN)
    )

    assert recorded.event_type == "ConsentGiven"
    assert memory_ledger.subject(sid).state.consents[0].given_by is ConsentGiver.GUARDIAN


# --- §7: storage in the policy's region ---------------------------------------------------


@pytest.mark.parametrize(
    ("basis", "accepted"),
    [(None, False), ("handshake", False), ("standard_contract", True)],
)
def test_collection_stored_outside_cn_mainland_needs_a_cross_border_basis__clause_7(
    memory_ledger, basis, accepted
):
    sid = subject(memory_ledger)
    _consent_to_leave(memory_ledger, sid, "security_detection", "network_log.ip_address")
    abroad = collection(
        sid, at=later(memory_ledger), storage_region="eu-west", cross_border_basis=basis
    )

    if accepted:
        assert memory_ledger.execute(PRINCIPAL, abroad).event_type == "DataCollected"
        assert memory_ledger.subject(sid).state.held["network_log.ip_address"].regions == {
            "eu-west"
        }
    else:
        refusal = refused(memory_ledger, abroad)
        assert (refusal.reason, refusal.clause) == (R.OUTSIDE_STORAGE_REGION, "§7")


def _consent_to_leave(ledger: Ledger, sid: UUID, purpose: str, category: str) -> None:
    given = consent(
        sid, at=later(ledger), purposes=(purpose,), categories=(category,), method="popup"
    )
    assert ledger.execute(PRINCIPAL, given).event_type == "ConsentGiven"


@pytest.mark.parametrize("basis", ["standard_contract", "separate_consent"])
def test_data_leaves_cn_mainland_only_on_the_persons_consent_beside_its_basis__clause_7(
    memory_ledger, basis
):
    """PIPL Art. 39 asks for the person's separate consent whatever the basis: agreement by
    use does not give it, and a withdrawal takes it back."""
    sid = subject(memory_ledger)
    memory_ledger.execute(
        PRINCIPAL, usage_collection(sid, at=later(memory_ledger), purpose="advertising")
    )
    stored_abroad = collection(
        sid, at=later(memory_ledger), storage_region="us-east", cross_border_basis=basis
    )
    sent_abroad = share(
        sid, at=later(memory_ledger), destination_region="us-east", cross_border_basis=basis
    )
    for command in (stored_abroad, sent_abroad):
        refusal = refused(memory_ledger, command)
        assert (refusal.reason, refusal.clause) == (R.CROSS_BORDER_WITHOUT_CONSENT, "§7")

    _consent_to_leave(memory_ledger, sid, "advertising", "network_log.usage")
    again = share(
        sid, at=later(memory_ledger), destination_region="us-east", cross_border_basis=basis
    )
    assert memory_ledger.execute(PRINCIPAL, again).event_type == "DataShared"
    memory_ledger.execute(
        PRINCIPAL, withdrawal(sid, at=later(memory_ledger), purposes=("advertising",))
    )
    refusal = refused(
        memory_ledger,
        share(sid, at=later(memory_ledger), destination_region="us-east", cross_border_basis=basis),
    )
    assert refusal.reason in {R.CROSS_BORDER_WITHOUT_CONSENT, R.CONSENT_WITHDRAWN}


@pytest.mark.parametrize(("basis", "accepted"), [(None, False), ("standard_contract", True)])
def test_share_to_a_destination_outside_cn_mainland_needs_a_cross_border_basis__clause_7(
    memory_ledger, basis, accepted
):
    sid = subject(memory_ledger)
    memory_ledger.execute(
        PRINCIPAL, usage_collection(sid, at=later(memory_ledger), purpose="advertising")
    )
    _consent_to_leave(memory_ledger, sid, "advertising", "network_log.usage")
    abroad = share(
        sid, at=later(memory_ledger), destination_region="eu-west", cross_border_basis=basis
    )

    if accepted:
        assert memory_ledger.execute(PRINCIPAL, abroad).event_type == "DataShared"
    else:
        refusal = refused(memory_ledger, abroad)
        assert (refusal.reason, refusal.clause) == (R.OUTSIDE_STORAGE_REGION, "§7")


@pytest.mark.parametrize(("basis", "accepted"), [(None, False), ("standard_contract", True)])
def test_registration_stored_outside_cn_mainland_needs_a_cross_border_basis__clause_7(
    memory_ledger, basis, accepted
):
    abroad = _registration(memory_ledger, storage_region="eu-west", cross_border_basis=basis)

    if accepted:
        recorded = memory_ledger.execute(PRINCIPAL, abroad)
        assert recorded.subject_id is not None
        assert memory_ledger.subject(recorded.subject_id).state.storage_region == "eu-west"
    else:
        refusal = refused(memory_ledger, abroad)
        assert (refusal.reason, refusal.clause) == (R.OUTSIDE_STORAGE_REGION, "§7")


# --- §0: time -----------------------------------------------------------------------------


def test_an_event_more_than_5_minutes_in_the_future_is_refused__clause_0(memory_ledger):
    sid = subject(memory_ledger)
    ahead = memory_ledger.clock.now() + timedelta(minutes=5, seconds=1)

    refusal = refused(memory_ledger, collection(sid, at=ahead))

    assert (refusal.reason, refusal.clause) == (R.OCCURRED_IN_FUTURE, "§0")


def test_an_event_4_minutes_in_the_future_is_accepted_as_clock_skew__clause_0(memory_ledger):
    sid = subject(memory_ledger)
    ahead = memory_ledger.clock.now() + timedelta(minutes=4)

    recorded = memory_ledger.execute(PRINCIPAL, collection(sid, at=ahead))

    assert recorded.event_type == "DataCollected"


# --- §8: the policy book ------------------------------------------------------------------


def test_an_event_before_the_seed_policy_took_effect_is_refused__clause_8(memory_ledger):
    before_policy = SEED_EFFECTIVE_AT - timedelta(seconds=1)

    refusal = refused(memory_ledger, _registration(memory_ledger, occurred_at=before_policy))

    assert (refusal.reason, refusal.clause) == (R.NO_POLICY_IN_FORCE, "§8")


def test_publishing_a_newer_version_effective_in_the_future_is_accepted__clause_8(memory_ledger):
    effective = memory_ledger.clock.now() + timedelta(days=30)

    recorded = memory_ledger.execute(PRINCIPAL, _publish(memory_ledger, "2", effective))

    assert recorded.event_type == "PolicyPublished"
    assert memory_ledger.policy_in_force(effective - timedelta(seconds=1))[0].version == "1"
    assert memory_ledger.policy_in_force(effective)[0].version == "2"
    assert memory_ledger.policy_in_force(effective)[1].version == "2"


@pytest.mark.parametrize("version", ["1", "0.9"])
def test_publishing_a_version_not_newer_is_refused__clause_8(memory_ledger, version):
    effective = memory_ledger.clock.now() + timedelta(days=30)

    refusal = refused(memory_ledger, _publish(memory_ledger, version, effective))

    assert (refusal.reason, refusal.clause) == (R.POLICY_VERSION_NOT_NEWER, "§8")


def test_a_new_version_taking_effect_in_the_past_is_refused__clause_8(memory_ledger):
    effective = memory_ledger.clock.now() - timedelta(hours=1)

    refusal = refused(memory_ledger, _publish(memory_ledger, "2", effective))

    assert (refusal.reason, refusal.clause) == (R.POLICY_RETROACTIVE, "§8")


def test_a_new_version_taking_effect_before_a_scheduled_one_is_refused__clause_8(memory_ledger):
    # v3 before v2 would be undone by v2 when v2 takes effect, a change never classified.
    in_a_month = memory_ledger.clock.now() + timedelta(days=30)
    memory_ledger.execute(PRINCIPAL, _publish(memory_ledger, "2", in_a_month))
    before = written(memory_ledger)

    for effective in (in_a_month - timedelta(days=1), in_a_month):
        # At the same instant, v2 would never be in force, yet its notices would have gone out.
        refusal = refused(memory_ledger, _publish(memory_ledger, "3", effective))
        assert (refusal.reason, refusal.clause) == (R.POLICY_EFFECTIVE_BEFORE_SCHEDULED, "§8")
    assert written(memory_ledger) == before
    after = in_a_month + timedelta(days=1)
    memory_ledger.execute(PRINCIPAL, _publish(memory_ledger, "3", after))
    assert memory_ledger.policy_in_force(in_a_month)[0].version == "2"
    assert memory_ledger.policy_in_force(after)[0].version == "3"


@pytest.mark.parametrize("same", ["1.0", "1.0.0"])
def test_a_version_number_equal_to_a_published_one_is_not_newer__clause_8(memory_ledger, same):
    refusal = refused(memory_ledger, _publish(memory_ledger, same, memory_ledger.clock.now()))

    assert (refusal.reason, refusal.clause) == (R.POLICY_VERSION_NOT_NEWER, "§8")


def test_a_document_of_another_policy_is_not_a_version_of_this_one__clause_8(memory_ledger):
    command = _publish(memory_ledger, "2", memory_ledger.clock.now() + timedelta(days=1))
    other = command.model_copy(
        update={"policy": command.policy.model_copy(update={"policy_id": "another-policy"})}
    )

    refusal = refused(memory_ledger, other)

    assert (refusal.reason, refusal.clause) == (R.POLICY_ID_CHANGED, "§8")


@pytest.mark.parametrize("asked", [timedelta(minutes=-4), timedelta(0), timedelta(seconds=1)])
def test_a_version_due_before_now_or_at_once_takes_effect_just_after_now__clause_8(
    memory_ledger, asked
):
    """Events recorded under version 1 up to now stay under it: no version reaches back; and
    it takes effect a few seconds on, once every writer on the store has read it."""
    now = memory_ledger.clock.now()
    memory_ledger.execute(PRINCIPAL, _publish(memory_ledger, "2", now + asked))

    soonest = now + TAKES_EFFECT_AFTER
    assert memory_ledger.policy_in_force(soonest - timedelta(microseconds=1))[0].version == "1"
    assert memory_ledger.policy_in_force(soonest)[0].version == "2"
    assert [v.effective_at for v in memory_ledger.policy_versions()][-1] == soonest


def test_events_record_the_policy_version_in_force_at_their_occurred_at__clause_8(memory_ledger):
    start = memory_ledger.clock.now()
    effective = start + timedelta(hours=1)
    memory_ledger.execute(PRINCIPAL, _publish(memory_ledger, "2", effective))
    sid = subject(memory_ledger, at=start)
    memory_ledger.clock.advance(timedelta(hours=2))

    memory_ledger.execute(PRINCIPAL, collection(sid, at=start + timedelta(minutes=30)))
    memory_ledger.execute(PRINCIPAL, collection(sid, at=memory_ledger.clock.now()))

    versions = [e.policy_version for e in memory_ledger.history(sid)]
    assert versions == ["1", "1", "2"]

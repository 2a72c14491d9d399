"""The bundled seed policy as data, and the refusal of malformed or inconsistent policies."""

from __future__ import annotations

import copy
import hashlib
import re
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.errors import PolicyError
from ledger.policy import (
    CategoryGroup,
    Policy,
    RightKind,
    load_policy_file,
    load_seed_policy,
    parse_policy,
)

_POLICY_TEXT = Path("/work/shared/seed/privacy-policy.txt")
_SEED_TOML = resources.files("ledger").joinpath("seed_policy.toml").read_text(encoding="utf-8")
_SEED_DATA: dict[str, Any] = tomllib.loads(_SEED_TOML)

_SECTION_1_CATEGORIES = {
    "network_log.usage": CategoryGroup.NETWORK_LOG,
    "network_log.device_events": CategoryGroup.NETWORK_LOG,
    "network_log.ip_address": CategoryGroup.NETWORK_LOG,
    "network_log.time_zone": CategoryGroup.NETWORK_LOG,
    "device.attributes": CategoryGroup.DEVICE_ATTRIBUTES,
    "device.user_operation": CategoryGroup.USER_OPERATION,
    "device_id.imei": CategoryGroup.DEVICE_IDENTIFIERS,
    "device_id.mac_address": CategoryGroup.DEVICE_IDENTIFIERS,
    "device_id.android_id": CategoryGroup.DEVICE_IDENTIFIERS,
    "device_id.idfa": CategoryGroup.DEVICE_IDENTIFIERS,
    "device_id.other_serial": CategoryGroup.DEVICE_IDENTIFIERS,
    "device.signals": CategoryGroup.DEVICE_SIGNALS,
    "location.gps": CategoryGroup.LOCATION,
    "location.wifi": CategoryGroup.LOCATION,
    "location.other": CategoryGroup.LOCATION,
    "account.identifier": CategoryGroup.ACCOUNT,
}
_SECTION_2_AND_3_PURPOSES = {
    "authentication": "§2",
    "security_detection": "§2",
    "customer_service": "§2",
    "content_archiving": "§2",
    "product_analysis": "§2",
    "customer_surveys": "§2",
    "notifications": "§2",
    "promotions": "§2",
    "software_authentication": "§2",
    "internal_research": "§2",
    "remembering_settings": "§3.1",
    "performance_optimisation": "§3.2",
    "advertising": "§3.2",
}
_SECTION_4_RECIPIENT_CLASSES = {
    "employees_affiliates": "§4.1",
    "third_party_partners": "§4.2",
    "authorities": "§4.3",
    "acquirer": "§4.4",
    "anonymised_aggregate_recipients": "§4.5",
}
_SECTION_6_3_DELETION_GROUNDS = {
    "unlawful_processing": "§6.3(1)",
    "no_consent": "§6.3(2)",
    "breach_of_agreement": "§6.3(3)",
    "service_discontinued": "§6.3(4)",
    "account_cancelled": "§6.3(5)",
}
_LOCATION = {"location.gps", "location.wifi", "location.other"}
_HARDWARE_IDENTIFIERS = {"device_id.imei", "device_id.mac_address", "device_id.other_serial"}


@pytest.fixture(scope="module")
def seed() -> Policy:
    return load_seed_policy()


@pytest.fixture
def data() -> dict[str, Any]:
    """A fresh, freely mutable copy of the seed document."""
    return copy.deepcopy(_SEED_DATA)


def _index(entries: list[dict[str, Any]], entry_id: str) -> int:
    return next(i for i, e in enumerate(entries) if e["id"] == entry_id)


def _refusal(document: dict[str, Any]) -> str:
    with pytest.raises(PolicyError) as caught:
        parse_policy(document)
    return str(caught.value)


def _clauses(policy: Policy) -> list[tuple[str, str]]:
    """Every (entry, clause) pair of the document."""
    named: list[tuple[str, str]] = []
    for field in ("categories", "sources", "legal_bases", "purposes", "recipient_classes"):
        named += [(f"{field}.{e.id}", e.clause) for e in getattr(policy, field)]
    for field in ("legal_grounds", "erasure_grounds"):
        named += [(f"{field}.{g.id}", g.clause) for g in getattr(policy, field)]
    named += [(f"rights.{r.kind.value}", r.clause) for r in policy.rights]
    for field in ("response_deadline", "minors", "storage", "consent", "sale", "change_notice"):
        named.append((field, getattr(policy, field).clause))
    named += [(f"interpretations.{i}", x.clause) for i, x in enumerate(policy.interpretations)]
    return named


# --- Loading ------------------------------------------------------------------------------


def test_the_seed_policy_loads_and_validates(seed: Policy) -> None:
    assert seed.policy_id == "sossen-privacy-policy"
    assert seed.version == "1"
    assert parse_policy(copy.deepcopy(_SEED_DATA)) == seed


def test_the_seed_file_loads_as_a_policy_file_too(seed: Policy) -> None:
    with resources.as_file(resources.files("ledger").joinpath("seed_policy.toml")) as path:
        assert load_policy_file(path) == seed


def test_every_entry_cites_a_section_of_the_text(seed: Policy) -> None:
    """Clauses run from §0 (the [Special Tips] preamble) to §9 (contact)."""
    for entry, clause in _clauses(seed):
        section = re.match(r"^§(\d+)", clause)
        assert section is not None, entry
        assert 0 <= int(section.group(1)) <= 9, f"{entry} cites {clause}"


def test_the_policy_text_digest_matches_the_seed_text(seed: Policy) -> None:
    if not _POLICY_TEXT.is_file():
        pytest.skip(f"the seed policy text {_POLICY_TEXT} is not on this machine")
    assert seed.text_sha256 == hashlib.sha256(_POLICY_TEXT.read_bytes()).hexdigest()


def test_the_digest_is_stable_across_loads() -> None:
    assert load_seed_policy().digest() == load_seed_policy().digest()


def test_the_digest_changes_when_a_field_changes(seed: Policy, data: dict[str, Any]) -> None:
    data["categories"][0]["retention_days"] += 1
    assert parse_policy(data).digest() != seed.digest()


def test_a_json_policy_file_loads_like_the_toml_seed(seed: Policy, tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    path.write_bytes(orjson.dumps(_SEED_DATA))
    loaded = load_policy_file(path)
    assert loaded == seed
    assert loaded.digest() == seed.digest()


# --- §1: categories -----------------------------------------------------------------------


def test_every_data_category_of_section_1_is_declared_in_its_group(seed: Policy) -> None:
    """§1: network logs, device attributes, user operation, identifiers, signals, location."""
    for category_id, group in _SECTION_1_CATEGORIES.items():
        category = seed.category(category_id)
        assert category is not None, category_id
        assert category.group is group, category_id


def test_every_category_gives_examples_and_a_retention_period(seed: Policy) -> None:
    """§1 gives the examples; §7 bounds retention to what the purpose needs."""
    for category in seed.categories:
        assert category.examples, category.id
        assert category.retention_days > 0, category.id


def test_imei_needs_consent_before_collection_section_1_3(seed: Policy) -> None:
    imei = seed.category("device_id.imei")
    assert imei is not None
    assert imei.sensitive
    assert imei.clause == "§1(3)"


def test_gps_location_needs_consent_before_collection_section_1_5(seed: Policy) -> None:
    gps = seed.category("location.gps")
    assert gps is not None
    assert gps.sensitive
    assert gps.clause == "§1(5)"


def test_location_by_wifi_or_other_technology_is_read_as_sensitive_section_1_5(
    seed: Policy,
) -> None:
    for category_id in _LOCATION:
        category = seed.category(category_id)
        assert category is not None
        assert category.sensitive, category_id
    assert any(i.clause == "§1(5)" for i in seed.interpretations)


def test_permanent_hardware_identifiers_are_read_as_sensitive_section_1_3(seed: Policy) -> None:
    for category_id in _HARDWARE_IDENTIFIERS:
        category = seed.category(category_id)
        assert category is not None
        assert category.sensitive, category_id


def test_logs_and_device_attributes_may_be_collected_by_default_section_1(seed: Policy) -> None:
    for category_id in (
        "network_log.usage",
        "network_log.device_events",
        "network_log.ip_address",
        "network_log.time_zone",
        "device.attributes",
        "device.user_operation",
        "device.signals",
        "account.identifier",
    ):
        category = seed.category(category_id)
        assert category is not None
        assert not category.sensitive, category_id


def test_the_account_identifier_is_a_non_sensitive_account_category_section_6_1(
    seed: Policy,
) -> None:
    account = seed.category("account.identifier")
    assert account is not None
    assert account.group is CategoryGroup.ACCOUNT
    assert not account.sensitive
    assert account.clause.startswith("§6.")


def test_retention_periods_are_short_and_concrete_section_7(seed: Policy) -> None:
    for category in seed.categories:
        if category.group is CategoryGroup.NETWORK_LOG:
            assert category.retention_days <= 180, category.id
        if category.sensitive or category.group is CategoryGroup.DEVICE_IDENTIFIERS:
            assert category.retention_days <= 90, category.id
    account = seed.category("account.identifier")
    assert account is not None
    assert account.retention_days == 1095
    assert any(i.clause == "§7" and "retain" in i.text for i in seed.interpretations)


# --- §1, §3: sources; legal bases ---------------------------------------------------------


def test_every_collection_source_of_sections_1_and_3_is_declared(seed: Policy) -> None:
    for source_id in (
        "app",
        "website",
        "server_logs",
        "sdk",
        "cookies",
        "web_beacons",
        "pixel_tags",
        "local_storage",
    ):
        assert seed.source(source_id) is not None, source_id
    cookies = seed.source("cookies")
    assert cookies is not None
    assert cookies.clause == "§3.1"


def test_only_the_consent_basis_is_stopped_by_a_withdrawal_section_6_5(seed: Policy) -> None:
    expected = {
        "consent": True,
        "contract": False,
        "legal_obligation": False,
        "vital_interests": False,
        "corporate_transaction": False,
    }
    assert {b.id: b.requires_consent for b in seed.legal_bases} == expected


def test_only_a_business_transfer_moves_data_as_its_consent_stands_section_4_4(
    seed: Policy,
) -> None:
    carried = {b.id for b in seed.legal_bases if b.follows_collection_consent}
    assert carried == {"corporate_transaction"}


def test_only_a_legal_duty_or_major_interests_go_ahead_without_consent_section_4_3(
    seed: Policy,
) -> None:
    independent = {b.id for b in seed.legal_bases if b.independent_of_consent}
    assert independent == {"legal_obligation", "vital_interests"}


# --- §2, §3: purposes ---------------------------------------------------------------------


def test_every_purpose_of_sections_2_and_3_is_declared(seed: Policy) -> None:
    for purpose_id, clause in _SECTION_2_AND_3_PURPOSES.items():
        purpose = seed.purpose(purpose_id)
        assert purpose is not None, purpose_id
        assert purpose.clause == clause, purpose_id


def test_every_category_is_needed_by_some_declared_purpose(seed: Policy) -> None:
    """A category no §2/§3 purpose needs could never lawfully be collected."""
    needed = {c for p in seed.purposes if p.id in _SECTION_2_AND_3_PURPOSES for c in p.categories}
    assert {c.id for c in seed.categories} <= needed


def test_advertising_does_not_need_precise_location_or_imei_section_3_2(seed: Policy) -> None:
    advertising = seed.purpose("advertising")
    assert advertising is not None
    assert "location.gps" not in advertising.categories
    assert "device_id.imei" not in advertising.categories
    assert set(advertising.categories) == {
        "device_id.idfa",
        "device_id.android_id",
        "network_log.usage",
    }


def test_no_marketing_or_analytic_purpose_needs_location_section_2(seed: Policy) -> None:
    for purpose_id in (
        "advertising",
        "promotions",
        "customer_surveys",
        "product_analysis",
        "internal_research",
        "performance_optimisation",
    ):
        purpose = seed.purpose(purpose_id)
        assert purpose is not None
        assert not _LOCATION & set(purpose.categories), purpose_id


def test_promotions_surveys_and_advertising_rest_on_consent_alone_section_2(
    seed: Policy,
) -> None:
    for purpose_id in ("promotions", "customer_surveys", "advertising"):
        purpose = seed.purpose(purpose_id)
        assert purpose is not None
        assert purpose.legal_bases == ("consent",), purpose_id


def test_authentication_and_security_rest_on_the_service_or_consent_section_2(
    seed: Policy,
) -> None:
    for purpose_id in ("authentication", "security_detection"):
        purpose = seed.purpose(purpose_id)
        assert purpose is not None
        assert set(purpose.legal_bases) == {"contract", "consent"}, purpose_id


def test_authentication_needs_the_account_id_and_ip_but_not_imei_section_2(
    seed: Policy,
) -> None:
    authentication = seed.purpose("authentication")
    assert authentication is not None
    assert {"account.identifier", "network_log.ip_address"} <= set(authentication.categories)
    assert "device_id.imei" not in authentication.categories
    assert not _LOCATION & set(authentication.categories)


def test_security_detection_needs_logs_ip_device_events_and_identifiers_section_2(
    seed: Policy,
) -> None:
    security = seed.purpose("security_detection")
    assert security is not None
    assert {
        "network_log.usage",
        "network_log.device_events",
        "network_log.ip_address",
        "device_id.android_id",
    } <= set(security.categories)


# --- §4: recipient classes and disclosure -------------------------------------------------


def test_every_recipient_class_of_section_4_is_declared(seed: Policy) -> None:
    for class_id, clause in _SECTION_4_RECIPIENT_CLASSES.items():
        recipient_class = seed.recipient_class(class_id)
        assert recipient_class is not None, class_id
        assert recipient_class.clause == clause, class_id


def test_a_recipient_class_receives_only_categories_its_purposes_need_section_4(
    seed: Policy,
) -> None:
    for recipient_class in seed.recipient_classes:
        needed: set[str] = set()
        for purpose_id in recipient_class.purposes:
            purpose = seed.purpose(purpose_id)
            assert purpose is not None
            needed |= set(purpose.categories)
        assert set(recipient_class.categories) <= needed, recipient_class.id


def test_employees_and_affiliates_hold_only_what_their_role_needs_section_4_1(
    seed: Policy,
) -> None:
    employees = seed.recipient_class("employees_affiliates")
    assert employees is not None
    assert employees.need_to_know
    assert "technical service personnel" in employees.members
    assert not {"advertising", "promotions"} & set(employees.purposes)


def test_a_partner_may_not_get_gps_for_advertising_though_it_serves_ads_section_4_2(
    seed: Policy,
) -> None:
    """§4.2 with §3.2: the partner class allows advertising, the purpose refuses the GPS."""
    partners = seed.recipient_class("third_party_partners")
    advertising = seed.purpose("advertising")
    assert partners is not None
    assert advertising is not None
    assert "advertising partners" in partners.members
    assert "advertising" in partners.purposes
    assert "location.gps" not in advertising.categories


def test_partners_never_receive_permanent_identifiers_or_the_app_list_section_4_2(
    seed: Policy,
) -> None:
    partners = seed.recipient_class("third_party_partners")
    assert partners is not None
    forbidden = _HARDWARE_IDENTIFIERS | {"device.installed_apps"}
    assert not forbidden & set(partners.categories)
    assert set(partners.legal_bases) <= {"contract", "consent"}


def test_disclosure_to_authorities_requires_a_legal_ground_section_4_3(seed: Policy) -> None:
    authorities = seed.recipient_class("authorities")
    assert authorities is not None
    assert {"law", "summons", "court_order", "fraud_prevention"} <= set(authorities.legal_grounds)
    assert set(authorities.legal_bases) == {"legal_obligation", "vital_interests"}
    for ground_id in authorities.legal_grounds:
        ground = seed.legal_ground(ground_id)
        assert ground is not None, ground_id
        assert ground.clause == "§4.3", ground_id


def test_the_acquirer_receives_only_in_a_corporate_transaction_section_4_4(
    seed: Policy,
) -> None:
    acquirer = seed.recipient_class("acquirer")
    assert acquirer is not None
    assert acquirer.legal_bases == ("corporate_transaction",)
    assert acquirer.purposes == ("business_transfer",)


def test_only_anonymised_aggregates_go_to_related_and_other_parties_section_4_5(
    seed: Policy,
) -> None:
    aggregates = seed.recipient_class("anonymised_aggregate_recipients")
    assert aggregates is not None
    assert aggregates.requires_anonymised
    assert set(aggregates.purposes) <= {"internal_research", "product_analysis"}
    assert not (_LOCATION | _HARDWARE_IDENTIFIERS) & set(aggregates.categories)
    others = [r.id for r in seed.recipient_classes if r.requires_anonymised]
    assert others == ["anonymised_aggregate_recipients"]


def test_personal_data_is_never_sold_section_4(seed: Policy) -> None:
    assert seed.sale.prohibited
    assert seed.sale.clause == "§4"


# --- §5 to §9 -----------------------------------------------------------------------------


def test_minors_under_18_need_a_guardian_who_gives_their_consent_section_5(
    seed: Policy,
) -> None:
    assert seed.minors.age_of_majority == 18
    assert seed.minors.guardian_required
    assert seed.minors.guardian_consent_required
    assert seed.minors.clause == "§5"


def test_the_five_deletion_grounds_of_section_6_3_are_declared(seed: Policy) -> None:
    for ground_id, clause in _SECTION_6_3_DELETION_GROUNDS.items():
        ground = seed.erasure_ground(ground_id)
        assert ground is not None, ground_id
        assert ground.clause == clause, ground_id


def test_expired_retention_is_an_erasure_ground_section_7(seed: Policy) -> None:
    ground = seed.erasure_ground("retention_expired")
    assert ground is not None
    assert ground.clause == "§7"


def test_the_five_rights_of_section_6_are_declared(seed: Policy) -> None:
    expected = {
        RightKind.ACCESS: "§6.1",
        RightKind.CORRECTION: "§6.2",
        RightKind.DELETION: "§6.3",
        RightKind.ACCOUNT_CANCELLATION: "§6.4",
        RightKind.CONSENT_WITHDRAWAL: "§6.5",
    }
    for kind, clause in expected.items():
        right = seed.right(kind)
        assert right is not None, kind
        assert right.clause == clause, kind


def test_requests_are_answered_within_15_calendar_days_section_6_4(seed: Policy) -> None:
    deadline = seed.response_deadline
    assert deadline.days == 15
    assert deadline.kind == "calendar"
    assert deadline.holiday_calendar == "CN"
    assert deadline.max_extension_days == 15
    assert deadline.clause == "§6.4"


def test_withdrawal_stops_future_processing_only_section_6_5(seed: Policy) -> None:
    assert seed.consent.withdrawal_non_retroactive
    assert {"popup", "settings", "device_permission"} <= set(seed.consent.methods)


def test_non_sensitive_data_is_processed_by_default_on_agreement_by_use_section_0(
    seed: Policy,
) -> None:
    assert seed.consent.default_for_non_sensitive
    consent = seed.legal_basis("consent")
    assert consent is not None
    assert consent.clause == "§0"


def test_data_is_stored_in_mainland_china_section_7(seed: Policy) -> None:
    assert seed.storage.region == "cn-mainland"
    assert "separate_consent" in seed.storage.cross_border_bases
    assert seed.storage.clause == "§7"


def test_a_major_change_is_notified_to_every_person_section_8(seed: Policy) -> None:
    assert seed.change_notice.notify_on_major_change
    assert "popup" in seed.change_notice.methods
    assert seed.change_notice.clause == "§8"


def test_the_vague_passages_carry_a_protective_reading(seed: Policy) -> None:
    """§0, §1, §1(5), §5, §6.4, §7 and §8 are vague; each reading is recorded."""
    read = {i.clause for i in seed.interpretations}
    assert {"§0", "§1", "§1(5)", "§5", "§6.4", "§7", "§8"} <= read


# --- Refusal of malformed or inconsistent documents ---------------------------------------


def test_an_unknown_category_named_by_a_recipient_class_is_refused(
    data: dict[str, Any],
) -> None:
    i = _index(data["recipient_classes"], "third_party_partners")
    data["recipient_classes"][i]["categories"].append("biometrics.face")
    message = _refusal(data)
    assert f"recipient_classes.{i}.categories" in message
    assert "biometrics.face" in message


def test_an_unknown_purpose_named_by_a_recipient_class_is_refused(data: dict[str, Any]) -> None:
    i = _index(data["recipient_classes"], "third_party_partners")
    data["recipient_classes"][i]["purposes"].append("profiling")
    message = _refusal(data)
    assert f"recipient_classes.{i}.purposes" in message
    assert "profiling" in message


def test_an_unknown_category_needed_by_a_purpose_is_refused(data: dict[str, Any]) -> None:
    i = _index(data["purposes"], "advertising")
    data["purposes"][i]["categories"].append("location.precise")
    message = _refusal(data)
    assert f"purposes.{i}.categories" in message
    assert "location.precise" in message


@pytest.mark.parametrize(
    "field", ["categories", "sources", "legal_bases", "purposes", "erasure_grounds"]
)
def test_a_duplicate_id_is_refused(data: dict[str, Any], field: str) -> None:
    data[field].append(copy.deepcopy(data[field][0]))
    message = _refusal(data)
    assert f"{field}: duplicate id(s) {data[field][0]['id']}" in message


def test_a_duplicate_right_is_refused(data: dict[str, Any]) -> None:
    data["rights"].append(copy.deepcopy(data["rights"][0]))
    assert "rights: duplicate id(s) access" in _refusal(data)


@pytest.mark.parametrize("days", [0, -1])
def test_a_retention_period_that_is_not_positive_is_refused(
    data: dict[str, Any], days: int
) -> None:
    data["categories"][0]["retention_days"] = days
    assert "categories.0.retention_days" in _refusal(data)


def test_an_entry_without_a_clause_is_refused(data: dict[str, Any]) -> None:
    del data["purposes"][2]["clause"]
    message = _refusal(data)
    assert "purposes.2.clause" in message
    assert "Field required" in message


@pytest.mark.parametrize("clause", ["4.2", "section 4", "§", "§4.2 (a)", "§4.A", "§6.3(1"])
def test_a_badly_formed_clause_is_refused(data: dict[str, Any], clause: str) -> None:
    data["recipient_classes"][1]["clause"] = clause
    assert "recipient_classes.1.clause" in _refusal(data)


def test_an_unknown_top_level_field_is_refused(data: dict[str, Any]) -> None:
    data["retention_forever"] = True
    message = _refusal(data)
    assert "retention_forever" in message
    assert "Extra inputs are not permitted" in message


def test_an_unknown_field_inside_an_entry_is_refused(data: dict[str, Any]) -> None:
    data["categories"][3]["shared_with_everyone"] = True
    assert "categories.3.shared_with_everyone" in _refusal(data)


def test_an_unparseable_policy_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('policy_id = "unterminated\n', encoding="utf-8")
    with pytest.raises(PolicyError, match="cannot parse policy") as caught:
        load_policy_file(path)
    assert str(path) in str(caught.value)


def test_an_unparseable_json_policy_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_bytes(b'{"policy_id": ')
    with pytest.raises(PolicyError, match="cannot parse policy"):
        load_policy_file(path)


def test_a_json_policy_that_is_not_an_object_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "list.json"
    path.write_bytes(b"[]")
    with pytest.raises(PolicyError, match="top level"):
        load_policy_file(path)


def test_a_missing_policy_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(PolicyError, match="cannot read policy file") as caught:
        load_policy_file(path)
    assert str(path) in str(caught.value)


# --- Property -----------------------------------------------------------------------------

_REFERENCED_CATEGORIES = sorted(
    {c for p in _SEED_DATA["purposes"] for c in p["categories"]}
    | {c for r in _SEED_DATA["recipient_classes"] for c in r["categories"]}
)


@given(st.sampled_from(_REFERENCED_CATEGORIES))
def test_removing_any_referenced_category_is_refused_naming_it(category_id: str) -> None:
    document = copy.deepcopy(_SEED_DATA)
    document["categories"] = [c for c in document["categories"] if c["id"] != category_id]
    with pytest.raises(PolicyError) as caught:
        parse_policy(document)
    assert re.search(rf"unknown category\(s\) .*\b{re.escape(category_id)}\b", str(caught.value))

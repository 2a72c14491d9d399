"""Differences between policy versions, their major/minor classification, and whom a major
change touches (§8); and publishing, which records the classification the ledger computed."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from scenario import PRINCIPAL, START, key

from ledger import commands as c
from ledger import events as ev
from ledger.application import Ledger
from ledger.clock import FixedClock
from ledger.policy import Policy, load_seed_policy, parse_policy
from ledger.policy_book import POLICY_BOOK_ID
from ledger.policy_diff import (
    ChangeKind,
    Footprint,
    PolicyChange,
    PolicyDiff,
    Touched,
    diff_policies,
)
from ledger.sealing import MasterKey, MemoryKeyStore, Sealer
from ledger.storage import StorageConfig, ledger_env
from server import convert
from server._pb.pdl.v1 import common_pb2 as cpb
from server._pb.pdl.v1 import policy_service_pb2 as ppb

K = ChangeKind
SEED = load_seed_policy()
Edit = Callable[[dict[str, Any]], None]


def _edited(edit: Edit, base: Policy = SEED) -> Policy:
    """`base` with `edit` applied to a dump of it, validated again."""
    data = base.model_dump(mode="json")
    edit(data)
    return parse_policy(data)


def _diff(edit: Edit, base: Policy = SEED) -> PolicyDiff:
    return diff_policies(base, _edited(edit, base))


def _only(diff: PolicyDiff) -> PolicyChange:
    assert len(diff.changes) == 1, diff.reasons
    return diff.changes[0]


def _entry(data: dict[str, Any], field: str, entry_id: str) -> dict[str, Any]:
    return next(e for e in data[field] if e.get("id", e.get("kind")) == entry_id)


def _set(field: str, entry_id: str, **values: Any) -> Edit:
    return lambda data: _entry(data, field, entry_id).update(values)


def _append(field: str, entry_id: str, attribute: str, value: str) -> Edit:
    return lambda data: _entry(data, field, entry_id)[attribute].append(value)


def _remove(field: str, entry_id: str) -> Edit:
    def edit(data: dict[str, Any]) -> None:
        data[field].remove(_entry(data, field, entry_id))

    return edit


def _section(section: str, **values: Any) -> Edit:
    return lambda data: data[section].update(values)


def _touched(**ids: Any) -> Touched:
    """A `Touched` from plain collections: categories, purposes, recipient_classes, regions."""
    return Touched(**{name: frozenset(values) for name, values in ids.items()})


def _assert(change: PolicyChange, kind: K, item: str, reason: str, *, major: bool) -> None:
    assert (change.kind, change.item, change.major, change.reason) == (kind, item, major, reason)


def _categories_of(field: str, entry_id: str) -> frozenset[str]:
    return frozenset(_entry(SEED.model_dump(mode="json"), field, entry_id)["categories"])


_ADVERTISING = _categories_of("purposes", "advertising")
_PARTNERS = _categories_of("recipient_classes", "third_party_partners")
_AGGREGATES = _categories_of("recipient_classes", "anonymised_aggregate_recipients")
_EVERYONE = Touched(everyone=True)


# --- no change --------------------------------------------------------------------------


def test_an_unchanged_policy_has_no_changes() -> None:
    diff = diff_policies(SEED, SEED.model_copy(update={"version": "2"}))

    assert (diff.changes, diff.major, diff.reasons) == ((), False, ())
    assert diff.touched() == Touched()


def test_cosmetic_edits_are_not_changes() -> None:
    def cosmetic(data: dict[str, Any]) -> None:
        data["title"] = "Sossen Privacy Policy, reworded"
        data["interpretations"] = data["interpretations"][:1]
        _entry(data, "categories", "location.gps")["name"] = "Satellite location"
        _entry(data, "categories", "location.gps")["examples"] = ["GNSS fix"]
        _entry(data, "purposes", "advertising")["name"] = "Ads"
        _entry(data, "recipient_classes", "acquirer")["members"] = ["buyer"]
        _entry(data, "rights", "access")["description"] = "See your data"

    diff = _diff(cosmetic)

    assert diff.changes == ()
    assert not diff.major


def test_a_revised_text_alone_is_one_minor_change__clause_8() -> None:
    diff = _diff(lambda data: data.update(text_sha256="0" * 64))

    _assert(_only(diff), K.TEXT_REVISED, "text", "policy text revised (§8)", major=False)
    assert not diff.major
    assert diff.touched() == Touched()


def test_the_first_version_is_one_major_change_touching_everyone__clause_8() -> None:
    diff = diff_policies(None, SEED)

    change = _only(diff)
    _assert(change, K.FIRST_VERSION, "sossen-privacy-policy", "first version", major=True)
    assert change.clause == "§8"
    assert diff.major
    assert diff.touched() == _EVERYONE


# --- purposes -----------------------------------------------------------------------------


def test_a_purpose_added_is_major_and_touches_it_and_its_categories__clause_2() -> None:
    targeted = {
        "id": "targeted_ads",
        "name": "Targeted advertising",
        "categories": ["device_id.idfa", "location.gps"],
        "legal_bases": ["consent"],
        "clause": "§2.3",
    }
    diff = _diff(lambda data: data["purposes"].append(targeted))

    change = _only(diff)
    _assert(
        change, K.PURPOSE_ADDED, "targeted_ads", "purpose 'targeted_ads' added (§2.3)", major=True
    )
    assert change.clause == "§2.3"
    assert diff.touched() == _touched(
        purposes={"targeted_ads"}, categories={"device_id.idfa", "location.gps"}
    )


def test_a_purpose_removed_is_minor_and_cites_its_old_clause__clause_2() -> None:
    diff = _diff(_remove("purposes", "promotions"))

    change = _only(diff)
    _assert(
        change, K.PURPOSE_REMOVED, "promotions", "purpose 'promotions' removed (§2)", major=False
    )
    assert change.clause == "§2"
    assert diff.touched() == Touched()


def test_a_purpose_gaining_a_category_is_widened_and_touches_only_that_category() -> None:
    diff = _diff(_append("purposes", "advertising", "categories", "location.gps"))

    reason = "purpose 'advertising' widened: gained categories 'location.gps' (§3.2)"
    _assert(_only(diff), K.PURPOSE_WIDENED, "advertising", reason, major=True)
    assert diff.touched() == _touched(purposes={"advertising"}, categories={"location.gps"})


def test_a_purpose_gaining_a_legal_basis_touches_every_category_it_uses() -> None:
    diff = _diff(_append("purposes", "advertising", "legal_bases", "contract"))

    reason = "purpose 'advertising' widened: gained legal bases 'contract' (§3.2)"
    _assert(_only(diff), K.PURPOSE_WIDENED, "advertising", reason, major=True)
    assert diff.touched() == _touched(purposes={"advertising"}, categories=_ADVERTISING)


def test_a_purpose_losing_a_category_is_narrowed_and_minor() -> None:
    diff = _diff(_set("purposes", "advertising", categories=["device_id.idfa"]))

    reason = (
        "purpose 'advertising' narrowed: lost categories 'device_id.android_id', "
        "'network_log.usage' (§3.2)"
    )
    _assert(_only(diff), K.PURPOSE_NARROWED, "advertising", reason, major=False)


# --- categories ---------------------------------------------------------------------------

_EMAIL = {
    "id": "account.email",
    "name": "E-mail address",
    "group": "account",
    "sensitive": False,
    "retention_days": 365,
    "clause": "§1",
}


def test_a_category_added_is_major_and_touches_it__clause_1() -> None:
    diff = _diff(lambda data: data["categories"].append(_EMAIL))

    _assert(
        _only(diff),
        K.CATEGORY_ADDED,
        "account.email",
        "category 'account.email' added (§1)",
        major=True,
    )
    assert diff.touched() == _touched(categories={"account.email"})


def test_a_category_removed_is_minor__clause_1() -> None:
    with_email = _edited(lambda data: data["categories"].append(_EMAIL))

    diff = diff_policies(with_email, SEED)

    reason = "category 'account.email' removed (§1)"
    _assert(_only(diff), K.CATEGORY_REMOVED, "account.email", reason, major=False)


def test_a_category_no_longer_sensitive_is_major__clause_1_5() -> None:
    diff = _diff(_set("categories", "location.gps", sensitive=False))

    reason = "category 'location.gps' no longer sensitive: collected without prior consent (§1(5))"
    _assert(_only(diff), K.CATEGORY_SENSITIVITY_LOWERED, "location.gps", reason, major=True)
    assert diff.touched() == _touched(categories={"location.gps"})


def test_a_category_becoming_sensitive_is_not_a_change() -> None:
    assert _diff(_set("categories", "device_id.android_id", sensitive=True)).changes == ()


def test_a_longer_retention_is_major__clause_1_3() -> None:
    diff = _diff(_set("categories", "device_id.imei", retention_days=365))

    reason = "retention of category 'device_id.imei' lengthened from 90 to 365 days (§1(3))"
    _assert(_only(diff), K.RETENTION_LENGTHENED, "device_id.imei", reason, major=True)
    assert diff.touched() == _touched(categories={"device_id.imei"})


def test_a_shorter_retention_is_minor__clause_1() -> None:
    diff = _diff(_set("categories", "network_log.usage", retention_days=30))

    reason = "retention of category 'network_log.usage' shortened from 180 to 30 days (§1)"
    _assert(_only(diff), K.RETENTION_SHORTENED, "network_log.usage", reason, major=False)
    assert diff.touched() == Touched()


# --- recipient classes --------------------------------------------------------------------


def test_a_recipient_class_added_is_major_and_touches_it_and_its_categories__clause_4() -> None:
    brokers = {
        "id": "data_brokers",
        "name": "Data brokers",
        "categories": ["device_id.idfa", "network_log.usage"],
        "purposes": ["advertising"],
        "legal_bases": ["consent"],
        "clause": "§4.6",
    }
    diff = _diff(lambda data: data["recipient_classes"].append(brokers))

    reason = "recipient class 'data_brokers' added (§4.6)"
    _assert(_only(diff), K.RECIPIENT_CLASS_ADDED, "data_brokers", reason, major=True)
    assert diff.touched() == _touched(
        recipient_classes={"data_brokers"}, categories={"device_id.idfa", "network_log.usage"}
    )


def test_a_recipient_class_removed_is_minor__clause_4_4() -> None:
    diff = _diff(_remove("recipient_classes", "acquirer"))

    reason = "recipient class 'acquirer' removed (§4.4)"
    _assert(_only(diff), K.RECIPIENT_CLASS_REMOVED, "acquirer", reason, major=False)


def test_a_recipient_class_gaining_a_category_touches_only_that_category__clause_4_2() -> None:
    diff = _diff(
        _append("recipient_classes", "third_party_partners", "categories", "device_id.imei")
    )

    reason = (
        "recipient class 'third_party_partners' widened: gained categories 'device_id.imei' (§4.2)"
    )
    _assert(_only(diff), K.RECIPIENT_CLASS_WIDENED, "third_party_partners", reason, major=True)
    assert diff.touched() == _touched(
        recipient_classes={"third_party_partners"}, categories={"device_id.imei"}
    )


def test_a_recipient_class_gaining_a_purpose_touches_every_category_it_receives() -> None:
    diff = _diff(_append("recipient_classes", "third_party_partners", "purposes", "promotions"))

    reason = "recipient class 'third_party_partners' widened: gained purposes 'promotions' (§4.2)"
    _assert(_only(diff), K.RECIPIENT_CLASS_WIDENED, "third_party_partners", reason, major=True)
    assert diff.touched() == _touched(
        recipient_classes={"third_party_partners"}, categories=_PARTNERS
    )


def test_a_recipient_class_no_longer_anonymised_only_is_widened__clause_4_5() -> None:
    diff = _diff(
        _set("recipient_classes", "anonymised_aggregate_recipients", requires_anonymised=False)
    )

    reason = (
        "recipient class 'anonymised_aggregate_recipients' widened: "
        "no longer anonymised only (§4.5)"
    )
    _assert(
        _only(diff),
        K.RECIPIENT_CLASS_WIDENED,
        "anonymised_aggregate_recipients",
        reason,
        major=True,
    )
    assert diff.touched() == _touched(
        recipient_classes={"anonymised_aggregate_recipients"}, categories=_AGGREGATES
    )


def test_a_recipient_class_no_longer_needing_a_legal_ground_is_widened__clause_4_3() -> None:
    diff = _diff(_set("recipient_classes", "authorities", legal_grounds=[]))

    reason = "recipient class 'authorities' widened: no longer requires a legal ground (§4.3)"
    _assert(_only(diff), K.RECIPIENT_CLASS_WIDENED, "authorities", reason, major=True)


def test_a_recipient_class_losing_some_legal_grounds_is_not_widened() -> None:
    diff = _diff(_set("recipient_classes", "authorities", legal_grounds=["law", "court_order"]))

    assert diff.changes == ()


def test_a_recipient_class_losing_a_purpose_is_narrowed_and_minor() -> None:
    diff = _diff(_set("recipient_classes", "third_party_partners", purposes=["authentication"]))

    change = _only(diff)
    assert (change.kind, change.item, change.major) == (
        K.RECIPIENT_CLASS_NARROWED,
        "third_party_partners",
        False,
    )
    assert change.reason.startswith(
        "recipient class 'third_party_partners' narrowed: lost purposes"
    )


# --- storage ------------------------------------------------------------------------------


def test_a_storage_region_change_is_major_and_touches_the_old_region__clause_7() -> None:
    diff = _diff(_section("storage", region="eu-west"))

    reason = "storage region changed from 'cn-mainland' to 'eu-west' (§7)"
    _assert(_only(diff), K.STORAGE_REGION_CHANGED, "eu-west", reason, major=True)
    assert diff.touched() == _touched(regions={"cn-mainland"})


def test_a_cross_border_basis_added_is_major_and_touches_the_region__clause_7() -> None:
    def edit(data: dict[str, Any]) -> None:
        data["storage"]["cross_border_bases"].append("adequacy_decision")

    diff = _diff(edit)

    reason = "cross-border basis 'adequacy_decision' added (§7)"
    _assert(_only(diff), K.CROSS_BORDER_BASIS_ADDED, "adequacy_decision", reason, major=True)
    assert diff.touched() == _touched(regions={"cn-mainland"})


def test_dropping_the_consent_to_leave_the_region_is_major_and_touches_it__clause_7() -> None:
    diff = _diff(_section("storage", cross_border_consent=False))

    reason = "data leaves the region without the person's consent (§7)"
    _assert(_only(diff), K.CROSS_BORDER_CONSENT_DROPPED, "cn-mainland", reason, major=True)
    assert diff.touched() == _touched(regions={"cn-mainland"})


# --- legal bases, erasure grounds, rights ---------------------------------------------------


def test_a_legal_basis_made_independent_of_consent_is_major_for_everyone__clause_2() -> None:
    diff = _diff(_set("legal_bases", "contract", independent_of_consent=True))

    reason = "legal basis 'contract' no longer stopped by a missing or withdrawn consent (§2)"
    _assert(_only(diff), K.LEGAL_BASIS_WEAKENED, "contract", reason, major=True)
    assert diff.touched() == _EVERYONE


def test_a_transfer_that_no_longer_leaves_withdrawn_data_behind_is_major__clause_4_4() -> None:
    diff = _diff(_set("legal_bases", "corporate_transaction", follows_collection_consent=False))

    reason = (
        "legal basis 'corporate_transaction' no longer stopped by a missing or withdrawn "
        "consent (§4.4)"
    )
    _assert(_only(diff), K.LEGAL_BASIS_WEAKENED, "corporate_transaction", reason, major=True)
    assert diff.touched() == _EVERYONE


def test_an_erasure_ground_removed_is_major_for_everyone__clause_6_3() -> None:
    diff = _diff(_remove("erasure_grounds", "service_discontinued"))

    reason = "erasure ground 'service_discontinued' removed (§6.3(4))"
    _assert(_only(diff), K.ERASURE_GROUND_REMOVED, "service_discontinued", reason, major=True)
    assert diff.touched() == _EVERYONE


def test_a_right_removed_is_major_for_everyone__clause_6_3() -> None:
    diff = _diff(_remove("rights", "deletion"))

    _assert(_only(diff), K.RIGHT_REMOVED, "deletion", "right 'deletion' removed (§6.3)", major=True)
    assert diff.touched() == _EVERYONE


def test_a_right_added_is_minor__clause_6_4() -> None:
    without = _edited(_remove("rights", "account_cancellation"))

    diff = diff_policies(without, SEED)

    reason = "right 'account_cancellation' added (§6.4)"
    _assert(_only(diff), K.RIGHT_ADDED, "account_cancellation", reason, major=False)
    assert diff.touched() == Touched()


# --- safeguards ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "after"),
    [
        ({"days": 20}, "20 calendar days (extendable by 15)"),
        ({"kind": "working"}, "15 working days of CN in Asia/Shanghai (extendable by 15)"),
        ({"max_extension_days": 30}, "15 calendar days (extendable by 30)"),
    ],
    ids=["more_days", "working_days", "longer_extension"],
)
def test_a_longer_response_deadline_is_major_for_everyone__clause_6_4(
    change: dict[str, Any], after: str
) -> None:
    diff = _diff(_section("response_deadline", **change))

    reason = (
        f"response deadline lengthened from 15 calendar days (extendable by 15) to {after} (§6.4)"
    )
    _assert(_only(diff), K.DEADLINE_LENGTHENED, "response_deadline", reason, major=True)
    assert diff.touched() == _EVERYONE


def test_another_holiday_calendar_for_working_days_is_major_for_everyone__clause_6_4() -> None:
    """Another country's public holidays can put more days off within the deadline."""
    working = _edited(_section("response_deadline", kind="working"))

    diff = diff_policies(
        working, _edited(_section("response_deadline", holiday_calendar="JP"), working)
    )

    reason = (
        "response deadline lengthened from 15 working days of CN in Asia/Shanghai (extendable"
        " by 15) to 15 working days of JP in Asia/Shanghai (extendable by 15) (§6.4)"
    )
    _assert(_only(diff), K.DEADLINE_LENGTHENED, "response_deadline", reason, major=True)


def test_another_time_zone_for_working_days_is_major_for_everyone__clause_6_4() -> None:
    """Another zone ends each working day at another instant (hours later to the west)."""
    working = _edited(_section("response_deadline", kind="working"))

    diff = diff_policies(
        working, _edited(_section("response_deadline", time_zone="Europe/Berlin"), working)
    )

    reason = (
        "response deadline lengthened from 15 working days of CN in Asia/Shanghai (extendable"
        " by 15) to 15 working days of CN in Europe/Berlin (extendable by 15) (§6.4)"
    )
    _assert(_only(diff), K.DEADLINE_LENGTHENED, "response_deadline", reason, major=True)


def test_another_time_zone_for_calendar_days_changes_nothing() -> None:
    """A calendar-day deadline is an exact span from receipt, in no zone."""
    diff = _diff(_section("response_deadline", time_zone="Europe/Berlin"))

    assert diff.major is False
    assert [c.kind for c in diff.changes if c.major] == []


def test_a_new_collection_source_is_major_for_everyone__clause_3() -> None:
    broker = {"id": "data_broker", "name": "A broker", "clause": "§3"}
    diff = _diff(lambda data: data["sources"].append(broker))

    reason = "data collected through a new source 'data_broker' (§3)"
    _assert(_only(diff), K.SOURCE_ADDED, "data_broker", reason, major=True)
    assert diff.touched() == _EVERYONE


def test_a_new_way_of_giving_consent_is_major_for_everyone__clause_1() -> None:
    diff = _diff(lambda data: data["consent"]["methods"].append("implied"))

    _assert(
        _only(diff),
        K.CONSENT_METHOD_ADDED,
        "consent",
        "consent may be given in new ways: 'implied' (§1)",
        major=True,
    )
    assert diff.touched() == _EVERYONE


def test_a_shorter_response_deadline_is_not_a_change() -> None:
    assert _diff(_section("response_deadline", days=10)).changes == ()


@pytest.mark.parametrize(
    ("change", "what"),
    [
        ({"age_of_majority": 16}, "age of majority lowered from 18 to 16"),
        ({"guardian_consent_required": False}, "guardian consent no longer required"),
        ({"guardian_required": False}, "guardian no longer required"),
    ],
    ids=["lower_age", "no_guardian_consent", "no_guardian"],
)
def test_weaker_protection_of_minors_is_major_for_everyone__clause_5(
    change: dict[str, Any], what: str
) -> None:
    diff = _diff(_section("minors", **change))

    reason = f"protection of minors weakened: {what} (§5)"
    _assert(_only(diff), K.MINORS_WEAKENED, "minors", reason, major=True)
    assert diff.touched() == _EVERYONE


def test_allowing_sale_is_major_for_everyone__clause_4() -> None:
    diff = _diff(_section("sale", prohibited=False))

    reason = "sale of personal data no longer prohibited (§4)"
    _assert(_only(diff), K.SALE_ALLOWED, "sale", reason, major=True)
    assert diff.touched() == _EVERYONE


def test_turning_on_consent_by_default_is_major_for_everyone__clause_1() -> None:
    opt_in = _edited(_section("consent", default_for_non_sensitive=False))

    diff = diff_policies(opt_in, SEED)

    reason = "non-sensitive data processed by default, without express consent (§1)"
    _assert(_only(diff), K.CONSENT_DEFAULT_ENABLED, "consent", reason, major=True)
    assert diff.touched() == _EVERYONE


def test_dropping_the_change_notice_is_major_for_everyone__clause_8() -> None:
    diff = _diff(_section("change_notice", notify_on_major_change=False))

    reason = "major changes no longer notified to the people affected (§8)"
    _assert(_only(diff), K.CHANGE_NOTICE_DROPPED, "change_notice", reason, major=True)
    assert diff.touched() == _EVERYONE


# --- several changes, touched and affects -------------------------------------------------


def _mixed(data: dict[str, Any]) -> None:
    data["text_sha256"] = "1" * 64
    _remove("purposes", "promotions")(data)
    _set("categories", "device_id.imei", retention_days=365)(data)
    _section("storage", region="eu-west")(data)


def test_major_changes_come_first_in_the_reasons() -> None:
    diff = _diff(_mixed)

    assert diff.major
    assert [c.major for c in diff.changes] == [True, True, False, False]
    assert diff.reasons == (
        "retention of category 'device_id.imei' lengthened from 90 to 365 days (§1(3))",
        "storage region changed from 'cn-mainland' to 'eu-west' (§7)",
        "purpose 'promotions' removed (§2)",
        "policy text revised (§8)",
    )


def test_touched_is_the_union_of_what_the_major_changes_touch() -> None:
    diff = _diff(_mixed)

    assert diff.touched() == _touched(categories={"device_id.imei"}, regions={"cn-mainland"})


@pytest.mark.parametrize(
    "footprint",
    [
        Footprint(categories=frozenset({"device_id.imei", "network_log.usage"})),
        Footprint(regions=frozenset({"cn-mainland"})),
    ],
    ids=["shares_a_category", "shares_a_region"],
)
def test_a_footprint_sharing_a_touched_id_is_affected(footprint: Footprint) -> None:
    assert _diff(_mixed).affects(footprint)


def test_a_footprint_sharing_no_touched_id_is_not_affected() -> None:
    footprint = Footprint(
        categories=frozenset({"network_log.usage"}),
        purposes=frozenset({"promotions", "device_id.imei"}),  # ids match only in their own set
        recipient_classes=frozenset({"cn-mainland"}),
        regions=frozenset({"eu-west"}),
    )

    assert not _diff(_mixed).affects(footprint)


def test_a_change_touching_everyone_affects_even_an_empty_footprint() -> None:
    assert _diff(_section("sale", prohibited=False)).affects(Footprint())


def test_minor_changes_affect_nobody() -> None:
    everything = Footprint(
        categories=frozenset(c.id for c in SEED.categories),
        purposes=frozenset(p.id for p in SEED.purposes),
        recipient_classes=frozenset(r.id for r in SEED.recipient_classes),
        regions=frozenset({"cn-mainland"}),
    )

    diff = _diff(_remove("purposes", "promotions"))

    assert not diff.affects(everything)


# --- publishing (§8) ----------------------------------------------------------------------


def _publish(ledger: Ledger, policy: Policy, days: int = 30, **fields: Any) -> ev.PolicyPublished:
    """Publish `policy` taking effect in `days`; the recorded event's payload."""
    ledger.execute(
        PRINCIPAL,
        c.PublishPolicy(
            idempotency_key=key("pub"),
            occurred_at=ledger.clock.now(),
            policy=policy,
            effective_at=ledger.clock.now() + timedelta(days=days),
            **fields,
        ),
    )
    payload = list(ledger.events.get(POLICY_BOOK_ID))[-1].payload
    assert isinstance(payload, ev.PolicyPublished)
    assert payload.version == policy.version
    return payload


def _version(edit: Edit, version: str) -> Policy:
    return _edited(edit).model_copy(update={"version": version})


_GPS_FOR_ADS = _append("purposes", "advertising", "categories", "location.gps")
_SHORTER_LOGS = _set("categories", "network_log.usage", retention_days=30)
_WIDENED = "purpose 'advertising' widened: gained categories 'location.gps' (§3.2)"
_SHORTENED = "retention of category 'network_log.usage' shortened from 180 to 30 days (§1)"


def test_publishing_a_widened_policy_records_a_major_change_and_its_reasons__clause_8(
    memory_ledger: Ledger,
) -> None:
    published = _publish(
        memory_ledger, _version(_GPS_FOR_ADS, "2"), changes=("ads may use GPS", _WIDENED)
    )

    assert published.major
    assert published.changes == (_WIDENED, "ads may use GPS")
    assert published.previous_version == "1"


def test_a_minor_change_left_to_the_ledger_is_recorded_as_minor__clause_8(
    memory_ledger: Ledger,
) -> None:
    published = _publish(memory_ledger, _version(_SHORTER_LOGS, "2"))

    assert (published.major, published.changes) == (False, (_SHORTENED,))
    effective = memory_ledger.clock.now() + timedelta(days=30)
    assert memory_ledger.policy_in_force(effective)[0].major is False


def test_the_publisher_may_force_a_minor_change_to_be_major__clause_8(
    memory_ledger: Ledger,
) -> None:
    published = _publish(memory_ledger, _version(_SHORTER_LOGS, "2"), major=True)

    assert (published.major, published.changes) == (True, (_SHORTENED,))


def test_the_publisher_cannot_downgrade_a_major_change__clause_8(memory_ledger: Ledger) -> None:
    published = _publish(memory_ledger, _version(_GPS_FOR_ADS, "2"), major=False)

    assert published.major


def test_a_version_is_compared_with_the_one_it_replaces_even_if_not_yet_in_force__clause_8(
    memory_ledger: Ledger,
) -> None:
    scheduled = _publish(memory_ledger, _version(_GPS_FOR_ADS, "2"), days=30)

    later = _publish(memory_ledger, SEED.model_copy(update={"version": "3"}), days=40)

    assert scheduled.previous_version == "1"
    assert later.previous_version == "2"
    assert later.changes == (
        "purpose 'advertising' narrowed: lost categories 'location.gps' (§3.2)",
    )


def test_with_no_version_in_force_yet_a_version_is_compared_with_the_first__clause_8(
    clock: FixedClock,
) -> None:
    app = Ledger(
        ledger_env(StorageConfig(backend="memory")),
        sealer=Sealer(MasterKey.generate(), MemoryKeyStore()),
        clock=clock,
    )
    try:
        app.ensure_policy(SEED, clock.now() + timedelta(days=20), "pdl-bootstrap")

        published = _publish(app, _version(_GPS_FOR_ADS, "2"), days=25)

        assert (published.previous_version, published.changes) == ("1", (_WIDENED,))
    finally:
        app.close()


def test_the_first_version_is_recorded_as_major_without_a_previous_version(
    memory_ledger: Ledger,
) -> None:
    first = list(memory_ledger.events.get(POLICY_BOOK_ID))[1].payload

    assert isinstance(first, ev.PolicyPublished)
    assert (first.major, first.changes, first.previous_version) == (True, ("first version",), None)


# --- the gRPC boundary: proto3 cannot send "unset", so false means "let the ledger classify"


@pytest.mark.parametrize(("sent", "received"), [(False, None), (True, True)])
def test_a_proto_major_flag_maps_false_to_classify_and_true_to_force(
    sent: bool, received: bool | None
) -> None:
    request = ppb.PublishPolicyRequest(
        meta=cpb.CommandMeta(idempotency_key=key("conv")),
        document_json=SEED.model_dump_json(),
        effective_at=convert.timestamp(START + timedelta(days=1)),
        major=sent,
    )

    assert convert.publish_policy(request, START).major is received

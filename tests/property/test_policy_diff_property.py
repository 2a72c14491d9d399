"""Whom a policy change affects (§8): for random modifications of the seed policy and random
footprints, `PolicyDiff.affects` equals the brute-force definition.

Each modification knows what it must touch, written here independently of `ledger.policy_diff`
(the table in its docstring). Several modifications are applied at once, on targets chosen so
they do not undo one another. Then `touched()` is the union of what they touch, `major` is
whether any of them touches something, and for every footprint `affects(fp)` is true exactly
when `everyone` is touched or some touched id appears in the footprint's set of the same kind,
checked element by element.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import hypothesis.strategies as st
from hypothesis import given, settings

from ledger.policy import load_seed_policy, parse_policy
from ledger.policy_diff import Footprint, Touched, diff_policies

_SEED = load_seed_policy()
_CATEGORIES = [c.id for c in _SEED.categories]
_SENSITIVE = [c.id for c in _SEED.categories if c.sensitive]
_PURPOSES = [p.id for p in _SEED.purposes]
_SHARED = {p for r in _SEED.recipient_classes for p in r.purposes}
_REMOVABLE_PURPOSES = [p for p in _PURPOSES if p not in _SHARED]  # no class names them
_WIDENABLE_PURPOSES = [p for p in _PURPOSES if p in _SHARED]
_CONTRACT = "contract"
_BASIS_WIDENABLE_PURPOSES = [
    p.id for p in _SEED.purposes if p.id in _SHARED and _CONTRACT not in p.legal_bases
]
_WIDENABLE_CLASSES = ["employees_affiliates", "third_party_partners"]
_REGION = _SEED.storage.region
_NEW_CATEGORY, _NEW_PURPOSE, _NEW_CLASS = "account.nickname", "new_purpose", "new_class"

Document = dict[str, Any]


@dataclass
class Expected:
    """What the modifications applied so far must touch."""

    categories: set[str] = field(default_factory=set)
    purposes: set[str] = field(default_factory=set)
    recipient_classes: set[str] = field(default_factory=set)
    regions: set[str] = field(default_factory=set)
    everyone: bool = False

    def nothing(self) -> bool:
        return not (
            self.everyone
            or self.categories
            or self.purposes
            or self.recipient_classes
            or self.regions
        )


Modify = Callable[[st.DrawFn, Document, Expected], None]


def _entry(data: Document, section: str, entry_id: str) -> Document:
    return next(e for e in data[section] if e.get("id", e.get("kind")) == entry_id)


def _widen_purpose(draw: st.DrawFn, data: Document, expected: Expected) -> None:
    by_basis = draw(st.booleans())
    pool = _BASIS_WIDENABLE_PURPOSES if by_basis else _WIDENABLE_PURPOSES
    purpose = _entry(data, "purposes", draw(st.sampled_from(pool)))
    missing = [c for c in _CATEGORIES if c not in purpose["categories"]]
    gained = draw(st.lists(st.sampled_from(missing), unique=True, max_size=2)) if missing else []
    purpose["categories"] += gained
    if by_basis:  # a new basis puts every category of the purpose on a new footing
        purpose["legal_bases"].append(_CONTRACT)
        expected.categories.update(purpose["categories"])
    expected.categories.update(gained)
    if gained or by_basis:
        expected.purposes.add(purpose["id"])


def _add_purpose(draw: st.DrawFn, data: Document, expected: Expected) -> None:
    categories = draw(st.lists(st.sampled_from(_CATEGORIES), unique=True, min_size=1, max_size=3))
    data["purposes"].append(
        {
            "id": _NEW_PURPOSE,
            "name": "New",
            "categories": categories,
            "legal_bases": ["consent"],
            "clause": "§2",
        }
    )
    expected.purposes.add(_NEW_PURPOSE)
    expected.categories.update(categories)


def _remove_purpose(draw: st.DrawFn, data: Document, expected: Expected) -> None:
    data["purposes"].remove(_entry(data, "purposes", draw(st.sampled_from(_REMOVABLE_PURPOSES))))


def _lower_sensitivity(draw: st.DrawFn, data: Document, expected: Expected) -> None:
    category = draw(st.sampled_from(_SENSITIVE))
    _entry(data, "categories", category)["sensitive"] = False
    expected.categories.add(category)


def _retention(draw: st.DrawFn, data: Document, expected: Expected) -> None:
    category = _entry(data, "categories", draw(st.sampled_from(_CATEGORIES)))
    days = draw(st.integers(1, 3650))
    if days > category["retention_days"]:
        expected.categories.add(category["id"])
    category["retention_days"] = days


def _add_category(draw: st.DrawFn, data: Document, expected: Expected) -> None:
    data["categories"].append(
        {
            "id": _NEW_CATEGORY,
            "name": "Nickname",
            "group": "account",
            "sensitive": draw(st.booleans()),
            "retention_days": 30,
            "clause": "§1",
        }
    )
    expected.categories.add(_NEW_CATEGORY)


def _widen_class(draw: st.DrawFn, data: Document, expected: Expected) -> None:
    rc = _entry(data, "recipient_classes", draw(st.sampled_from(_WIDENABLE_CLASSES)))
    missing = [c for c in _CATEGORIES if c not in rc["categories"]]
    purposes = [p for p in _WIDENABLE_PURPOSES if p not in rc["purposes"]]
    if draw(st.booleans()) and missing:
        category = draw(st.sampled_from(missing))
        rc["categories"].append(category)
        expected.categories.add(category)
    elif purposes:
        rc["purposes"].append(draw(st.sampled_from(purposes)))
        expected.categories.update(rc["categories"])
    expected.recipient_classes.add(rc["id"])


def _add_class(draw: st.DrawFn, data: Document, expected: Expected) -> None:
    categories = draw(st.lists(st.sampled_from(_CATEGORIES), unique=True, max_size=3))
    data["recipient_classes"].append(
        {
            "id": _NEW_CLASS,
            "name": "New",
            "categories": categories,
            "purposes": ["authentication"],
            "legal_bases": ["consent"],
            "clause": "§4",
        }
    )
    expected.recipient_classes.add(_NEW_CLASS)
    expected.categories.update(categories)


def _remove_class(draw: st.DrawFn, data: Document, expected: Expected) -> None:
    data["recipient_classes"].remove(_entry(data, "recipient_classes", "acquirer"))


def _unanonymise(draw: st.DrawFn, data: Document, expected: Expected) -> None:
    rc = _entry(data, "recipient_classes", "anonymised_aggregate_recipients")
    rc["requires_anonymised"] = False
    expected.recipient_classes.add(rc["id"])
    expected.categories.update(rc["categories"])


def _region(draw: st.DrawFn, data: Document, expected: Expected) -> None:
    data["storage"]["region"] = "eu-west"
    expected.regions.add(_REGION)


def _cross_border(draw: st.DrawFn, data: Document, expected: Expected) -> None:
    data["storage"]["cross_border_bases"].append("adequacy_decision")
    expected.regions.add(_REGION)


def _everyone(section: str, values: Document) -> Modify:
    def modify(draw: st.DrawFn, data: Document, expected: Expected) -> None:
        data[section].update(values)
        expected.everyone = True

    return modify


def _remove_right(draw: st.DrawFn, data: Document, expected: Expected) -> None:
    data["rights"].pop(draw(st.integers(0, len(data["rights"]) - 1)))
    expected.everyone = True


def _remove_erasure_ground(draw: st.DrawFn, data: Document, expected: Expected) -> None:
    data["erasure_grounds"].pop(draw(st.integers(0, len(data["erasure_grounds"]) - 1)))
    expected.everyone = True


def _weaken_basis(draw: st.DrawFn, data: Document, expected: Expected) -> None:
    _entry(data, "legal_bases", draw(st.sampled_from(["consent", _CONTRACT])))[
        "independent_of_consent"
    ] = True
    expected.everyone = True


def _deadline(draw: st.DrawFn, data: Document, expected: Expected) -> None:
    days = draw(st.integers(1, 60))
    expected.everyone |= days > data["response_deadline"]["days"]
    data["response_deadline"]["days"] = days


def _minors(draw: st.DrawFn, data: Document, expected: Expected) -> None:
    age = draw(st.integers(1, 30))
    expected.everyone |= age < data["minors"]["age_of_majority"]
    data["minors"]["age_of_majority"] = age


def _cosmetic(draw: st.DrawFn, data: Document, expected: Expected) -> None:
    data["title"] = "Revised"
    data["text_sha256"] = "f" * 64
    data["interpretations"] = []
    _entry(data, "categories", draw(st.sampled_from(_CATEGORIES)))["examples"] = ["an example"]


_MODIFICATIONS: dict[str, Modify] = {
    "widen_purpose": _widen_purpose,
    "add_purpose": _add_purpose,
    "remove_purpose": _remove_purpose,
    "lower_sensitivity": _lower_sensitivity,
    "retention": _retention,
    "add_category": _add_category,
    "widen_class": _widen_class,
    "add_class": _add_class,
    "remove_class": _remove_class,
    "unanonymise": _unanonymise,
    "region": _region,
    "cross_border": _cross_border,
    "remove_right": _remove_right,
    "remove_erasure_ground": _remove_erasure_ground,
    "weaken_basis": _weaken_basis,
    "deadline": _deadline,
    "minors": _minors,
    "sale": _everyone("sale", {"prohibited": False}),
    "notice": _everyone("change_notice", {"notify_on_major_change": False}),
    "working_days": _everyone("response_deadline", {"kind": "working"}),
    "cosmetic": _cosmetic,
}


@st.composite
def modified(draw: st.DrawFn) -> tuple[Document, Expected]:
    """A modified dump of the seed policy and what its changes must touch."""
    data, expected = _SEED.model_dump(mode="json"), Expected()
    names = draw(st.lists(st.sampled_from(sorted(_MODIFICATIONS)), unique=True, max_size=6))
    for name in names:
        _MODIFICATIONS[name](draw, data, expected)
    data["version"] = "2"
    return data, expected


def _ids(extra: str, known: list[str]) -> st.SearchStrategy[frozenset[str]]:
    return st.frozensets(st.sampled_from([*known, extra]), max_size=3)


footprints = st.builds(
    Footprint,
    categories=_ids(_NEW_CATEGORY, _CATEGORIES),
    purposes=_ids(_NEW_PURPOSE, _PURPOSES),
    recipient_classes=_ids(_NEW_CLASS, [r.id for r in _SEED.recipient_classes]),
    regions=_ids("eu-west", [_REGION]),
)


def _brute_force(expected: Expected, fp: Footprint) -> bool:
    """Affected: everyone is touched, or some touched id is in the footprint's same set."""
    if expected.everyone:
        return True
    pairs = [
        (expected.categories, fp.categories),
        (expected.purposes, fp.purposes),
        (expected.recipient_classes, fp.recipient_classes),
        (expected.regions, fp.regions),
    ]
    return any(touched in held for touched_ids, held in pairs for touched in touched_ids)


@settings(max_examples=300, deadline=None)
@given(change=modified(), fps=st.lists(footprints, min_size=1, max_size=20))
def test_affects_equals_the_brute_force_definition(
    change: tuple[Document, Expected], fps: list[Footprint]
) -> None:
    data, expected = change

    diff = diff_policies(_SEED, parse_policy(data))

    touched = diff.touched()
    assert touched == Touched(
        categories=frozenset(expected.categories),
        purposes=frozenset(expected.purposes),
        recipient_classes=frozenset(expected.recipient_classes),
        regions=frozenset(expected.regions),
        everyone=expected.everyone,
    ), diff.reasons
    assert diff.major is not expected.nothing(), diff.reasons
    for fp in fps:
        assert diff.affects(fp) is _brute_force(expected, fp), (fp, diff.reasons)
        assert diff.affects(fp) is any(c.major and c.touches.meets(fp) for c in diff.changes), (
            diff.reasons
        )

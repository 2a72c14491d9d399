"""The policy as data: a pydantic model of a privacy policy, each entry citing its clause."""

from __future__ import annotations

import functools
import hashlib
import tomllib
from collections import Counter
from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays
import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from ledger.errors import PolicyError

_CLAUSE_PATTERN = r"^§\d+(\.\d+)*( [a-z ]+)?(\([0-9a-z]+\))*$"

CLAUSE_MAX_LENGTH = 64
"""The longest clause reference (what the views keep of one, on every back-end)."""
Clause = Annotated[
    str,
    Field(
        max_length=CLAUSE_MAX_LENGTH,
        pattern=_CLAUSE_PATTERN,
        description="The clause of the policy text this entry comes from, "
        "e.g. '§4.2' or '§6.3(2)'.",
    ),
]
Identifier = Annotated[
    str,
    Field(
        pattern=r"^[a-z][a-z0-9_.-]{0,63}$",
        description="A stable machine identifier: lower case, digits, '_', '.', '-'.",
    ),
]


class _Entry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CategoryGroup(StrEnum):
    """The families of data named in §1 of the seed policy."""

    NETWORK_LOG = "network_log"
    DEVICE_ATTRIBUTES = "device_attributes"
    USER_OPERATION = "user_operation"
    DEVICE_IDENTIFIERS = "device_identifiers"
    DEVICE_SIGNALS = "device_signals"
    LOCATION = "location"
    ACCOUNT = "account"


class Category(_Entry):
    """A kind of personal data the policy says may be collected."""

    id: Identifier
    name: str = Field(min_length=1, description="Human name of the category.")
    group: CategoryGroup = Field(description="The family of data it belongs to.")
    examples: tuple[str, ...] = Field(default=(), description="Examples the text gives.")
    sensitive: bool = Field(
        description="True when consent must be in force before collection; False when it may "
        "be collected by default."
    )
    retention_days: int = Field(
        gt=0,
        le=36_500,
        description="How long data of this category may be held after its last collection.",
    )
    clause: Clause


class Source(_Entry):
    """A channel through which data is collected (app, website, SDK, cookie, ...)."""

    id: Identifier
    name: str = Field(min_length=1, description="Human name of the source.")
    clause: Clause


class LegalBasis(_Entry):
    """A ground on which processing may rest."""

    id: Identifier
    name: str = Field(min_length=1, description="Human name of the basis.")
    requires_consent: bool = Field(
        description="True when the basis is the person's consent, so a withdrawal stops it."
    )
    independent_of_consent: bool = Field(
        default=False,
        description="True when processing on this basis does not depend on the person's consent "
        "(a legal duty, vital interests): neither a missing nor a withdrawn consent stops it.",
    )
    follows_collection_consent: bool = Field(
        default=False,
        description="True when data moves on this basis only as it stands: a category whose "
        "consent was withdrawn for every purpose it was collected for stays behind (a transfer "
        "of the business to an acquirer).",
    )
    clause: Clause


class Purpose(_Entry):
    """A purpose the policy declares, with the categories it needs (data minimisation)."""

    id: Identifier
    name: str = Field(min_length=1, description="Human name of the purpose.")
    categories: tuple[Identifier, ...] = Field(
        min_length=1, description="The categories this purpose needs; no other may serve it."
    )
    legal_bases: tuple[Identifier, ...] = Field(
        min_length=1, description="The legal bases processing for this purpose may rest on."
    )
    clause: Clause


class RecipientClass(_Entry):
    """A class of recipients data may be disclosed to, and what each may receive."""

    id: Identifier
    name: str = Field(min_length=1, description="Human name of the class.")
    members: tuple[str, ...] = Field(
        default=(), description="The kinds of recipient the text puts in this class."
    )
    categories: tuple[Identifier, ...] = Field(
        description="Categories this class may receive (each still limited by the purpose)."
    )
    purposes: tuple[Identifier, ...] = Field(
        min_length=1, description="Purposes for which this class may receive data."
    )
    legal_bases: tuple[Identifier, ...] = Field(
        min_length=1, description="Legal bases a disclosure to this class may rest on."
    )
    legal_grounds: tuple[Identifier, ...] = Field(
        default=(),
        description="When non-empty, every disclosure must name one of these grounds "
        "(law, summons, court order, fraud prevention, ...).",
    )
    requires_anonymised: bool = Field(
        default=False, description="True when only anonymised aggregates may go to this class."
    )
    need_to_know: bool = Field(
        default=False,
        description="True when members may hold only what their role needs "
        "(the purpose's categories).",
    )
    clause: Clause


class ErasureGround(_Entry):
    """A ground on which the person may have their data deleted, or the ledger erases it."""

    id: Identifier
    description: str = Field(min_length=1, description="The ground in the text's words.")
    clause: Clause


class RightKind(StrEnum):
    """The rights a person may exercise through a request."""

    ACCESS = "access"
    CORRECTION = "correction"
    DELETION = "deletion"
    ACCOUNT_CANCELLATION = "account_cancellation"
    CONSENT_WITHDRAWAL = "consent_withdrawal"


class Right(_Entry):
    """A right of the person and how it is exercised."""

    kind: RightKind = Field(description="Which right.")
    description: str = Field(min_length=1, description="The right in the text's words.")
    clause: Clause


@functools.cache
def _calendars() -> frozenset[str]:
    return frozenset(holidays.list_supported_countries(include_aliases=False))


def known_calendar(country: str) -> str:
    """A country the holiday library has a calendar for, in its canonical ISO 3166-1 alpha-2
    spelling (not the library's aliases, so one country has one spelling in a policy); any
    other is refused with ``ValueError``."""
    if country not in _calendars():
        msg = f"no public-holiday calendar for country {country!r}"
        raise ValueError(msg)
    return country


@functools.cache
def _known_zone(name: str) -> str:
    """An IANA time zone this machine knows."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        msg = f"unknown time zone {name!r}"
        raise ValueError(msg) from None
    return name


class ResponseDeadline(_Entry):
    """How long the organisation has to answer a rights request."""

    days: int = Field(gt=0, le=365, description="Length of the deadline.")
    kind: Literal["calendar", "working"] = Field(
        description="Calendar days, or working days under a public-holiday calendar."
    )
    holiday_calendar: str = Field(
        default="CN",
        pattern=r"^[A-Z]{2}$",
        description="ISO 3166 country whose public holidays count as non-working days "
        "(one the holiday library knows, when the kind is working).",
    )
    time_zone: Annotated[str, AfterValidator(_known_zone)] = Field(
        default="Asia/Shanghai",
        max_length=64,
        description="IANA time zone whose local dates working days are counted in, and whose "
        "end of day ends a working-day deadline.",
    )
    max_extension_days: int = Field(
        ge=0, le=365, description="The most a deadline may be extended in total, with a reason."
    )
    clause: Clause

    @model_validator(mode="after")
    def _calendar_known(self) -> Self:
        # only for working days: listing the library's calendars loads all of them (~0.1 s)
        if self.kind == "working":
            known_calendar(self.holiday_calendar)
        return self


class Minors(_Entry):
    """How minors are treated."""

    age_of_majority: int = Field(gt=0, description="Below this age a person is a minor.")
    guardian_required: bool = Field(
        description="True when a minor must be registered with a guardian."
    )
    guardian_consent_required: bool = Field(
        description="True when a minor's consent must be given by the guardian."
    )
    clause: Clause


class Storage(_Entry):
    """Where data is stored and what allows storage elsewhere."""

    region: Identifier = Field(description="The region data is stored in.")
    cross_border_bases: tuple[Identifier, ...] = Field(
        description="Recorded bases that allow storage or transfer outside the region."
    )
    cross_border_consent: bool = Field(
        default=True,
        description="True when data stored or transferred outside the region also needs the "
        "person's consent in force for each purpose and category it leaves for (a separate "
        "consent, as PIPL Art. 39 requires beside a basis).",
    )
    clause: Clause


class ConsentRules(_Entry):
    """How consent works under the policy."""

    default_for_non_sensitive: bool = Field(
        description="True when non-sensitive data may be processed by default, until withdrawn."
    )
    withdrawal_non_retroactive: bool = Field(
        description="True when withdrawal stops future processing and leaves past events valid."
    )
    methods: tuple[Identifier, ...] = Field(
        min_length=1, description="How consent may be given or withdrawn (pop-up, settings, ...)."
    )
    clause: Clause


class Sale(_Entry):
    """Whether personal data may be sold."""

    prohibited: bool = Field(description="True when no share may be a sale.")
    clause: Clause


class ChangeNotice(_Entry):
    """What a change of the policy obliges."""

    notify_on_major_change: bool = Field(
        description="True when a major change must reach every affected person."
    )
    methods: tuple[Identifier, ...] = Field(description="How the person is told.")
    clause: Clause


class Interpretation(_Entry):
    """A vague passage of the text, and the protective reading the ledger enforces."""

    clause: Clause
    text: str = Field(min_length=1, description="What the text says, in short.")
    reading: str = Field(min_length=1, description="The reading chosen and why it protects.")


class Policy(_Entry):
    """A privacy policy as data: what may be collected, why, shared with whom, and the rights."""

    policy_id: Identifier = Field(description="Stable id of the policy across its versions.")
    version: str = Field(
        max_length=32,
        pattern=r"^\d{1,9}(\.\d{1,9}){0,2}$",
        description="Version, dotted numbers such as '1' or '2.1'.",
    )
    title: str = Field(min_length=1, description="Title of the policy.")
    text_sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the human-readable policy text."
    )
    categories: tuple[Category, ...] = Field(min_length=1, description="Data categories.")
    sources: tuple[Source, ...] = Field(min_length=1, description="Collection sources.")
    legal_bases: tuple[LegalBasis, ...] = Field(min_length=1, description="Legal bases.")
    purposes: tuple[Purpose, ...] = Field(min_length=1, description="Declared purposes.")
    recipient_classes: tuple[RecipientClass, ...] = Field(description="Recipient classes.")
    legal_grounds: tuple[ErasureGround, ...] = Field(
        default=(), description="Grounds of lawful disclosure to authorities."
    )
    erasure_grounds: tuple[ErasureGround, ...] = Field(
        min_length=1, description="Grounds for deletion."
    )
    rights: tuple[Right, ...] = Field(min_length=1, description="Rights of the person.")
    response_deadline: ResponseDeadline = Field(description="Deadline to answer a request.")
    minors: Minors = Field(description="Treatment of minors.")
    storage: Storage = Field(description="Storage region.")
    consent: ConsentRules = Field(description="Consent rules.")
    sale: Sale = Field(description="Whether data may be sold.")
    change_notice: ChangeNotice = Field(description="Obligations on a policy change.")
    interpretations: tuple[Interpretation, ...] = Field(
        default=(), description="Protective readings of vague passages."
    )

    @model_validator(mode="after")
    def _check_consistency(self) -> Self:
        _unique("categories", (c.id for c in self.categories))
        _unique("sources", (s.id for s in self.sources))
        _unique("legal_bases", (b.id for b in self.legal_bases))
        _unique("purposes", (p.id for p in self.purposes))
        _unique("recipient_classes", (r.id for r in self.recipient_classes))
        _unique("legal_grounds", (g.id for g in self.legal_grounds))
        _unique("erasure_grounds", (g.id for g in self.erasure_grounds))
        _unique("rights", (r.kind.value for r in self.rights))
        categories = {c.id for c in self.categories}
        bases = {b.id for b in self.legal_bases}
        purposes = {p.id for p in self.purposes}
        grounds = {g.id for g in self.legal_grounds}
        for i, p in enumerate(self.purposes):
            _known(f"purposes.{i}.categories", p.categories, categories, "category")
            _known(f"purposes.{i}.legal_bases", p.legal_bases, bases, "legal basis")
        for i, r in enumerate(self.recipient_classes):
            _known(f"recipient_classes.{i}.categories", r.categories, categories, "category")
            _known(f"recipient_classes.{i}.purposes", r.purposes, purposes, "purpose")
            _known(f"recipient_classes.{i}.legal_bases", r.legal_bases, bases, "legal basis")
            _known(f"recipient_classes.{i}.legal_grounds", r.legal_grounds, grounds, "ground")
        return self

    # --- look-ups used by the rules -------------------------------------------------------

    @cached_property
    def _index_categories(self) -> dict[str, Category]:
        return {e.id: e for e in self.categories}

    @cached_property
    def _index_purposes(self) -> dict[str, Purpose]:
        return {e.id: e for e in self.purposes}

    @cached_property
    def _index_sources(self) -> dict[str, Source]:
        return {e.id: e for e in self.sources}

    @cached_property
    def _index_legal_bases(self) -> dict[str, LegalBasis]:
        return {e.id: e for e in self.legal_bases}

    @cached_property
    def _index_recipient_classes(self) -> dict[str, RecipientClass]:
        return {e.id: e for e in self.recipient_classes}

    @cached_property
    def _index_erasure_grounds(self) -> dict[str, ErasureGround]:
        return {e.id: e for e in self.erasure_grounds}

    @cached_property
    def _index_legal_grounds(self) -> dict[str, ErasureGround]:
        return {e.id: e for e in self.legal_grounds}

    @cached_property
    def _consent_only_purposes(self) -> frozenset[str]:
        def consent_only(purpose: Purpose) -> bool:
            bases = [self._index_legal_bases.get(b) for b in purpose.legal_bases]
            return all(b is None or b.requires_consent for b in bases)

        return frozenset(p.id for p in self.purposes if consent_only(p))

    def rests_on_consent_alone(self, purpose_id: str) -> bool:
        """Whether every legal basis the purpose allows is the person's consent (an
        undeclared purpose counts as resting on consent: the protective answer)."""
        return purpose_id in self._consent_only_purposes or purpose_id not in self._index_purposes

    def category(self, category_id: str) -> Category | None:
        return self._index_categories.get(category_id)

    def purpose(self, purpose_id: str) -> Purpose | None:
        return self._index_purposes.get(purpose_id)

    def source(self, source_id: str) -> Source | None:
        return self._index_sources.get(source_id)

    def legal_basis(self, basis_id: str) -> LegalBasis | None:
        return self._index_legal_bases.get(basis_id)

    def recipient_class(self, class_id: str) -> RecipientClass | None:
        return self._index_recipient_classes.get(class_id)

    def erasure_ground(self, ground_id: str) -> ErasureGround | None:
        return self._index_erasure_grounds.get(ground_id)

    def legal_ground(self, ground_id: str) -> ErasureGround | None:
        return self._index_legal_grounds.get(ground_id)

    def right(self, kind: RightKind) -> Right | None:
        return next((r for r in self.rights if r.kind is kind), None)

    def digest(self) -> str:
        """SHA-256 of the canonical JSON of this document: what `PolicyPublished` commits to."""
        return hashlib.sha256(canonical_json(self)).hexdigest()


def _unique(field: str, ids: Iterable[str]) -> None:
    dupes = sorted(i for i, n in Counter(ids).items() if n > 1)
    if dupes:
        msg = f"{field}: duplicate id(s) {', '.join(dupes)}"
        raise ValueError(msg)


def _known(field: str, named: Iterable[str], known: set[str], what: str) -> None:
    unknown = sorted(set(named) - known)
    if unknown:
        msg = f"{field}: unknown {what}(s) {', '.join(unknown)}"
        raise ValueError(msg)


def canonical_json(policy: Policy) -> bytes:
    """The policy as canonical JSON bytes (sorted keys, no spaces)."""
    return orjson.dumps(policy.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)


def parse_policy(data: dict[str, object]) -> Policy:
    """Validate a policy document; a bad one raises `PolicyError` naming the field."""
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'policy'}: {err['msg']}"
            for err in exc.errors()
        )
        raise PolicyError(f"invalid policy: {problems}") from None


def load_policy_file(path: Path) -> Policy:
    """Read and validate a policy from a TOML or JSON file."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PolicyError(f"cannot read policy file {path}: {exc.strerror}") from None
    return _parse_bytes(raw, toml=path.suffix.lower() == ".toml", origin=str(path))


SEED_EFFECTIVE_AT = datetime(2023, 10, 26, tzinfo=ZoneInfo("Asia/Shanghai"))
"""The seed policy's 'Update date', taken as the instant it took effect."""


def load_seed_policy() -> Policy:
    """The bundled default policy (the seed privacy policy, as data)."""
    raw = resources.files("ledger").joinpath("seed_policy.toml").read_bytes()
    return _parse_bytes(raw, toml=True, origin="seed_policy.toml")


def _parse_bytes(raw: bytes, *, toml: bool, origin: str) -> Policy:
    try:
        data = tomllib.loads(raw.decode("utf-8")) if toml else orjson.loads(raw)
    except (tomllib.TOMLDecodeError, orjson.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PolicyError(f"cannot parse policy {origin}: {exc}") from None
    if not isinstance(data, dict):
        raise PolicyError(f"policy {origin} must be a table/object at top level")
    return parse_policy(data)

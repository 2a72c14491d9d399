"""Proto requests to ledger commands: the first step of a servicer (CONVENTIONS §8).

Pure functions, no I/O. proto3 cannot tell "not given" from a zero value, so an empty string, a
0, an unset message or a `*_UNSPECIFIED` enum means "not given" and the command's default
applies (a required field without one is reported as required). Each command is validated by
its own pydantic model; every problem becomes one `InvalidRequest` whose violations name the
PROTO field path (`meta.occurred_at`, `subject.account.account_id`, `purposes[0]`, ...) and
never carry a field's value. The other direction, results to proto, is `server.convert_results`,
re-exported here so a servicer needs only this module.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import TypeVar
from uuid import UUID

from google.protobuf import message as pb_message
from google.protobuf import timestamp_pb2
from pydantic import BaseModel, ValidationError

from ledger import commands as cmd
from ledger.errors import PolicyError
from ledger.events import CollectionMode
from ledger.policy import parse_policy
from server._pb.pdl.v1 import common_pb2
from server._pb.pdl.v1 import ledger_service_pb2 as lpb
from server._pb.pdl.v1 import policy_service_pb2 as ppb
from server._pb.pdl.v1 import rights_service_pb2 as rpb
from server.convert_results import (
    CONSENT_GIVERS,
    REQUEST_OUTCOMES,
    RIGHT_KINDS,
    history_event,
    item_outcome,
    policy_version,
    recorded,
    rights_request,
    subject_state,
    timestamp,
)
from server.errors import FieldViolation, InvalidRequest

__all__ = [
    "batch_item",
    "cancel_account",
    "close_rights_request",
    "correct_data",
    "erase_subject",
    "extend_rights_request",
    "give_consent",
    "history_event",
    "instant",
    "item_outcome",
    "open_rights_request",
    "pause_rights_request",
    "policy_version",
    "publish_policy",
    "record_collection",
    "record_share",
    "record_use",
    "recorded",
    "register_subject",
    "resume_rights_request",
    "rights_request",
    "subject_ref",
    "subject_state",
    "timestamp",
    "uuid_field",
    "withdraw_consent",
]

_M = TypeVar("_M", bound=BaseModel)
_K = TypeVar("_K", bound=int)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MIN_SECONDS = -62_135_596_800  # 0001-01-01T00:00:00Z, datetime's first instant
_MAX_SECONDS = 253_402_300_799  # 9999-12-31T23:59:59Z, datetime's last whole second
_NANOS = 1_000_000_000
_UUID_TEXT = re.compile(r"[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
_SHOWN_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
"""A map key valid as a field name may appear in a path; any other key is left out of it."""
_REQUIRED = "Field required"
_NOT_UUID = "must be a UUID in canonical text form"
_MAP_FIELDS = frozenset({"values"})
_META = {"idempotency_key": "meta.idempotency_key", "occurred_at": "meta.occurred_at"}
_SUBJECT = {
    "subject.namespace": "subject.account.namespace",
    "subject.account_id": "subject.account.account_id",
}
_CORRECTION = {
    "correction.category": "correction_category",
    "correction.values": "correction_values",
    "correction": "correction_values",
}
_ACCOUNT = {"namespace": "account.namespace", "account_id": "account.account_id"}


class _Draft:
    """A command's fields read from a request, and the violations found while reading them."""

    def __init__(
        self,
        meta: common_pb2.CommandMeta | None,
        now: datetime | None,
        renames: Mapping[str, str] | None = None,
        prefix: str = "",
    ) -> None:
        self.data: dict[str, object] = {}
        self.problems: list[FieldViolation] = []
        self._renames = {**_META, **_SUBJECT, **(renames or {})}
        self._prefix = prefix
        if meta is not None:  # a recording command: the key is required, occurred-at defaults
            if not meta.idempotency_key:
                self.bad("meta.idempotency_key", _REQUIRED)
            self.text("idempotency_key", meta.idempotency_key, "meta.idempotency_key")
            self.time("occurred_at", meta, "occurred_at", "meta.occurred_at", default=now)
            if not meta.HasField("occurred_at"):
                self.data["occurred_at_defaulted"] = True

    def bad(self, field: str, description: str) -> None:
        self.problems.append(FieldViolation(field, description))

    def _clean(self, field: str, *values: str) -> bool:
        if any("\x00" in v for v in values):
            self.bad(field, "must not contain NUL characters")
            return False
        return True

    def text(
        self, key: str, value: str, field: str | None = None, *, keep_empty: bool = False
    ) -> None:
        """A string; empty means not given, unless kept so the model names the exact field."""
        if (value or keep_empty) and self._clean(field or key, value):
            self.data[key] = value

    def texts_of(self, message: pb_message.Message, *names: str) -> None:
        """Plain string fields that keep their names in the command; empty means not given."""
        for name in names:
            self.text(name, getattr(message, name))

    def texts(self, key: str, values: Iterable[str]) -> None:
        """A repeated string; empty means not given."""
        items = list(values)
        if items and self._clean(key, *items):
            self.data[key] = items

    def mapping(self, key: str, values: Mapping[str, str], field: str | None = None) -> None:
        """A map of field names to values; empty means not given."""
        if values and self._clean(field or key, *values.keys(), *values.values()):
            self.data[key] = dict(values)

    def uuid(self, key: str, value: str) -> None:
        """A UUID in canonical text form; empty means not given."""
        parsed = _parse_uuid(value)
        if parsed is not None:
            self.data[key] = parsed
        elif value:
            self.bad(key, _NOT_UUID)

    def choice(
        self, key: str, number: _K, table: Mapping[_K, Enum], names: str, *, required: bool
    ) -> None:
        """An enum; UNSPECIFIED (0) means not given, an unknown number is a violation."""
        if number in table:
            self.data[key] = table[number]
        elif number or required:
            self.bad(key, f"must be one of {names}")

    def time(
        self,
        key: str,
        message: pb_message.Message,
        name: str,
        field: str,
        default: datetime | None = None,
    ) -> None:
        """A Timestamp field of `message`; unset means `default` (or not given)."""
        try:
            value = instant(message, name, field) or default
        except InvalidRequest as exc:
            self.problems.extend(exc.violations)
            return
        if value is not None:
            self.data[key] = value

    def subject(self, ref: common_pb2.SubjectRef) -> None:
        """The request's `subject`, as the nested dict its command model validates."""
        nested = _subject_data(ref, "subject", self.problems)
        if nested is not None:
            self.data["subject"] = nested

    def build(self, model: type[_M]) -> _M:
        """The validated command, or one `InvalidRequest` with every violation found."""
        try:
            built = model.model_validate(self.data)
        except ValidationError as exc:
            found = [v for v in self._violations(exc) if not self._covered(v.field)]
            self.problems.extend(found)
        else:
            if not self.problems:
                return built
        raise InvalidRequest(self.problems)

    def _covered(self, field: str) -> bool:
        """Whether a model error only follows from a field already reported (and left out)."""
        return any(
            field == seen.field or _under(field, seen.field) or _under(seen.field, field)
            for seen in self.problems
        )

    def _violations(self, exc: ValidationError) -> list[FieldViolation]:
        errors = exc.errors(include_url=False, include_input=False)
        paths = [self._rename(_path(err["loc"])) for err in errors]
        return [
            FieldViolation(_join(self._prefix, path), err["msg"])
            for path, err in zip(paths, errors, strict=True)
            # "too short" only because an item of it was invalid (and dropped): say that once
            if not (err["type"] == "too_short" and any(_under(p, path) for p in paths))
        ]

    def _rename(self, path: str) -> str:
        for old in sorted(self._renames, key=len, reverse=True):
            if path == old or (old and _under(path, old)):
                return self._renames[old] + path[len(old) :]
        return path


def _under(path: str, parent: str) -> bool:
    """Whether `path` names a part of the field `parent`."""
    return path.startswith((f"{parent}.", f"{parent}["))


def _path(loc: tuple[int | str, ...]) -> str:
    """A pydantic location as a proto path: `purposes[0]`, `values.phone`; unsafe keys left out."""
    path = ""
    after_map = False
    for part in loc:
        if part == "[key]":
            continue
        if isinstance(part, int):
            path += f"[{part}]"
        elif not after_map or _SHOWN_KEY.fullmatch(part):
            path = f"{path}.{part}" if path else part
        after_map = part in _MAP_FIELDS and not after_map
    return path


def _subject_data(
    ref: common_pb2.SubjectRef, field: str, problems: list[FieldViolation]
) -> dict[str, object] | None:
    """A `SubjectRef`'s fields for the model, or None (with the problem recorded)."""
    which = ref.WhichOneof("ref")
    if which == "subject_id":
        parsed = _parse_uuid(ref.subject_id)
        if parsed is not None:
            return {"subject_id": parsed}
        problems.append(FieldViolation(f"{field}.subject_id", _NOT_UUID))
        return None
    if which == "account":
        sub = _Draft(None, None)
        account = ref.account
        sub.text("namespace", account.namespace, f"{field}.account.namespace", keep_empty=True)
        sub.text("account_id", account.account_id, f"{field}.account.account_id", keep_empty=True)
        problems.extend(sub.problems)
        return sub.data
    problems.append(FieldViolation(field, "required: give subject_id or account"))
    return None


def _join(prefix: str, path: str) -> str:
    if prefix and path:
        return f"{prefix}.{path}"
    return prefix or path or "request"


def _parse_uuid(value: str) -> UUID | None:
    return UUID(value) if _UUID_TEXT.fullmatch(value) else None


def _names(table: Mapping[_K, Enum], prefix: str) -> str:
    return ", ".join(f"{prefix}{m.name}" for m in table.values())


_GIVER_NAMES = _names(CONSENT_GIVERS, "CONSENT_GIVER_")
_KIND_NAMES = _names(RIGHT_KINDS, "RIGHT_KIND_")
_OUTCOME_NAMES = _names(REQUEST_OUTCOMES, "REQUEST_OUTCOME_")


# --- parsing helpers, also for query requests ----------------------------------------------


def uuid_field(value: str, field: str) -> UUID:
    """A UUID field of a request, in canonical text form (either case)."""
    if not value:
        raise InvalidRequest([FieldViolation(field, _REQUIRED)])
    parsed = _parse_uuid(value)
    if parsed is None:
        raise InvalidRequest([FieldViolation(field, _NOT_UUID)])
    return parsed


def instant(message: pb_message.Message, name: str, field: str | None = None) -> datetime | None:
    """The Timestamp field `name` of `message` as an aware UTC datetime; None when unset.

    A Timestamp outside datetime's range (years 1-9999) or with nanos outside 0-999,999,999
    is a violation on `field` (default `name`). Below a microsecond is truncated.
    """
    if not message.HasField(name):
        return None
    ts = getattr(message, name)
    if not isinstance(ts, timestamp_pb2.Timestamp):
        msg = f"{name} is not a Timestamp field"
        raise TypeError(msg)
    if not (_MIN_SECONDS <= ts.seconds <= _MAX_SECONDS and 0 <= ts.nanos < _NANOS):
        description = "must be a valid timestamp between years 1 and 9999"
        raise InvalidRequest([FieldViolation(field or name, description)])
    return _EPOCH + timedelta(seconds=ts.seconds, microseconds=ts.nanos // 1_000)


def subject_ref(ref: common_pb2.SubjectRef, field: str) -> cmd.SubjectRef:
    """A person named in a request, by pseudonym or by account; violations under `field`."""
    draft = _Draft(None, None, renames=_ACCOUNT, prefix=field)
    draft.data = _subject_data(ref, field, draft.problems) or {}
    return draft.build(cmd.SubjectRef)


# --- LedgerService -------------------------------------------------------------------------


def register_subject(req: lpb.RegisterSubjectRequest, now: datetime) -> cmd.RegisterSubject:
    """RegisterSubject: birth year 0 means unknown, empty jurisdiction means "cn"."""
    d = _Draft(req.meta, now, _ACCOUNT)
    d.text("namespace", req.account.namespace, "account.namespace", keep_empty=True)
    d.text("account_id", req.account.account_id, "account.account_id", keep_empty=True)
    if req.birth_year:
        d.data["birth_year"] = req.birth_year
    d.data["minor"] = req.minor
    d.uuid("guardian_subject_id", req.guardian_subject_id)
    d.texts_of(req, "guardian_account_id", "jurisdiction", "storage_region", "cross_border_basis")
    return d.build(cmd.RegisterSubject)


def record_collection(req: lpb.RecordCollectionRequest, now: datetime) -> cmd.RecordCollection:
    """RecordCollection: `with_consent` chooses the consent mode, else automatic."""
    d = _Draft(req.meta, now, {"mode": "with_consent"})
    d.subject(req.subject)
    d.texts("purposes", req.purposes)
    d.data["mode"] = CollectionMode.CONSENT if req.with_consent else CollectionMode.AUTOMATIC
    d.mapping("values", req.values)
    d.texts("fields", req.fields)
    d.texts_of(req, "category", "source", "reference", "storage_region", "cross_border_basis")
    return d.build(cmd.RecordCollection)


def record_use(req: lpb.RecordUseRequest, now: datetime) -> cmd.RecordUse:
    """RecordUse: empty legal basis means "consent"."""
    d = _Draft(req.meta, now)
    d.subject(req.subject)
    d.texts("categories", req.categories)
    d.texts_of(req, "purpose", "legal_basis")
    return d.build(cmd.RecordUse)


def record_share(req: lpb.RecordShareRequest, now: datetime) -> cmd.RecordShare:
    """RecordShare: empty legal basis means "consent", empty region the policy's."""
    d = _Draft(req.meta, now)
    d.subject(req.subject)
    d.texts("categories", req.categories)
    d.texts_of(req, "recipient", "recipient_class", "purpose", "legal_basis", "legal_ground")
    d.texts_of(req, "destination_region", "cross_border_basis")
    d.data["anonymised"] = req.anonymised
    d.data["sale"] = req.sale
    return d.build(cmd.RecordShare)


def give_consent(req: lpb.GiveConsentRequest, now: datetime) -> cmd.GiveConsent:
    """GiveConsent: an unspecified giver is the person, an empty method "popup"."""
    d = _Draft(req.meta, now)
    d.subject(req.subject)
    d.texts("purposes", req.purposes)
    d.texts("categories", req.categories)
    d.choice("given_by", req.given_by, CONSENT_GIVERS, _GIVER_NAMES, required=False)
    d.texts_of(req, "method")
    return d.build(cmd.GiveConsent)


def withdraw_consent(req: lpb.WithdrawConsentRequest, now: datetime) -> cmd.WithdrawConsent:
    """WithdrawConsent: at least one purpose or category; empty method means "settings"."""
    d = _Draft(req.meta, now, {"": "purposes"})
    d.subject(req.subject)
    d.texts("purposes", req.purposes)
    d.texts("categories", req.categories)
    d.choice("withdrawn_by", req.withdrawn_by, CONSENT_GIVERS, _GIVER_NAMES, required=False)
    d.texts_of(req, "method")
    return d.build(cmd.WithdrawConsent)


def correct_data(req: lpb.CorrectDataRequest, now: datetime) -> cmd.CorrectData:
    """CorrectData."""
    d = _Draft(req.meta, now)
    d.subject(req.subject)
    d.texts_of(req, "category")
    d.mapping("values", req.values)
    return d.build(cmd.CorrectData)


def erase_subject(req: lpb.EraseSubjectRequest, now: datetime) -> cmd.EraseSubject:
    """EraseSubject: no categories means everything, and the person's key."""
    d = _Draft(req.meta, now)
    d.subject(req.subject)
    d.texts_of(req, "ground")
    d.texts("categories", req.categories)
    return d.build(cmd.EraseSubject)


def cancel_account(req: lpb.CancelAccountRequest, now: datetime) -> cmd.CancelAccount:
    """CancelAccount."""
    d = _Draft(req.meta, now)
    d.subject(req.subject)
    return d.build(cmd.CancelAccount)


def batch_item(item: lpb.BatchItem, now: datetime) -> cmd.RecordingCommand:
    """One item of RecordBatch; violations are named under the item's oneof member."""
    which = item.WhichOneof("command")
    try:
        match which:
            case "collection":
                return record_collection(item.collection, now)
            case "use":
                return record_use(item.use, now)
            case "share":
                return record_share(item.share, now)
            case "consent":
                return give_consent(item.consent, now)
            case "withdrawal":
                return withdraw_consent(item.withdrawal, now)
            case "correction":
                return correct_data(item.correction, now)
    except InvalidRequest as exc:
        raise InvalidRequest(
            [FieldViolation(_join(str(which), v.field), v.description) for v in exc.violations]
        ) from None
    members = "collection, use, share, consent, withdrawal, correction"
    raise InvalidRequest([FieldViolation("command", f"required: one of {members}")])


# --- RightsRequestService ------------------------------------------------------------------


def open_rights_request(req: rpb.OpenRightsRequestRequest, now: datetime) -> cmd.OpenRightsRequest:
    """OpenRightsRequest: the kind is required; unset received-at means occurred-at."""
    d = _Draft(req.meta, now, {"": "purposes"})
    d.subject(req.subject)
    d.choice("kind", req.kind, RIGHT_KINDS, _KIND_NAMES, required=True)
    d.texts_of(req, "ground")
    d.texts("purposes", req.purposes)
    d.texts("categories", req.categories)
    d.time("received_at", req, "received_at", "received_at")
    return d.build(cmd.OpenRightsRequest)


def extend_rights_request(
    req: rpb.ExtendRightsRequestRequest, now: datetime
) -> cmd.ExtendRightsRequest:
    """ExtendRightsRequest: days 0 means not given."""
    d = _Draft(req.meta, now)
    d.uuid("request_id", req.request_id)
    if req.days:
        d.data["days"] = req.days
    d.texts_of(req, "reason")
    return d.build(cmd.ExtendRightsRequest)


def pause_rights_request(
    req: rpb.PauseRightsRequestRequest, now: datetime
) -> cmd.PauseRightsRequest:
    """PauseRightsRequest."""
    d = _Draft(req.meta, now)
    d.uuid("request_id", req.request_id)
    d.texts_of(req, "reason")
    return d.build(cmd.PauseRightsRequest)


def resume_rights_request(
    req: rpb.ResumeRightsRequestRequest, now: datetime
) -> cmd.ResumeRightsRequest:
    """ResumeRightsRequest."""
    d = _Draft(req.meta, now)
    d.uuid("request_id", req.request_id)
    return d.build(cmd.ResumeRightsRequest)


def close_rights_request(
    req: rpb.CloseRightsRequestRequest, now: datetime
) -> cmd.CloseRightsRequest:
    """CloseRightsRequest: the outcome is required; a correction when either part is given."""
    d = _Draft(req.meta, now, _CORRECTION)
    d.uuid("request_id", req.request_id)
    d.choice("outcome", req.outcome, REQUEST_OUTCOMES, _OUTCOME_NAMES, required=True)
    d.texts_of(req, "reason")
    if req.correction_category or req.correction_values:
        part = _Draft(None, None)
        part.text("category", req.correction_category, "correction_category")
        part.mapping("values", req.correction_values, "correction_values")
        d.problems.extend(part.problems)
        d.data["correction"] = part.data
    return d.build(cmd.CloseRightsRequest)


# --- PolicyService -------------------------------------------------------------------------


def publish_policy(req: ppb.PublishPolicyRequest, now: datetime) -> cmd.PublishPolicy:
    """PublishPolicy: `document_json` is parsed and validated as a policy; an unset
    `effective_at` is reported as required, not defaulted."""
    d = _Draft(req.meta, now, {"policy": "document_json"})
    try:
        document = json.loads(req.document_json) if req.document_json else None
    except json.JSONDecodeError as exc:
        d.bad("document_json", f"not valid JSON: {exc.msg} at character {exc.pos}")
    except (ValueError, RecursionError):
        d.bad("document_json", "not valid JSON")
    else:
        if not isinstance(document, dict):
            d.bad("document_json", "required: a JSON object")
        else:
            try:
                d.data["policy"] = parse_policy(document)
            except PolicyError as exc:
                d.bad("document_json", str(exc))
    d.time("effective_at", req, "effective_at", "effective_at")
    d.data["major"] = req.major
    d.texts("changes", req.changes)
    return d.build(cmd.PublishPolicy)

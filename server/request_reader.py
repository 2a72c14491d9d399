"""Reading proto requests into command fields, collecting every violation on the way.

`Draft` gathers a command's fields from a request (proto3's zero values meaning "not given"),
records each problem under the PROTO field path, and builds the pydantic command, turning its
validation errors into field violations that never carry a value. The helpers for ids, times
and subject references live here too.
"""

from __future__ import annotations

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
from server._pb.pdl.v1 import common_pb2
from server.convert_results import CONSENT_GIVERS, REQUEST_OUTCOMES, RIGHT_KINDS
from server.errors import FieldViolation, InvalidRequest

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
CORRECTION = {
    "correction.category": "correction_category",
    "correction.values": "correction_values",
    "correction": "correction_values",
}
ACCOUNT = {"namespace": "account.namespace", "account_id": "account.account_id"}


class Draft:
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
        nested = subject_data(ref, "subject", self.problems)
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
            FieldViolation(join_path(self._prefix, path), err["msg"])
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


def subject_data(
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
        sub = Draft(None, None)
        account = ref.account
        sub.text("namespace", account.namespace, f"{field}.account.namespace", keep_empty=True)
        sub.text("account_id", account.account_id, f"{field}.account.account_id", keep_empty=True)
        problems.extend(sub.problems)
        return sub.data
    problems.append(FieldViolation(field, "required: give subject_id or account"))
    return None


def join_path(prefix: str, path: str) -> str:
    if prefix and path:
        return f"{prefix}.{path}"
    return prefix or path or "request"


def is_uuid_text(value: str) -> bool:
    """Whether `value` is a UUID in canonical text form (either case)."""
    return _UUID_TEXT.fullmatch(value) is not None


def _parse_uuid(value: str) -> UUID | None:
    return UUID(value) if is_uuid_text(value) else None


def _names(table: Mapping[_K, Enum], prefix: str) -> str:
    return ", ".join(f"{prefix}{m.name}" for m in table.values())


GIVER_NAMES = _names(CONSENT_GIVERS, "CONSENT_GIVER_")
KIND_NAMES = _names(RIGHT_KINDS, "RIGHT_KIND_")
OUTCOME_NAMES = _names(REQUEST_OUTCOMES, "REQUEST_OUTCOME_")


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
    draft = Draft(None, None, renames=ACCOUNT, prefix=field)
    draft.data = subject_data(ref, field, draft.problems) or {}
    return draft.build(cmd.SubjectRef)


# --- LedgerService -------------------------------------------------------------------------

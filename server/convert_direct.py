"""The direct path from proto to the high-rate recording commands.

Collection, use, share, consent given and withdrawn, and correction (the unary calls and every
batch item) are the busiest requests. For them the request's fields are gathered without the
violation-collecting reader's bookkeeping (`server.request_reader`) and validated once by the
command's model. Where the reader would object to anything, a gatherer answers None and
`direct_first` falls back to the reader, so every faulty request is answered exactly as the
reader answers it; only well-formed requests are built directly.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import TypeVar

from google.protobuf import message as pb_message
from pydantic import BaseModel, ValidationError

from ledger.events import CollectionMode
from server._pb.pdl.v1 import common_pb2
from server._pb.pdl.v1 import ledger_service_pb2 as lpb
from server.convert_results import CONSENT_GIVERS
from server.errors import InvalidRequest
from server.request_reader import instant, is_uuid_text

__all__ = [
    "collection_fields",
    "consent_fields",
    "correction_fields",
    "direct_first",
    "share_fields",
    "use_fields",
    "withdrawal_fields",
]

_Req = TypeVar("_Req", bound=pb_message.Message)
_Cmd = TypeVar("_Cmd", bound=BaseModel)
_Fields = dict[str, object]
_NUL = "\x00"
_COLLECTION_TEXTS = ("category", "source", "reference", "storage_region", "cross_border_basis")
_SHARE_TEXTS = (
    "recipient",
    "recipient_class",
    "purpose",
    "legal_basis",
    "legal_ground",
    "destination_region",
    "cross_border_basis",
)


def direct_first(
    model: type[_Cmd], gather: Callable[[_Req, datetime], _Fields | None]
) -> Callable[[Callable[[_Req, datetime], _Cmd]], Callable[[_Req, datetime], _Cmd]]:
    """Build the command from `gather`'s fields when the request is well-formed; otherwise
    (`gather` says None, or the model refuses them) read it with the decorated reader, which
    names every violation. The reader stays reachable as `__wrapped__`."""

    def decorate(read: Callable[[_Req, datetime], _Cmd]) -> Callable[[_Req, datetime], _Cmd]:
        @functools.wraps(read)
        def convert(req: _Req, now: datetime) -> _Cmd:
            fields = gather(req, now)
            if fields is not None:
                try:
                    return model.model_validate(fields)
                except ValidationError:
                    pass
            return read(req, now)

        return convert

    return decorate


def _recording_fields(
    meta: common_pb2.CommandMeta, ref: common_pb2.SubjectRef, now: datetime
) -> _Fields | None:
    """Key, occurred-at and subject as the reader gathers them; None where it would object."""
    key = meta.idempotency_key
    if not key or _NUL in key:
        return None
    if meta.HasField("occurred_at"):
        try:
            fields: _Fields = {"idempotency_key": key, "occurred_at": instant(meta, "occurred_at")}
        except InvalidRequest:
            return None
    else:
        fields = {"idempotency_key": key, "occurred_at": now, "occurred_at_defaulted": True}
    which = ref.WhichOneof("ref")
    if which == "subject_id":
        if not is_uuid_text(ref.subject_id):
            return None
        fields["subject"] = {"subject_id": ref.subject_id}  # the model parses the same UUID
    elif which == "account":
        namespace, account_id = ref.account.namespace, ref.account.account_id
        if _NUL in namespace or _NUL in account_id:
            return None
        fields["subject"] = {"namespace": namespace, "account_id": account_id}
    else:
        return None
    return fields


def _put_texts(fields: _Fields, message: pb_message.Message, names: Iterable[str]) -> bool:
    """String fields that keep their names; empty means not given. False on a NUL."""
    for name in names:
        value = getattr(message, name)
        if value:
            if _NUL in value:
                return False
            fields[name] = value
    return True


def _put_list(fields: _Fields, key: str, values: Iterable[str]) -> bool:
    """A repeated string; empty means not given. False on a NUL."""
    items = list(values)
    if items:
        if any(_NUL in item for item in items):
            return False
        fields[key] = items
    return True


def _put_map(fields: _Fields, key: str, values: Mapping[str, str]) -> bool:
    """A map of field names to values; empty means not given. False on a NUL."""
    if values:
        items = dict(values)
        if any(_NUL in name or _NUL in value for name, value in items.items()):
            return False
        fields[key] = items
    return True


def _put_giver(fields: _Fields, key: str, number: common_pb2.ConsentGiver.ValueType) -> bool:
    """A consent giver; unspecified means not given. False on an unknown number."""
    if number:
        giver = CONSENT_GIVERS.get(number)
        if giver is None:
            return False
        fields[key] = giver
    return True


def collection_fields(req: lpb.RecordCollectionRequest, now: datetime) -> _Fields | None:
    fields = _recording_fields(req.meta, req.subject, now)
    if fields is None or not (
        _put_list(fields, "purposes", req.purposes)
        and _put_map(fields, "values", req.values)
        and _put_list(fields, "fields", req.fields)
        and _put_texts(fields, req, _COLLECTION_TEXTS)
    ):
        return None
    fields["mode"] = CollectionMode.CONSENT if req.with_consent else CollectionMode.AUTOMATIC
    return fields


def use_fields(req: lpb.RecordUseRequest, now: datetime) -> _Fields | None:
    fields = _recording_fields(req.meta, req.subject, now)
    if fields is None or not (
        _put_list(fields, "categories", req.categories)
        and _put_texts(fields, req, ("purpose", "legal_basis"))
    ):
        return None
    return fields


def share_fields(req: lpb.RecordShareRequest, now: datetime) -> _Fields | None:
    fields = _recording_fields(req.meta, req.subject, now)
    if fields is None or not (
        _put_list(fields, "categories", req.categories) and _put_texts(fields, req, _SHARE_TEXTS)
    ):
        return None
    fields["anonymised"] = req.anonymised
    fields["sale"] = req.sale
    return fields


def consent_fields(req: lpb.GiveConsentRequest, now: datetime) -> _Fields | None:
    fields = _recording_fields(req.meta, req.subject, now)
    if fields is None or not (
        _put_list(fields, "purposes", req.purposes)
        and _put_list(fields, "categories", req.categories)
        and _put_giver(fields, "given_by", req.given_by)
        and _put_texts(fields, req, ("method",))
    ):
        return None
    return fields


def withdrawal_fields(req: lpb.WithdrawConsentRequest, now: datetime) -> _Fields | None:
    fields = _recording_fields(req.meta, req.subject, now)
    if fields is None or not (
        _put_list(fields, "purposes", req.purposes)
        and _put_list(fields, "categories", req.categories)
        and _put_giver(fields, "withdrawn_by", req.withdrawn_by)
        and _put_texts(fields, req, ("method",))
    ):
        return None
    return fields


def correction_fields(req: lpb.CorrectDataRequest, now: datetime) -> _Fields | None:
    fields = _recording_fields(req.meta, req.subject, now)
    if fields is None or not (
        _put_texts(fields, req, ("category",)) and _put_map(fields, "values", req.values)
    ):
        return None
    return fields

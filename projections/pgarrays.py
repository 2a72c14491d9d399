"""PostgreSQL array parameters in binary, built whole.

The views send a page's rows to PostgreSQL as one array per column (`projections.batch`).
psycopg builds a binary array element by element in Python (a dumper call and two `pack`
calls per element), which cost more than folding the rows did; here each column's array is
built in one pass over its values by a function chosen once for the column's type, and goes
to psycopg ready-made (`Encoded`, with the array type's oid), so psycopg only copies it.

The format is PostgreSQL's `array_send`: dimensions (1), a has-null flag, the element type's
oid, the length and lower bound (1), then each element as its length (-1 for NULL) and its
binary form. Strings go as `text`, integers as `int8` or `int4`, and the statements cast each
array to its column's type, as they did for psycopg's own arrays.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from psycopg import Connection as PsycopgConnection
from psycopg.adapt import Dumper
from psycopg.pq import Format

__all__ = ["Encoded", "encoder_for", "register", "uuid_element"]

_HEAD = struct.Struct("!iiiii")
_EMPTY = struct.Struct("!iii")
_INT8 = struct.Struct("!iq")
_INT4 = struct.Struct("!ii")
_LENGTH = struct.Struct("!i")
_NULL = b"\xff\xff\xff\xff"
_UUID_LENGTH = b"\x00\x00\x00\x10"
_TRUE = b"\x00\x00\x00\x01\x01"
_FALSE = b"\x00\x00\x00\x01\x00"

# (element oid, array oid) of the types the views' columns have
_UUID = (2950, 2951)
_INT8_OIDS = (20, 1016)
_INT4_OIDS = (23, 1007)
_BOOL = (16, 1000)
_TEXT = (25, 1009)


class Encoded:
    """An array parameter in PostgreSQL's binary form, with its array type's oid."""

    __slots__ = ("data", "oid")

    def __init__(self, data: bytes, oid: int) -> None:
        self.data = data
        self.oid = oid


class _EncodedDumper(Dumper):
    """Hands psycopg an `Encoded` array as it is, under its own type's oid."""

    format = Format.BINARY

    def dump(self, obj: Encoded) -> bytes:
        return obj.data

    def get_key(self, obj: Encoded, format: Any) -> Any:
        return (Encoded, obj.oid)

    def upgrade(self, obj: Encoded, format: Any) -> _EncodedDumper:
        dumper = _EncodedDumper(self.cls)
        dumper.oid = obj.oid
        return dumper


def register(connection: PsycopgConnection[Any]) -> None:
    """Let this psycopg connection send `Encoded` arrays."""
    connection.adapters.register_dumper(Encoded, _EncodedDumper)


def uuid_element(value: UUID) -> bytes:
    """A UUID as an element of a binary `uuid` array (a view makes it once per person, and
    the encoder takes it as it is)."""
    return _UUID_LENGTH + value.int.to_bytes(16, "big")


Encoder = Callable[[Sequence[Any]], Encoded]


def encoder_for(column_type: sa.types.TypeEngine[Any]) -> Encoder:
    """The function that makes a column's array from its values (None is NULL)."""
    element: Callable[[Any], bytes]
    if isinstance(column_type, sa.Uuid):
        oids, element = _UUID, _uuid
    elif isinstance(column_type, sa.Boolean):
        oids, element = _BOOL, _bool
    elif isinstance(column_type, sa.BigInteger):
        oids, element = _INT8_OIDS, _int8
    elif isinstance(column_type, sa.Integer):
        oids, element = _INT4_OIDS, _int4
    elif isinstance(column_type, sa.String):  # (Text is a String)
        oids, element = _TEXT, _text
    else:
        msg = f"no binary array encoder for {column_type!r}"
        raise TypeError(msg)
    element_oid, array_oid = oids
    fast = _FAST.get(element)
    # `None in values` compares in C, but a UUID compares itself in Python
    has_none = _has_none_by_identity if element is _uuid else _has_none

    def encode(values: Sequence[Any]) -> Encoded:
        """The column's array."""
        if not values:  # no dimensions at all, as PostgreSQL sends an empty array
            return Encoded(_EMPTY.pack(0, 0, element_oid), array_oid)
        has_null = 0
        if has_none(values):
            body = b"".join([_NULL if v is None else element(v) for v in values])
            has_null = 1
        elif fast is not None:
            body = fast(values)
        else:
            body = b"".join([element(v) for v in values])
        return Encoded(_HEAD.pack(1, has_null, element_oid, len(values), 1) + body, array_oid)

    return encode


def _has_none(values: Sequence[Any]) -> bool:
    return None in values


def _has_none_by_identity(values: Sequence[Any]) -> bool:
    return any(v is None for v in values)


def _uuid(value: UUID | bytes) -> bytes:
    if isinstance(value, bytes):  # made by `uuid_element`
        return value
    return _UUID_LENGTH + value.int.to_bytes(16, "big")


def _bool(value: bool) -> bytes:
    return _TRUE if value else _FALSE


def _int8(value: int) -> bytes:
    return _INT8.pack(8, value)


def _int4(value: int) -> bytes:
    return _INT4.pack(4, value)


def _text(value: str) -> bytes:
    data = value.encode()
    return _LENGTH.pack(len(data)) + data


def _int8s(values: Sequence[int]) -> bytes:
    pack = _INT8.pack
    return b"".join([pack(8, v) for v in values])


def _uuids(values: Sequence[Any]) -> bytes:
    return b"".join(
        [v if type(v) is bytes else _UUID_LENGTH + v.int.to_bytes(16, "big") for v in values]
    )


def _texts(values: Sequence[str]) -> bytes:
    # A column's strings repeat (categories, purposes, facets): each is encoded once.
    pack, made = _LENGTH.pack, dict[str, bytes]()
    parts = []
    for value in values:
        element = made.get(value)
        if element is None:
            data = value.encode()
            element = made[value] = pack(len(data)) + data
        parts.append(element)
    return b"".join(parts)


_FAST: dict[Callable[[Any], bytes], Callable[[Sequence[Any]], bytes]] = {
    _int8: _int8s,
    _uuid: _uuids,
    _text: _texts,
}
"""Whole-array versions of the commonest elements (no function call per element)."""

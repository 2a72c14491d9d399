"""Keyset paging for the view queries: page sizes, opaque page tokens, fetching a page, and
the exact-match filters the queries share.

A page is read with `WHERE key > last key ORDER BY key LIMIT size + 1`, so a page costs the same
wherever it is in the list, and rows recorded meanwhile neither repeat nor shift the next page.
The one exception is a row whose key itself moves between two pages: the deadlines and the
retention lists are in order of when each row falls due, and a request extended or resumed, or a
category collected again, falls due later. Such a row is listed again at its new place; since
those keys only ever move later, no row is skipped.
The token carries the last key of a page and a fingerprint of the query and its filters: a token
given for one query or set of filters is refused by another, rather than silently skipping rows.
Tokens are URL-safe base64 of JSON; they are opaque to callers and checked strictly on the way
back in, since they come from outside. The key in them is not signed: a caller who edits it only
moves their own cursor within the same query, over rows that query would list them anyway.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from projections.errors import BadQuery

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "Key",
    "Page",
    "after",
    "exact_filter",
    "fetch_page",
    "page",
    "token_for",
]

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
_MAX_TOKEN_CHARS = 2048
_MAX_KEY_TEXT = 512
_INT64 = 2**63
_MAX_FILTER_CHARS = 128
_NOT_OURS = "not a token this query gave for these filters; start again without one"

Key = tuple[int | str | UUID, ...]
"""The values of a row's ordering columns."""


@dataclass(frozen=True, slots=True)
class Page:
    """What to read: at most `size` rows after the key `after` (from the start when None)."""

    size: int
    after: Key | None
    fingerprint: str


def _fingerprint(query: str, filters: Sequence[object]) -> str:
    body = orjson.dumps([query, *filters], default=str)
    return hashlib.sha256(body).hexdigest()[:16]


def page(
    query: str,
    filters: Sequence[object],
    size: int,
    token: str,
    shape: Sequence[type],
) -> Page:
    """The page a request asks for: a size (0 means the default) and where to start.

    `filters` are the query's filter values, in a fixed order; `shape` the types of the key's
    columns (`int`, `str` or `UUID`).
    """
    if not 0 <= size <= MAX_PAGE_SIZE:
        raise BadQuery("page_size", f"give 0 (for {DEFAULT_PAGE_SIZE}) to {MAX_PAGE_SIZE}")
    fingerprint = _fingerprint(query, filters)
    key = _decode(token, fingerprint, shape) if token else None
    return Page(size or DEFAULT_PAGE_SIZE, key, fingerprint)


def token_for(page_: Page, key: Key) -> str:
    """The token of the page after the row whose key this is."""
    values = [str(v) if isinstance(v, UUID) else v for v in key]
    body = orjson.dumps([page_.fingerprint, *values])
    return base64.urlsafe_b64encode(body).rstrip(b"=").decode()


def after(columns: Sequence[Any], key: Key) -> sa.ColumnElement[bool]:
    """Rows whose (columns...) come after `key` in ascending order.

    Spelled out as `a > x OR (a = x AND b > y) ...` rather than a row-value comparison, so each
    value is bound with its own column's type on every database.
    """
    clauses = []
    for index, column in enumerate(columns):
        equal = [columns[i] == key[i] for i in range(index)]
        clauses.append(sa.and_(*equal, column > key[index]))
    return sa.or_(*clauses)


def _decode(token: str, fingerprint: str, shape: Sequence[type]) -> Key:
    if len(token) > _MAX_TOKEN_CHARS or not token.isascii():
        raise BadQuery("page_token", _NOT_OURS)
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        parts = orjson.loads(raw)
    except (binascii.Error, ValueError):
        raise BadQuery("page_token", _NOT_OURS) from None
    if (
        not isinstance(parts, list)
        or len(parts) != len(shape) + 1
        or parts[0] != fingerprint
        or base64.urlsafe_b64encode(raw).rstrip(b"=").decode() != token.rstrip("=")
    ):
        raise BadQuery("page_token", _NOT_OURS)
    return tuple(_value(value, kind) for value, kind in zip(parts[1:], shape, strict=True))


def _value(value: object, kind: type) -> int | str | UUID:
    if kind is int and type(value) is int and -_INT64 <= value < _INT64:
        return value
    if isinstance(value, str) and len(value) <= _MAX_KEY_TEXT and "\x00" not in value:
        if kind is str:
            return value
        if kind is UUID:
            try:
                return UUID(value)
            except ValueError:
                pass
    raise BadQuery("page_token", _NOT_OURS)


def fetch_page(
    conn: Connection,
    query: sa.Select[Any],
    order: tuple[Any, ...],
    want: Page,
    keys: tuple[str, ...] | None = None,
) -> tuple[list[Row[Any]], str]:
    """One page of `query` in `order` (unique), and the token of the next ("" at the end).

    The next page's key is read from the last row's columns named `keys` (by default, the
    names of the ordering columns)."""
    if want.after is not None:
        query = query.where(after(order, want.after))
    rows = list(conn.execute(query.order_by(*order).limit(want.size + 1)))
    if len(rows) <= want.size:
        return rows, ""
    rows = rows[: want.size]
    last = rows[-1]._mapping
    names = keys if keys is not None else tuple(column.name for column in order)
    return rows, token_for(want, tuple(last[name] for name in names))


def exact_filter(field: str, value: str, most: int = _MAX_FILTER_CHARS) -> str:
    """An exact-match filter: empty means none; bounded and free of NUL characters."""
    if len(value) > most:
        raise BadQuery(field, f"at most {most} characters")
    if "\x00" in value:
        raise BadQuery(field, "must not contain NUL characters")
    return value

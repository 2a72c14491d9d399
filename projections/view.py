"""What every view is: a name, its tables, and a fold of a page of log entries into its rows.

A view receives pages of `(position, payload)` entries in log order, inside the transaction
that will also record its tracking position. Views merge their writes per page and send them
as one statement per kind, because a statement per event costs more than decoding the event
did; `KnownRows` lets them skip insert-only rows already committed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import ClassVar, TypeVar

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.engine import Connection

from ledger.events import CollectionMode

__all__ = ["MODES", "Entry", "KnownRows", "View"]

_K = TypeVar("_K")

Entry = tuple[int, BaseModel]
"""One log entry: its notification id (position) and the event's payload."""

MODES = {mode: mode.value for mode in CollectionMode}
"""A collection mode's plain string, for the views' rows (an enum's `.value` is a Python call
each time it is read)."""


class View:
    """Base of every view."""

    name: ClassVar[str]
    """Stable name: the tracking row's key (renaming a view rebuilds it)."""
    tables: ClassVar[tuple[sa.Table, ...]]
    """The view's tables, emptied when it is rebuilt."""

    def __init__(self, dialect: str) -> None:
        self.dialect = dialect
        self.known = KnownRows()
        """Insert-only rows this view knows are committed, for it to skip writing again."""

    def apply(self, conn: Connection, entries: Sequence[Entry]) -> None:
        """Fold a page of entries (positions ascending) into the view's rows."""
        raise NotImplementedError

    def committed(self) -> None:
        """The page's transaction committed: what it wrote is known."""
        self.known.committed()

    def discarded(self) -> None:
        """The page's transaction rolled back: forget what it wrote."""
        self.known.discarded()

    def emptied(self) -> None:
        """The view's tables were emptied (to rebuild it): forget everything."""
        self.known.clear()


class KnownRows:
    """Keys of insert-only rows known to be committed, grouped (by person), so a page skips
    rewriting them.

    Keys written in a page are pending until the runner says the page committed; a rolled
    back page forgets them, and a group whose rows were deleted is forgotten whole. Bounded:
    past `limit` keys it starts afresh (a miss only costs a redundant insert that does nothing).
    """

    def __init__(self, limit: int = 500_000) -> None:
        self._known: dict[object, set[object]] = {}
        self._pending: dict[object, set[object]] = {}
        self._size = 0
        self._limit = limit

    def fresh_of(self, group: object, keys: Iterable[_K]) -> list[_K]:
        """The keys of `group` not known committed (they are then pending)."""
        known = self._known.get(group)
        new = [k for k in keys if k not in known] if known is not None else list(keys)
        if new:
            pending = self._pending.get(group)
            if pending is None:
                self._pending[group] = set(new)
            else:
                pending.update(new)
        return new

    def forget(self, group: object) -> None:
        """The group's rows were deleted (in this page): nothing of it is known any more."""
        self._size -= len(self._known.pop(group, ()))
        self._pending.pop(group, None)

    def committed(self) -> None:
        if self._size > self._limit:
            self._known.clear()
            self._size = 0
        for group, keys in self._pending.items():
            known = self._known.setdefault(group, set())
            before = len(known)
            known |= keys
            self._size += len(known) - before
        self._pending.clear()

    def discarded(self) -> None:
        self._pending.clear()

    def clear(self) -> None:
        self._known.clear()
        self._pending.clear()
        self._size = 0

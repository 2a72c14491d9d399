"""What every view is: a name, its tables, and a fold of a page of log entries into its rows.

A view receives pages of `(position, payload)` entries in log order, inside the transaction
that will also record its tracking position. Views buffer their writes per page and send them
as one statement per kind (`Batch`), because a statement per event costs more than decoding
the event did.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.engine import Connection

__all__ = ["Batch", "Entry", "KnownRows", "View"]

Entry = tuple[int, BaseModel]
"""One log entry: its notification id (position) and the event's payload."""


class View:
    """Base of every view."""

    name: ClassVar[str]
    """Stable name: the tracking row's key (renaming a view rebuilds it)."""
    tables: ClassVar[tuple[sa.Table, ...]]
    """The view's tables, emptied when it is rebuilt."""

    def __init__(self, dialect: str) -> None:
        self.dialect = dialect

    def apply(self, conn: Connection, entries: Sequence[Entry]) -> None:
        """Fold a page of entries (positions ascending) into the view's rows."""
        raise NotImplementedError

    def committed(self) -> None:
        """The page's transaction committed (a view may now trust what it wrote)."""

    def discarded(self) -> None:
        """The page's transaction rolled back (forget anything learnt from it)."""

    def emptied(self) -> None:
        """The view's tables were emptied (to rebuild it): forget everything learnt."""


class KnownRows:
    """Keys of insert-only rows known to be committed, so a page skips rewriting them.

    Keys written in a page are pending until the runner says the page committed; a rolled
    back page forgets them. Bounded: past `limit` keys it starts afresh (a miss only costs a
    redundant insert that does nothing).
    """

    def __init__(self, limit: int = 500_000) -> None:
        self._known: set[object] = set()
        self._pending: set[object] = set()
        self._limit = limit

    def fresh(self, key: object) -> bool:
        """True when `key` is not known committed (it is then pending)."""
        if key in self._known or key in self._pending:
            return key not in self._known
        self._pending.add(key)
        return True

    def committed(self) -> None:
        if len(self._known) + len(self._pending) > self._limit:
            self._known.clear()
        self._known |= self._pending
        self._pending.clear()

    def discarded(self) -> None:
        self._pending.clear()

    def clear(self) -> None:
        self._known.clear()
        self._pending.clear()


class Batch:
    """Statements with their parameter rows, executed in the order they were declared.

    Each statement runs once with all its rows (an `executemany`), so a page of events costs a
    handful of round trips whatever its length.
    """

    def __init__(self) -> None:
        self._rows: dict[int, list[dict[str, Any]]] = {}
        self._statements: list[Any] = []

    def declare(self, statement: Any) -> int:
        """Register a statement (in flush order) and return its handle."""
        self._statements.append(statement)
        handle = len(self._statements) - 1
        self._rows[handle] = []
        return handle

    def add(self, handle: int, row: dict[str, Any]) -> None:
        self._rows[handle].append(row)

    def flush(self, conn: Connection) -> None:
        for handle, statement in enumerate(self._statements):
            rows = self._rows[handle]
            if rows:
                conn.execute(statement, rows)
                self._rows[handle] = []

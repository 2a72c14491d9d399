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

__all__ = ["Batch", "Entry", "View"]

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

"""Helpers several test folders share that are not scenario builders: view table dumps."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from projections import ViewStore
from projections.store import METADATA


def dump(store: ViewStore) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every view table, as sorted tuples of reprs: what two builds must agree on."""
    with store.read() as conn:
        return {
            table.name: sorted(tuple(map(repr, row)) for row in conn.execute(sa.select(table)))
            for table in METADATA.sorted_tables
        }

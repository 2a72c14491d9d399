"""Ledgers opened side by side on one PostgreSQL schema, as the server's writer and its
projection process open theirs at start-up: every one opens (the library's table, function
and trigger statements run one process at a time)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from server.runtime import open_ledger
from server.settings import Settings, load_settings

pytestmark = pytest.mark.postgres

_SIDE_BY_SIDE = 4


def test_ledgers_opened_side_by_side_on_one_schema_all_open(
    postgres_schema: str, tmp_path: Path
) -> None:
    settings = load_settings(
        environ={},
        data_dir=tmp_path,
        database_url="postgresql://postgres@127.0.0.1:5432/test",
        postgres_schema=postgres_schema,
    )
    ledger, keystore = open_ledger(settings)  # the schema's tables, as the server makes them
    ledger.close()
    keystore.close()
    for _round in range(3):
        start = threading.Barrier(_SIDE_BY_SIDE)
        errors: list[BaseException] = []
        threads = [
            threading.Thread(target=_open_one, args=(settings, start, errors))
            for _ in range(_SIDE_BY_SIDE)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert errors == []


def _open_one(settings: Settings, start: threading.Barrier, errors: list[BaseException]) -> None:
    start.wait()
    try:
        opened, keys = open_ledger(settings)
    except BaseException as error:  # noqa: BLE001 (the test reports it)
        errors.append(error)
        return
    opened.close()
    keys.close()

"""The SQLite event store's connection pool hands out the connection returned last, so one
writer keeps writing on one connection (whose page cache stays valid) even after the pool has
come to hold several."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scenario import PRINCIPAL, START, collection, sqlite_ledger, subject

from ledger.recorders import LedgerSQLiteRecorder
from ledger.sealing import MasterKey


def test_writes_after_two_connections_were_in_use_at_once_all_go_on_one(tmp_path: Path) -> None:
    ledger = sqlite_ledger(tmp_path, MasterKey.generate())
    try:
        recorder = ledger.recorder
        assert isinstance(recorder, LedgerSQLiteRecorder)
        pool = recorder.datastore.pool
        sid = subject(ledger)
        # two in use at once: the pool then keeps both
        first = pool.get_connection()
        second = pool.get_connection()
        assert first is not second
        pool.put_connection(first)
        pool.put_connection(second)

        issued: list[Any] = []
        get = pool.get_connection

        def recording(*args: Any, **kwargs: Any) -> Any:
            conn = get(*args, **kwargs)
            issued.append(conn)
            return conn

        pool.get_connection = recording  # type: ignore[method-assign]
        for _ in range(4):
            ledger.execute(PRINCIPAL, collection(sid, at=START))
        pool.get_connection = get  # type: ignore[method-assign]

        assert len(issued) >= 4
        # the most recently returned first: the library's pool took the one idle longest,
        # and the writes alternated between the two
        assert {id(conn) for conn in issued} == {id(second)}
    finally:
        ledger.close()
        ledger.sealer.store.close()

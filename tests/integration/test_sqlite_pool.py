"""The SQLite event store's connection pool hands out the connection returned last, so one
writer keeps writing on one connection (whose page cache stays valid) even after the pool has
come to hold several."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, cast

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


def test_event_store_connections_keep_their_prepared_statements(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """The library opens its connections with `cached_statements=True`, a cache of one
    statement, so each write's BEGIN, inserts and COMMIT were prepared again every time."""
    made: list[dict[str, Any]] = []
    connect = sqlite3.connect

    def watching(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        made.append({"database": str(kwargs.get("database", args[0] if args else "")), **kwargs})
        return connect(*args, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", watching)
    ledger = sqlite_ledger(tmp_path, MasterKey.generate())
    try:
        sid = subject(ledger)
        ledger.execute(PRINCIPAL, collection(sid, at=START))
        pool = cast("LedgerSQLiteRecorder", ledger.recorder).datastore.pool
        held = pool.get_connection(), pool.get_connection()  # a second one made now
        for conn in held:
            pool.put_connection(conn)
    finally:
        ledger.close()
        ledger.sealer.store.close()
    events = [m for m in made if m["database"].endswith("events.db")]
    pooled = [m for m in events if "cached_statements" in m]
    assert len(pooled) >= 2  # every connection of the pool, the second included
    assert all(m["cached_statements"] >= 16 for m in pooled)

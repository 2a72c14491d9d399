"""The key store contract, run on every back-end (memory, a SQLite file, PostgreSQL).

Plus what only the SQL store promises: persistence across opens, the private SQLite file, no
key bytes left on disk after shredding, and clear errors when the database cannot be opened.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from uuid import UUID, uuid4

import pytest

from ledger.errors import ConfigurationError, KeyShreddedError
from ledger.sealing import KeyStore, MasterKey, MemoryKeyStore, Sealer
from server.keystore import SqlKeyStore

_BACKENDS = [
    "memory",
    "sqlite",
    pytest.param("postgres", marks=pytest.mark.postgres),
]
_SQL_BACKENDS = _BACKENDS[1:]

StoreFactory = Callable[[], KeyStore]


@pytest.fixture(params=_BACKENDS)
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Opens stores on one database per test (each call a new store on the same data)."""
    opened: list[KeyStore] = []
    if request.param == "memory":
        shared = MemoryKeyStore()

        def factory() -> KeyStore:
            return shared

    elif request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'keys.db'}"

        def factory() -> KeyStore:
            store = SqlKeyStore(url)
            opened.append(store)
            return store

    else:
        postgres_url: str = request.getfixturevalue("postgres_url")
        schema: str = request.getfixturevalue("postgres_schema")

        def factory() -> KeyStore:
            store = SqlKeyStore(postgres_url, schema=schema)
            opened.append(store)
            return store

    yield factory
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store: StoreFactory) -> KeyStore:
    return open_store()


@pytest.fixture
def master() -> MasterKey:
    return MasterKey.generate()


def _lookup(master: MasterKey, account: str | None = None) -> bytes:
    return master.lookup("app", account if account is not None else uuid4().hex)


# --- the contract ------------------------------------------------------------------------


def test_a_registered_lookup_finds_its_subject(store: KeyStore, master: MasterKey) -> None:
    lookup, subject = _lookup(master), uuid4()

    assert store.register(lookup, subject, master.wrap(os.urandom(32))) == subject

    assert store.find(lookup) == subject


def test_an_unknown_lookup_finds_nothing(store: KeyStore, master: MasterKey) -> None:
    assert store.find(_lookup(master)) is None
    assert store.wrapped_key(uuid4()) is None


def test_registering_a_lookup_twice_keeps_the_first_subject_and_its_key(
    store: KeyStore, master: MasterKey
) -> None:
    lookup = _lookup(master)
    first, second = uuid4(), uuid4()
    first_key, second_key = master.wrap(os.urandom(32)), master.wrap(os.urandom(32))
    store.register(lookup, first, first_key)

    again = store.register(lookup, second, second_key)

    assert again == first
    assert store.find(lookup) == first
    assert store.wrapped_key(first) == first_key
    assert store.wrapped_key(second) is None


def test_the_wrapped_key_round_trips_byte_for_byte(store: KeyStore, master: MasterKey) -> None:
    subject, data_key = uuid4(), os.urandom(32)
    wrapped = master.wrap(data_key)

    store.register(_lookup(master), subject, wrapped)

    stored = store.wrapped_key(subject)
    assert stored == wrapped
    assert stored is not None
    assert master.unwrap(stored) == data_key


def test_shredding_removes_the_key_and_lookup_and_reports_it_once(
    store: KeyStore, master: MasterKey
) -> None:
    lookup, subject = _lookup(master), uuid4()
    kept_lookup, kept = _lookup(master), uuid4()
    store.register(lookup, subject, master.wrap(os.urandom(32)))
    store.register(kept_lookup, kept, master.wrap(os.urandom(32)))

    assert store.shred(subject) is True

    assert store.wrapped_key(subject) is None
    assert store.find(lookup) is None
    assert store.shred(subject) is False
    assert store.find(kept_lookup) == kept
    assert store.wrapped_key(kept) is not None


def test_shredding_an_unknown_subject_reports_nothing_destroyed(store: KeyStore) -> None:
    assert store.shred(uuid4()) is False


def test_a_lookup_freed_by_shredding_can_name_a_new_subject(
    store: KeyStore, master: MasterKey
) -> None:
    lookup, old, new = _lookup(master), uuid4(), uuid4()
    store.register(lookup, old, master.wrap(os.urandom(32)))
    store.shred(old)

    assert store.register(lookup, new, master.wrap(os.urandom(32))) == new

    assert store.find(lookup) == new
    assert store.wrapped_key(old) is None


def test_racing_registrations_of_one_lookup_agree_on_one_subject(
    open_store: StoreFactory, master: MasterKey
) -> None:
    threads_count = 8
    stores = [open_store(), open_store()]  # two stores on one database: two pools racing
    lookup = _lookup(master)
    candidates = [(uuid4(), master.wrap(os.urandom(32))) for _ in range(threads_count)]
    barrier = threading.Barrier(threads_count)
    results: list[UUID] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def register(index: int) -> None:
        subject, wrapped = candidates[index]
        try:
            barrier.wait(timeout=10)
            winner = stores[index % 2].register(lookup, subject, wrapped)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread below
            with lock:
                errors.append(exc)
            return
        with lock:
            results.append(winner)

    threads = [threading.Thread(target=register, args=(i,)) for i in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert len(results) == threads_count
    assert len(set(results)) == 1
    winner = results[0]
    assert winner in {subject for subject, _ in candidates}
    assert stores[0].find(lookup) == winner
    keys = {subject: stores[1].wrapped_key(subject) for subject, _ in candidates}
    assert [s for s, k in keys.items() if k is not None] == [winner]
    assert keys[winner] == dict(candidates)[winner]


def test_sealed_values_open_until_the_key_is_shredded(
    open_store: StoreFactory, master: MasterKey
) -> None:
    store = open_store()
    sealer = Sealer(master, store)
    lookup = _lookup(master, "account-42")
    subject = store.register(lookup, uuid4(), sealer.new_wrapped_key())
    sealed = sealer.seal(subject, "ip_address", "203.0.113.7")
    assert sealer.open(subject, "ip_address", sealed) == "203.0.113.7"

    assert sealer.shred(subject) is True

    with pytest.raises(KeyShreddedError):
        sealer.open(subject, "ip_address", sealed)
    with pytest.raises(KeyShreddedError):
        Sealer(master, open_store()).open(subject, "ip_address", sealed)
    assert store.find(lookup) is None


# --- the SQL store only --------------------------------------------------------------------


@pytest.fixture(params=_SQL_BACKENDS)
def sql_url(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str | None]:
    """A database URL and schema for a SQL store."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'keys.db'}", None
    postgres_url: str = request.getfixturevalue("postgres_url")
    schema: str = request.getfixturevalue("postgres_schema")
    return postgres_url, schema


def _register_in_a_process(
    url: str, schema: str | None, lookup: bytes, start: float
) -> tuple[UUID, UUID]:
    """Open a store in this process, wait for the common start instant, register."""
    subject = uuid4()
    with SqlKeyStore(url, schema=schema) as store:
        time.sleep(max(0.0, start - time.time()))
        return subject, store.register(lookup, subject, os.urandom(40))


def test_racing_processes_agree_on_one_subject(
    sql_url: tuple[str, str | None], master: MasterKey
) -> None:
    url, schema = sql_url
    SqlKeyStore(url, schema=schema).close()  # tables exist before the race
    lookup, processes = _lookup(master), 4
    start = time.time() + 1.5
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(processes, mp_context=context) as pool:
        futures = [
            pool.submit(_register_in_a_process, url, schema, lookup, start)
            for _ in range(processes)
        ]
        outcomes = [future.result(timeout=60) for future in futures]

    winners = {winner for _, winner in outcomes}
    assert len(winners) == 1
    (winner,) = winners
    with SqlKeyStore(url, schema=schema) as store:
        assert store.find(lookup) == winner
        holders = [own for own, _ in outcomes if store.wrapped_key(own) is not None]
    assert holders == [winner]


def test_registrations_survive_reopening_the_store(
    sql_url: tuple[str, str | None], master: MasterKey
) -> None:
    url, schema = sql_url
    lookup, subject, wrapped = _lookup(master), uuid4(), master.wrap(os.urandom(32))
    with SqlKeyStore(url, schema=schema) as first:
        first.register(lookup, subject, wrapped)

    with SqlKeyStore(url, schema=schema) as second:
        assert second.find(lookup) == subject
        assert second.wrapped_key(subject) == wrapped


def test_a_second_lookup_for_a_subject_keeps_its_existing_key(
    sql_url: tuple[str, str | None], master: MasterKey
) -> None:
    url, schema = sql_url
    subject, original = uuid4(), master.wrap(os.urandom(32))
    other_lookup = master.lookup("web", "account-1")
    with SqlKeyStore(url, schema=schema) as store:
        store.register(master.lookup("app", "account-1"), subject, original)

        assert store.register(other_lookup, subject, master.wrap(os.urandom(32))) == subject

        assert store.wrapped_key(subject) == original
        assert store.find(other_lookup) == subject
        assert store.shred(subject) is True
        assert store.find(other_lookup) is None


def test_stores_with_different_prefixes_share_a_database_without_mixing(
    sql_url: tuple[str, str | None], master: MasterKey
) -> None:
    url, schema = sql_url
    lookup = _lookup(master)
    with (
        SqlKeyStore(url, schema=schema, prefix="a_") as one,
        SqlKeyStore(url, schema=schema, prefix="b_") as two,
    ):
        one.register(lookup, uuid4(), master.wrap(os.urandom(32)))

        assert two.find(lookup) is None


def test_a_lookup_that_is_not_32_bytes_is_refused(sql_url: tuple[str, str | None]) -> None:
    url, schema = sql_url
    with SqlKeyStore(url, schema=schema) as store, pytest.raises(ValueError, match="32 bytes"):
        store.register(b"short", uuid4(), os.urandom(40))


def test_the_sqlite_file_is_private_to_its_owner(tmp_path: Path) -> None:
    path = tmp_path / "keys.db"

    with SqlKeyStore(f"sqlite:///{path}") as store:
        store.register(os.urandom(32), uuid4(), os.urandom(40))

        for file in tmp_path.iterdir():
            assert stat.S_IMODE(file.stat().st_mode) == 0o600, file.name


def _raw_bytes(directory: Path) -> dict[str, bytes]:
    return {file.name: file.read_bytes() for file in directory.iterdir() if file.is_file()}


def test_shredding_leaves_no_key_bytes_in_the_sqlite_files(
    tmp_path: Path, master: MasterKey
) -> None:
    directory = tmp_path / "data"
    directory.mkdir()
    store = SqlKeyStore(f"sqlite:///{directory / 'keys.db'}")
    try:
        for _ in range(50):
            store.register(_lookup(master), uuid4(), master.wrap(os.urandom(32)))
        victim, lookup, wrapped = uuid4(), _lookup(master), master.wrap(os.urandom(32))
        store.register(lookup, victim, wrapped)
        # The key must be on disk before shredding, or this test proves nothing.
        assert any(wrapped in data for data in _raw_bytes(directory).values())

        assert store.shred(victim) is True

        for name, data in _raw_bytes(directory).items():
            assert wrapped not in data, f"wrapped key bytes remain in {name}"
            assert lookup not in data, f"look-up hash bytes remain in {name}"
        assert store.find(_lookup(master)) is None  # the store still works
    finally:
        store.close()
    for name, data in _raw_bytes(directory).items():
        assert wrapped not in data, f"wrapped key bytes remain in {name} after close"


def test_shredding_after_a_checkpoint_zeroes_the_key_in_the_main_file(
    tmp_path: Path, master: MasterKey
) -> None:
    directory = tmp_path / "data"
    directory.mkdir()
    path = directory / "keys.db"
    with SqlKeyStore(f"sqlite:///{path}") as store:
        victim, wrapped = uuid4(), master.wrap(os.urandom(32))
        store.register(_lookup(master), victim, wrapped)
        with contextlib.closing(sqlite3.connect(path)) as raw:  # move the key into keys.db
            raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        assert wrapped in path.read_bytes()

        store.shred(victim)

        for name, data in _raw_bytes(directory).items():
            assert wrapped not in data, f"wrapped key bytes remain in {name}"


# --- opening failures ----------------------------------------------------------------------


def test_a_sqlite_file_in_a_missing_directory_is_a_configuration_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'missing' / 'keys.db'}"

    with pytest.raises(ConfigurationError, match="cannot open key store") as caught:
        SqlKeyStore(url)

    assert "\n" not in str(caught.value)
    assert caught.value.__suppress_context__


def test_an_unreachable_postgresql_is_a_configuration_error() -> None:
    url = "postgresql+psycopg://postgres:s3cret@127.0.0.1:1/test?connect_timeout=2"

    with pytest.raises(ConfigurationError, match="cannot open key store") as caught:
        SqlKeyStore(url)

    assert "s3cret" not in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    ["not a url", "nosuchdb://host/db", "sqlite://", "sqlite:///:memory:"],
)
def test_an_unusable_url_is_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError):
        SqlKeyStore(url)


def test_a_schema_on_sqlite_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="PostgreSQL only"):
        SqlKeyStore(f"sqlite:///{tmp_path / 'keys.db'}", schema="elsewhere")


@pytest.mark.postgres
def test_a_missing_postgresql_schema_is_a_configuration_error(postgres_url: str) -> None:
    with pytest.raises(ConfigurationError, match="cannot open key store"):
        SqlKeyStore(postgres_url, schema="no_such_schema_here")

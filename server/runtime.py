"""Start-up wiring: open the event store, the key store and the master key from settings."""

from __future__ import annotations

import gc
import hmac
import multiprocessing
import os
from dataclasses import dataclass
from multiprocessing.context import ForkServerContext
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ledger.application import Ledger
from ledger.clock import Clock, SystemClock
from ledger.errors import ConfigurationError, SealingError
from ledger.policy import SEED_EFFECTIVE_AT, load_policy_file, load_seed_policy
from ledger.sealing import MasterKey, Sealer
from ledger.storage import PostgresConfig, StorageConfig, ledger_env
from projections import ProjectionRunner, ViewStore, ledger_runner
from projections.notices import ExecuteMany
from server.keystore import SqlKeyStore, load_or_create_master_key, master_key_from_text
from server.settings import Settings

EVENTS_FILE = "events.db"
KEYS_FILE = "keys.db"
VIEWS_FILE = "views.db"


@dataclass
class Runtime:
    """An open ledger and what it holds open."""

    settings: Settings
    ledger: Ledger
    keystore: SqlKeyStore
    storage: StorageConfig
    views: ViewStore
    runner: ProjectionRunner | None = None

    def start_projections(self, execute_many: ExecuteMany | None = None) -> None:
        """Keep every view up to date in this process (a background thread); policy notices
        are recorded through `execute_many` when given (the server's writer)."""
        if self.runner is None:
            self.runner = ledger_runner(
                self.ledger,
                self.views,
                execute_many=execute_many,
                gather_seconds=self.settings.projection_gather_seconds,
            )
            self.runner.start()

    def close(self) -> None:
        if self.runner is not None:
            self.runner.stop()
            self.runner = None
        self.ledger.close()
        self.keystore.close()
        self.views.close()


def storage_config(settings: Settings) -> tuple[StorageConfig, str]:
    """The event-store configuration and the key-store URL the settings call for."""
    if settings.database_url is None:
        return (
            StorageConfig(backend="sqlite", sqlite_path=settings.data_dir / EVENTS_FILE),
            f"sqlite:///{settings.data_dir / KEYS_FILE}",
        )
    try:
        parts = urlsplit(settings.database_url.get_secret_value())
        port = parts.port
    except ValueError:
        raise ConfigurationError("database_url: not a valid URL (its host or port)") from None
    if parts.scheme not in ("postgresql", "postgres", "postgresql+psycopg"):
        raise ConfigurationError("database_url must be a postgresql:// URL")
    if parts.query or parts.fragment:
        # the event store's driver takes host, port, database, user and password only: a
        # parameter such as sslmode=require would be dropped, and the connection made without
        msg = (
            "database_url: parameters after '?' are not supported; give libpq's own in the "
            "environment instead (PGSSLMODE, PGSSLROOTCERT, PGOPTIONS, ...), which every "
            "connection of the server reads"
        )
        raise ConfigurationError(msg)
    pg = PostgresConfig(
        host=parts.hostname or "127.0.0.1",
        port=port or 5432,
        dbname=parts.path.lstrip("/") or "postgres",
        user=unquote(parts.username or "postgres"),
        password=unquote(parts.password or ""),
        schema_name=settings.postgres_schema,
    )
    auth = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    host = parts.netloc.rsplit("@", 1)[-1]
    return StorageConfig(
        backend="postgres", postgres=pg
    ), f"postgresql+psycopg://{auth}{host}/{pg.dbname}"


def master_key(settings: Settings) -> MasterKey:
    if settings.master_key is not None:
        return master_key_from_text(settings.master_key.get_secret_value())
    return load_or_create_master_key(settings.master_key_path)


def checked_master_key(
    settings: Settings, keystore: SqlKeyStore, *, events_exist: bool = False
) -> MasterKey:
    """The master key, made on first run only, and refused when it is not the key the stored
    data was sealed under: a new or another key would leave every sealed value unreadable,
    register known people again under new pseudonyms and match no earlier idempotency key."""
    where = "" if settings.master_key is not None else f" ({settings.master_key_path})"
    missing = settings.master_key is None and not settings.master_key_path.exists()
    if missing and (events_exist or keystore.holds_data()):
        msg = (
            f"the master key file {settings.master_key_path} is missing, but the event store "
            "or the key store holds data made under a master key: restore that file (a new "
            "key would leave all of it unreadable and match no earlier idempotency key)"
        )
        raise ConfigurationError(msg)
    master = master_key(settings)
    check = master.check_value()
    recorded = keystore.key_check()
    if recorded is None:  # a store from before check values: try the key on a data key
        sample = keystore.any_wrapped_key()
        if sample is not None:
            try:
                master.unwrap(sample)
            except SealingError:
                recorded = b""
        if recorded is None:
            recorded = keystore.record_key_check(check)
    if not hmac.compare_digest(recorded, check):
        msg = (
            f"the master key{where} is not the one the key store's data was sealed under: "
            "give the original key"
        )
        raise ConfigurationError(msg)
    return master


def open_ledger(settings: Settings, clock: Clock | None = None) -> tuple[Ledger, SqlKeyStore]:
    """Open the event store and the key store the settings describe, creating the embedded
    default on first run, with the first policy version published and any erasure a crash
    interrupted completed. (The server's writer process opens its ledger this way too.)"""
    return _open_ledger(settings, clock, *storage_config(settings))


def _open_ledger(
    settings: Settings, clock: Clock | None, storage: StorageConfig, keys_url: str
) -> tuple[Ledger, SqlKeyStore]:
    _ensure_private_dir(settings.data_dir)
    path = storage.sqlite_path
    events_exist = path is not None and path.exists() and path.stat().st_size > 0
    if storage.sqlite_path is not None and not storage.sqlite_path.exists():
        _create_private_file(storage.sqlite_path)
    schema = settings.postgres_schema if storage.backend == "postgres" else None
    keystore = SqlKeyStore(keys_url, schema=schema)
    try:
        ledger = Ledger(
            ledger_env(storage),
            sealer=Sealer(
                checked_master_key(settings, keystore, events_exist=events_exist), keystore
            ),
            clock=clock or SystemClock(),
        )
    except ConfigurationError:
        keystore.close()
        raise
    except Exception as exc:  # noqa: BLE001 (any driver failure at start-up is a configuration problem)
        keystore.close()
        raise ConfigurationError(f"cannot open the event store: {type(exc).__name__}") from None
    if settings.policy_file is not None:
        policy = load_policy_file(settings.policy_file)
        effective = settings.policy_effective_at or ledger.clock.now()
    else:
        policy, effective = load_seed_policy(), SEED_EFFECTIVE_AT
    ledger.ensure_policy(policy, effective, settings.bootstrap_principal)
    ledger.complete_pending_shreds()
    return ledger, keystore


def open_runtime(settings: Settings, clock: Clock | None = None) -> Runtime:
    """Open the ledger the settings describe and its views database."""
    storage, keys_url = storage_config(settings)
    ledger, keystore = _open_ledger(settings, clock, storage, keys_url)
    views_url = (
        f"sqlite:///{settings.data_dir / VIEWS_FILE}" if storage.backend == "sqlite" else keys_url
    )
    schema = settings.postgres_schema if storage.backend == "postgres" else None
    try:
        view_store = ViewStore(views_url, schema=schema)
    except ConfigurationError:
        ledger.close()
        keystore.close()
        raise
    settle_heap()
    return Runtime(
        settings=settings, ledger=ledger, keystore=keystore, storage=storage, views=view_store
    )


CHILD_MODULES = ("server.runtime", "server.writer_child", "server.projection_child")
"""What the server's children import, loaded once into the process they are forked from."""


def child_context() -> ForkServerContext:
    """How the server starts its children (its writer, its projections): forked from a
    server process of their own (`forkserver`), which has their modules loaded already, so
    that they neither inherit the server's threads and sockets nor import everything anew."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(CHILD_MODULES))
    return context


YOUNG_GENERATION_THRESHOLD = 10_000
"""Allocations between collections of the youngest generation (CPython's default is 700).

A batch's or a group's objects (commands, events, answers) live until the whole of it is
committed. Collected every 700 allocations, they are traversed, and moved to an older
generation to be traversed again, before they die; at 10,000 most die young. Measured with
callgrind on a writer's batch loop: 3-4.5 % fewer instructions per item (`bench/README.md`)."""


def settle_heap() -> None:
    """Move everything made at start-up out of the collector's way.

    The start-up heap (the policy, modules, caches) lives as long as the process; freezing
    it keeps full collections from rescanning it under load (measured in `bench/record.py`).
    """
    gc.collect()
    gc.freeze()


def collect_young_less_often() -> None:
    """Set the young generation's threshold for a process that serves for long: `pdl serve`,
    its writer process, `pdl project`'s workers. (Not `open_runtime`'s business: a process
    that opens and drops many runtimes, such as the tests', closes their files sooner at
    CPython's own threshold.)"""
    _young, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, older, oldest)


def _ensure_private_dir(path: Path) -> None:
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(f"cannot create data directory {path}: {exc.strerror}") from None
    if not os.access(path, os.W_OK):
        raise ConfigurationError(f"data directory {path} is not writable")


def _create_private_file(path: Path) -> None:
    """Create an empty owner-only file, so SQLite (and its WAL) inherit the mode."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        return
    except OSError as exc:
        raise ConfigurationError(f"cannot create {path}: {exc.strerror}") from None

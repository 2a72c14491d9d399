"""Where the events live: in memory, in a SQLite file (the default) or in PostgreSQL.

The choice is configuration only; it becomes the `eventsourcing` environment of the ledger.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from eventsourcing.utils import get_topic
from pydantic import BaseModel, ConfigDict, Field

from ledger.connections import PG_CONNECT_TIMEOUT_SECONDS
from ledger.recorders import LedgerPOPOFactory, LedgerPostgresRecorder, LedgerSQLiteRecorder


class PostgresConfig(BaseModel):
    """How to reach PostgreSQL."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = Field(default="127.0.0.1", description="Server host.")
    port: int = Field(default=5432, ge=1, le=65535, description="Server port.")
    dbname: str = Field(default="postgres", min_length=1, description="Database name.")
    user: str = Field(default="postgres", min_length=1, description="User name.")
    password: str = Field(default="", repr=False, description="Password (trust auth: empty).")
    schema_name: str = Field(default="public", min_length=1, description="Schema for the tables.")
    pool_size: int = Field(default=5, ge=1, description="Connections kept open.")


class StorageConfig(BaseModel):
    """The event store back-end."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    backend: Literal["memory", "sqlite", "postgres"] = Field(
        default="sqlite", description="memory, sqlite (default) or postgres."
    )
    sqlite_path: Path | None = Field(default=None, description="The SQLite events file.")
    postgres: PostgresConfig = Field(
        default_factory=PostgresConfig, description="PostgreSQL settings, for backend postgres."
    )
    lock_timeout_seconds: int = Field(default=30, ge=1, description="How long to wait for locks.")


def ledger_env(config: StorageConfig) -> dict[str, str]:
    """The `eventsourcing` environment for a storage configuration."""
    if config.backend == "memory":
        return {"PERSISTENCE_MODULE": get_topic(LedgerPOPOFactory)}
    if config.backend == "sqlite":
        if config.sqlite_path is None:
            msg = "sqlite_path is required for the sqlite backend"
            raise ValueError(msg)
        return {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": str(config.sqlite_path),
            "SQLITE_LOCK_TIMEOUT": str(config.lock_timeout_seconds),
            "APPLICATION_RECORDER_TOPIC": get_topic(LedgerSQLiteRecorder),
        }
    pg = config.postgres
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_HOST": pg.host,
        "POSTGRES_PORT": str(pg.port),
        "POSTGRES_DBNAME": pg.dbname,
        "POSTGRES_USER": pg.user,
        "POSTGRES_PASSWORD": pg.password,
        "POSTGRES_SCHEMA": pg.schema_name,
        "POSTGRES_POOL_SIZE": str(pg.pool_size),
        "POSTGRES_CONNECT_TIMEOUT": str(PG_CONNECT_TIMEOUT_SECONDS),
        "POSTGRES_LOCK_TIMEOUT": str(config.lock_timeout_seconds),
        "APPLICATION_RECORDER_TOPIC": get_topic(LedgerPostgresRecorder),
    }

"""A store opened with a master key other than the one its data was sealed under is refused,
on SQLite and on PostgreSQL: a missing key file is not made again over existing data, and a
wrong key (in a file or in the configuration) is named, not used."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import SecretStr
from scenario import PRINCIPAL, secret

from ledger import commands as c
from ledger.errors import ConfigurationError
from server.runtime import open_ledger
from server.settings import Settings, load_settings


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def settings_for(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """Settings on one store of the back-end (the data directory holds the key file)."""
    extra: dict[str, Any] = {}
    if request.param == "postgres":
        extra = {
            "database_url": request.getfixturevalue("postgres_url").replace(
                "postgresql+psycopg", "postgresql"
            ),
            "postgres_schema": request.getfixturevalue("postgres_schema"),
        }

    def make(**more: Any) -> Settings:
        return load_settings(environ={}, data_dir=tmp_path / "data", **extra, **more)

    return make


def _open_and_register(settings: Settings) -> None:
    ledger, keystore = open_ledger(settings)
    try:
        ledger.execute(
            PRINCIPAL,
            c.RegisterSubject(
                idempotency_key="reg-1",
                occurred_at=ledger.clock.now(),
                namespace="app",
                account_id=SecretStr(secret("account")),
            ),
        )
    finally:
        ledger.close()
        keystore.close()


def _opens(settings: Settings) -> None:
    ledger, keystore = open_ledger(settings)
    ledger.close()
    keystore.close()


def test_the_same_key_opens_the_store_again(settings_for: Any) -> None:
    settings = settings_for()
    _open_and_register(settings)

    _opens(settings)


def test_a_missing_key_file_over_existing_data_is_refused_and_not_made_again(
    settings_for: Any,
) -> None:
    settings = settings_for()
    _open_and_register(settings)
    settings.master_key_path.unlink()

    with pytest.raises(ConfigurationError, match=r"master key file .* is missing"):
        _opens(settings)
    assert not settings.master_key_path.exists()


def test_another_key_file_is_refused(settings_for: Any) -> None:
    settings = settings_for()
    _open_and_register(settings)
    settings.master_key_path.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")

    with pytest.raises(ConfigurationError, match="not the one the key store's data was sealed"):
        _opens(settings)


def test_another_configured_key_is_refused(settings_for: Any) -> None:
    key = SecretStr(base64.b64encode(os.urandom(32)).decode())
    _open_and_register(settings_for(master_key=key))
    other = SecretStr(base64.b64encode(os.urandom(32)).decode())

    with pytest.raises(ConfigurationError, match="not the one"):
        _opens(settings_for(master_key=other))
    _opens(settings_for(master_key=key))


def test_a_store_from_before_check_values_is_checked_by_its_data_keys(
    settings_for: Any,
) -> None:
    """Stores made before the check value existed have none: a wrong key is found out on a
    stored data key; the right one then records the check value."""
    settings = settings_for()
    _open_and_register(settings)
    ledger, keystore = open_ledger(settings)
    with keystore._writer.begin() as conn:  # as an earlier version left the store
        conn.execute(sa.delete(keystore._check))
    ledger.close()
    keystore.close()
    right = settings.master_key_path.read_text()
    settings.master_key_path.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")

    with pytest.raises(ConfigurationError, match="not the one"):
        _opens(settings)

    settings.master_key_path.write_text(right)
    ledger, keystore = open_ledger(settings)
    try:
        assert keystore.key_check() is not None
    finally:
        ledger.close()
        keystore.close()


def test_a_missing_key_file_is_refused_over_events_even_with_no_key_left(tmp_path: Path) -> None:
    """An old store whose people were all erased holds no data key and no check value, but
    its events still hold receipts made under the master key (SQLite: the events file)."""
    settings = load_settings(environ={}, data_dir=tmp_path / "data")
    _open_and_register(settings)
    ledger, keystore = open_ledger(settings)
    with keystore._writer.begin() as conn:  # as an earlier version left it, everyone erased
        for table in (keystore._check, keystore._keys, keystore._lookups):
            conn.execute(sa.delete(table))
    ledger.close()
    keystore.close()
    settings.master_key_path.unlink()

    with pytest.raises(ConfigurationError, match="master key file"):
        _opens(settings)
    assert not settings.master_key_path.exists()

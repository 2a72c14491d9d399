"""The master key file: made owner-only on first run, reloaded as is, refused when unsafe."""

from __future__ import annotations

import base64
import os
import stat
import threading
from pathlib import Path

import pytest

from ledger.errors import ConfigurationError
from ledger.sealing import MasterKey
from server.keystore import load_or_create_master_key, master_key_from_text

pytestmark = pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")


def _same_key(one: MasterKey, other: MasterKey) -> bool:
    return one.lookup("ns", "account") == other.lookup("ns", "account")


def test_a_missing_key_file_is_created_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "master.key"

    load_or_create_master_key(path)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert len(base64.b64decode(path.read_text().strip(), validate=True)) == 32
    assert [p.name for p in path.parent.iterdir()] == ["master.key"]


def test_a_created_key_reloads_identical(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    created = load_or_create_master_key(path)
    text = path.read_text()

    reloaded = load_or_create_master_key(path)

    assert _same_key(created, reloaded)
    assert path.read_text() == text


def test_an_existing_key_file_is_read_not_replaced(tmp_path: Path) -> None:
    secret = os.urandom(32)
    path = tmp_path / "master.key"
    path.write_text(base64.b64encode(secret).decode() + "\n")
    path.chmod(0o600)

    assert _same_key(load_or_create_master_key(path), MasterKey(secret))


def test_each_new_key_is_random(tmp_path: Path) -> None:
    one = load_or_create_master_key(tmp_path / "one.key")
    two = load_or_create_master_key(tmp_path / "two.key")

    assert not _same_key(one, two)


def test_concurrent_first_runs_end_with_one_key(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    barrier = threading.Barrier(8)
    keys: list[MasterKey] = []
    lock = threading.Lock()

    def load() -> None:
        barrier.wait(timeout=10)
        key = load_or_create_master_key(path)
        with lock:
            keys.append(key)

    threads = [threading.Thread(target=load) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert len(keys) == 8
    assert all(_same_key(keys[0], key) for key in keys)
    assert [p.name for p in tmp_path.iterdir()] == ["master.key"]


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not base64 at all!",
        base64.b64encode(os.urandom(16)),
        base64.b64encode(os.urandom(33)),
        b"\xff\xfe\x00garbage",
    ],
    ids=["empty", "garbage", "too-short", "too-long", "binary"],
)
def test_a_key_file_with_bad_contents_is_refused_naming_the_file(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "master.key"
    path.write_bytes(content)
    path.chmod(0o600)

    with pytest.raises(ConfigurationError, match=r"master\.key") as caught:
        load_or_create_master_key(path)

    assert path.read_bytes() == content  # never overwritten
    if content:
        assert content.decode("latin-1") not in str(caught.value)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o606])
def test_a_key_file_others_can_reach_is_refused_with_the_fix(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "master.key"
    load_or_create_master_key(path)
    path.chmod(mode)

    with pytest.raises(ConfigurationError, match=r"chmod 600 .*master\.key"):
        load_or_create_master_key(path)


def test_a_directory_in_place_of_the_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    path.mkdir(mode=0o700)

    with pytest.raises(ConfigurationError, match=r"master\.key"):
        load_or_create_master_key(path)


def test_a_key_in_configuration_is_read_from_base64() -> None:
    secret = os.urandom(32)

    key = master_key_from_text(f"  {base64.b64encode(secret).decode()}\n")

    assert _same_key(key, MasterKey(secret))
    assert _same_key(master_key_from_text(base64.urlsafe_b64encode(secret).decode()), key)


@pytest.mark.parametrize("text", ["", "short", base64.b64encode(os.urandom(31)).decode(), "%%%%"])
def test_a_bad_key_in_configuration_is_refused_without_echoing_it(text: str) -> None:
    with pytest.raises(ConfigurationError, match="configured master key") as caught:
        master_key_from_text(text)

    if text:
        assert text not in str(caught.value)

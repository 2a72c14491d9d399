"""Sealing on the in-memory key store: values open only for their subject and field."""

from __future__ import annotations

import base64
import os
from uuid import UUID, uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.errors import KeyShreddedError, SealingError
from ledger.sealing import MasterKey, MemoryKeyStore, Sealer

_MASTER = MasterKey.generate()


def _sealer(master: MasterKey | None = None) -> Sealer:
    return Sealer(master or MasterKey.generate(), MemoryKeyStore())


def _subject(sealer: Sealer, account: str | None = None) -> UUID:
    lookup = sealer.master.lookup("app", account if account is not None else uuid4().hex)
    return sealer.store.register(lookup, uuid4(), sealer.new_wrapped_key())


def test_a_sealed_value_opens_to_itself() -> None:
    sealer = _sealer()
    subject = _subject(sealer)

    sealed = sealer.seal(subject, "ip_address", "203.0.113.7")

    assert sealed.startswith("s1:")
    assert sealer.open(subject, "ip_address", sealed) == "203.0.113.7"


def test_sealing_one_value_twice_gives_different_texts() -> None:
    sealer = _sealer()
    subject = _subject(sealer)

    first = sealer.seal(subject, "imei", "490154203237518")
    second = sealer.seal(subject, "imei", "490154203237518")

    assert first != second
    assert sealer.open(subject, "imei", first) == sealer.open(subject, "imei", second)


def test_a_value_sealed_for_one_subject_does_not_open_for_another() -> None:
    sealer = _sealer()
    alice, bob = _subject(sealer), _subject(sealer)
    sealed = sealer.seal(alice, "phone", "+86 138 0013 8000")

    with pytest.raises(SealingError):
        sealer.open(bob, "phone", sealed)


def test_a_value_sealed_for_one_field_does_not_open_as_another() -> None:
    sealer = _sealer()
    subject = _subject(sealer)
    sealed = sealer.seal(subject, "phone", "+86 138 0013 8000")

    with pytest.raises(SealingError):
        sealer.open(subject, "email", sealed)


@pytest.mark.parametrize("position", [0, 5, 12, -1])
def test_a_tampered_byte_fails_to_open(position: int) -> None:
    sealer = _sealer()
    subject = _subject(sealer)
    sealed = sealer.seal(subject, "gps", "31.2304,121.4737")
    raw = bytearray(base64.urlsafe_b64decode(sealed.removeprefix("s1:")))
    raw[position] ^= 0x01
    tampered = "s1:" + base64.urlsafe_b64encode(bytes(raw)).decode()

    with pytest.raises(SealingError):
        sealer.open(subject, "gps", tampered)


@pytest.mark.parametrize("text", ["203.0.113.7", "s2:AAAA", "s1:***not base64***"])
def test_text_that_is_not_a_sealed_value_is_refused(text: str) -> None:
    sealer = _sealer()

    with pytest.raises(SealingError):
        sealer.open(_subject(sealer), "ip_address", text)


def test_a_shredded_subject_can_no_longer_open_its_values() -> None:
    sealer = _sealer()
    subject = _subject(sealer)
    sealed = sealer.seal(subject, "ip_address", "203.0.113.7")

    assert sealer.shred(subject) is True

    with pytest.raises(KeyShreddedError):
        sealer.open(subject, "ip_address", sealed)


def test_a_key_shredded_by_another_process_opens_nothing_from_this_ones_cache() -> None:
    """The server's writer shreds; the server's own sealer had the key cached."""
    store, master = MemoryKeyStore(), MasterKey.generate()
    here, writer = Sealer(master, store), Sealer(master, store)
    subject = _subject(here)
    sealed = here.seal(subject, "ip_address", "203.0.113.7")
    assert here.open(subject, "ip_address", sealed) == "203.0.113.7"  # cached here now

    assert writer.shred(subject) is True

    with pytest.raises(KeyShreddedError):
        here.open(subject, "ip_address", sealed)


def test_the_lookup_is_deterministic_under_one_master_key() -> None:
    assert _MASTER.lookup("app", "user-1") == _MASTER.lookup("app", "user-1")
    assert len(_MASTER.lookup("app", "user-1")) == 32


def test_the_lookup_separates_namespaces_and_accounts() -> None:
    assert _MASTER.lookup("app", "user-1") != _MASTER.lookup("web", "user-1")
    assert _MASTER.lookup("app", "user-1") != _MASTER.lookup("app", "user-2")


def test_the_lookup_is_keyed_by_the_master_key() -> None:
    other = MasterKey.generate()

    assert _MASTER.lookup("app", "user-1") != other.lookup("app", "user-1")


def test_the_same_secret_gives_the_same_master_key() -> None:
    secret = os.urandom(32)

    assert MasterKey(secret).lookup("app", "u") == MasterKey(secret).lookup("app", "u")
    assert MasterKey(secret).digest(b"command") == MasterKey(secret).digest(b"command")


@pytest.mark.parametrize("length", [0, 16, 31, 33, 64])
def test_a_master_key_of_the_wrong_length_is_refused(length: int) -> None:
    with pytest.raises(SealingError, match="32 bytes"):
        MasterKey(os.urandom(length))


def test_a_data_key_does_not_unwrap_under_another_master_key() -> None:
    wrapped = _MASTER.wrap(os.urandom(32))

    with pytest.raises(SealingError):
        MasterKey.generate().unwrap(wrapped)


def test_a_sealer_with_another_master_key_cannot_open_values() -> None:
    store = MemoryKeyStore()
    sealer = Sealer(MasterKey.generate(), store)
    subject = _subject(sealer)
    sealed = sealer.seal(subject, "ip_address", "203.0.113.7")

    with pytest.raises(SealingError):
        Sealer(MasterKey.generate(), store).open(subject, "ip_address", sealed)


def test_the_master_key_repr_hides_the_secret() -> None:
    secret = os.urandom(32)
    key = MasterKey(secret)

    shown = repr(key) + str(key)

    assert "secret" in shown
    for encoding in (secret.hex(), base64.b64encode(secret).decode(), repr(secret)):
        assert encoding not in shown


_PROPERTY_SEALER = _sealer()
_PROPERTY_SUBJECT = _subject(_PROPERTY_SEALER)


@given(value=st.text())
def test_any_text_round_trips(value: str) -> None:
    sealed = _PROPERTY_SEALER.seal(_PROPERTY_SUBJECT, "note", value)

    assert _PROPERTY_SEALER.open(_PROPERTY_SUBJECT, "note", sealed) == value


@given(value=st.text(min_size=8))
def test_the_sealed_text_never_contains_the_plain_text(value: str) -> None:
    sealed = _PROPERTY_SEALER.seal(_PROPERTY_SUBJECT, "note", value)

    assert value not in sealed


def test_a_value_of_a_category_opens_only_as_that_categorys_field() -> None:
    """A collected value names its category in its associated data: it cannot stand in for
    the same field of another category, nor for a value sealed without one."""
    sealer = _sealer()
    subject = _subject(sealer)
    sealed = sealer.seal(subject, "ip", "203.0.113.7", category="network_log.ip_address")
    assert sealed.startswith("s2:")
    assert sealer.open(subject, "ip", sealed, category="network_log.ip_address") == "203.0.113.7"
    for category in ("location.gps", None):
        with pytest.raises(SealingError):
            sealer.open(subject, "ip", sealed, category=category)
    plain = sealer.seal(subject, "account_id", "someone")
    assert plain.startswith("s1:")  # and it opens as before, with or without a category
    assert sealer.open(subject, "account_id", plain) == "someone"

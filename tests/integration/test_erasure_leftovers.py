"""What an erasure must not leave behind (§6.3), on every back-end: receipts that answer
whether a guessed value was the person's, values of an erased category opened by a view that
has not folded the erasure yet, a registered guardian's account id kept in a minor's
registration, a key whose destruction failed after the commit, and the
destroyed key in the key store's write-ahead log.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from pydantic import SecretStr, ValidationError
from scenario import (
    PRINCIPAL,
    collection,
    erasure,
    key,
    later,
    ref,
    register,
    secret,
    sqlite_ledger,
)

from ledger import commands as c
from ledger import events as ev
from ledger.application import Ledger
from ledger.errors import IdempotencyConflict, KeyShreddedError, Refused
from ledger.errors import RefusalReason as R
from ledger.receipts import FORGOTTEN, receipt_id
from ledger.recorders import KeepsReceipts
from ledger.sealing import MasterKey
from projections import ProjectionRunner, ViewStore, views
from projections import queries as q
from server.keystore import SqlKeyStore
from server.views import _open

_IP = "network_log.ip_address"


def _erase(ledger: Ledger, sid: UUID, *categories: str) -> None:
    ledger.execute(
        PRINCIPAL,
        erasure(sid, at=later(ledger), ground="no_consent", categories=categories),
    )


def _receipts(ledger: Ledger) -> KeepsReceipts:
    recorder: Any = ledger.recorder
    return recorder  # type: ignore[no-any-return]


def test_after_erasure_a_retry_answers_the_same_whatever_value_it_guesses__clause_6_3(
    ledger: Ledger,
) -> None:
    account = secret("account")
    registration = c.RegisterSubject(
        idempotency_key=key("reg"),
        occurred_at=later(ledger),
        namespace="app",
        account_id=SecretStr(account),
    )
    sid = ledger.execute(PRINCIPAL, registration).subject_id
    assert sid is not None
    collected = collection(sid, at=later(ledger))
    ledger.execute(PRINCIPAL, collected)
    wrong = registration.model_copy(update={"account_id": SecretStr(secret("other"))})
    with pytest.raises(IdempotencyConflict):
        ledger.execute(PRINCIPAL, wrong)

    _erase(ledger, sid)

    stored = _receipts(ledger).receipt(receipt_id(PRINCIPAL, registration.idempotency_key))
    assert stored is not None
    assert stored.digest == FORGOTTEN
    answers = [ledger.execute(PRINCIPAL, guess) for guess in (registration, wrong)]
    assert [(a.subject_id, a.replayed) for a in answers] == [(sid, True)] * 2
    retry = collected.model_copy(update={"values": {"ip": SecretStr(secret("guess"))}})
    [again] = ledger.execute_many([(PRINCIPAL, retry)])
    assert again.error is None
    assert again.recorded is not None
    assert again.recorded.replayed


def _access_request(sid: UUID, at: datetime) -> c.OpenRightsRequest:
    return c.OpenRightsRequest(
        idempotency_key=key("req"), occurred_at=at, subject=ref(sid), kind="access"
    )


def _extension(request_id: UUID, at: datetime) -> c.ExtendRightsRequest:
    return c.ExtendRightsRequest(
        idempotency_key=key("ext"),
        occurred_at=at,
        request_id=request_id,
        days=5,
        reason=secret("reason"),
    )


@pytest.fixture
def two_writers(tmp_path: Path) -> Iterator[tuple[Ledger, Ledger]]:
    """Two ledgers writing one SQLite store, as two servers write one PostgreSQL schema."""
    master = MasterKey.generate()
    apps = sqlite_ledger(tmp_path, master), sqlite_ledger(tmp_path, master)
    try:
        yield apps
    finally:
        for app in apps:
            app.close()
            app.sealer.store.close()


def test_after_erasure_a_retry_of_a_rights_request_command_checks_no_guess__clause_6_3(
    ledger: Ledger,
) -> None:
    """An extension's reason is the person's (sealed with their key); its receipt is the
    request's, not in the person's own stream, and is forgotten with theirs."""
    sid = register(ledger).subject_id
    assert sid is not None
    opened = ledger.execute(PRINCIPAL, _access_request(sid, later(ledger)))
    extension = _extension(opened.aggregate_id, later(ledger))
    ledger.execute(PRINCIPAL, extension)
    guess = extension.model_copy(update={"reason": secret("guess")})
    with pytest.raises(IdempotencyConflict):
        ledger.execute(PRINCIPAL, guess)

    _erase(ledger, sid)

    stored = _receipts(ledger).receipt(receipt_id(PRINCIPAL, extension.idempotency_key))
    assert stored is not None
    assert stored.digest == FORGOTTEN
    answers = [ledger.execute(PRINCIPAL, attempt) for attempt in (extension, guess)]
    assert [a.replayed for a in answers] == [True, True]


def test_two_writers_a_reason_after_the_other_ones_erasure_is_neither_sealed_nor_digested(
    two_writers: tuple[Ledger, Ledger],
) -> None:
    """Two writers on one store (two servers on PostgreSQL): one erases the person, the other,
    with the person's key still cached, extends their request. The reason is not sealed under
    the destroyed key, and its receipt keeps no digest to check a guess against."""
    here, there = two_writers
    sid = register(here).subject_id
    assert sid is not None
    opened = here.execute(PRINCIPAL, _access_request(sid, later(here)))
    here.execute(PRINCIPAL, collection(sid, at=later(here)))  # the key is cached here
    _erase(there, sid)
    extension = _extension(opened.aggregate_id, later(here))

    here.execute(PRINCIPAL, extension)

    (extended,) = [
        p
        for e in here.events.get(opened.aggregate_id)
        if isinstance(p := getattr(e, "payload", None), ev.RightsRequestExtended)
    ]
    assert extended.sealed_reason is None
    stored = _receipts(here).receipt(receipt_id(PRINCIPAL, extension.idempotency_key))
    assert stored is not None
    assert stored.digest == FORGOTTEN


def test_two_writers_a_guardian_erased_by_the_other_is_no_guardian__clause_5(
    two_writers: tuple[Ledger, Ledger],
) -> None:
    """The guardian's state is read as the store has it, not as this writer cached it."""
    here, there = two_writers
    guardian = register(here).subject_id
    assert guardian is not None
    here.subject(guardian)  # cached here
    _erase(there, guardian)

    with pytest.raises(Refused) as refusal:
        register(here, birth_year=2015, guardian_subject_id=guardian)
    assert refusal.value.reason is R.GUARDIAN_NOT_REGISTERED
    with pytest.raises(Refused) as closed:
        here.execute(PRINCIPAL, _access_request(guardian, later(here)))
    assert closed.value.reason is R.SUBJECT_ERASED


def test_a_view_behind_a_partial_erasure_does_not_open_the_erased_values__clause_6_3(
    ledger: Ledger,
) -> None:
    sid = register(ledger).subject_id
    assert sid is not None
    ledger.execute(PRINCIPAL, collection(sid, at=later(ledger)))
    store = ViewStore("sqlite://")
    try:
        ProjectionRunner(ledger, store, views(store.dialect)).catch_up()
        with store.read() as conn:
            stale = q.subject_view(conn, sid)  # folded before the erasure
    finally:
        store.close()
    assert _open(ledger, stale).values, "the value opens before the erasure"

    _erase(ledger, sid, _IP)

    opened = _open(ledger, stale)
    assert opened.values == {}
    assert not opened.key_shredded


def test_a_registered_guardian_leaves_no_account_id_in_the_minors_registration__clause_6_3(
    ledger: Ledger,
) -> None:
    """A registered guardian is named by pseudonym alone: their account id, sealed under the
    minor's key and covered by the minor's receipt, would outlive their own erasure."""
    guardian = register(ledger).subject_id
    assert guardian is not None
    with pytest.raises(ValidationError, match="pseudonym alone"):
        c.RegisterSubject(
            idempotency_key=key("reg"),
            occurred_at=later(ledger),
            namespace="app",
            account_id=SecretStr(secret("child")),
            birth_year=2015,
            guardian_subject_id=guardian,
            guardian_account_id=SecretStr(secret("guardian")),
        )
    child = register(ledger, birth_year=2015, guardian_subject_id=guardian).subject_id
    assert child is not None
    registered = ledger.history(child)[0]
    assert isinstance(registered, ev.SubjectRegistered)
    assert registered.guardian is None

    _erase(ledger, guardian)

    assert set(ledger.reveal(registered)) == {"account_id"}
    assert ledger.subject(child).state.has_guardian


def test_a_key_whose_destruction_failed_opens_nothing_and_is_destroyed_with_the_next_write(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    sid = register(ledger).subject_id
    other = register(ledger).subject_id
    assert sid is not None
    assert other is not None
    ledger.execute(PRINCIPAL, collection(sid, at=later(ledger)))
    [collected] = [p for p in ledger.history(sid) if isinstance(p, ev.DataCollected)]
    store = ledger.sealer.store
    shred = store.shred
    failures = [RuntimeError("database is locked")]

    def failing_once(subject_id: UUID) -> bool:
        if failures:
            raise failures.pop()
        return shred(subject_id)

    monkeypatch.setattr(store, "shred", failing_once)

    _erase(ledger, sid)

    assert store.wrapped_key(sid) is not None, "the destruction failed"
    with pytest.raises(KeyShreddedError):
        ledger.reveal(collected)
    ledger.execute(PRINCIPAL, collection(other, at=later(ledger)))
    assert store.wrapped_key(sid) is None


def test_a_shred_blocked_by_a_reader_leaves_the_key_store_wal_at_the_next_write(
    tmp_path: Path,
) -> None:
    path = tmp_path / "keys.db"
    keys = SqlKeyStore(f"sqlite:///{path}")
    wrapped = bytes(range(48)) * 2
    sid = UUID(int=1)
    try:
        keys.register(b"\x01" * 32, sid, wrapped)
        reader = sqlite3.connect(path)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM subject_keys").fetchall()

        assert keys.shred(sid)
        wal = path.with_name("keys.db-wal")
        assert wrapped in wal.read_bytes(), "the reader kept the checkpoint from truncating"

        reader.rollback()
        reader.close()
        keys.register(b"\x02" * 32, UUID(int=2), bytes(96))
        assert not wal.exists() or wrapped not in wal.read_bytes()
    finally:
        keys.close()


def test_the_clocks_do_not_matter_to_a_forgotten_receipt(ledger: Ledger) -> None:
    """A retry long after the erasure answers as the replay too."""
    sid = register(ledger).subject_id
    assert sid is not None
    collected = collection(sid, at=later(ledger))
    ledger.execute(PRINCIPAL, collected)
    _erase(ledger, sid)
    ledger.clock.advance(timedelta(days=400))  # type: ignore[attr-defined]

    [again] = ledger.execute_many([(PRINCIPAL, collected)])

    assert again.recorded is not None
    assert again.recorded.replayed

"""Erasure leaves no readable value: not through the ledger, not in the bytes of the data dir.

On the embedded default (a data directory with events.db, keys.db and master.key, opened by
`server.runtime.open_runtime`): personal values never appear in any file in clear, UTF-16,
hex or base64, even before erasure; after erasure (by command, or by fulfilling a deletion
request) nothing opens any more, the account no longer resolves, the wrapped key is gone from
the key store's files, and the audit trail stays readable, also after reopening. A crash
between recording `KeyShredded` and destroying the key is completed at the next start-up.
(DESIGN.md "Erasure without breaking immutability"; CONVENTIONS.md §Tests 15.)
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

import pytest
from pydantic import SecretStr
from scenario import (
    PRINCIPAL,
    START,
    collection,
    consent,
    gps_collection,
    key,
    later,
    ref,
    register,
    secret,
)

from ledger import commands as c
from ledger import events as ev
from ledger.application import Ledger
from ledger.clock import FixedClock
from ledger.errors import KeyShreddedError, SubjectNotFound
from ledger.policy import RightKind
from ledger.sealing import Sealer
from ledger.storage import ledger_env
from server.keystore import SqlKeyStore
from server.runtime import KEYS_FILE, Runtime, master_key, open_runtime, storage_config
from server.settings import Settings, load_settings

_EXPECTED_TRAIL = [
    "SubjectRegistered",
    "DataCollected",
    "ConsentGiven",
    "DataCollected",
    "ConsentGiven",
    "DataCollected",
    "DataCorrected",
    "DataErased",
    "KeyShredded",
]


@dataclass
class _Person:
    """One person recorded on the data directory, and every personal value given for them."""

    subject_id: UUID
    account: str
    values: dict[str, str]


def _settings(data_dir: Path) -> Settings:
    return load_settings(environ={}, data_dir=data_dir)


def _open(data_dir: Path, clock: FixedClock) -> Runtime:
    return open_runtime(_settings(data_dir), clock=clock)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def _record_person(ledger: Ledger) -> _Person:
    """A person with an IP, a GPS fix and an IMEI (each after its consent), the IP corrected."""
    values = {
        "account": secret("account"),
        "ip": secret("ip"),
        "gps": secret("gps"),
        "imei": secret("imei"),
        "imei_reference": secret("vault-ref"),
        "corrected_ip": secret("ip-corrected"),
    }
    sid = register(ledger, account_id=SecretStr(values["account"])).subject_id
    assert sid is not None
    steps: list[c._Command] = [
        collection(sid, at=later(ledger), values={"ip": SecretStr(values["ip"])}),
        consent(sid, at=later(ledger)),
        gps_collection(sid, at=later(ledger), values={"fix": SecretStr(values["gps"])}),
        consent(
            sid,
            at=later(ledger),
            purposes=("security_detection",),
            categories=("device_id.imei",),
        ),
        collection(
            sid,
            at=later(ledger),
            category="device_id.imei",
            source="app",
            values={"imei": SecretStr(values["imei"])},
            reference=SecretStr(values["imei_reference"]),
        ),
        c.CorrectData(
            idempotency_key=key("cor"),
            occurred_at=later(ledger),
            subject=ref(sid),
            category="network_log.ip_address",
            values={"ip": SecretStr(values["corrected_ip"])},
        ),
    ]
    for step in steps:
        ledger.execute(PRINCIPAL, step)
    return _Person(sid, values["account"], values)


def _erase(ledger: Ledger, person: _Person, how: str) -> None:
    if how == "command":
        ledger.execute(
            PRINCIPAL,
            c.EraseSubject(
                idempotency_key=key("era"),
                occurred_at=later(ledger),
                subject=ref(person.subject_id),
                ground="no_consent",
            ),
        )
        return
    opened = ledger.execute(
        PRINCIPAL,
        c.OpenRightsRequest(
            idempotency_key=key("req"),
            occurred_at=later(ledger),
            subject=ref(person.subject_id),
            kind=RightKind.DELETION,
            ground="no_consent",
        ),
    )
    ledger.execute(
        PRINCIPAL,
        c.CloseRightsRequest(
            idempotency_key=key("close"),
            occurred_at=later(ledger),
            request_id=opened.aggregate_id,
            outcome=ev.RequestOutcome.FULFILLED,
            reason=f"erased at the request of {person.account}",  # staff text naming them
        ),
    )


# --- raw bytes ----------------------------------------------------------------------------


def _raw_files(directory: Path) -> dict[str, bytes]:
    """Every file under the data directory, by path relative to it."""
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def _encodings(value: str) -> dict[str, bytes]:
    """The forms a leaked value could take in a file: clear, UTF-16, hex, base64 at any offset."""
    raw = value.encode()
    forms = {
        "utf-8": raw,
        "utf-16-le": value.encode("utf-16-le"),
        "utf-16-be": value.encode("utf-16-be"),
        "hex": raw.hex().encode(),
        "HEX": raw.hex().upper().encode(),
    }
    for name, encode in (("base64", base64.b64encode), ("base64url", base64.urlsafe_b64encode)):
        for shift in range(3):
            encoded = encode(b"\0" * shift + raw)
            # Drop the first block (it mixes in the shift) and the last (it mixes in what follows).
            forms[f"{name}+{shift}"] = encoded[4 if shift else 0 : -4]
    return forms


def _assert_no_value_in_files(directory: Path, values: dict[str, str]) -> None:
    files = _raw_files(directory)
    assert {"events.db", KEYS_FILE, "master.key"} <= set(files)
    for label, value in values.items():
        for form, needle in _encodings(value).items():
            for name, data in files.items():
                assert needle not in data, f"{label} ({form}) is readable in {name}"


def _key_files(directory: Path) -> dict[str, bytes]:
    return {n: b for n, b in _raw_files(directory).items() if n.startswith(KEYS_FILE)}


def _sealed(payload: ev.SubjectEnvelope) -> bool:
    return any(
        isinstance(getattr(payload, name, None), str) for name in ("account_id", "guardian")
    ) or bool(getattr(payload, "values", None) or getattr(payload, "reference", None))


def _assert_erased(ledger: Ledger, person: _Person) -> None:
    """Nothing opens, the account does not resolve, and the audit trail reads as before."""
    history = ledger.history(person.subject_id)
    sealed = [p for p in history if _sealed(p)]
    assert len(sealed) == 5  # the registration, three collections and the correction
    for payload in sealed:
        with pytest.raises(KeyShreddedError):
            ledger.reveal(payload)
    with pytest.raises(SubjectNotFound):
        ledger.resolve(c.SubjectRef(namespace="app", account_id=SecretStr(person.account)))

    assert [type(p).__name__ for p in history] == _EXPECTED_TRAIL
    collected = [p for p in history if isinstance(p, ev.DataCollected)]
    assert [p.category for p in collected] == [
        "network_log.ip_address",
        "location.gps",
        "device_id.imei",
    ]
    assert [p.purposes for p in collected] == [
        ("security_detection",),
        ("customer_service",),
        ("security_detection",),
    ]
    assert [tuple(p.fields) for p in collected] == [("ip",), ("fix",), ("imei",)]
    times = [p.occurred_at for p in history]
    assert times == sorted(times)
    assert all(p.recorded_at >= START for p in history)
    assert all(p.subject_id == person.subject_id for p in history)
    state = ledger.subject_state(ref(person.subject_id))
    assert (state.erased, state.key_shredded, state.held) == (True, True, {})


@pytest.mark.parametrize("how", ["command", "deletion_request"])
def test_erasure_leaves_no_readable_value_in_the_ledger_or_the_data_directory(
    data_dir: Path, clock: FixedClock, how: str
) -> None:
    runtime = _open(data_dir, clock)
    try:
        ledger = runtime.ledger
        person = _record_person(ledger)
        history = ledger.history(person.subject_id)
        # Recorded and openable before erasure, or the test proves nothing ...
        opened: dict[str, str] = {}
        for payload in history:
            opened.update(
                {f"{type(payload).__name__}.{k}": v for k, v in ledger.reveal(payload).items()}
            )
        assert sorted(opened.values()) == sorted(person.values.values())
        # ... and the files read here are the ones the sealed values and the key are in.
        sealed_ip = next(p for p in history if isinstance(p, ev.DataCollected)).values["ip"]
        assert any(sealed_ip.encode() in b for b in _raw_files(data_dir).values())
        wrapped = runtime.keystore.wrapped_key(person.subject_id)
        assert wrapped is not None
        lookup = ledger.sealer.master.lookup("app", person.account)
        assert any(wrapped in b for b in _key_files(data_dir).values())
        assert any(lookup in b for b in _key_files(data_dir).values())
        _assert_no_value_in_files(data_dir, person.values)

        _erase(ledger, person, how)

        _assert_erased(ledger, person)
        assert runtime.keystore.wrapped_key(person.subject_id) is None
        for name, data in _key_files(data_dir).items():
            assert wrapped not in data, f"the wrapped key remains in {name}"
            assert lookup not in data, f"the account look-up remains in {name}"
        _assert_no_value_in_files(data_dir, person.values)
    finally:
        runtime.close()

    reopened = _open(data_dir, clock)
    try:
        _assert_erased(reopened.ledger, person)
        assert reopened.keystore.wrapped_key(person.subject_id) is None
    finally:
        reopened.close()
    for name, data in _key_files(data_dir).items():
        assert wrapped not in data, f"the wrapped key remains in {name} after reopening"
    _assert_no_value_in_files(data_dir, person.values)


class _ShredFailsOnce:
    """A key store whose first shred fails, as if the process died before destroying the key."""

    def __init__(self, inner: SqlKeyStore) -> None:
        self._inner = inner
        self.failed = False

    def register(self, lookup: bytes, subject_id: UUID, wrapped_key: bytes) -> UUID:
        return self._inner.register(lookup, subject_id, wrapped_key)

    def find(self, lookup: bytes) -> UUID | None:
        return self._inner.find(lookup)

    def wrapped_key(self, subject_id: UUID) -> bytes | None:
        return self._inner.wrapped_key(subject_id)

    def shred(self, subject_id: UUID) -> bool:
        if not self.failed:
            self.failed = True
            raise OSError("simulated crash before the key was destroyed")
        return self._inner.shred(subject_id)

    def close(self) -> None:
        self._inner.close()


def test_a_crash_between_recording_the_shredding_and_destroying_the_key_is_completed_at_start(
    data_dir: Path, clock: FixedClock, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = _open(data_dir, clock)
    try:
        person = _record_person(runtime.ledger)
        wrapped = runtime.keystore.wrapped_key(person.subject_id)
        assert wrapped is not None
    finally:
        runtime.close()

    settings = _settings(data_dir)
    storage, keys_url = storage_config(settings)
    store = _ShredFailsOnce(SqlKeyStore(keys_url))
    crashing = Ledger(ledger_env(storage), sealer=Sealer(master_key(settings), store), clock=clock)
    try:
        with caplog.at_level(logging.ERROR, logger="ledger.application"):
            _erase(crashing, person, "command")
        assert store.failed
        assert "post-commit action failed" in caplog.text
        assert type(crashing.history(person.subject_id)[-1]).__name__ == "KeyShredded"
        assert store.wrapped_key(person.subject_id) == wrapped  # the key survived the crash
    finally:
        crashing.close()
        store.close()

    restarted = _open(data_dir, clock)  # start-up completes the pending shredding
    try:
        assert restarted.keystore.wrapped_key(person.subject_id) is None
        _assert_erased(restarted.ledger, person)
        assert restarted.ledger.complete_pending_shreds() == 0  # nothing left to do
    finally:
        restarted.close()
    for name, data in _key_files(data_dir).items():
        assert wrapped not in data, f"the wrapped key remains in {name}"
    _assert_no_value_in_files(data_dir, person.values)


def test_retrying_an_erased_persons_registration_does_not_bring_back_the_account_lookup(
    data_dir: Path, clock: FixedClock
) -> None:
    runtime = _open(data_dir, clock)
    try:
        ledger = runtime.ledger
        account = secret("account")
        registration = c.RegisterSubject(
            idempotency_key=key("reg"),
            occurred_at=later(ledger),
            namespace="app",
            account_id=SecretStr(account),
        )
        first = ledger.execute(PRINCIPAL, registration)
        assert first.subject_id is not None
        _erase(ledger, _Person(first.subject_id, account, {}), "command")
        by_account = c.SubjectRef(namespace="app", account_id=SecretStr(account))
        lookup = ledger.sealer.master.lookup("app", account)

        again = ledger.execute(PRINCIPAL, registration)  # a client retrying after a time-out

        assert again.replayed
        assert again.subject_id == first.subject_id
        with pytest.raises(SubjectNotFound):
            ledger.resolve(by_account)
        for name, data in _key_files(data_dir).items():
            assert lookup not in data, f"the erased account's look-up is back in {name}"
    finally:
        runtime.close()

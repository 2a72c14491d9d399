"""Builders for test commands: realistic defaults, unique ids and values from one place."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from pydantic import SecretStr

from ledger import commands as c
from ledger.application import Ledger, Recorded
from ledger.clock import FixedClock
from ledger.errors import Refused
from ledger.policy import SEED_EFFECTIVE_AT, load_seed_policy
from ledger.sealing import MasterKey, Sealer
from ledger.storage import StorageConfig, ledger_env
from server.keystore import SqlKeyStore

START = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
PRINCIPAL = "app-backend"
_counter = itertools.count(1)


def key(prefix: str = "k") -> str:
    """A unique idempotency key."""
    return f"{prefix}-{next(_counter)}-{uuid4().hex[:8]}"


def secret(label: str) -> str:
    """A long, unique personal value: long enough that finding it in raw bytes means something."""
    return f"PII-{label}-{uuid4().hex}{uuid4().hex}"


def ref(subject_id: UUID | None) -> c.SubjectRef:
    assert subject_id is not None
    return c.SubjectRef(subject_id=subject_id)


def register(ledger: Ledger, *, at: datetime | None = None, **fields: Any) -> Recorded:
    fields.setdefault("namespace", "app")
    fields.setdefault("account_id", SecretStr(secret("account")))
    return ledger.execute(
        PRINCIPAL,
        c.RegisterSubject(
            idempotency_key=key("reg"), occurred_at=at or ledger.clock.now(), **fields
        ),
    )


def collection(subject_id: UUID, *, at: datetime, **fields: Any) -> c.RecordCollection:
    fields.setdefault("category", "network_log.ip_address")
    fields.setdefault("source", "server_logs")
    fields.setdefault("purposes", ("security_detection",))
    fields.setdefault("values", {"ip": SecretStr(secret("ip"))})
    return c.RecordCollection(
        idempotency_key=key("col"), occurred_at=at, subject=ref(subject_id), **fields
    )


def usage_collection(subject_id: UUID, *, at: datetime, purpose: str) -> c.RecordCollection:
    """A collection of the person's usage log (non-sensitive) from the SDK, for one purpose."""
    return collection(
        subject_id,
        at=at,
        category="network_log.usage",
        source="sdk",
        purposes=(purpose,),
        values={"page": SecretStr(secret("page"))},
    )


def gps_collection(subject_id: UUID, *, at: datetime, **fields: Any) -> c.RecordCollection:
    fields.setdefault("values", {"fix": SecretStr(secret("gps"))})
    return collection(
        subject_id,
        at=at,
        category="location.gps",
        source="app",
        purposes=("customer_service",),
        **fields,
    )


def consent(subject_id: UUID, *, at: datetime, **fields: Any) -> c.GiveConsent:
    fields.setdefault("purposes", ("customer_service",))
    fields.setdefault("categories", ("location.gps",))
    fields.setdefault("method", "device_permission")
    return c.GiveConsent(
        idempotency_key=key("con"), occurred_at=at, subject=ref(subject_id), **fields
    )


def withdrawal(subject_id: UUID, *, at: datetime, **fields: Any) -> c.WithdrawConsent:
    fields.setdefault("purposes", ("customer_service",))
    return c.WithdrawConsent(
        idempotency_key=key("wd"), occurred_at=at, subject=ref(subject_id), **fields
    )


def use(subject_id: UUID, *, at: datetime, **fields: Any) -> c.RecordUse:
    fields.setdefault("categories", ("network_log.ip_address",))
    fields.setdefault("purpose", "security_detection")
    fields.setdefault("legal_basis", "contract")
    return c.RecordUse(
        idempotency_key=key("use"), occurred_at=at, subject=ref(subject_id), **fields
    )


def share(subject_id: UUID, *, at: datetime, **fields: Any) -> c.RecordShare:
    fields.setdefault("categories", ("network_log.usage",))
    fields.setdefault("recipient", "Example Ads Ltd")
    fields.setdefault("recipient_class", "third_party_partners")
    fields.setdefault("purpose", "advertising")
    fields.setdefault("legal_basis", "consent")
    return c.RecordShare(
        idempotency_key=key("shr"), occurred_at=at, subject=ref(subject_id), **fields
    )


def erasure(
    subject_id: UUID, *, at: datetime, ground: str = "no_consent", categories: tuple[str, ...] = ()
) -> c.EraseSubject:
    """Erase the person on a ground; of these categories only, when named."""
    return c.EraseSubject(
        idempotency_key=key("era"),
        occurred_at=at,
        subject=ref(subject_id),
        ground=ground,
        categories=categories,
    )


def later(ledger: Ledger, seconds: float = 1.0) -> datetime:
    """Move the test clock on and return the new instant."""
    return ledger.clock.advance(timedelta(seconds=seconds))  # type: ignore[attr-defined]


def written(ledger: Ledger) -> int:
    """The log's last position (0 when empty)."""
    return ledger.recorder.max_notification_id() or 0


def refused(ledger: Ledger, command: c._Command) -> Refused:
    """Execute a command that must be refused; check it wrote nothing; return the refusal."""
    before = written(ledger)
    with pytest.raises(Refused) as caught:
        ledger.execute(PRINCIPAL, command)
    assert written(ledger) == before, "a refused command wrote to the log"
    return caught.value


def subject(ledger: Ledger, **fields: Any) -> UUID:
    """A newly registered subject's pseudonym."""
    sid = register(ledger, **fields).subject_id
    assert sid is not None
    return sid


def sqlite_ledger(directory: Path, master: MasterKey) -> Ledger:
    """A ledger on SQLite files in `directory` (events.db, keys.db), its clock at START, the
    seed policy published: another one on the same files reads what the first committed."""
    app = Ledger(
        ledger_env(StorageConfig(backend="sqlite", sqlite_path=directory / "events.db")),
        sealer=Sealer(master, SqlKeyStore(f"sqlite:///{directory / 'keys.db'}")),
        clock=FixedClock(START),
    )
    app.ensure_policy(load_seed_policy(), SEED_EFFECTIVE_AT, "pdl-bootstrap")
    return app

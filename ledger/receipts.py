"""Idempotency receipts: one row per (principal, idempotency key), written with the events.

A receipt is saved by the event store's recorder in the same transaction as the command's
events, in a narrow table keyed by a UUID5 of the principal and key: a second use of the key
collides there, atomically with the write. It records the keyed digest of the command, so a
retry with the same payload answers with the original result (including its log position)
and one with a different payload is refused.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from uuid import UUID

FORGOTTEN = ""
"""The digest of a receipt about a person who was erased: the keyed digest of a command covers
its personal values, which a guess could be checked against as long as the master key lasts,
so it goes with the person's key. A retry of such a key answers as a replay whatever it
carries, so the answer tells nothing of the values."""


def receipt_id(principal: str, idempotency_key: str) -> str:
    """The id of the receipt for a principal's idempotency key (32 hex digits)."""
    return hashlib.blake2b(
        f"{principal}\x00{idempotency_key}".encode(), digest_size=16, person=b"pdl-receipt"
    ).hexdigest()


@dataclass(slots=True)
class Receipt:
    """That a principal's idempotency key was used, for which command, and its answer; the
    recorder fills in the log position of the answering event as it writes."""

    receipt_id: str
    digest: str
    aggregate_id: UUID
    version: int
    subject_id: UUID | None
    event_type: str
    position: int = 0

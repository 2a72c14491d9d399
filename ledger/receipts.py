"""Idempotency receipts: one row per (principal, idempotency key), written with the events.

A receipt is saved by the event store's recorder in the same transaction as the command's
events, in a narrow table keyed by a UUID5 of the principal and key: a second use of the key
collides there, atomically with the write. It records the keyed digest of the command, so a
retry with the same payload answers with the original result (including its log position)
and one with a different payload is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID, uuid5

_NAMESPACE = UUID("6d1f4f0e-2a43-5b8e-9c61-6a0f5d3c2b7a")


def receipt_id(principal: str, idempotency_key: str) -> UUID:
    """The id of the receipt for a principal's idempotency key."""
    return uuid5(_NAMESPACE, f"{principal}\x00{idempotency_key}")


@dataclass(frozen=True, slots=True)
class Receipt:
    """That a principal's idempotency key was used, for which command, and its answer."""

    receipt_id: UUID
    digest: str
    aggregate_id: UUID
    version: int
    subject_id: UUID | None
    event_type: str
    position: int = 0

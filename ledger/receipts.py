"""Idempotency receipts: one aggregate per (principal, idempotency key).

The receipt's id is a UUID5 of the principal and key, and it is saved in the same transaction
as the command's events, so a second use of the key collides in the event store itself.
"""

from __future__ import annotations

from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event
from eventsourcing.utils import get_topic

from ledger import events as ev

_NAMESPACE = UUID("6d1f4f0e-2a43-5b8e-9c61-6a0f5d3c2b7a")


def receipt_id(principal: str, idempotency_key: str) -> UUID:
    """The id of the receipt for a principal's idempotency key."""
    return uuid5(_NAMESPACE, f"{principal}\x00{idempotency_key}")


class Receipt(Aggregate):
    """The record that a principal's idempotency key was used, and for what."""

    accepted: ev.CommandAccepted

    @staticmethod
    def create_id(payload: ev.CommandAccepted) -> UUID:
        return receipt_id(payload.principal, payload.idempotency_key)

    @event("CommandAccepted")
    def __init__(self, payload: ev.CommandAccepted) -> None:
        self.accepted = payload


_RECEIPT_TOPIC = get_topic(Receipt)


def receipt_event(payload: ev.CommandAccepted) -> Aggregate.Event:
    """The receipt's one event, made directly: a receipt is written once and never loaded to
    be changed, so the aggregate object itself is not needed."""
    return Receipt.CommandAccepted(  # type: ignore[attr-defined,no-any-return]
        originator_id=receipt_id(payload.principal, payload.idempotency_key),
        originator_version=Receipt.INITIAL_VERSION,
        timestamp=payload.recorded_at,
        originator_topic=_RECEIPT_TOPIC,
        payload=payload,
    )

"""The subject aggregate: one person, whose consents and flags decide what may be recorded.

Public methods check the rules of the policy in force and then trigger an event; the private
`@event` methods only fold the payload into the state, so replay re-runs nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from ledger import events as ev
from ledger import rules
from ledger.errors import RefusalReason as R
from ledger.errors import Refused
from ledger.policy import Policy
from ledger.rules import refuse_if
from ledger.subject_state import SubjectState


class Subject(Aggregate):
    """A data subject, known to the ledger only by a random pseudonym."""

    state: SubjectState

    @staticmethod
    def create_id(payload: ev.SubjectRegistered) -> UUID:
        return payload.subject_id

    @classmethod
    def register(cls, policy: Policy, payload: ev.SubjectRegistered) -> Subject:
        refuse_if(
            rules.check_registration(
                policy,
                occurred_at=payload.occurred_at,
                birth_year=payload.birth_year,
                minor=payload.minor,
                has_guardian=payload.guardian is not None
                or payload.guardian_subject_id is not None,
                region=payload.storage_region,
                cross_border_basis=payload.cross_border_basis,
            )
        )
        return cls(payload)

    @event("SubjectRegistered")
    def __init__(self, payload: ev.SubjectRegistered) -> None:
        self.state = SubjectState.registered(payload)

    # --- commands ------------------------------------------------------------------------------

    def check_open(self) -> None:
        """Refuse early (before sealing anything) when the subject is closed."""
        refuse_if(rules.check_open(self.state))

    def collect(
        self, policy: Policy, payload: ev.DataCollected, agreed: rules.Agreed | None = None
    ) -> None:
        refuse_if(
            self._check_open_at(payload)
            or rules.check_collection(policy, self.state, payload, agreed)
        )
        self._emit("DataCollected", payload)

    def use(self, policy: Policy, payload: ev.DataUsed, agreed: rules.Agreed | None = None) -> None:
        refuse_if(
            self._check_open_at(payload) or rules.check_use(policy, self.state, payload, agreed)
        )
        self._emit("DataUsed", payload)

    def share(
        self,
        policy: Policy,
        payload: ev.DataShared,
        *,
        sale: bool,
        agreed: rules.Agreed | None = None,
    ) -> None:
        refuse_if(
            self._check_open_at(payload)
            or rules.check_share(policy, self.state, payload, sale=sale, agreed=agreed)
        )
        self._emit("DataShared", payload)

    def give_consent(self, policy: Policy, payload: ev.ConsentGiven) -> None:
        refuse_if(
            self._check_open_at(payload) or rules.check_consent_given(policy, self.state, payload)
        )
        self._emit("ConsentGiven", payload)

    def withdraw_consent(self, policy: Policy, payload: ev.ConsentWithdrawn) -> None:
        refuse_if(self._check_open_at(payload) or rules.check_consent_withdrawn(policy, payload))
        self._emit("ConsentWithdrawn", payload)

    def correct(self, policy: Policy, payload: ev.DataCorrected) -> None:
        refuse_if(
            self._check_open_at(payload) or rules.check_correction(policy, self.state, payload)
        )
        self._emit("DataCorrected", payload)

    def erase(self, policy: Policy, erased: ev.DataErased, shredded: ev.KeyShredded | None) -> None:
        """Erase (a closing event, allowed after cancellation); a full erasure shreds the key."""
        refuse_if(
            rules.check_after_registration(self.state, erased.occurred_at)
            or rules.check_erasure(policy, self.state, erased)
        )
        self._erased(erased)
        if shredded is not None:
            self._key_shredded(shredded)

    def cancel(
        self,
        policy: Policy,
        payload: ev.AccountCancelled,
        erased: ev.DataErased,
        shredded: ev.KeyShredded,
    ) -> None:
        """Cancel the account and erase its data (§6.3(5), §6.4): all rules first, then events."""
        refuse_if(self._check_open_at(payload) or rules.check_erasure(policy, self.state, erased))
        self._cancelled(payload)
        self._erased(erased)
        self._key_shredded(shredded)

    def record_cancelled(self, payload: ev.AccountCancelled) -> None:
        """The account of a person already erased is cancelled (a cancellation request
        fulfilled after the erasure): the cancellation alone, a closing event."""
        state = self.state
        if state.cancelled or not (state.erased or state.key_shredded):
            raise Refused(R.ACCOUNT_CANCELLED, "§6.4", "only an erased, open account is closed so")
        refuse_if(rules.check_after_registration(state, payload.occurred_at))
        self._cancelled(payload)

    def _check_open_at(self, payload: ev.SubjectEnvelope) -> rules.Refusal | None:
        """The subject is open, and the event is not dated before its registration."""
        return rules.check_open(self.state) or rules.check_after_registration(
            self.state, payload.occurred_at
        )

    def record_notified(self, payload: ev.PolicyNotified) -> None:
        refuse_if(self._check_open_at(payload))
        self._notified(payload)

    def acknowledge_policy(self, payload: ev.PolicyAcknowledged) -> None:
        refuse_if(self._check_open_at(payload))
        self._acknowledged(payload)

    # --- events --------------------------------------------------------------------------------

    def _emit(self, name: str, payload: ev.SubjectEnvelope) -> None:
        """Trigger the event the `@event` method below defines, as the library's
        `trigger_event` and `mutate` do, but folding the payload in directly: the version
        and time checks cannot fail for the next event made here, and the decorator's
        argument matching costs more than the fold (this is the write path's hottest call;
        replay still goes through the decorated method, and `_FOLDS` is what each one does)."""
        event_class = getattr(type(self), name)
        version = self.version + 1
        event = event_class(
            originator_id=self.id,
            originator_version=version,
            timestamp=event_class.create_timestamp(),
            payload=payload,
        )
        _FOLDS[name](self.state, payload)
        self.version = version
        self.modified_on = event.timestamp
        self.pending_events.append(event)

    @event("DataCollected")
    def _collected(self, payload: ev.DataCollected) -> None:
        self.state.on_collected(payload)

    @event("DataUsed")
    def _used(self, payload: ev.DataUsed) -> None:
        self.state.on_used(payload)

    @event("DataShared")
    def _shared(self, payload: ev.DataShared) -> None:
        self.state.on_shared(payload)

    @event("ConsentGiven")
    def _consent_given(self, payload: ev.ConsentGiven) -> None:
        self.state.on_consent_given(payload)

    @event("ConsentWithdrawn")
    def _consent_withdrawn(self, payload: ev.ConsentWithdrawn) -> None:
        self.state.on_consent_withdrawn(payload)

    @event("DataCorrected")
    def _corrected(self, payload: ev.DataCorrected) -> None:
        self.state.on_corrected(payload)

    @event("DataErased")
    def _erased(self, payload: ev.DataErased) -> None:
        self.state.on_erased(payload)

    @event("AccountCancelled")
    def _cancelled(self, payload: ev.AccountCancelled) -> None:
        self.state.on_cancelled(payload)

    @event("KeyShredded")
    def _key_shredded(self, payload: ev.KeyShredded) -> None:
        self.state.on_key_shredded(payload)

    @event("PolicyNotified")
    def _notified(self, payload: ev.PolicyNotified) -> None:
        self.state.on_notified(payload)

    @event("PolicyAcknowledged")
    def _acknowledged(self, payload: ev.PolicyAcknowledged) -> None:
        self.state.on_acknowledged(payload)


_FOLDS: dict[str, Callable[[SubjectState, Any], None]] = {
    "DataCollected": SubjectState.on_collected,
    "DataUsed": SubjectState.on_used,
    "DataShared": SubjectState.on_shared,
    "ConsentGiven": SubjectState.on_consent_given,
    "ConsentWithdrawn": SubjectState.on_consent_withdrawn,
    "DataCorrected": SubjectState.on_corrected,
}
"""The fold of each event `_emit` triggers: the body of its `@event` method above."""

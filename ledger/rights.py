"""The rights-request aggregate (§6): open with a due instant, extend or pause, then close.

The lifecycle rules are pure functions beside it; the deadline arithmetic is in `deadlines`.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from uuid import UUID

from eventsourcing.domain import Aggregate, event
from pydantic import BaseModel, ConfigDict, Field

from ledger import events as ev
from ledger.errors import RefusalReason as R
from ledger.policy import ResponseDeadline, RightKind
from ledger.rules import Refusal, refuse_if


class RequestStatus(StrEnum):
    """Where a request stands."""

    OPEN = "open"
    PAUSED = "paused"
    CLOSED = "closed"


class RequestState(BaseModel):
    """A rights request's state."""

    model_config = ConfigDict(extra="forbid")

    request_id: UUID = Field(description="Id of the request.")
    subject_id: UUID = Field(description="The person who asked.")
    kind: RightKind = Field(description="The right exercised.")
    ground: str | None = Field(description="Deletion ground.")
    purposes: tuple[str, ...] = Field(description="Purposes a withdrawal covers.")
    categories: tuple[str, ...] = Field(description="Categories a withdrawal or correction covers.")
    received_at: datetime = Field(description="When it was received.")
    due_at: datetime = Field(description="When it must be answered.")
    deadline_kind: str = Field(description="'calendar' or 'working'.")
    status: RequestStatus = Field(default=RequestStatus.OPEN, description="Where it stands.")
    paused_at: datetime | None = Field(default=None, description="When it was paused.")
    extended_days: int = Field(default=0, description="Days of extension so far.")
    outcome: ev.RequestOutcome | None = Field(default=None, description="How it closed.")
    closed_at: datetime | None = Field(default=None, description="When it closed.")
    late: bool = Field(default=False, description="Closed after its due instant.")
    last_at: datetime | None = Field(
        default=None, description="When its latest event happened (None: when it was opened)."
    )
    withdrew_at_receipt: bool = Field(
        default=False, description="A withdrawal request that withdrew consent when opened."
    )
    deadline: ResponseDeadline | None = Field(
        default=None, description="The deadline's terms at receipt (None on older requests)."
    )
    latest_due_at: datetime | None = Field(
        default=None, description="The latest it may ever be due (None on older requests)."
    )


def check_in_order(state: RequestState, at: datetime) -> Refusal | None:
    """A request's events follow one another: none is dated before its latest one, nor
    before its receipt (§6.4, whose deadline runs from receipt)."""
    if at < max(state.received_at, state.last_at or state.received_at):
        return Refusal(
            R.REQUEST_OUT_OF_ORDER,
            "§6.4",
            "dated before the request's receipt or its latest event",
        )
    return None


def check_not_overdue(
    state: RequestState, at: datetime, latest_due: datetime | None = None
) -> Refusal | None:
    """A request is extended or paused before it falls due: once its due instant has passed
    it can only be closed, and closing it then records it as late (§6.4: every delay is an
    extension, given with its reason, so a delay recorded afterwards would hide the lateness).
    A paused request's clock is stopped, so it falls due only past `latest_due`, the latest any
    resumption could leave it due."""
    due = state.due_at
    if state.status is RequestStatus.PAUSED and latest_due is not None:
        due = latest_due
    if at > due:
        return Refusal(
            R.REQUEST_OVERDUE,
            "§6.4",
            "the request fell due before this; it can only be closed, and is then late",
        )
    return None


def check_extend(
    deadline: ResponseDeadline,
    state: RequestState,
    days: int,
    due_at: datetime,
    latest_due: datetime,
) -> Refusal | None:
    """An open request may be extended, within the total extension of the deadline's terms
    at receipt (§6.4); the time it spent paused counts against it, so `due_at` (the due
    instant once extended) may not pass `latest_due` (`deadlines.latest_due`)."""
    if state.status is RequestStatus.CLOSED:
        return Refusal(R.REQUEST_CLOSED, "§6", "the request is closed")
    if state.extended_days + days > deadline.max_extension_days or due_at > latest_due:
        return Refusal(
            R.EXTENSION_TOO_LONG,
            deadline.clause,
            f"at most {deadline.max_extension_days} days of extension and pause in total",
        )
    return None


def check_pause(state: RequestState) -> Refusal | None:
    """Only an open, running request can be paused."""
    if state.status is RequestStatus.CLOSED:
        return Refusal(R.REQUEST_CLOSED, "§6", "the request is closed")
    if state.status is RequestStatus.PAUSED:
        return Refusal(R.REQUEST_PAUSED, "§6", "the request is already paused")
    return None


def check_resume(state: RequestState) -> Refusal | None:
    """Only a paused request can be resumed."""
    if state.status is not RequestStatus.PAUSED:
        return Refusal(R.REQUEST_NOT_PAUSED, "§6", "the request is not paused")
    return None


def check_close(state: RequestState) -> Refusal | None:
    """A request closes once, and not while paused (resume it first)."""
    if state.status is RequestStatus.CLOSED:
        return Refusal(R.REQUEST_CLOSED, "§6", "the request is already closed")
    if state.status is RequestStatus.PAUSED:
        return Refusal(R.REQUEST_PAUSED, "§6", "resume the request before closing it")
    return None


class RightsRequest(Aggregate):
    """A person's request to exercise a right."""

    state: RequestState

    @staticmethod
    def create_id(payload: ev.RightsRequestOpened) -> UUID:
        return payload.request_id

    @event("RightsRequestOpened")
    def __init__(self, payload: ev.RightsRequestOpened) -> None:
        self.state = RequestState(
            request_id=payload.request_id,
            subject_id=payload.subject_id,
            kind=payload.kind,
            ground=payload.ground,
            purposes=payload.purposes,
            categories=payload.categories,
            received_at=payload.received_at,
            due_at=payload.due_at,
            deadline_kind=payload.deadline_kind,
            last_at=payload.occurred_at,
            withdrew_at_receipt=payload.withdrew_at_receipt,
            deadline=payload.deadline,
            latest_due_at=payload.latest_due_at,
        )

    def extend(
        self,
        deadline: ResponseDeadline,
        payload: ev.RightsRequestExtended,
        latest_due: datetime,
        acted_at: datetime,
    ) -> None:
        """Extend under the deadline's terms at receipt. `acted_at` is when it counts as
        done for lateness: its occurred-at, or when it was recorded if much later
        (`rights_handlers.acted_at`)."""
        refuse_if(
            check_extend(deadline, self.state, payload.days, payload.due_at, latest_due)
            or check_in_order(self.state, payload.occurred_at)
            or check_not_overdue(self.state, acted_at, latest_due)
        )
        self._extended(payload)

    def pause(self, payload: ev.RightsRequestPaused, acted_at: datetime) -> None:
        refuse_if(
            check_pause(self.state)
            or check_in_order(self.state, payload.occurred_at)
            or check_not_overdue(self.state, acted_at)
        )
        self._paused(payload)

    def resume(self, payload: ev.RightsRequestResumed) -> None:
        refuse_if(check_resume(self.state) or check_in_order(self.state, payload.occurred_at))
        self._resumed(payload)

    def close(self, payload: ev.RightsRequestClosed) -> None:
        refuse_if(check_close(self.state) or check_in_order(self.state, payload.occurred_at))
        self._closed(payload)

    @event("RightsRequestExtended")
    def _extended(self, payload: ev.RightsRequestExtended) -> None:
        self.state.extended_days += payload.days
        self.state.due_at = payload.due_at
        self.state.last_at = payload.occurred_at

    @event("RightsRequestPaused")
    def _paused(self, payload: ev.RightsRequestPaused) -> None:
        self.state.status = RequestStatus.PAUSED
        self.state.paused_at = payload.occurred_at
        self.state.last_at = payload.occurred_at

    @event("RightsRequestResumed")
    def _resumed(self, payload: ev.RightsRequestResumed) -> None:
        self.state.status = RequestStatus.OPEN
        self.state.paused_at = None
        self.state.due_at = payload.due_at
        self.state.last_at = payload.occurred_at

    @event("RightsRequestClosed")
    def _closed(self, payload: ev.RightsRequestClosed) -> None:
        self.state.status = RequestStatus.CLOSED
        self.state.outcome = payload.outcome
        self.state.closed_at = payload.occurred_at
        self.state.late = payload.late
        self.state.last_at = payload.occurred_at

"""Handlers of the rights-request commands (§6): open with a due instant, extend, pause, resume,
and close; fulfilling a request carries out the right on the subject in the same save."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

from ledger import commands as cmd
from ledger import deadlines
from ledger import events as ev
from ledger.errors import InvalidCommand, KeyShreddedError, Refused
from ledger.handlers import (
    Context,
    Outcome,
    _cancel,
    _correction,
    _envelope,
    _erase,
    _withdrawal,
)
from ledger.policy import Policy, ResponseDeadline, RightKind
from ledger.rights import RequestState, RightsRequest, check_close, check_in_order
from ledger.rules import (
    FUTURE_TOLERANCE,
    check_after_registration,
    check_open,
    check_request_opened,
    refuse_if,
)
from ledger.subject import Subject


def open_request(ctx: Context, c: cmd.OpenRightsRequest) -> Outcome:
    """Open a request with its due instant. A consent withdrawal takes effect at once (§6.5):
    its `ConsentWithdrawn` is recorded in the same save, dated at receipt, and closing the
    request later only answers it (a refused close does not bring the consent back; the
    person may give it again)."""
    version, policy = ctx.policy_at(c.occurred_at)
    subject = ctx.subject(c.subject)
    refuse_if(check_open(ctx.fresh_state(c.subject)))  # another writer may have closed them
    received = c.received_at or c.occurred_at
    if received > c.occurred_at:
        raise InvalidCommand("received_at", "a request cannot be received after it is opened")
    if c.kind is RightKind.CORRECTION and len(c.categories) > 1:
        # one close corrects one category: a request naming more could close fulfilled with
        # some of them never corrected
        raise InvalidCommand("categories", "a correction request names one category: open one each")
    refuse_if(check_after_registration(subject.state, received))
    deadline = _terms_at(ctx, received, policy)
    payload = ev.RightsRequestOpened(
        **_envelope(ctx, c, version),
        subject_id=subject.id,
        request_id=uuid4(),
        kind=c.kind,
        ground=c.ground,
        purposes=c.purposes,
        categories=c.categories,
        received_at=received,
        due_at=deadlines.due_at(received, deadline),
        deadline_kind=deadline.kind,
        deadline_clause=deadline.clause,
        withdrew_at_receipt=c.kind is RightKind.CONSENT_WITHDRAWAL,
        latest_due_at=deadlines.latest_due(received, deadline),
        deadline=deadline,
    )
    refusal = check_request_opened(policy, payload)
    refuse_if(refusal)
    request = RightsRequest(payload)
    out = Outcome([request], request, subject.id)
    if payload.withdrew_at_receipt:
        withdrawal = _withdrawal(ctx, c, version, subject.id, request)
        subject.withdraw_consent(policy, withdrawal.model_copy(update={"occurred_at": received}))
        out.aggregates.append(subject)
    return out


def _terms_at(ctx: Context, received: datetime, fallback: Policy) -> ResponseDeadline:
    """The deadline's terms of a request received at `received`: the policy in force then
    set them (§6.4 counts from receipt); `fallback`'s when no version was in force yet."""
    try:
        return ctx.policy_at(received)[1].response_deadline
    except Refused:
        return fallback.response_deadline


def _terms(ctx: Context, s: RequestState) -> tuple[ResponseDeadline, datetime]:
    """A request's deadline terms and the latest it may ever be due, as recorded at its
    opening; for a request opened before they were recorded, those of the version in force
    at its receipt."""
    deadline = s.deadline
    if deadline is None:
        deadline = _terms_at(ctx, s.received_at, ctx.policy_at(s.last_at or s.received_at)[1])
    latest = s.latest_due_at or deadlines.latest_due(s.received_at, deadline)
    return deadline, latest


def acted_at(ctx: Context, c: cmd._Command) -> datetime:
    """When a step on a request counts as taken for its lateness (§6.4): its occurred-at, or,
    when it is recorded more than the clocks' skew later, the recording instant less that
    skew. So a delay or a close cannot be dated back before the due instant once the request
    is overdue by the ledger's clock."""
    return max(c.occurred_at, ctx.now - FUTURE_TOLERANCE)


def extend_request(ctx: Context, c: cmd.ExtendRightsRequest) -> Outcome:
    version, _ = ctx.policy_at(c.occurred_at)
    request = ctx.request(c.request_id)
    s = request.state
    deadline, latest = _terms(ctx, s)
    out = Outcome([request], request, s.subject_id)
    request.extend(
        deadline,
        ev.RightsRequestExtended(
            **_envelope(ctx, c, version),
            subject_id=s.subject_id,
            request_id=request.id,
            days=c.days,
            sealed_reason=_sealed_reason(ctx, s.subject_id, c.reason, out),
            due_at=deadlines.extend(s.due_at, c.days, deadline),
        ),
        latest,
        acted_at(ctx, c),
    )
    return out


def pause_request(ctx: Context, c: cmd.PauseRightsRequest) -> Outcome:
    version, _ = ctx.policy_at(c.occurred_at)
    request = ctx.request(c.request_id)
    out = Outcome([request], request, request.state.subject_id)
    request.pause(
        ev.RightsRequestPaused(
            **_envelope(ctx, c, version),
            subject_id=request.state.subject_id,
            request_id=request.id,
            sealed_reason=_sealed_reason(ctx, request.state.subject_id, c.reason, out),
        ),
        acted_at(ctx, c),
    )
    return out


def resume_request(ctx: Context, c: cmd.ResumeRightsRequest) -> Outcome:
    """Resume a paused request: its due instant moves by the time it was paused (in working
    days for a working-day deadline), but never past the latest its terms allow (§6.4: a
    pause is a delay, and every delay counts as extension)."""
    version, _ = ctx.policy_at(c.occurred_at)
    request = ctx.request(c.request_id)
    s = request.state
    deadline, latest = _terms(ctx, s)
    paused_at = s.paused_at or c.occurred_at
    moved = deadlines.resume(s.due_at, paused_at, max(paused_at, c.occurred_at), deadline)
    request.resume(
        ev.RightsRequestResumed(
            **_envelope(ctx, c, version),
            subject_id=s.subject_id,
            request_id=request.id,
            due_at=max(s.due_at, min(moved, latest)),
        )
    )
    return Outcome([request], request, s.subject_id)


def close_request(ctx: Context, c: cmd.CloseRightsRequest) -> Outcome:
    """Close a request; fulfilling it carries out what the right asks, in the same save."""
    version, policy = ctx.policy_at(c.occurred_at)
    request = ctx.request(c.request_id)
    s = request.state
    refuse_if(check_close(s) or check_in_order(s, c.occurred_at))
    out = Outcome([request], request, s.subject_id)
    if c.outcome is ev.RequestOutcome.FULFILLED:
        subject = ctx.subject(cmd.SubjectRef(subject_id=s.subject_id))
        _fulfil(ctx, c, version, policy, request, subject, out)
    request.close(
        ev.RightsRequestClosed(
            **_envelope(ctx, c, version),
            subject_id=s.subject_id,
            request_id=request.id,
            outcome=c.outcome,
            sealed_reason=_sealed_reason(ctx, s.subject_id, c.reason, out),
            late=acted_at(ctx, c) > s.due_at,
        )
    )
    return out


def _sealed_reason(ctx: Context, subject_id: UUID, reason: str, out: Outcome) -> str | None:
    """A staff member's reason, sealed with the person's data key; None once that key is
    shredded (a request of an erased person is still closed, without its free text), and then
    the receipt keeps no digest of it either. The key store is asked, not this process's
    cache: another writer may have shredded the key."""
    sealer = ctx.sealer
    try:
        sealer.check_held(subject_id)
        return sealer.seal(subject_id, "reason", reason)
    except KeyShreddedError:
        out.forget_digest = True
        return None


def _fulfil(
    ctx: Context,
    c: cmd.CloseRightsRequest,
    version: str,
    policy: Policy,
    request: RightsRequest,
    subject: Subject,
    out: Outcome,
) -> None:
    kind = request.state.kind
    state = subject.state
    done = state.erased or state.key_shredded
    if c.correction is not None and kind is not RightKind.CORRECTION:
        raise InvalidCommand("correction", "only a correction request is fulfilled with values")
    categories = request.state.categories
    if kind is RightKind.DELETION and not done:
        ground = request.state.ground or "no_consent"
        if ground == _CANCELLATION_GROUND and not categories:  # §6.3(5): the account goes too
            _cancel(ctx, c, version, policy, subject, request.id, out)
        else:  # the categories it names, or everything
            _erase(ctx, c, version, policy, subject, ground, categories, request.id, out)
    elif kind is RightKind.ACCOUNT_CANCELLATION and not state.cancelled:
        if done:  # erased since the request was opened: what is left to record is the close
            subject.record_cancelled(
                ev.AccountCancelled(
                    **_envelope(ctx, c, version), subject_id=subject.id, request_id=request.id
                )
            )
        else:
            _cancel(ctx, c, version, policy, subject, request.id, out)
    elif kind is RightKind.CONSENT_WITHDRAWAL and not request.state.withdrew_at_receipt:
        subject.withdraw_consent(policy, _withdrawal(ctx, c, version, subject.id, request))
    elif kind is RightKind.CORRECTION:
        if c.correction is None:
            raise InvalidCommand("correction", "fulfilling a correction request needs its values")
        scope = request.state.categories
        if scope and c.correction.category not in scope:
            raise InvalidCommand("correction.category", "outside the categories of the request")
        subject.check_open()
        subject.correct(
            policy,
            _correction(
                ctx, c, version, subject.id, c.correction.category, c.correction.values, request.id
            ),
        )
    else:
        return
    out.aggregates.append(subject)


_CANCELLATION_GROUND = "account_cancelled"
"""The deletion ground of a cancelled account (§6.3(5)): fulfilling a deletion on it cancels
the account as well as erasing it, as cancelling does."""


REQUEST_HANDLERS: dict[type[cmd._Command], Callable[[Context, Any], Outcome]] = {
    cmd.OpenRightsRequest: open_request,
    cmd.ExtendRightsRequest: extend_request,
    cmd.PauseRightsRequest: pause_request,
    cmd.ResumeRightsRequest: resume_request,
    cmd.CloseRightsRequest: close_request,
}

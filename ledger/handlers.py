"""Command handlers: turn one validated command into events on the aggregates it concerns.

A handler seals personal values, builds the event payloads with the common envelope, and calls
the aggregate's command method, which checks the rules before triggering anything. It returns
what changed; the application saves it, with the idempotency receipt, in one transaction.
Payloads are validated as they are built (pydantic's validator is faster here than
`model_construct`, measured with `bench/record.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID, uuid4

from eventsourcing.domain import Aggregate

from ledger import commands as cmd
from ledger import events as ev
from ledger.errors import RefusalReason as R
from ledger.errors import Refused, SubjectNotFound
from ledger.policy import Policy
from ledger.policy_book import PolicyBook
from ledger.policy_diff import diff_policies
from ledger.rights import RightsRequest
from ledger.rules import Agreed, check_registration, guardian_not_registered, refuse_if
from ledger.sealing import Sealer
from ledger.subject import Subject
from ledger.subject_state import SubjectState, minor_at

_NOT_REACHED = (
    "Exports and reports delivered before the erasure, copies held by recipients of earlier "
    "disclosures, and backups of the key store taken before it are outside the ledger's reach; "
    "on PostgreSQL the destroyed key's bytes remain in dead rows and write-ahead log until "
    "vacuum and log recycling."
)


@dataclass
class Outcome:
    """What a handler changed: the aggregates, the event that answers the caller, and
    what must happen once the events are durable (shredding a key)."""

    aggregates: list[Aggregate]
    answer: Aggregate
    subject_id: UUID | None
    after_commit: list[Callable[[], None]] = field(default_factory=list)
    forget_digest: bool = False
    """The person's key is gone: the receipt keeps no digest of the command, whose free text
    (a request's reason) a retry could otherwise check a guess against."""


class Context(Protocol):
    """What a handler may ask of the application while building events."""

    principal: str
    now: datetime
    sealer: Sealer

    def policy_at(self, instant: datetime) -> tuple[str, Policy]: ...

    def subject(self, ref: cmd.SubjectRef) -> Subject: ...

    def fresh_state(self, ref: cmd.SubjectRef) -> SubjectState:
        """A person's state as the store has it now (another writer may have moved on since
        this process cached it), for a decision on a person this command does not change."""
        ...

    def new_subject_id(self, namespace: str, account_id: str) -> UUID: ...

    def request(self, request_id: UUID) -> RightsRequest: ...

    def book(self) -> PolicyBook: ...

    def forget_receipts(self, subject_id: UUID) -> None: ...


def _envelope(ctx: Context, c: cmd._Command, version: str) -> dict[str, Any]:
    return {
        "occurred_at": c.occurred_at,
        "recorded_at": ctx.now,
        "principal": ctx.principal,
        "policy_version": version,
        "idempotency_key": c.idempotency_key,
    }


def register(ctx: Context, c: cmd.RegisterSubject) -> Outcome:
    version, policy = ctx.policy_at(c.occurred_at)
    guardian = None
    if c.guardian_subject_id is not None:
        try:
            guardian = ctx.fresh_state(cmd.SubjectRef(subject_id=c.guardian_subject_id))
        except SubjectNotFound:
            refuse_if(guardian_not_registered(policy))
    refusal = check_registration(
        policy,
        occurred_at=c.occurred_at,
        birth_year=c.birth_year,
        minor=c.minor,
        has_guardian=c.guardian_account_id is not None or c.guardian_subject_id is not None,
        region=c.storage_region or policy.storage.region,
        cross_border_basis=c.cross_border_basis,
        guardian=guardian,
    )
    refuse_if(refusal)  # before the key store learns of the account
    subject_id = ctx.new_subject_id(c.namespace, c.account_id.get_secret_value())
    seal = ctx.sealer.seal
    payload = ev.SubjectRegistered(
        **_envelope(ctx, c, version),
        subject_id=subject_id,
        namespace=c.namespace,
        account_id=seal(subject_id, "account_id", c.account_id.get_secret_value()),
        birth_year=c.birth_year,
        minor=minor_at(c.birth_year, c.minor, c.occurred_at, policy.minors.age_of_majority),
        guardian=(
            seal(subject_id, "guardian", c.guardian_account_id.get_secret_value())
            if c.guardian_account_id is not None
            else None
        ),
        guardian_subject_id=c.guardian_subject_id,
        jurisdiction=c.jurisdiction,
        storage_region=c.storage_region or policy.storage.region,
        cross_border_basis=c.cross_border_basis,
    )
    subject = Subject.register(policy, payload)
    return Outcome([subject], subject, subject_id)


def collect(ctx: Context, c: cmd.RecordCollection) -> Outcome:
    version, policy = ctx.policy_at(c.occurred_at)
    subject = ctx.subject(c.subject)
    subject.check_open()
    sid = subject.id
    seal, category = ctx.sealer.seal, c.category
    values = {k: seal(sid, k, v.get_secret_value(), category=category) for k, v in c.values.items()}
    payload = ev.DataCollected(
        **_envelope(ctx, c, version),
        subject_id=sid,
        category=c.category,
        fields=tuple(dict.fromkeys((*c.values, *c.fields))),
        source=c.source,
        mode=c.mode,
        purposes=c.purposes,
        storage_region=c.storage_region or policy.storage.region,
        cross_border_basis=c.cross_border_basis,
        values=values,
        reference=(
            seal(sid, "reference", c.reference.get_secret_value(), category=category)
            if c.reference is not None
            else None
        ),
    )
    subject.collect(policy, payload, _agreement(ctx, subject))
    return Outcome([subject], subject, sid)


def use(ctx: Context, c: cmd.RecordUse) -> Outcome:
    version, policy = ctx.policy_at(c.occurred_at)
    subject = ctx.subject(c.subject)
    payload = ev.DataUsed(
        **_envelope(ctx, c, version),
        subject_id=subject.id,
        categories=c.categories,
        purpose=c.purpose,
        legal_basis=c.legal_basis,
    )
    subject.use(policy, payload, _agreement(ctx, subject))
    return Outcome([subject], subject, subject.id)


def share(ctx: Context, c: cmd.RecordShare) -> Outcome:
    version, policy = ctx.policy_at(c.occurred_at)
    subject = ctx.subject(c.subject)
    payload = ev.DataShared(
        **_envelope(ctx, c, version),
        subject_id=subject.id,
        categories=c.categories,
        recipient=c.recipient,
        recipient_class=c.recipient_class,
        purpose=c.purpose,
        legal_basis=c.legal_basis,
        legal_ground=c.legal_ground,
        destination_region=c.destination_region or policy.storage.region,
        cross_border_basis=c.cross_border_basis,
        anonymised=c.anonymised,
    )
    subject.share(policy, payload, sale=c.sale, agreed=_agreement(ctx, subject))
    return Outcome([subject], subject, subject.id)


def _agreement(ctx: Context, subject: Subject) -> Agreed:
    """How the rules find, only if they need it, the policy the person agreed to by
    registering: the one in force at their registration, or None when none was (a
    registration dated before the first version)."""

    def agreed() -> Policy | None:
        try:
            return ctx.policy_at(subject.state.registered_at)[1]
        except Refused:
            return None

    return agreed


def give_consent(ctx: Context, c: cmd.GiveConsent) -> Outcome:
    version, policy = ctx.policy_at(c.occurred_at)
    subject = ctx.subject(c.subject)
    payload = ev.ConsentGiven(
        **_envelope(ctx, c, version),
        subject_id=subject.id,
        consent_id=uuid4(),
        purposes=c.purposes,
        categories=c.categories,
        given_by=c.given_by,
        method=c.method,
    )
    subject.give_consent(policy, payload)
    return Outcome([subject], subject, subject.id)


def withdraw_consent(ctx: Context, c: cmd.WithdrawConsent) -> Outcome:
    version, policy = ctx.policy_at(c.occurred_at)
    subject = ctx.subject(c.subject)
    subject.withdraw_consent(policy, _withdrawal(ctx, c, version, subject.id, None))
    return Outcome([subject], subject, subject.id)


def _withdrawal(
    ctx: Context, c: cmd._Command, version: str, sid: UUID, request: RightsRequest | None
) -> ev.ConsentWithdrawn:
    if request is not None:
        purposes, categories = request.state.purposes, request.state.categories
        by, method = ev.ConsentGiver.SUBJECT, "request"
    else:
        assert isinstance(c, cmd.WithdrawConsent)  # noqa: S101 (narrowing for the type checker)
        purposes, categories, by, method = c.purposes, c.categories, c.withdrawn_by, c.method
    return ev.ConsentWithdrawn(
        **_envelope(ctx, c, version),
        subject_id=sid,
        purposes=purposes,
        categories=categories,
        withdrawn_by=by,
        method=method,
        request_id=request.id if request is not None else None,
    )


def correct(ctx: Context, c: cmd.CorrectData) -> Outcome:
    version, policy = ctx.policy_at(c.occurred_at)
    subject = ctx.subject(c.subject)
    subject.check_open()
    subject.correct(policy, _correction(ctx, c, version, subject.id, c.category, c.values, None))
    return Outcome([subject], subject, subject.id)


def _correction(
    ctx: Context,
    c: cmd._Command,
    version: str,
    sid: UUID,
    category: str,
    values: dict[str, Any],
    request_id: UUID | None,
) -> ev.DataCorrected:
    return ev.DataCorrected(
        **_envelope(ctx, c, version),
        subject_id=sid,
        category=category,
        values={
            k: ctx.sealer.seal(sid, k, v.get_secret_value(), category=category)
            for k, v in values.items()
        },
        request_id=request_id,
    )


def erase(ctx: Context, c: cmd.EraseSubject) -> Outcome:
    version, policy = ctx.policy_at(c.occurred_at)
    subject = ctx.subject(c.subject)
    out = Outcome([subject], subject, subject.id)
    _erase(ctx, c, version, policy, subject, c.ground, c.categories, None, out)
    return out


def _erasure(
    ctx: Context,
    c: cmd._Command,
    version: str,
    subject: Subject,
    ground: str,
    categories: tuple[str, ...],
    request_id: UUID | None,
) -> tuple[ev.DataErased, ev.KeyShredded | None]:
    env = _envelope(ctx, c, version)
    erased = ev.DataErased(
        **env, subject_id=subject.id, ground=ground, categories=categories, request_id=request_id
    )
    if categories:
        return erased, None
    shredded = ev.KeyShredded(
        **env, subject_id=subject.id, request_id=request_id, not_reached=_NOT_REACHED
    )
    return erased, shredded


def _shred_after_commit(ctx: Context, subject: Subject, out: Outcome) -> None:
    """Once the erasure is committed: destroy the person's key and look-up, then blank the
    digests of the receipts of their commands (`receipts.FORGOTTEN`)."""
    sid, sealer = subject.id, ctx.sealer

    def shred() -> None:
        sealer.shred(sid)
        ctx.forget_receipts(sid)

    out.after_commit.append(shred)


def _erase(
    ctx: Context,
    c: cmd._Command,
    version: str,
    policy: Policy,
    subject: Subject,
    ground: str,
    categories: tuple[str, ...],
    request_id: UUID | None,
    out: Outcome,
) -> None:
    erased, shredded = _erasure(ctx, c, version, subject, ground, categories, request_id)
    subject.erase(policy, erased, shredded)
    if shredded is not None:
        _shred_after_commit(ctx, subject, out)


def cancel(ctx: Context, c: cmd.CancelAccount) -> Outcome:
    version, policy = ctx.policy_at(c.occurred_at)
    subject = ctx.subject(c.subject)
    out = Outcome([subject], subject, subject.id)
    _cancel(ctx, c, version, policy, subject, None, out)
    return out


def _cancel(
    ctx: Context,
    c: cmd._Command,
    version: str,
    policy: Policy,
    subject: Subject,
    request_id: UUID | None,
    out: Outcome,
) -> None:
    cancelled = ev.AccountCancelled(
        **_envelope(ctx, c, version), subject_id=subject.id, request_id=request_id
    )
    erased, shredded = _erasure(ctx, c, version, subject, "account_cancelled", (), request_id)
    assert shredded is not None  # noqa: S101 (a full erasure always shreds)
    subject.cancel(policy, cancelled, erased, shredded)
    _shred_after_commit(ctx, subject, out)


def _published(ctx: Context, version: str) -> None:
    """A person is told of, and acknowledges, only a version that was published (§8)."""
    if version not in ctx.book().documents:
        raise Refused(R.POLICY_VERSION_NOT_PUBLISHED, "§8", "no policy version by that name")


def notify_policy(ctx: Context, c: cmd.NotifyPolicy) -> Outcome:
    _published(ctx, c.version)
    version, _ = ctx.policy_at(c.occurred_at)
    subject = ctx.subject(c.subject)
    subject.record_notified(
        ev.PolicyNotified(
            **_envelope(ctx, c, version), subject_id=subject.id, version=c.version, method=c.method
        )
    )
    return Outcome([subject], subject, subject.id)


def acknowledge_policy(ctx: Context, c: cmd.AcknowledgePolicy) -> Outcome:
    _published(ctx, c.version)
    version, _ = ctx.policy_at(c.occurred_at)
    subject = ctx.subject(c.subject)
    subject.acknowledge_policy(
        ev.PolicyAcknowledged(
            **_envelope(ctx, c, version), subject_id=subject.id, version=c.version, method=c.method
        )
    )
    return Outcome([subject], subject, subject.id)


HANDLERS: dict[type[cmd._Command], Callable[[Context, Any], Outcome]] = {
    cmd.RegisterSubject: register,
    cmd.RecordCollection: collect,
    cmd.RecordUse: use,
    cmd.RecordShare: share,
    cmd.GiveConsent: give_consent,
    cmd.WithdrawConsent: withdraw_consent,
    cmd.CorrectData: correct,
    cmd.EraseSubject: erase,
    cmd.CancelAccount: cancel,
    cmd.NotifyPolicy: notify_policy,
    cmd.AcknowledgePolicy: acknowledge_policy,
}


def publish_policy(ctx: Context, c: cmd.PublishPolicy) -> Outcome:
    """Publish a policy version in the book, its changes classified against the version it
    replaces; the publisher may force a major change but not downgrade a computed one (§8)."""
    book = ctx.book()
    replaced = book.taking_effect_last()
    previous = None if replaced is None else replaced.version
    diff = diff_policies(None if previous is None else book.policy(previous), c.policy)
    payload = ev.PolicyPublished(
        **_envelope(ctx, c, c.policy.version),
        version=c.policy.version,
        effective_at=book.effective_instant(c.effective_at, ctx.now),
        digest=c.policy.digest(),
        text_sha256=c.policy.text_sha256,
        major=diff.major or bool(c.major),
        changes=tuple(dict.fromkeys((*diff.reasons, *c.changes))),
        document=c.policy.model_dump(mode="json"),
        previous_version=previous,
    )
    book.publish(payload, ctx.now)
    return Outcome([book], book, None)


HANDLERS[cmd.PublishPolicy] = publish_policy

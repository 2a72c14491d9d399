"""The command engine: every recording command runs through it, atomically with its receipt.

Handlers build events against the cached aggregates themselves (under the ledger's write
lock); the receipts of the commands' idempotency keys go with them; one save writes it all in
one transaction. A write conflict, or a refusal decided on a copy another writer has moved
on, is retried a bounded number of times; a key used before answers with the original
result, or a typed conflict; whatever a failed attempt touched is evicted from the cache.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast
from uuid import UUID, uuid4

from eventsourcing.application import AggregateNotFoundError, ProcessingEvent
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError

from ledger import commands as cmd
from ledger.errors import (
    ConcurrencyExhausted,
    IdempotencyConflict,
    InvalidCommand,
    LedgerError,
    RefusalReason,
    Refused,
    RightsRequestNotFound,
    SubjectNotFound,
)
from ledger.handlers import HANDLERS, Outcome
from ledger.outcomes import BatchAborted, ItemOutcome, Recorded
from ledger.policy import Policy
from ledger.policy_book import POLICY_BOOK_ID, PolicyBook
from ledger.receipts import FORGOTTEN, Receipt, receipt_id
from ledger.recorders import RECEIPTS, SNAPSHOTS, KeepsReceipts
from ledger.rights import RightsRequest
from ledger.rights_handlers import REQUEST_HANDLERS
from ledger.rules import check_occurred_at, refuse_if
from ledger.subject import Subject
from ledger.subject_state import SubjectState

if TYPE_CHECKING:
    from ledger.application import Ledger

_log = logging.getLogger(__name__)
_HANDLERS = {**HANDLERS, **REQUEST_HANDLERS}


class Engine:
    """Runs commands for a ledger."""

    def __init__(self, app: Ledger, max_attempts: int) -> None:
        self.app = app
        self.max_attempts = max_attempts
        self.unfinished: list[Callable[[], None]] = []
        """Post-commit actions that failed, tried again before the next write."""

    def run(
        self,
        items: Sequence[tuple[str, cmd._Command]],
        *,
        all_or_nothing: bool,
        digests: Sequence[str] | None = None,
    ) -> list[ItemOutcome]:
        if digests is None:
            digests = [self.app.digest(c) for _, c in items]
        elif len(digests) != len(items):
            raise InvalidCommand("digests", "give one digest per item")
        digests = list(digests)
        with self.app._write_lock:
            self._finish_unfinished()
            return self._attempts(items, digests, all_or_nothing=all_or_nothing)

    def _finish_unfinished(self) -> None:
        """Try again what failed after an earlier commit (a key's destruction)."""
        if self.unfinished:
            left, self.unfinished = self.unfinished, []
            for action in left:
                self._after_commit(action)

    def _attempts(
        self,
        items: Sequence[tuple[str, cmd._Command]],
        digests: list[str],
        *,
        all_or_nothing: bool,
    ) -> list[ItemOutcome]:
        """Run the commands against the cached aggregates themselves (the write lock is held),
        evicting whatever a failed attempt touched; retry conflicts a bounded number of times."""
        outcomes: dict[int, ItemOutcome] = {}
        pending: list[int] | None = list(range(len(items)))
        for _attempt in range(self.max_attempts):
            assert pending is not None  # noqa: S101 (a finished attempt returns below)
            work = Work(self.app, self.app.clock.now())
            try:
                pending = self._attempt(work, items, digests, pending, outcomes, all_or_nothing)
            except BaseException:
                work.evict_all()
                raise
            if pending is None:
                return [outcomes[i] for i in range(len(items))]
        for i in pending or ():
            outcomes[i] = ItemOutcome(error=ConcurrencyExhausted(self.max_attempts))
        return [outcomes[i] for i in range(len(items))]

    def _attempt(
        self,
        work: Work,
        items: Sequence[tuple[str, cmd._Command]],
        digests: list[str],
        pending: list[int],
        outcomes: dict[int, ItemOutcome],
        all_or_nothing: bool,
    ) -> list[int] | None:
        """One attempt: None when every item has its outcome, else the items to run again."""
        for i in pending:  # what an abandoned attempt decided for them does not stand
            outcomes.pop(i, None)
        handled = self._handle_items(work, items, digests, pending, outcomes)
        if handled is None:
            return pending
        accepted, duplicates = handled
        if all_or_nothing:
            for i, earlier in duplicates:
                if digests[i] != digests[earlier]:
                    outcomes[i] = self._same_key(items[i], digests, i, earlier, outcomes)
            if any(o.error is not None for o in outcomes.values()):
                if self._any_stored(items, accepted):
                    # an accepted item is a retry of one on record, applied again to the cached
                    # copies: the refusals may rest on that; answer it from its receipt and
                    # decide the rest again, as after a save that failed on its key
                    work.evict_all()
                    return self._after_conflict(
                        items, digests, pending, accepted, duplicates, outcomes
                    )
                work.evict_changed()
                outcomes.update(enumerate(self._aborted(len(items), outcomes, duplicates)))
                return None
        try:
            saved = self._save(accepted)
        except IntegrityError:
            work.evict_all()
            return self._after_conflict(items, digests, pending, accepted, duplicates, outcomes)
        if POLICY_BOOK_ID in work.loaded:  # a new version: read the book afresh
            self.app._book_checked = 0.0
        for item, receipt in zip(accepted, saved, strict=True):
            outcomes[item.index] = ItemOutcome(_recorded(receipt, replayed=False))
            for action in item.outcome.after_commit:
                self._after_commit(action)
        for i, earlier in duplicates:
            outcomes[i] = self._same_key(items[i], digests, i, earlier, outcomes)
        return None

    def _handle_items(
        self,
        work: Work,
        items: Sequence[tuple[str, cmd._Command]],
        digests: list[str],
        pending: list[int],
        outcomes: dict[int, ItemOutcome],
    ) -> tuple[list[_Accepted], list[tuple[int, int]]] | None:
        """Check and apply each pending item; None when a refusal came from a stale copy."""
        accepted: list[_Accepted] = []
        duplicates: list[tuple[int, int]] = []
        first_of_key: dict[tuple[str, str], int] = {}
        for i in pending:
            principal, c = items[i]
            earlier = first_of_key.get((principal, c.idempotency_key))
            if earlier is not None:
                duplicates.append((i, earlier))
                continue
            if isinstance(c, cmd.RegisterSubject):  # a replay must not touch the key store
                known = self._receipt_outcome(principal, c, digests[i])
                if known is not None:
                    outcomes[i] = known
                    continue
            try:
                out = work.handle(principal, c)
            except LedgerError as error:
                if work.stale():  # decided on an out-of-date cached copy: run again, fresh
                    work.evict_all()
                    return None
                outcomes[i] = self._known_or(principal, c, digests[i], error)
                continue
            first_of_key[principal, c.idempotency_key] = i
            answer = out.answer
            receipt = Receipt(
                receipt_id(principal, c.idempotency_key),
                FORGOTTEN if out.forget_digest else digests[i],
                answer.id,
                answer.version,
                out.subject_id,
                type(answer.pending_events[-1]).__name__,
            )
            accepted.append(_Accepted(i, out, receipt))
        return accepted, duplicates

    def _save(self, accepted: list[_Accepted]) -> list[Receipt]:
        """Save the changed aggregates and the receipts in one transaction; the recorder fills
        in each receipt's log position. (A failure here evicts in `_attempts`.)"""
        if not accepted:
            return []
        changed = {a.id: a for item in accepted for a in item.outcome.aggregates}
        receipts = [item.receipt for item in accepted]
        self._save_collected(list(changed.values()), receipts)
        return receipts

    def _save_collected(self, aggregates: list[Aggregate], receipts: list[Receipt]) -> Any:
        """`Application.save` without its per-object runtime Protocol checks (costly on 3.11),
        handing the receipts, and the snapshots the write makes due, to the recorder to write
        in the same transaction."""
        processing = ProcessingEvent[UUID]()
        written: list[tuple[Aggregate, int]] = []
        for aggregate in aggregates:
            events = aggregate.collect_events()
            processing.events.extend(events)
            processing.aggregates[aggregate.id] = aggregate
            written.append((aggregate, aggregate.version - len(events)))
        processing.saved_kwargs[RECEIPTS] = receipts
        snapshots = self.app.snapshots_due(written)
        if snapshots is not None:
            processing.saved_kwargs[SNAPSHOTS] = snapshots
        recordings = self.app._record(processing)
        self.app._notify(recordings)
        return recordings

    def _after_conflict(
        self,
        items: Sequence[tuple[str, cmd._Command]],
        digests: list[str],
        pending: list[int],
        accepted: list[_Accepted],
        duplicates: list[tuple[int, int]],
        outcomes: dict[int, ItemOutcome],
    ) -> list[int]:
        """After a save failed on a key used meanwhile: the items to run again.

        Accepted items whose key is stored are answered from it (`_settle_conflicts`). A
        refusal of this attempt may rest on an accepted item's change that was never
        committed, so it is decided again (a replay answered from a stored receipt keeps its
        answer). A copy of an item's key answers as that item once it is settled."""
        retry = self._settle_conflicts(items, digests, accepted, outcomes)
        taken = {item.index for item in accepted}
        for i in pending:
            if i not in taken and i in outcomes and outcomes[i].error is not None:
                del outcomes[i]
                retry.append(i)
        for i, earlier in duplicates:
            if i in outcomes:
                continue
            if earlier in outcomes:
                outcomes[i] = self._same_key(items[i], digests, i, earlier, outcomes)
            else:
                retry.append(i)
        return sorted(retry)

    def _settle_conflicts(
        self,
        items: Sequence[tuple[str, cmd._Command]],
        digests: list[str],
        accepted: list[_Accepted],
        outcomes: dict[int, ItemOutcome],
    ) -> list[int]:
        """After a failed save: items whose key was used meanwhile are answered; the rest retry."""
        retry = []
        for item in accepted:
            principal, c = items[item.index]
            known = self._receipt_outcome(principal, c, digests[item.index])
            if known is None:
                retry.append(item.index)
            else:
                outcomes[item.index] = known
        return retry

    def _any_stored(
        self, items: Sequence[tuple[str, cmd._Command]], accepted: list[_Accepted]
    ) -> bool:
        """Whether the key of any accepted item is already on record."""
        receipts = cast("KeepsReceipts", self.app.recorder)
        return any(receipts.receipt(item.receipt.receipt_id) is not None for item in accepted)

    def _known_or(
        self, principal: str, c: cmd._Command, digest: str, error: LedgerError
    ) -> ItemOutcome:
        """A refused command may be a retry of one accepted earlier: answer that instead."""
        known = self._receipt_outcome(principal, c, digest)
        return known if known is not None else ItemOutcome(error=error)

    def _receipt_outcome(self, principal: str, c: cmd._Command, digest: str) -> ItemOutcome | None:
        stored = cast("KeepsReceipts", self.app.recorder).receipt(
            receipt_id(principal, c.idempotency_key)
        )
        if stored is None:
            return None
        if stored.digest not in (digest, FORGOTTEN):
            return ItemOutcome(error=IdempotencyConflict(principal, c.idempotency_key))
        return ItemOutcome(_recorded(stored, replayed=True))

    def _after_commit(self, action: Callable[[], None]) -> None:
        try:
            action()
        except Exception:  # noqa: BLE001 (tried again; at the latest, complete_pending_shreds)
            _log.exception("post-commit action failed; it is tried again before the next write")
            self.unfinished.append(action)

    @staticmethod
    def _same_key(
        item: tuple[str, cmd._Command],
        digests: list[str],
        i: int,
        earlier: int,
        outcomes: dict[int, ItemOutcome],
    ) -> ItemOutcome:
        if digests[i] != digests[earlier]:
            return ItemOutcome(error=IdempotencyConflict(item[0], item[1].idempotency_key))
        first = outcomes[earlier]
        if first.recorded is None:
            return first
        return ItemOutcome(first.recorded.model_copy(update={"replayed": True}))

    @staticmethod
    def _aborted(
        n: int, outcomes: dict[int, ItemOutcome], duplicates: Sequence[tuple[int, int]] = ()
    ) -> list[ItemOutcome]:
        """An all-or-nothing batch refused: each refusal stands, each item already on record
        answers as the replay it is (nothing of it is written now either), a copy of one of
        those answers as it does, and every other item is aborted."""
        failed = min(i for i, o in outcomes.items() if o.error is not None)
        settled = dict(outcomes)
        for i, earlier in duplicates:
            first = settled.get(earlier)
            if i not in settled and first is not None and first.recorded is not None:
                settled[i] = ItemOutcome(first.recorded.model_copy(update={"replayed": True}))
        return [
            settled[i] if i in settled else ItemOutcome(error=BatchAborted(failed))
            for i in range(n)
        ]


@dataclass(frozen=True, slots=True)
class _Accepted:
    """A command that passed its rules in this attempt, with its receipt-to-be."""

    index: int
    outcome: Outcome
    receipt: Receipt


def _recorded(receipt: Receipt, *, replayed: bool) -> Recorded:
    return Recorded.trusted(
        receipt.aggregate_id,
        receipt.subject_id,
        receipt.version,
        receipt.position,
        receipt.event_type,
        replayed=replayed,
    )


class Work:
    """One attempt's working set: aggregates loaded and changed; the context handlers use."""

    def __init__(self, app: Ledger, now: datetime) -> None:
        self.app = app
        self.principal = ""
        self.now = now
        self.sealer = app.sealer
        self.loaded: dict[UUID, Aggregate] = {}

    def handle(self, principal: str, c: cmd._Command) -> Outcome:
        """Check the command's time, then let its handler build and trigger its events."""
        self.principal = principal
        refusal = check_occurred_at(c.occurred_at, self.now)
        refuse_if(refusal)
        return _HANDLERS[type(c)](self, c)

    def forget_receipts(self, subject_id: UUID) -> None:
        self.app.forget_receipts(subject_id)

    def evict_changed(self) -> None:
        """Forget cached aggregates this attempt changed but will not save."""
        for aggregate_id, aggregate in self.loaded.items():
            if aggregate.pending_events:
                self.app._evict(aggregate_id)

    def stale(self) -> bool:
        """True when another writer has moved on any aggregate this attempt loaded."""
        recorder = self.app.recorder
        for aggregate_id, aggregate in self.loaded.items():
            stored = aggregate.version - len(aggregate.pending_events)
            if recorder.select_events(aggregate_id, gt=stored, limit=1):
                return True
        return False

    def evict_all(self) -> None:
        """Forget every cached aggregate this attempt touched (a save failed)."""
        for aggregate_id in self.loaded:
            self.app._evict(aggregate_id)

    def policy_at(self, instant: datetime) -> tuple[str, Policy]:
        published, policy = self.app.policy_in_force(instant)
        return published.version, policy

    def subject(self, ref: cmd.SubjectRef) -> Subject:
        subject_id = self.app.resolve(ref)
        found = self.loaded.get(subject_id)
        if found is None:
            found = self.loaded[subject_id] = self.app._subject(subject_id, copy=False)
        if not isinstance(found, Subject):
            raise SubjectNotFound
        return found

    def fresh_state(self, ref: cmd.SubjectRef) -> SubjectState:
        return self.app._subject(self.app.resolve(ref), copy=True).state

    def new_subject_id(self, namespace: str, account_id: str) -> UUID:
        sealer = self.sealer
        lookup = sealer.master.lookup(namespace, account_id)
        subject_id = sealer.store.register(lookup, uuid4(), sealer.new_wrapped_key())
        exists = subject_id in self.loaded
        if not exists:
            try:
                self.app._subject(subject_id, copy=False)
                exists = True
            except SubjectNotFound:
                exists = False
        if exists:
            raise Refused(
                RefusalReason.SUBJECT_ALREADY_REGISTERED, "§6.1", "this account is registered"
            )
        return subject_id

    def request(self, request_id: UUID) -> RightsRequest:
        found = self.loaded.get(request_id)
        if found is None:
            found = self.loaded[request_id] = self.app._request(request_id, copy=False)
        if not isinstance(found, RightsRequest):
            raise RightsRequestNotFound(request_id)
        return found

    def book(self) -> PolicyBook:
        found = self.loaded.get(POLICY_BOOK_ID)
        if found is None:
            try:
                found = self.app.repository.get(POLICY_BOOK_ID)
            except AggregateNotFoundError:
                found = PolicyBook()
            self.loaded[POLICY_BOOK_ID] = found
        return cast("PolicyBook", found)

"""The ledger application: use cases over the event store, atomic with idempotency receipts.

Every recording command runs through one engine: handlers build events against working copies
of the aggregates, the receipts of the commands' idempotency keys join them, and one `save()`
writes it all in one transaction. A write conflict is retried a bounded number of times; a key
used before answers with the original result, or a typed conflict.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast
from uuid import UUID, uuid4

from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError, JSONTranscoder, Transcoder
from pydantic import BaseModel, ConfigDict, Field

from ledger import commands as cmd
from ledger import events as ev
from ledger.clock import Clock
from ledger.errors import (
    ConcurrencyExhausted,
    IdempotencyConflict,
    InvalidCommand,
    KeyShreddedError,
    LedgerError,
    RefusalReason,
    Refused,
    RightsRequestNotFound,
    SubjectNotFound,
)
from ledger.handlers import HANDLERS, Outcome
from ledger.policy import Policy
from ledger.policy_book import POLICY_BOOK_ID, PolicyBook, PublishedVersion, version_key
from ledger.receipts import Receipt, receipt_id
from ledger.recorders import RECEIPTS, KeepsReceipts
from ledger.rights import RequestState, RightsRequest
from ledger.rules import check_occurred_at
from ledger.sealing import Sealer
from ledger.subject import Subject
from ledger.subject_state import SubjectState
from ledger.transcoding import DataclassTranscoding, ModelTranscoding, OrjsonTranscoder

_log = logging.getLogger(__name__)
_BOOK_REFRESH_SECONDS = 1.0


class Recorded(BaseModel):
    """The answer to an accepted command."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    aggregate_id: UUID = Field(description="The aggregate the command changed.")
    subject_id: UUID | None = Field(description="The person concerned, if any.")
    version: int = Field(description="Version of the aggregate's last event from the command.")
    position: int = Field(description="Log position (notification id) of that event.")
    event_type: str = Field(description="Type of that event.")
    replayed: bool = Field(description="True when this repeats the answer to an earlier request.")


@dataclass(frozen=True, slots=True)
class ItemOutcome:
    """One batch item's outcome: recorded, or refused with an error."""

    recorded: Recorded | None = None
    error: LedgerError | None = None


class BatchAborted(LedgerError):
    """Another item of an all-or-nothing batch was refused, so this one was not recorded."""

    def __init__(self, index: int) -> None:
        self._index = index
        super().__init__(f"not recorded: item {index} of the all-or-nothing batch was refused")

    @property
    def index(self) -> int:
        return self._index


BATCHABLE = (
    cmd.RecordCollection,
    cmd.RecordUse,
    cmd.RecordShare,
    cmd.GiveConsent,
    cmd.WithdrawConsent,
    cmd.CorrectData,
    cmd.NotifyPolicy,
    cmd.AcknowledgePolicy,
)
"""Commands that trigger exactly one event after their rules pass, so batch items sharing an
aggregate cannot leave a refused item's event behind."""

_STORED_MODELS: tuple[type[BaseModel], ...] = (*ev.ALL_PAYLOADS, RequestState, PublishedVersion)


class Ledger(Application[UUID]):
    """The personal data ledger."""

    name = "Ledger"
    snapshotting_intervals = {Subject: 200, RightsRequest: 50, PolicyBook: 20}
    env = {
        "AGGREGATE_CACHE_MAXSIZE": "20000",
        "AGGREGATE_CACHE_FASTFORWARD": "n",
    }

    def __init__(
        self,
        env: dict[str, str] | None = None,
        *,
        sealer: Sealer,
        clock: Clock,
        max_attempts: int = 6,
    ) -> None:
        self.sealer = sealer
        self.clock = clock
        self.max_attempts = max_attempts
        self._policies: dict[str, Policy] = {}
        self._book_checked = 0.0
        self._book_cache: PolicyBook | None = None
        self._write_lock = threading.RLock()
        self._index = _VersionIndex(None)
        self._index_of: tuple[UUID, int] | None = None
        super().__init__(env)

    def construct_transcoder(self) -> Transcoder:
        transcoder = OrjsonTranscoder()
        self.register_transcodings(transcoder)
        return transcoder

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        for model in _STORED_MODELS:
            transcoder.register(ModelTranscoding(model))
        transcoder.register(DataclassTranscoding(SubjectState))

    # --- use cases ---------------------------------------------------------------------------

    def execute(self, principal: str, command: cmd._Command) -> Recorded:
        """Record one command for a principal; raise its refusal or error."""
        outcome = self._run([(principal, command)], all_or_nothing=True)[0]
        if outcome.error is not None:
            raise outcome.error
        assert outcome.recorded is not None  # noqa: S101 (an outcome is one or the other)
        return outcome.recorded

    def execute_batch(
        self, principal: str, commands: Sequence[cmd._Command], *, all_or_nothing: bool = False
    ) -> list[ItemOutcome]:
        """Record many recording commands in one transaction; each item gets its own outcome."""
        return self.execute_many([(principal, c) for c in commands], all_or_nothing=all_or_nothing)

    def execute_many(
        self, items: Sequence[tuple[str, cmd._Command]], *, all_or_nothing: bool = False
    ) -> list[ItemOutcome]:
        """Record recording commands of possibly different principals in one transaction
        (a batch, or concurrent calls committed together); each item gets its own outcome."""
        for index, (_, command) in enumerate(items):
            if not isinstance(command, BATCHABLE):
                kind = type(command).__name__
                raise InvalidCommand(f"items.{index}", f"{kind} cannot be batched")
        return self._run(items, all_or_nothing=all_or_nothing)

    def ensure_policy(self, policy: Policy, effective_at: datetime, principal: str) -> bool:
        """Publish `policy` as the first version when the book is empty; True if it did."""
        if self._book() is not None:
            return False
        self.execute(
            principal,
            cmd.PublishPolicy(
                idempotency_key=f"bootstrap-policy-{policy.policy_id}-{policy.version}",
                occurred_at=self.clock.now(),
                policy=policy,
                effective_at=effective_at,
                major=True,
                changes=("first version",),
            ),
        )
        return True

    def complete_pending_shreds(self) -> int:
        """Destroy keys whose `KeyShredded` is recorded but whose key survived a crash."""
        topic = f"{Subject.__module__}:{Subject.__qualname__}.KeyShredded"
        done, start = 0, 1
        while True:
            page = self.recorder.select_notifications(start, 500, topics=[topic])
            for n in page:
                if self.sealer.shred(UUID(str(n.originator_id))):
                    done += 1
            if len(page) < 500:
                return done
            start = page[-1].id + 1

    # --- queries -----------------------------------------------------------------------------

    def resolve(self, ref: cmd.SubjectRef) -> UUID:
        """The pseudonym of a subject reference."""
        if ref.subject_id is not None:
            return ref.subject_id
        assert ref.namespace is not None  # noqa: S101 (validated by SubjectRef)
        assert ref.account_id is not None  # noqa: S101 (validated by SubjectRef)
        found = self.sealer.store.find(
            self.sealer.master.lookup(ref.namespace, ref.account_id.get_secret_value())
        )
        if found is None:
            raise SubjectNotFound
        return found

    def subject(self, subject_id: UUID) -> Subject:
        """The subject aggregate (a private copy)."""
        with self._write_lock:
            return self._subject(subject_id, copy=True)

    def _subject(self, subject_id: UUID, *, copy: bool) -> Subject:
        try:
            found: Aggregate = self.repository.get(subject_id, deepcopy_from_cache=copy)
        except AggregateNotFoundError:
            raise SubjectNotFound from None
        if not isinstance(found, Subject):
            raise SubjectNotFound
        if copy:  # a read: bring the private copy up to date with other writers
            for event in self.events.get(subject_id, gt=found.version):
                found = cast("Subject", event.mutate(found))  # type: ignore[attr-defined]
        return found

    def subject_state(self, ref: cmd.SubjectRef, as_of: datetime | None = None) -> SubjectState:
        """A subject's state now, or as the ledger held it at `as_of`."""
        subject_id = self.resolve(ref)
        if as_of is None:
            return self.subject(subject_id).state
        aggregate: Subject | None = None
        for event in self.events.get(subject_id):
            if aggregate is None and not isinstance(event, Subject.Event):
                raise SubjectNotFound
            payload = getattr(event, "payload", None)
            if not isinstance(payload, ev.Envelope) or payload.recorded_at > as_of:
                break
            aggregate = cast("Subject", event.mutate(aggregate))  # type: ignore[attr-defined]
        if aggregate is None:
            raise SubjectNotFound("the subject was not registered at that instant")
        return aggregate.state

    def history(self, subject_id: UUID) -> list[ev.SubjectEnvelope]:
        """The payloads of a subject's events, in order."""
        payloads = [getattr(e, "payload", None) for e in self.events.get(subject_id)]
        if not payloads or not isinstance(payloads[0], ev.SubjectRegistered):
            raise SubjectNotFound
        return [p for p in payloads if isinstance(p, ev.SubjectEnvelope)]

    def reveal(self, payload: ev.SubjectEnvelope) -> dict[str, str]:
        """Open the sealed values of a payload; raises `KeyShreddedError` after erasure."""
        sid, opened = payload.subject_id, {}
        if self.sealer.store.wrapped_key(sid) is None:  # shredded, maybe by another process
            self.sealer.forget(sid)
            raise KeyShreddedError(f"no data key for subject {sid}")
        for name in ("account_id", "guardian", "reference"):
            sealed = getattr(payload, name, None)
            if isinstance(sealed, str):
                opened[name] = self.sealer.open(sid, name, sealed)
        for name, sealed in (getattr(payload, "values", None) or {}).items():
            opened[name] = self.sealer.open(sid, name, sealed)
        return opened

    def rights_request(self, request_id: UUID) -> RequestState:
        with self._write_lock:
            return self._request(request_id, copy=True).state

    def policy_versions(self) -> list[PublishedVersion]:
        book = self._book()
        return [] if book is None else list(book.versions)

    def policy_in_force(self, instant: datetime) -> tuple[PublishedVersion, Policy]:
        """The version in force at an instant and its document."""
        book = self._book()
        if book is None:
            raise Refused(RefusalReason.NO_POLICY_IN_FORCE, "§8", "no policy version in force")
        if self._index_of != (book.id, book.version):
            self._index = _VersionIndex(book)
            self._index_of = (book.id, book.version)
        published = self._index.at(instant)
        if published is None:
            raise Refused(RefusalReason.NO_POLICY_IN_FORCE, "§8", "no policy version in force")
        return published, self._parsed(book, published.version)

    # --- the engine --------------------------------------------------------------------------

    def _run(
        self, items: Sequence[tuple[str, cmd._Command]], *, all_or_nothing: bool
    ) -> list[ItemOutcome]:
        digests = [self.sealer.master.digest(c.canonical()) for _, c in items]
        with self._write_lock:
            return self._attempts(items, digests, all_or_nothing=all_or_nothing)

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
            work = _Work(self, self.clock.now())
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
        work: _Work,
        items: Sequence[tuple[str, cmd._Command]],
        digests: list[str],
        pending: list[int],
        outcomes: dict[int, ItemOutcome],
        all_or_nothing: bool,
    ) -> list[int] | None:
        """One attempt: None when every item has its outcome, else the items to run again."""
        handled = self._handle_items(work, items, digests, pending, outcomes)
        if handled is None:
            return pending
        accepted, duplicates = handled
        if all_or_nothing:
            for i, earlier in duplicates:
                if digests[i] != digests[earlier]:
                    outcomes[i] = self._same_key(items[i], digests, i, earlier, outcomes)
            if any(o.error is not None for o in outcomes.values()):
                work.evict_changed()
                outcomes.update(enumerate(self._aborted(len(items), outcomes)))
                return None
        try:
            saved = self._save(work, accepted)
        except IntegrityError:
            work.evict_all()
            retry = self._settle_conflicts(items, digests, accepted, outcomes)
            retry += [i for i, _ in duplicates if i not in outcomes]
            return sorted(retry)
        if POLICY_BOOK_ID in work.loaded:  # a new version: read the book afresh
            self._book_checked = 0.0
        for item, receipt in zip(accepted, saved, strict=True):
            outcomes[item.index] = ItemOutcome(_recorded(receipt, replayed=False))
            for action in item.outcome.after_commit:
                _after_commit(action)
        for i, earlier in duplicates:
            outcomes[i] = self._same_key(items[i], digests, i, earlier, outcomes)
        return None

    def _handle_items(
        self,
        work: _Work,
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
                digests[i],
                answer.id,
                answer.version,
                out.subject_id,
                type(answer.pending_events[-1]).__name__,
            )
            accepted.append(_Accepted(i, out, receipt))
        return accepted, duplicates

    def _save(self, work: _Work, accepted: list[_Accepted]) -> list[Receipt]:
        """Save the changed aggregates and the receipts in one transaction; the receipts come
        back with the log positions of their answering events."""
        if not accepted:
            return []
        changed = {a.id: a for item in accepted for a in item.outcome.aggregates}
        receipts = [item.receipt for item in accepted]
        try:
            recordings = self._save_collected(list(changed.values()), receipts)
        except IntegrityError:
            raise
        except Exception:
            work.evict_all()
            raise
        if recordings and not receipts[0].position:  # a recorder that keeps no positions
            positions = {
                (r.domain_event.originator_id, r.domain_event.originator_version): r.notification.id
                for r in recordings
            }
            for r in receipts:
                r.position = positions[(r.aggregate_id, r.version)]
        return receipts

    def _save_collected(self, aggregates: list[Aggregate], receipts: list[Receipt]) -> Any:
        """`Application.save` without its per-object runtime Protocol checks (costly on 3.11),
        handing the receipts to the recorder to write in the same transaction."""
        processing = ProcessingEvent[UUID]()
        for aggregate in aggregates:
            processing.events.extend(aggregate.collect_events())
            processing.aggregates[aggregate.id] = aggregate
        processing.saved_kwargs[RECEIPTS] = receipts
        recordings = self._record(processing)
        self._take_snapshots(processing)
        self._notify(recordings)
        return recordings

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

    def _known_or(
        self, principal: str, c: cmd._Command, digest: str, error: LedgerError
    ) -> ItemOutcome:
        """A refused command may be a retry of one accepted earlier: answer that instead."""
        known = self._receipt_outcome(principal, c, digest)
        return known if known is not None else ItemOutcome(error=error)

    def _receipt_outcome(self, principal: str, c: cmd._Command, digest: str) -> ItemOutcome | None:
        stored = cast("KeepsReceipts", self.recorder).receipt(
            receipt_id(principal, c.idempotency_key)
        )
        if stored is None:
            return None
        if stored.digest != digest:
            return ItemOutcome(error=IdempotencyConflict(principal, c.idempotency_key))
        return ItemOutcome(_recorded(stored, replayed=True))

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
    def _aborted(n: int, outcomes: dict[int, ItemOutcome]) -> list[ItemOutcome]:
        failed = min(i for i, o in outcomes.items() if o.error is not None)
        return [
            outcomes[i]
            if i in outcomes and outcomes[i].error is not None
            else ItemOutcome(error=BatchAborted(failed))
            for i in range(n)
        ]

    # --- plumbing ----------------------------------------------------------------------------

    def _evict(self, aggregate_id: UUID) -> None:
        cache = self.repository.cache
        if cache is not None:
            with contextlib.suppress(KeyError):
                cache.get(aggregate_id, evict=True)

    def _book(self) -> PolicyBook | None:
        """The policy book, re-read from the store at most every second (other processes may
        publish) and at once after a publication here."""
        now = time.monotonic()
        if now - self._book_checked <= _BOOK_REFRESH_SECONDS and self._book_cache is not None:
            return self._book_cache
        self._book_checked = now
        self._evict(POLICY_BOOK_ID)
        book: Aggregate | None
        try:
            book = self.repository.get(POLICY_BOOK_ID, deepcopy_from_cache=False)
        except AggregateNotFoundError:
            book = None
        self._book_cache = cast("PolicyBook | None", book)
        return self._book_cache

    def _parsed(self, book: PolicyBook, version: str) -> Policy:
        policy = self._policies.get(version)
        if policy is None:
            policy = self._policies[version] = book.policy(version)
        return policy

    def _request(self, request_id: UUID, *, copy: bool) -> RightsRequest:
        try:
            found: Aggregate = self.repository.get(request_id, deepcopy_from_cache=copy)
        except AggregateNotFoundError:
            raise RightsRequestNotFound(request_id) from None
        if not isinstance(found, RightsRequest):
            raise RightsRequestNotFound(request_id)
        return found


class _VersionIndex:
    """The book's versions by effective instant, for a quick 'in force at' (usually the latest)."""

    def __init__(self, book: PolicyBook | None) -> None:
        versions = [] if book is None else list(book.versions)
        versions.sort(key=lambda v: (v.effective_at, version_key(v.version)))
        self._versions = versions
        self._starts = [v.effective_at for v in versions]

    def at(self, instant: datetime) -> PublishedVersion | None:
        if self._starts and instant >= self._starts[-1]:
            return self._versions[-1]
        index = bisect.bisect_right(self._starts, instant)
        return self._versions[index - 1] if index else None


@dataclass(frozen=True, slots=True)
class _Accepted:
    """A command that passed its rules in this attempt, with its receipt-to-be."""

    index: int
    outcome: Outcome
    receipt: Receipt


def _recorded(receipt: Receipt, *, replayed: bool) -> Recorded:
    return Recorded.model_construct(
        aggregate_id=receipt.aggregate_id,
        subject_id=receipt.subject_id,
        version=receipt.version,
        position=receipt.position,
        event_type=receipt.event_type,
        replayed=replayed,
    )


def _after_commit(action: Any) -> None:
    try:
        action()
    except Exception:  # noqa: BLE001 (completed later by complete_pending_shreds)
        _log.exception("post-commit action failed; it will be completed at the next start")


class _Work:
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
        if refusal is not None:
            raise Refused(refusal.reason, refusal.clause, refusal.detail)
        return HANDLERS[type(c)](self, c)

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

"""The ledger application: use cases over the event store, atomic with idempotency receipts.

Every recording command runs through one engine: handlers build events against working copies
of the aggregates, the receipts of the commands' idempotency keys join them, and one `save()`
writes it all in one transaction. A write conflict is retried a bounded number of times; a key
used before answers with the original result, or a typed conflict.
"""

from __future__ import annotations

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
    LedgerError,
    RefusalReason,
    Refused,
    RightsRequestNotFound,
    SubjectNotFound,
)
from ledger.handlers import HANDLERS, Outcome
from ledger.policy import Policy
from ledger.policy_book import POLICY_BOOK_ID, PolicyBook, PublishedVersion
from ledger.receipts import receipt_event, receipt_id
from ledger.recorders import LocatesEvents
from ledger.rights import RequestState, RightsRequest
from ledger.rules import check_occurred_at
from ledger.sealing import Sealer
from ledger.subject import Subject
from ledger.subject_state import SubjectState
from ledger.transcoding import ModelTranscoding, OrjsonTranscoder

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


_BATCHABLE = (
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

_STORED_MODELS: tuple[type[BaseModel], ...] = (
    *ev.ALL_PAYLOADS,
    SubjectState,
    RequestState,
    PublishedVersion,
)


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
        self._write_lock = threading.RLock()
        super().__init__(env)

    def construct_transcoder(self) -> Transcoder:
        transcoder = OrjsonTranscoder()
        self.register_transcodings(transcoder)
        return transcoder

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        for model in _STORED_MODELS:
            transcoder.register(ModelTranscoding(model))

    # --- use cases ---------------------------------------------------------------------------

    def execute(self, principal: str, command: cmd._Command) -> Recorded:
        """Record one command for a principal; raise its refusal or error."""
        outcome = self._run(principal, [command], all_or_nothing=True)[0]
        if outcome.error is not None:
            raise outcome.error
        assert outcome.recorded is not None  # noqa: S101 (an outcome is one or the other)
        return outcome.recorded

    def execute_batch(
        self, principal: str, commands: Sequence[cmd._Command], *, all_or_nothing: bool = False
    ) -> list[ItemOutcome]:
        """Record many recording commands in one transaction; each item gets its own outcome."""
        for index, command in enumerate(commands):
            if not isinstance(command, _BATCHABLE):
                raise InvalidCommand(
                    f"items.{index}", f"{type(command).__name__} cannot be batched"
                )
        return self._run(principal, commands, all_or_nothing=all_or_nothing)

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
        return found

    def subject_state(self, ref: cmd.SubjectRef, as_of: datetime | None = None) -> SubjectState:
        """A subject's state now, or as the ledger held it at `as_of`."""
        subject_id = self.resolve(ref)
        if as_of is None:
            return self.subject(subject_id).state
        aggregate: Subject | None = None
        for event in self.events.get(subject_id):
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
        published = None if book is None else book.in_force_at(instant)
        if book is None or published is None:
            raise Refused(RefusalReason.NO_POLICY_IN_FORCE, "§8", "no policy version in force")
        return published, self._parsed(book, published.version)

    # --- the engine --------------------------------------------------------------------------

    def _run(
        self, principal: str, commands: Sequence[cmd._Command], *, all_or_nothing: bool
    ) -> list[ItemOutcome]:
        digests = [self.sealer.master.digest(c.canonical()) for c in commands]
        with self._write_lock:
            return self._attempts(principal, commands, digests, all_or_nothing=all_or_nothing)

    def _attempts(
        self,
        principal: str,
        commands: Sequence[cmd._Command],
        digests: list[str],
        *,
        all_or_nothing: bool,
    ) -> list[ItemOutcome]:
        """Run the commands against the cached aggregates themselves (the write lock is held),
        evicting whatever a failed attempt touched."""
        outcomes: dict[int, ItemOutcome] = {}
        pending = list(range(len(commands)))
        for _attempt in range(self.max_attempts):
            work = _Work(self, principal, self.clock.now())
            accepted: list[tuple[int, Outcome, Aggregate, int, str]] = []
            duplicates: list[tuple[int, int]] = []
            first_of_key: dict[str, int] = {}
            for i in pending:
                c = commands[i]
                earlier = first_of_key.get(c.idempotency_key)
                if earlier is not None:
                    duplicates.append((i, earlier))
                    continue
                try:
                    refusal = check_occurred_at(c.occurred_at, work.now)
                    if refusal is not None:
                        raise Refused(refusal.reason, refusal.clause, refusal.detail)
                    out = HANDLERS[type(c)](work, c)
                except LedgerError as error:
                    outcomes[i] = self._known_or(principal, c, digests[i], error)
                    continue
                first_of_key[c.idempotency_key] = i
                answer = out.answer
                last = answer.pending_events[-1]
                accepted.append((i, out, answer, answer.version, type(last).__name__))
            if all_or_nothing and any(o.error is not None for o in outcomes.values()):
                work.evict_changed()
                return self._aborted(len(commands), outcomes)
            try:
                recordings = self._save(principal, commands, digests, work, accepted)
            except IntegrityError:
                work.evict_all()
                pending = self._settle_conflicts(principal, commands, digests, accepted, outcomes)
                pending += [i for i, _ in duplicates if i not in outcomes]
                pending.sort()
                continue
            positions = {
                (r.domain_event.originator_id, r.domain_event.originator_version): r.notification.id
                for r in recordings
            }
            for i, out, answer, version, event_type in accepted:
                outcomes[i] = ItemOutcome(
                    Recorded(
                        aggregate_id=answer.id,
                        subject_id=out.subject_id,
                        version=version,
                        position=positions[(answer.id, version)],
                        event_type=event_type,
                        replayed=False,
                    )
                )
                for action in out.after_commit:
                    _after_commit(action)
            for i, earlier in duplicates:
                outcomes[i] = self._same_key(principal, commands[i], digests, i, earlier, outcomes)
            return [outcomes[i] for i in range(len(commands))]
        for i in pending:
            outcomes[i] = ItemOutcome(error=ConcurrencyExhausted(self.max_attempts))
        return [outcomes[i] for i in range(len(commands))]

    def _save(
        self,
        principal: str,
        commands: Sequence[cmd._Command],
        digests: list[str],
        work: _Work,
        accepted: list[tuple[int, Outcome, Aggregate, int, str]],
    ) -> Sequence[Any]:
        if not accepted:
            return []
        receipts: list[Any] = []
        for i, out, answer, version, event_type in accepted:
            c = commands[i]
            receipts.append(
                receipt_event(
                    ev.CommandAccepted.model_construct(
                        occurred_at=c.occurred_at,
                        recorded_at=work.now,
                        principal=principal,
                        policy_version=work.last_version or "",
                        idempotency_key=c.idempotency_key,
                        command=type(c).__name__,
                        digest=digests[i],
                        aggregate_id=answer.id,
                        subject_id=out.subject_id,
                        version=version,
                        event_type=event_type,
                    )
                )
            )
        changed = {a.id: a for _, out, *_ in accepted for a in out.aggregates}
        try:
            return self._save_collected(list(changed.values()), receipts)
        except IntegrityError:
            raise
        except Exception:
            work.evict_all()
            raise

    def _save_collected(self, aggregates: list[Aggregate], extra: list[Any]) -> Sequence[Any]:
        """`Application.save` without its per-object runtime Protocol checks (costly on 3.11):
        the objects here are known to be aggregates and receipt events."""
        processing = ProcessingEvent[UUID]()
        for aggregate in aggregates:
            processing.events.extend(aggregate.collect_events())
            processing.aggregates[aggregate.id] = aggregate
        processing.events.extend(extra)
        recordings = self._record(processing)
        self._take_snapshots(processing)
        self._notify(recordings)
        return recordings

    def _settle_conflicts(
        self,
        principal: str,
        commands: Sequence[cmd._Command],
        digests: list[str],
        accepted: list[tuple[int, Outcome, Aggregate, int, str]],
        outcomes: dict[int, ItemOutcome],
    ) -> list[int]:
        """After a failed save: items whose key was used meanwhile are answered; the rest retry."""
        retry = []
        for i, *_ in accepted:
            known = self._receipt_outcome(principal, commands[i], digests[i])
            if known is None:
                retry.append(i)
            else:
                outcomes[i] = known
        return retry

    def _known_or(
        self, principal: str, c: cmd._Command, digest: str, error: LedgerError
    ) -> ItemOutcome:
        """A refused command may be a retry of one accepted earlier: answer that instead."""
        known = self._receipt_outcome(principal, c, digest)
        return known if known is not None else ItemOutcome(error=error)

    def _receipt_outcome(self, principal: str, c: cmd._Command, digest: str) -> ItemOutcome | None:
        rid = receipt_id(principal, c.idempotency_key)
        stored = list(self.events.get(rid, limit=1))
        if not stored:
            return None
        accepted = cast("ev.CommandAccepted", stored[0].payload)  # type: ignore[attr-defined]
        if accepted.digest != digest:
            return ItemOutcome(error=IdempotencyConflict(principal, c.idempotency_key))
        position = cast("LocatesEvents", self.recorder).notification_id_of(
            accepted.aggregate_id, accepted.version
        )
        return ItemOutcome(
            Recorded(
                aggregate_id=accepted.aggregate_id,
                subject_id=accepted.subject_id,
                version=accepted.version,
                position=position or 0,
                event_type=accepted.event_type,
                replayed=True,
            )
        )

    @staticmethod
    def _same_key(
        principal: str,
        c: cmd._Command,
        digests: list[str],
        i: int,
        earlier: int,
        outcomes: dict[int, ItemOutcome],
    ) -> ItemOutcome:
        if digests[i] != digests[earlier]:
            return ItemOutcome(error=IdempotencyConflict(principal, c.idempotency_key))
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
        now = time.monotonic()
        if now - self._book_checked > _BOOK_REFRESH_SECONDS:
            self._book_checked = now
            self._evict(POLICY_BOOK_ID)
        try:
            return cast(
                "PolicyBook", self.repository.get(POLICY_BOOK_ID, deepcopy_from_cache=False)
            )
        except AggregateNotFoundError:
            return None

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


def _after_commit(action: Any) -> None:
    try:
        action()
    except Exception:  # noqa: BLE001 (completed later by complete_pending_shreds)
        _log.exception("post-commit action failed; it will be completed at the next start")


class _Work:
    """One attempt's working set: aggregates loaded and changed; the context handlers use."""

    def __init__(self, app: Ledger, principal: str, now: datetime) -> None:
        self.app = app
        self.principal = principal
        self.now = now
        self.sealer = app.sealer
        self.loaded: dict[UUID, Aggregate] = {}
        self.last_version: str | None = None

    def evict_changed(self) -> None:
        """Forget cached aggregates this attempt changed but will not save."""
        for aggregate_id, aggregate in self.loaded.items():
            if aggregate.pending_events:
                self.app._evict(aggregate_id)

    def evict_all(self) -> None:
        """Forget every cached aggregate this attempt touched (a save failed)."""
        for aggregate_id in self.loaded:
            self.app._evict(aggregate_id)

    def policy_at(self, instant: datetime) -> tuple[str, Policy]:
        published, policy = self.app.policy_in_force(instant)
        self.last_version = published.version
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

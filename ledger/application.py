"""The ledger application: use cases over the event store, atomic with idempotency receipts.

Every recording command runs through one engine: handlers build events against working copies
of the aggregates, the receipts of the commands' idempotency keys join them, and one `save()`
writes it all in one transaction. A write conflict is retried a bounded number of times; a key
used before answers with the original result, or a typed conflict.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import cast
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import JSONTranscoder, Mapper, Recording, Transcoder
from pydantic import BaseModel

from ledger import commands as cmd
from ledger import events as ev
from ledger.clock import Clock
from ledger.engine import Engine
from ledger.errors import (
    ConfigurationError,
    InvalidCommand,
    KeyShreddedError,
    RefusalReason,
    Refused,
    RightsRequestNotFound,
    SubjectNotFound,
)
from ledger.outcomes import BatchAborted, ItemOutcome, Recorded
from ledger.policy import Policy
from ledger.policy_book import POLICY_BOOK_ID, PolicyBook, PublishedVersion, VersionIndex
from ledger.receipts import receipt_id
from ledger.recorders import KeepsReceipts, SnapshotRows
from ledger.rights import RequestState, RightsRequest
from ledger.sealing import Sealer
from ledger.subject import Subject
from ledger.subject_state import SubjectState
from ledger.transcoding import (
    DataclassTranscoding,
    DirectMapper,
    ModelTranscoding,
    OrjsonTranscoder,
    PayloadReader,
)

__all__ = ["BATCHABLE", "BatchAborted", "ItemOutcome", "Ledger", "Recorded"]

_BOOK_REFRESH_SECONDS = 1.0


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
        self._engine = Engine(self, max_attempts)
        self._policies: dict[str, Policy] = {}
        self._book_checked = 0.0
        self._book_cache: PolicyBook | None = None
        self._write_lock = threading.RLock()
        self._index = VersionIndex(None)
        self._index_of: tuple[UUID, int] | None = None
        self._listeners: list[Callable[[int], None]] = []
        super().__init__(env)
        if not callable(getattr(self.recorder, "receipt", None)):
            msg = "the event store's recorder keeps no idempotency receipts; use ledger.storage"
            raise ConfigurationError(msg)
        self.payload_of = PayloadReader(self.mapper, _STORED_MODELS)
        """A stored event's pydantic payload (or None), without rebuilding the whole event."""

    def construct_mapper(self) -> Mapper[UUID]:
        mapper: Mapper[UUID] = self.factory.mapper(transcoder=self.construct_transcoder())
        return DirectMapper(
            transcoder=mapper.transcoder,
            cipher=mapper.cipher,
            compressor=mapper.compressor,
            models=_STORED_MODELS,
        )

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
        outcome = self._engine.run([(principal, command)], all_or_nothing=True)[0]
        if outcome.error is not None:
            raise outcome.error
        assert outcome.recorded is not None  # noqa: S101 (an outcome is one or the other)
        return outcome.recorded

    def execute_batch(
        self,
        principal: str,
        commands: Sequence[cmd._Command],
        *,
        all_or_nothing: bool = False,
        digests: Sequence[str] | None = None,
    ) -> list[ItemOutcome]:
        """Record many recording commands in one transaction; each item gets its own outcome."""
        return self.execute_many(
            [(principal, c) for c in commands], all_or_nothing=all_or_nothing, digests=digests
        )

    def execute_many(
        self,
        items: Sequence[tuple[str, cmd._Command]],
        *,
        all_or_nothing: bool = False,
        digests: Sequence[str] | None = None,
    ) -> list[ItemOutcome]:
        """Record recording commands of possibly different principals in one transaction
        (a batch, or concurrent calls committed together); each item gets its own outcome.
        `digests`, when given, are the items' `digest`s, made by another process of this
        ledger (the server's, while its writer process commits)."""
        for index, (_, command) in enumerate(items):
            if not isinstance(command, BATCHABLE):
                kind = type(command).__name__
                raise InvalidCommand(f"items.{index}", f"{kind} cannot be batched")
        return self._engine.run(items, all_or_nothing=all_or_nothing, digests=digests)

    def digest(self, command: cmd._Command) -> str:
        """The keyed digest of a command that idempotency compares: a retry with the same key
        must carry a command of the same digest."""
        return self.sealer.master.digest(command.canonical())

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
                sid = UUID(str(n.originator_id))
                if self.sealer.shred(sid):
                    self.forget_receipts(sid)
                    done += 1
            if len(page) < 500:
                return done
            start = page[-1].id + 1

    def forget_receipts(self, subject_id: UUID) -> None:
        """Blank the digests of the receipts of a person's commands (their registration,
        every event of theirs, and their rights requests' commands), once they are erased
        (`receipts.FORGOTTEN`)."""
        ids = {
            receipt_id(p.principal, p.idempotency_key)
            for e in self.events.get(subject_id)
            if isinstance(p := getattr(e, "payload", None), ev.Envelope)
        }
        cast("KeepsReceipts", self.recorder).forget_digests(subject_id, sorted(ids))

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
        """Open the sealed values of a payload; raises `KeyShreddedError` after erasure: of
        the whole subject (its key is gone), or of the payload's category, collected or
        corrected before a partial erasure of it."""
        sid, opened = payload.subject_id, {}
        state = self.subject(sid).state
        if self.key_gone(state):
            raise KeyShreddedError(f"no data key for subject {sid}")
        category: str | None = None
        if isinstance(payload, ev.DataCollected | ev.DataCorrected):
            category = payload.category
            if state.value_erased(category, payload.occurred_at):
                raise KeyShreddedError(f"the values of {category} of subject {sid} were erased")
        seal_open = self.sealer.open
        for name in ("account_id", "guardian"):
            sealed = getattr(payload, name, None)
            if isinstance(sealed, str) and not (
                name == "guardian" and self._guardian_erased(payload)
            ):
                opened[name] = seal_open(sid, name, sealed)
        reference = getattr(payload, "reference", None)
        if isinstance(reference, str):
            opened["reference"] = seal_open(sid, "reference", reference, category=category)
        for name, sealed in (getattr(payload, "values", None) or {}).items():
            opened[name] = seal_open(sid, name, sealed, category=category)
        return opened

    def _guardian_erased(self, payload: ev.SubjectEnvelope) -> bool:
        """Whether a registration names a registered guardian who has since been erased: their
        account id, sealed in the minor's registration with the minor's key, is theirs, and goes
        with their key."""
        guardian = getattr(payload, "guardian_subject_id", None)
        if not isinstance(guardian, UUID):
            return False
        try:
            state = self.subject(guardian).state
        except SubjectNotFound:
            return False
        return self.key_gone(state)

    def key_gone(self, state: SubjectState) -> bool:
        """Whether a person's data key is gone, so nothing of theirs may be opened: recorded
        as shredded (its destruction may have failed after the commit and wait to be done
        again), or no longer in the key store (shredded, maybe by another process). The
        sealer then forgets any copy it holds."""
        sid = state.subject_id
        if state.key_shredded or self.sealer.store.wrapped_key(sid) is None:
            self.sealer.forget(sid)
            return True
        return False

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
            self._index = VersionIndex(book)
            self._index_of = (book.id, book.version)
        published = self._index.at(instant)
        if published is None:
            raise Refused(RefusalReason.NO_POLICY_IN_FORCE, "§8", "no policy version in force")
        return published, self._parsed(book, published.version)

    def close(self) -> None:
        stop_checkpoints = getattr(self.recorder, "stop_checkpoints", None)
        if callable(stop_checkpoints):
            stop_checkpoints()
        super().close()

    def add_listener(self, listener: Callable[[int], None]) -> None:
        """Call `listener` with the last log position after every save in this process (how
        in-process projections learn of new events without polling). It must not block."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[int], None]) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    def announce(self, position: int) -> None:
        """Tell the listeners that the log has reached `position` (events another process
        wrote for this one, such as the server's writer process)."""
        for listener in list(self._listeners):
            listener(position)

    def snapshots_due(self, written: Sequence[tuple[Aggregate, int]]) -> SnapshotRows | None:
        """Snapshots of the aggregates a write takes past a multiple of their snapshotting
        interval (each given with its version before the write), taken of the aggregates as
        the write leaves them and encoded at once (later work changes them in place), for the
        recorder to store in the write's own transaction.

        The library's `take_snapshot` instead reads back after the commit every event since the
        last snapshot, up to 200 of a person's, to rebuild what is at hand here: about 6 ms per
        snapshot in the writer's thread, and a commit of its own. A snapshot here is at the
        version the write reaches, which may lie past the multiple."""
        store = self.snapshots
        if store is None:
            return None
        intervals = self.snapshotting_intervals
        due = [
            aggregate
            for aggregate, before in written
            if (interval := intervals.get(type(aggregate))) is not None
            and aggregate.version // interval > before // interval
        ]
        if not due:
            return None
        mapper = store.mapper
        stored = [mapper.to_stored_event(type(a).Snapshot.take(a)) for a in due]
        return SnapshotRows(store.recorder, stored)

    def forget_cached(self) -> None:
        """Forget every cached aggregate and the policy book: a commit of this process failed
        after the cached copies had taken in its events (see `ledger.deferred_commits`)."""
        cache = self.repository.cache
        if cache is not None:
            for aggregate_id in list(cache.cache):
                with contextlib.suppress(KeyError):
                    cache.get(aggregate_id, evict=True)
        self._book_cache = None
        self._book_checked = 0.0

    def forget_policy_book(self) -> None:
        """Read the policy book afresh at its next use (another process published)."""
        self._book_checked = 0.0

    # --- plumbing ----------------------------------------------------------------------------

    def _notify(self, recordings: list[Recording[UUID]]) -> None:
        if recordings and self._listeners:
            self.announce(recordings[-1].notification.id)

    def _evict(self, aggregate_id: UUID) -> None:
        cache = self.repository.cache
        if cache is not None:
            with contextlib.suppress(KeyError):
                cache.get(aggregate_id, evict=True)

    def _book(self) -> PolicyBook | None:
        """The policy book, re-read from the store at most every second (other processes may
        publish) and at once after a publication here."""
        now = time.monotonic()
        cached = self._book_cache
        if now - self._book_checked <= _BOOK_REFRESH_SECONDS and cached is not None:
            return cached
        self._book_checked = now
        if cached is not None:  # read again only if another process published since
            latest = self.recorder.select_events(POLICY_BOOK_ID, desc=True, limit=1)
            if latest and latest[0].originator_version == cached.version:
                return cached
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
        if copy:  # a read: bring the private copy up to date with other writers
            for event in self.events.get(request_id, gt=found.version):
                found = cast("RightsRequest", event.mutate(found))  # type: ignore[attr-defined]
        return found

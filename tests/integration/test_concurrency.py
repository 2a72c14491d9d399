"""Two ledger instances on one store, as two processes would be: races, retries, stale caches.

Run on SQLite (one file, two instances) and PostgreSQL (one schema, two instances); the
in-memory store cannot be shared by two instances, so it is not a back-end here. DESIGN.md
§Idempotency: the same key and payload is recorded once and answers with the original result,
the same key with another payload is refused, atomically with the write; a write conflict is
retried a bounded number of times and then refused with nothing written.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import SecretStr
from scenario import (
    PRINCIPAL,
    collection,
    consent,
    gps_collection,
    key,
    later,
    ref,
    register,
    secret,
    use,
    withdrawal,
)

from ledger import commands as c
from ledger import engine
from ledger.application import Ledger, Recorded
from ledger.errors import ConcurrencyExhausted, IdempotencyConflict, KeyShreddedError, Refused
from ledger.events import CollectionMode
from ledger.outcomes import BatchAborted

pytestmark = pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)

_ROUNDS = 10
_THREADS = 4
_COMMANDS_PER_THREAD = 15


def _race(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run the calls in threads released together; each result, or the exception it raised."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(index: int) -> None:
        barrier.wait(timeout=30)
        try:
            results[index] = calls[index]()
        except Exception as exc:  # noqa: BLE001 (handed to the asserting thread)
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    return results


def _keys_in_history(ledger: Ledger, subject_id: Any) -> Counter[str]:
    return Counter(p.idempotency_key for p in ledger.history(subject_id))


def test_the_same_command_racing_on_two_instances_is_recorded_once(ledger_factory) -> None:
    first, second = ledger_factory(), ledger_factory()
    for _ in range(_ROUNDS):
        sid = register(first).subject_id
        for app in (first, second):
            app.subject_state(ref(sid))  # both hold the subject: both build the event
        command = collection(sid, at=later(first))

        calls = [lambda a=app, cmd=command: a.execute(PRINCIPAL, cmd) for app in (first, second)]
        results = _race(calls)

        assert all(isinstance(r, Recorded) for r in results), results
        assert len({r.position for r in results}) == 1
        assert sorted(r.replayed for r in results) == [False, True]
        assert len({(r.aggregate_id, r.version, r.event_type) for r in results}) == 1
        history = first.history(sid)
        mine = [p for p in history if p.idempotency_key == command.idempotency_key]
        assert len(mine) == 1
        assert type(mine[0]).__name__ == "DataCollected"
        assert len(history) == 2


def test_the_same_key_with_different_payloads_racing_records_one_and_refuses_the_other(
    ledger_factory,
) -> None:
    first, second = ledger_factory(), ledger_factory()
    for _ in range(_ROUNDS // 2):
        sid = register(first).subject_id
        for app in (first, second):
            app.subject_state(ref(sid))
        values = [secret("ip-a"), secret("ip-b")]
        one = collection(sid, at=later(first), values={"ip": SecretStr(values[0])})
        other = one.model_copy(update={"values": {"ip": SecretStr(values[1])}})

        pairs = [(first, one), (second, other)]
        results = _race([lambda a=a, cmd=cmd: a.execute(PRINCIPAL, cmd) for a, cmd in pairs])

        recorded = [i for i, r in enumerate(results) if isinstance(r, Recorded)]
        refused = [i for i, r in enumerate(results) if isinstance(r, IdempotencyConflict)]
        assert (len(recorded), len(refused)) == (1, 1), results
        winner = recorded[0]
        assert not results[winner].replayed
        mine = [p for p in first.history(sid) if p.idempotency_key == one.idempotency_key]
        assert len(mine) == 1
        assert first.reveal(mine[0]) == {"ip": values[winner]}


def test_concurrent_commands_on_one_subject_lose_no_acknowledged_command(ledger_factory) -> None:
    instances = [ledger_factory(max_attempts=50), ledger_factory(max_attempts=50)]
    sid = register(instances[0]).subject_id
    instances[0].execute(PRINCIPAL, collection(sid, at=later(instances[0])))
    acknowledged: list[tuple[str, Recorded]] = []
    exhausted: list[str] = []
    lock = threading.Lock()

    def work(thread: int) -> None:
        app = instances[thread % 2]
        for i in range(_COMMANDS_PER_THREAD):
            at = app.clock.now()
            command = collection(sid, at=at) if i % 2 else use(sid, at=at)
            try:
                recorded = app.execute(PRINCIPAL, command)
            except ConcurrencyExhausted:
                with lock:
                    exhausted.append(command.idempotency_key)
                continue
            with lock:
                acknowledged.append((command.idempotency_key, recorded))

    results = _race([lambda t=t: work(t) for t in range(_THREADS)])

    assert results == [None] * _THREADS  # no thread raised anything but ConcurrencyExhausted
    assert len(acknowledged) + len(exhausted) == _THREADS * _COMMANDS_PER_THREAD
    assert len(acknowledged) >= _THREADS * _COMMANDS_PER_THREAD // 2
    in_history = _keys_in_history(instances[1], sid)
    for idempotency_key, recorded in acknowledged:
        assert in_history[idempotency_key] == 1, idempotency_key
        assert not recorded.replayed
    for idempotency_key in exhausted:
        assert in_history[idempotency_key] == 0, idempotency_key
    assert sum(in_history.values()) == 2 + len(acknowledged)
    positions = [r.position for _, r in acknowledged]
    assert len(set(positions)) == len(positions)
    assert len({r.version for _, r in acknowledged}) == len(acknowledged)
    for app in instances:
        assert app.subject_state(c.SubjectRef(subject_id=sid), as_of=app.clock.now()).events == (
            2 + len(acknowledged)
        )


def test_a_stale_instance_with_one_attempt_gives_up_and_writes_nothing(ledger_factory) -> None:
    stale, other = ledger_factory(max_attempts=1), ledger_factory()
    sid = register(other).subject_id
    stale.subject_state(ref(sid))  # the stale instance now caches version 1
    other.execute(PRINCIPAL, collection(sid, at=later(other)))  # the store moves to version 2
    before = stale.recorder.max_notification_id()
    before_keys = _keys_in_history(stale, sid)
    command = collection(sid, at=later(stale))

    with pytest.raises(ConcurrencyExhausted) as exhausted:
        stale.execute(PRINCIPAL, command)

    assert exhausted.value.attempts == 1
    assert stale.recorder.max_notification_id() == before
    assert _keys_in_history(stale, sid) == before_keys
    # The conflict dropped the stale copy, so the same request now goes through, once.
    again = stale.execute(PRINCIPAL, command)
    assert not again.replayed
    assert _keys_in_history(other, sid)[command.idempotency_key] == 1


def test_a_stale_instance_with_the_default_attempts_reloads_and_records(ledger_factory) -> None:
    stale, other = ledger_factory(), ledger_factory()
    assert stale.max_attempts > 1
    sid = register(other).subject_id
    stale.subject_state(ref(sid))
    other.execute(PRINCIPAL, collection(sid, at=later(other)))
    command = collection(sid, at=later(stale), category="network_log.time_zone")

    recorded = stale.execute(PRINCIPAL, command)

    assert not recorded.replayed
    assert recorded.version == 3
    assert _keys_in_history(other, sid)[command.idempotency_key] == 1
    held = other.subject_state(ref(sid), as_of=later(other)).held
    assert set(held) == {"network_log.ip_address", "network_log.time_zone"}


def test_a_refusal_is_not_decided_on_a_stale_cached_subject(ledger_factory) -> None:
    stale, other = ledger_factory(), ledger_factory()
    sid = register(other).subject_id
    stale.subject_state(ref(sid))  # cached before the consent
    other.execute(PRINCIPAL, consent(sid, at=later(other)))  # GPS consent, in the store

    recorded = stale.execute(PRINCIPAL, gps_collection(sid, at=later(stale)))

    assert recorded.event_type == "DataCollected"


def test_values_erased_through_one_instance_do_not_open_in_another(ledger_factory) -> None:
    reader, eraser = ledger_factory(), ledger_factory()
    sid = register(reader).subject_id
    reader.execute(PRINCIPAL, collection(sid, at=later(reader)))
    collected = reader.history(sid)[1]
    assert reader.reveal(collected)  # the reader has opened this person's values before

    eraser.execute(
        PRINCIPAL,
        c.EraseSubject(
            idempotency_key=key("era"),
            occurred_at=later(eraser),
            subject=ref(sid),
            ground="no_consent",
        ),
    )

    with pytest.raises(KeyShreddedError):
        eraser.reveal(collected)
    with pytest.raises(KeyShreddedError):
        reader.reveal(collected)


@pytest.mark.parametrize("all_or_nothing", [False, True])
def test_a_batch_item_refused_on_a_change_that_was_never_saved_is_decided_again(
    ledger_factory, all_or_nothing: bool
) -> None:
    """The first item reuses a key already recorded, so the save of the first attempt fails
    (or, all or nothing, the first is found on record before the batch is refused); the
    second was refused on the first's withdrawal, which was never committed."""
    ledger = ledger_factory()
    sid = register(ledger).subject_id
    ledger.execute(PRINCIPAL, consent(sid, at=later(ledger)))
    reused = collection(sid, at=later(ledger))
    ledger.execute(PRINCIPAL, reused)
    withdrawal = c.WithdrawConsent(
        idempotency_key=reused.idempotency_key,
        occurred_at=later(ledger),
        subject=ref(sid),
        purposes=("customer_service",),
    )

    first, second = ledger.execute_batch(
        PRINCIPAL,
        [withdrawal, gps_collection(sid, at=later(ledger))],
        all_or_nothing=all_or_nothing,
    )

    assert isinstance(first.error, IdempotencyConflict)
    if all_or_nothing:
        assert isinstance(second.error, BatchAborted)
    else:
        assert second.recorded is not None
        assert second.recorded.event_type == "DataCollected"
    assert "ConsentWithdrawn" not in [type(p).__name__ for p in ledger.history(sid)]


def test_an_all_or_nothing_batch_with_a_retry_is_decided_on_what_is_stored(
    ledger_factory,
) -> None:
    """A withdrawal on record, sent without an occurred-at (the ledger's clock dates it), is
    sent again (its answer was lost) after consent was given again: dated now and applied once
    more to the cached copy, it would refuse the collection that rests on the consent. It
    answers as its replay, and the collection is recorded."""
    ledger = ledger_factory()
    sid = register(ledger).subject_id
    ledger.execute(PRINCIPAL, consent(sid, at=later(ledger)))
    withdrawn = withdrawal(sid, at=later(ledger), occurred_at_defaulted=True)
    original = ledger.execute(PRINCIPAL, withdrawn)
    ledger.execute(PRINCIPAL, consent(sid, at=later(ledger)))
    retried = withdrawn.model_copy(update={"occurred_at": later(ledger)})

    first, second = ledger.execute_batch(
        PRINCIPAL, [retried, gps_collection(sid, at=later(ledger))], all_or_nothing=True
    )

    assert first.recorded is not None
    assert (first.recorded.position, first.recorded.replayed) == (original.position, True)
    assert second.recorded is not None
    assert second.recorded.event_type == "DataCollected"


def test_a_refused_all_or_nothing_batch_answers_its_items_on_record_as_replays(
    ledger_factory,
) -> None:
    """Nothing is written, and an item already on record is told so, not that it was not
    recorded (a client believing that could send it again under another key)."""
    ledger = ledger_factory()
    sid = register(ledger).subject_id
    command = collection(sid, at=later(ledger))
    original = ledger.execute(PRINCIPAL, command)
    before = len(ledger.history(sid))
    sensitive = gps_collection(sid, at=later(ledger))  # no consent: refused

    outcomes = ledger.execute_batch(
        PRINCIPAL,
        [command, sensitive, command, collection(sid, at=later(ledger))],
        all_or_nothing=True,
    )

    assert [(o.recorded.position, o.recorded.replayed) for o in outcomes[::2] if o.recorded] == [
        (original.position, True),
        (original.position, True),
    ]
    assert isinstance(outcomes[1].error, Refused)
    assert isinstance(outcomes[3].error, BatchAborted)
    assert len(ledger.history(sid)) == before


def test_a_refusal_of_an_abandoned_attempt_does_not_refuse_the_next(
    ledger_factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another instance gives the consent while the batch runs: the second item's refusal on
    the stale copy sends the batch round again, fresh, and there both items are accepted; the
    first item's outcome of the abandoned attempt must not abort it."""
    first, other = ledger_factory(), ledger_factory()
    sid = register(first).subject_id
    first.subject_state(ref(sid))  # cached here
    given = consent(sid, at=later(first))  # dated before the collections, recorded during
    items = [
        gps_collection(sid, at=later(first), mode=CollectionMode.CONSENT),
        gps_collection(sid, at=later(first), mode=CollectionMode.CONSENT),
    ]
    handled: list[str] = []
    handle = engine.Work.handle

    def handle_then_consent(work: engine.Work, principal: str, command: c._Command) -> Any:
        handled.append(command.idempotency_key)
        if len(handled) == 2:
            other.execute(PRINCIPAL, given)
        return handle(work, principal, command)

    monkeypatch.setattr(engine.Work, "handle", handle_then_consent)
    outcomes = first.execute_batch(PRINCIPAL, items, all_or_nothing=True)

    assert [o.error for o in outcomes] == [None, None]
    assert len(handled) > 2, "the batch was not sent round again"


@pytest.mark.parametrize("all_or_nothing", [False, True])
def test_many_copies_of_a_recorded_command_in_one_batch_all_replay_it(
    ledger_factory, all_or_nothing: bool
) -> None:
    ledger = ledger_factory()
    sid = register(ledger).subject_id
    command = collection(sid, at=later(ledger))
    original = ledger.execute(PRINCIPAL, command)

    outcomes = ledger.execute_batch(PRINCIPAL, [command] * 10, all_or_nothing=all_or_nothing)

    assert [o.error for o in outcomes] == [None] * 10
    assert {(o.recorded.position, o.recorded.replayed) for o in outcomes if o.recorded} == {
        (original.position, True)
    }
    assert _keys_in_history(ledger, sid)[command.idempotency_key] == 1

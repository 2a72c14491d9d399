"""The ledger's contract, written once and run on memory, SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import SecretStr
from scenario import PRINCIPAL, collection, consent, gps_collection, key, later, register, secret

from ledger import commands as c
from ledger.errors import IdempotencyConflict, RefusalReason, Refused, SubjectNotFound
from ledger.policy_book import POLICY_BOOK_ID


def test_registration_then_collection_is_recorded_with_log_positions(ledger) -> None:
    reg = register(ledger)
    rec = ledger.execute(PRINCIPAL, collection(reg.subject_id, at=later(ledger)))
    assert rec.position > reg.position
    assert rec.event_type == "DataCollected"
    state = ledger.subject_state(c.SubjectRef(subject_id=reg.subject_id))
    assert set(state.held) == {"network_log.ip_address"}


def test_each_item_of_a_batch_answers_with_the_position_of_its_own_event(ledger) -> None:
    """The positions a write answers with are the log's own: read back, each names the event
    (aggregate and version) that item recorded."""
    people = [register(ledger).subject_id for _ in range(3)]
    at = later(ledger)
    items = [collection(people[n % 3], at=at) for n in range(7)]
    outcomes = ledger.execute_batch(PRINCIPAL, items)
    answers = [o.recorded for o in outcomes]
    assert all(a is not None for a in answers)
    positions = [a.position for a in answers if a is not None]
    assert len(set(positions)) == len(items)
    stored = ledger.recorder.select_notifications(min(positions), len(items) + 10)
    by_position = {n.id: (n.originator_id, n.originator_version) for n in stored}
    for answer in answers:
        assert answer is not None
        assert by_position[answer.position] == (answer.aggregate_id, answer.version)


def test_subject_found_by_account_reference(ledger) -> None:
    account = secret("acct")
    reg = register(ledger, account_id=SecretStr(account))
    found = ledger.resolve(c.SubjectRef(namespace="app", account_id=SecretStr(account)))
    assert found == reg.subject_id


def test_unknown_subject_is_not_found(ledger) -> None:
    with pytest.raises(SubjectNotFound):
        ledger.resolve(c.SubjectRef(namespace="app", account_id=SecretStr(secret("nobody"))))


def test_same_key_same_payload_is_recorded_once_with_the_original_answer(ledger) -> None:
    reg = register(ledger)
    command = collection(reg.subject_id, at=later(ledger))
    first = ledger.execute(PRINCIPAL, command)
    again = ledger.execute(PRINCIPAL, command)
    assert again.replayed
    assert not first.replayed
    assert (again.position, again.version) == (first.position, first.version)
    assert len(ledger.history(reg.subject_id)) == 2


def test_same_key_different_payload_is_an_idempotency_conflict(ledger) -> None:
    reg = register(ledger)
    command = collection(reg.subject_id, at=later(ledger))
    ledger.execute(PRINCIPAL, command)
    changed = command.model_copy(update={"values": {"ip": SecretStr(secret("other"))}})
    with pytest.raises(IdempotencyConflict):
        ledger.execute(PRINCIPAL, changed)
    assert len(ledger.history(reg.subject_id)) == 2


def test_retry_after_state_changed_still_answers_the_original(ledger) -> None:
    reg = register(ledger)
    sid = reg.subject_id
    at = later(ledger)
    ledger.execute(PRINCIPAL, consent(sid, at=at))
    gps = gps_collection(sid, at=later(ledger))
    first = ledger.execute(PRINCIPAL, gps)
    ledger.execute(
        PRINCIPAL,
        c.WithdrawConsent(
            idempotency_key=key(),
            occurred_at=later(ledger),
            subject=c.SubjectRef(subject_id=sid),
            categories=("location.gps",),
        ),
    )
    again = ledger.execute(PRINCIPAL, gps)
    assert again.replayed
    assert again.position == first.position


def test_a_refused_command_writes_nothing(ledger) -> None:
    reg = register(ledger)
    before = ledger.recorder.max_notification_id()
    with pytest.raises(Refused) as refused:
        ledger.execute(PRINCIPAL, gps_collection(reg.subject_id, at=later(ledger)))
    assert refused.value.reason is RefusalReason.SENSITIVE_CATEGORY_WITHOUT_CONSENT
    assert ledger.recorder.max_notification_id() == before


def test_a_second_ledger_on_the_same_store_sees_the_first_ones_events(ledger_factory) -> None:
    first = ledger_factory()
    second = ledger_factory()
    reg = register(first)
    state = second.subject_state(c.SubjectRef(subject_id=reg.subject_id))
    assert state.subject_id == reg.subject_id


def _replayed_state(ledger, sid, version: int) -> dict[str, object]:
    """The snapshot state of an aggregate rebuilt from its stored events alone, up to `version`."""
    aggregate = None
    for event in ledger.events.get(sid, lte=version):
        aggregate = event.mutate(aggregate)
    assert aggregate is not None
    return dict(type(aggregate).Snapshot.take(aggregate).state)


def test_a_write_onto_a_snapshot_interval_stores_the_snapshot_in_the_same_write(ledger) -> None:
    """A batch taking a person past 200 events stores one snapshot, at the version it reaches,
    equal to what replaying the stored events builds; a person then loads from it."""
    sid = register(ledger).subject_id
    at = later(ledger)
    ledger.execute_batch(PRINCIPAL, [collection(sid, at=at) for _ in range(210)])
    stored = ledger.snapshots.recorder.select_events(sid)
    assert [s.originator_version for s in stored] == [211]
    snapshot = ledger.snapshots.mapper.to_domain_event(stored[0])
    assert dict(snapshot.state) == _replayed_state(ledger, sid, 211)
    live = ledger.subject(sid).state
    ledger.repository.cache.get(sid, evict=True)
    assert ledger.subject(sid).state == live
    assert ledger.subject(sid).version == 211


def test_unary_writes_store_a_snapshot_at_the_interval_and_a_refused_write_none(ledger) -> None:
    sid = register(ledger).subject_id
    at = later(ledger)
    ledger.execute_batch(PRINCIPAL, [collection(sid, at=at) for _ in range(198)])
    refused = [*(collection(sid, at=at) for _ in range(3)), gps_collection(sid, at=at)]
    outcomes = ledger.execute_batch(PRINCIPAL, refused, all_or_nothing=True)
    assert all(o.recorded is None for o in outcomes)
    assert not ledger.snapshots.recorder.select_events(sid)
    ledger.execute(PRINCIPAL, collection(sid, at=at))  # version 200
    ledger.execute(PRINCIPAL, collection(sid, at=at))
    stored = ledger.snapshots.recorder.select_events(sid)
    assert [s.originator_version for s in stored] == [200]
    snapshot = ledger.snapshots.mapper.to_domain_event(stored[0])
    assert dict(snapshot.state) == _replayed_state(ledger, sid, 200)


def test_a_subject_loaded_from_a_snapshot_equals_the_live_subject(ledger) -> None:
    reg = register(ledger)
    sid = reg.subject_id
    ledger.execute(PRINCIPAL, consent(sid, at=later(ledger)))
    ledger.execute(PRINCIPAL, gps_collection(sid, at=later(ledger)))
    ledger.execute(PRINCIPAL, collection(sid, at=later(ledger)))
    live = ledger.subject(sid).state
    ledger.take_snapshot(sid)
    ledger.repository.cache.get(sid, evict=True)
    snapshots = list(ledger.snapshots.get(sid))
    assert len(snapshots) == 1
    assert ledger.subject(sid).state == live


def test_the_policy_book_is_snapshotted_with_the_publication_that_reaches_its_interval(
    ledger,
) -> None:
    _published, policy = ledger.policy_in_force(ledger.clock.now())
    book_version = ledger.repository.get(POLICY_BOOK_ID).version
    for n in range(20 - book_version % 20):
        ledger.execute(
            "admin",
            c.PublishPolicy(
                idempotency_key=key(),
                occurred_at=ledger.clock.now(),
                policy=policy.model_copy(update={"version": f"{policy.version}.{n + 1}"}),
                effective_at=ledger.clock.now() + timedelta(days=30 + n),
            ),
        )
    stored = ledger.snapshots.recorder.select_events(POLICY_BOOK_ID)
    assert [s.originator_version for s in stored][-1:] == [book_version + 20 - book_version % 20]
    snapshot = ledger.snapshots.mapper.to_domain_event(stored[-1])
    assert dict(snapshot.state) == _replayed_state(
        ledger, POLICY_BOOK_ID, stored[-1].originator_version
    )

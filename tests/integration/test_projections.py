"""The projection runner on every back-end: views on a real SQLite file and on PostgreSQL (in
memory for the in-memory ledger), resumed after a restart, emptied of a person's values on
erasure, and policy notifications for exactly the people a major change affects (§8).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from uuid import UUID

import pytest
import sqlalchemy as sa
from pydantic import SecretStr
from scenario import (
    PRINCIPAL,
    collection,
    consent,
    erasure,
    gps_collection,
    key,
    later,
    ref,
    secret,
    share,
    subject,
    usage_collection,
    use,
)
from sqlalchemy.engine import Connection
from tests_support import dump

from ledger import commands as c
from ledger import events as ev
from ledger.application import Ledger
from ledger.commands import TEXT_MAX_LENGTH
from ledger.errors import ConfigurationError
from ledger.policy import CLAUSE_MAX_LENGTH, Policy, load_seed_policy
from projections import VIEW_NAMES, ProjectionRunner, View, ViewStore, ledger_runner, views
from projections import queries as q
from projections.deadlines import REQUESTS
from projections.notices import NOTICES, VERSIONS
from projections.register import REGISTER
from projections.retention import HELD
from projections.store import SHAPE, SHAPES, to_us
from projections.subjects import CATEGORIES, FACETS, SUBJECTS, VALUES, shared_with_of
from projections.view import Entry

MakeStore = Callable[[], ViewStore]


@pytest.fixture
def view_store_factory(
    backend: str, tmp_path, request: pytest.FixtureRequest
) -> Iterator[MakeStore]:
    """Makes view stores on the back-end's database (one shared database per test)."""
    opened: list[ViewStore] = []
    if backend == "postgres":
        schema = request.getfixturevalue("postgres_schema")
        url = request.getfixturevalue("postgres_url")
    counter = iter(range(1000))

    def make() -> ViewStore:
        if backend == "memory":
            store = ViewStore(f"sqlite:///{tmp_path / f'views-{next(counter)}.db'}")
        elif backend == "sqlite":
            store = ViewStore(f"sqlite:///{tmp_path / 'views.db'}")
        else:
            store = ViewStore(url, schema=schema)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


def _runner(ledger: Ledger, store: ViewStore, page_size: int = 500) -> ProjectionRunner:
    return ledger_runner(ledger, store, page_size=page_size)


def _history(ledger: Ledger, people: int = 4) -> list[UUID]:
    ids = []
    for _ in range(people):
        sid = subject(ledger)
        ids.append(sid)
        ledger.execute(PRINCIPAL, collection(sid, at=later(ledger)))
        ledger.execute(PRINCIPAL, use(sid, at=later(ledger)))
        ledger.execute(PRINCIPAL, consent(sid, at=later(ledger)))
        ledger.execute(PRINCIPAL, gps_collection(sid, at=later(ledger)))
    return ids


def test_a_restarted_runner_resumes_from_its_tracking_rows_without_counting_twice(
    ledger, view_store_factory
):
    _history(ledger)
    store = view_store_factory()
    first = _runner(ledger, store, page_size=3)
    first.step()
    first.step()
    assert 0 < first.position < (ledger.recorder.max_notification_id() or 0)

    second = _runner(ledger, store, page_size=3)
    assert second.positions() == first.positions()
    reached = second.catch_up()

    assert reached == ledger.recorder.max_notification_id()
    with store.read() as conn:
        collections = conn.execute(
            sa.select(sa.func.sum(REGISTER.c.events)).where(REGISTER.c.activity == "collection")
        ).scalar_one()
        held = conn.execute(sa.select(sa.func.sum(CATEGORIES.c.collections))).scalar_one()
    assert collections == 8
    assert held == 8


def test_a_runner_following_the_log_sees_a_new_event_within_its_wait(ledger, view_store_factory):
    store = view_store_factory()
    with _runner(ledger, store) as runner:
        sid = subject(ledger)
        recorded = ledger.execute(PRINCIPAL, collection(sid, at=later(ledger)))
        assert runner.wait(recorded.position, timeout=10)
        with store.read() as conn:
            row = conn.execute(sa.select(SUBJECTS).where(SUBJECTS.c.subject_id == sid)).one()
        assert row.events == 2
        assert row.last_position == recorded.position


def test_erasure_drops_the_persons_sealed_values_from_every_view_but_keeps_the_counts(
    ledger, view_store_factory
):
    erased, kept = _history(ledger, people=2)
    ledger.execute(
        PRINCIPAL,
        erasure(erased, at=later(ledger), ground="no_consent"),
    )
    store = view_store_factory()
    _runner(ledger, store).catch_up()

    with store.read() as conn:
        values = conn.execute(sa.select(VALUES.c.subject_id)).scalars().all()
        person = conn.execute(sa.select(SUBJECTS).where(SUBJECTS.c.subject_id == erased)).one()
        register_events = conn.execute(sa.select(sa.func.sum(REGISTER.c.events))).scalar_one()
    assert erased not in values
    assert kept in values
    assert person.account_id is None
    assert person.erased
    assert person.key_shredded
    assert person.events > 1
    assert register_events == 2 * 3  # two collections and one use each: audit counts stay
    sealed = [
        cell
        for rows in dump(store).values()
        for row in rows
        for cell in row
        if ("s1:" in cell or "s2:" in cell) and str(erased) in "".join(row)
    ]
    assert sealed == []


@pytest.mark.parametrize("page_size", [1, 500])
def test_a_partial_erasure_dated_before_a_later_collection_keeps_that_one_in_the_views(
    ledger, view_store_factory, page_size
):
    """The erasure takes the values collected up to its instant (§6.3): a collection dated
    after it, recorded first, stays held with its value, as the ledger's own state says."""
    sid = subject(ledger)
    ledger.execute(PRINCIPAL, collection(sid, at=later(ledger)))
    erased_at = later(ledger, 10)
    kept_at = later(ledger, 10)
    ledger.execute(PRINCIPAL, collection(sid, at=kept_at))
    ledger.execute(
        PRINCIPAL,
        erasure(
            sid, at=erased_at, ground="retention_expired", categories=("network_log.ip_address",)
        ),
    )
    store = view_store_factory()

    _runner(ledger, store, page_size=page_size).catch_up()

    kept = [p for p in ledger.history(sid) if isinstance(p, ev.DataCollected)][-1]
    assert kept.occurred_at == kept_at
    with store.read() as conn:
        category = conn.execute(sa.select(CATEGORIES).where(CATEGORIES.c.subject_id == sid)).one()
        value = conn.execute(sa.select(VALUES).where(VALUES.c.subject_id == sid)).one()
        held = conn.execute(sa.select(HELD).where(HELD.c.subject_id == sid)).one()
    assert category.category == "network_log.ip_address"
    assert category.last_at == held.last_at == to_us(kept_at)
    assert to_us(erased_at) < category.first_at <= to_us(kept_at)
    assert to_us(erased_at) < held.first_at <= to_us(kept_at)
    assert value.sealed == kept.values["ip"]


@pytest.mark.parametrize("page_size", [1, 500])
def test_a_persons_value_is_the_latest_by_occurred_at_whatever_order_it_was_recorded(
    ledger, view_store_factory, page_size
):
    """A collection reported late (dated before a correction) does not replace the newer
    value: on one page and across pages alike."""
    sid = subject(ledger)
    first = later(ledger)
    ledger.execute(PRINCIPAL, collection(sid, at=first))
    ledger.execute(
        PRINCIPAL,
        c.CorrectData(
            idempotency_key="cor-1",
            occurred_at=later(ledger, 60),
            subject=c.SubjectRef(subject_id=sid),
            category="network_log.ip_address",
            values={"ip": SecretStr(secret("ip"))},
        ),
    )
    ledger.execute(PRINCIPAL, collection(sid, at=first + timedelta(seconds=30)))
    store = view_store_factory()

    _runner(ledger, store, page_size=page_size).catch_up()

    corrected = next(p for p in ledger.history(sid) if isinstance(p, ev.DataCorrected))
    with store.read() as conn:
        row = conn.execute(sa.select(VALUES).where(VALUES.c.subject_id == sid)).one()
    assert row.sealed == corrected.values["ip"]


def test_a_persons_count_of_events_leaves_out_their_rights_requests(ledger, view_store_factory):
    sid = subject(ledger)
    ledger.execute(PRINCIPAL, collection(sid, at=later(ledger)))
    ledger.execute(
        PRINCIPAL,
        c.OpenRightsRequest(
            idempotency_key="req-1",
            occurred_at=later(ledger),
            subject=c.SubjectRef(subject_id=sid),
            kind="access",
        ),
    )
    store = view_store_factory()

    _runner(ledger, store).catch_up()

    with store.read() as conn:
        row = conn.execute(sa.select(SUBJECTS).where(SUBJECTS.c.subject_id == sid)).one()
    assert row.events == ledger.subject(sid).state.events == 2


def test_a_request_under_a_deadline_with_a_long_worded_clause_is_folded(ledger, view_store_factory):
    """A clause may be worded up to `CLAUSE_MAX_LENGTH`; PostgreSQL refused a deadline clause
    over 32 characters, and with it every view's page."""
    seed = load_seed_policy()
    clause = "§6.4 response to requests of the person"
    deadline = seed.response_deadline.model_copy(update={"clause": clause})
    _publish(ledger, seed.model_copy(update={"version": "2", "response_deadline": deadline}))
    sid = subject(ledger)
    opened = ledger.execute(
        PRINCIPAL,
        c.OpenRightsRequest(
            idempotency_key="req-long-clause",
            occurred_at=later(ledger, 31 * 86_400),
            subject=c.SubjectRef(subject_id=sid),
            kind="access",
        ),
    )
    store = view_store_factory()

    _runner(ledger, store).catch_up()

    assert store.positions()["deadlines"] >= opened.position
    with store.read() as conn:
        row = conn.execute(sa.select(REQUESTS).where(REQUESTS.c.subject_id == sid)).one()
    assert row.deadline_clause == clause
    too_long = "§6.4 " + "a" * CLAUSE_MAX_LENGTH
    with pytest.raises(ValueError, match="at most 64"):
        seed.response_deadline.model_validate(
            {**seed.response_deadline.model_dump(), "clause": too_long}
        )


def test_one_read_sees_one_snapshot_while_the_views_move_on(ledger, view_store_factory):
    """A view and the tracking position answered with it come from the same commit."""
    store = view_store_factory()
    runner = _runner(ledger, store)
    runner.catch_up()
    with store.read() as conn:
        before = store.positions(conn)
        ledger.execute(PRINCIPAL, collection(subject(ledger), at=later(ledger)))
        runner.catch_up()  # commits on another connection meanwhile
        assert store.positions(conn) == before
    assert store.positions() != before


# --- policy-change notifications (§8) ------------------------------------------------------


def _widened(policy: Policy, version: str) -> Policy:
    """The seed policy with one purpose now also using precise location (a major change)."""
    purposes = []
    for purpose in policy.purposes:
        if purpose.id == "security_detection":
            categories = (*purpose.categories, "location.gps")
            purposes.append(purpose.model_copy(update={"categories": categories}))
        else:
            purposes.append(purpose)
    return policy.model_copy(update={"version": version, "purposes": tuple(purposes)})


def _publish(ledger: Ledger, policy: Policy, *, major: bool | None = None) -> int:
    recorded = ledger.execute(
        "admin",
        c.PublishPolicy(
            idempotency_key=f"publish-{policy.version}",
            occurred_at=ledger.clock.now(),
            policy=policy,
            effective_at=ledger.clock.now() + timedelta(days=30),
            major=major,
        ),
    )
    return recorded.position


def _notified(ledger: Ledger, version: str) -> set[UUID]:
    found = set()
    for n in ledger.recorder.select_notifications(1, 100_000):
        payload = getattr(ledger.mapper.to_domain_event(n), "payload", None)
        if isinstance(payload, ev.PolicyNotified) and payload.version == version:
            found.add(payload.subject_id)
    return found


def test_a_major_change_notifies_exactly_the_people_whose_data_it_touches(
    ledger, view_store_factory
):
    gps_holder = subject(ledger)
    ledger.execute(PRINCIPAL, consent(gps_holder, at=later(ledger)))
    ledger.execute(PRINCIPAL, gps_collection(gps_holder, at=later(ledger)))
    security_user = subject(ledger)
    ledger.execute(PRINCIPAL, collection(security_user, at=later(ledger)))
    untouched = subject(ledger)
    ledger.execute(
        PRINCIPAL,
        collection(
            untouched,
            at=later(ledger),
            category="network_log.time_zone",
            source="app",
            purposes=("notifications",),
        ),
    )
    later(ledger)

    _publish(ledger, _widened(load_seed_policy(), "2"))
    store = view_store_factory()
    _runner(ledger, store).catch_up()

    assert _notified(ledger, "2") == {gps_holder, security_user}
    with store.read() as conn:
        version = conn.execute(sa.select(VERSIONS).where(VERSIONS.c.version == "2")).one()
        notices = conn.execute(sa.select(NOTICES).where(NOTICES.c.version == "2")).all()
    assert version.major
    assert version.affected == 2
    assert {n.subject_id for n in notices} == {gps_holder, security_user}
    assert all(n.acknowledged_at is None for n in notices)


def _collect_for_security(ledger: Ledger, sid: UUID) -> None:
    """A collection for `security_detection`, the purpose `_widened` changes."""
    ledger.execute(PRINCIPAL, collection(sid, at=later(ledger)))


@pytest.mark.parametrize("page_size", [1, 500])
def test_people_whose_data_meets_a_major_change_after_it_was_published_are_told_too__clause_8(
    ledger, view_store_factory, page_size
):
    """Those who join while the change is pending, or whose data comes to meet it later,
    agreed to the version before: they are told once, when their data meets it; those who
    join once it is in force agreed to it, and are not."""
    untouched_then = subject(ledger)
    ledger.execute(
        PRINCIPAL,
        collection(
            untouched_then,
            at=later(ledger),
            category="network_log.time_zone",
            source="app",
            purposes=("notifications",),
        ),
    )
    later(ledger)
    _publish(ledger, _widened(load_seed_policy(), "2"))  # in force 30 days from now
    joiner = subject(ledger)
    _collect_for_security(ledger, joiner)
    _collect_for_security(ledger, joiner)
    _collect_for_security(ledger, untouched_then)
    bystander = subject(ledger)  # holds nothing the change touches
    later(ledger, 31 * 24 * 3600)
    under_v2 = subject(ledger)
    _collect_for_security(ledger, under_v2)
    store = view_store_factory()

    _runner(ledger, store, page_size=page_size).catch_up()
    _runner(ledger, store, page_size=page_size).catch_up()  # the notices come back folded

    assert _notified(ledger, "2") == {joiner, untouched_then}
    assert bystander not in _notified(ledger, "2")
    with store.read() as conn:
        notices = conn.execute(sa.select(NOTICES).where(NOTICES.c.version == "2")).all()
    assert sorted(str(n.subject_id) for n in notices) == sorted(map(str, {joiner, untouched_then}))
    events = ledger.recorder.select_notifications(1, 100_000)
    payloads = [getattr(ledger.mapper.to_domain_event(n), "payload", None) for n in events]
    notified = [p for p in payloads if isinstance(p, ev.PolicyNotified)]
    assert len(notified) == 2  # each once, whatever the page size


@pytest.mark.parametrize("page_size", [1, 500])
def test_a_late_notice_is_dated_when_the_data_met_the_change_whatever_the_paging__clause_8(
    ledger, view_store_factory, page_size
):
    """Not when the person's latest event in the same page happened: the log's notice and the
    view must not depend on how the log was paged."""
    sid = subject(ledger)
    store = view_store_factory()
    _publish(ledger, _widened(load_seed_policy(), "2"))
    _runner(ledger, store, page_size=page_size).catch_up()  # a follower past the publication
    met = later(ledger, 60)
    ledger.execute(PRINCIPAL, collection(sid, at=met))  # meets what version 2 changes
    unrelated = collection(
        sid,
        at=later(ledger, 5 * 3600),
        category="network_log.time_zone",
        source="app",
        purposes=("notifications",),
    )
    ledger.execute(PRINCIPAL, unrelated)

    _runner(ledger, store, page_size=page_size).catch_up()
    _runner(ledger, store, page_size=page_size).catch_up()  # the notice comes back folded

    events = ledger.recorder.select_notifications(1, 100_000)
    payloads = [getattr(ledger.mapper.to_domain_event(n), "payload", None) for n in events]
    (notice,) = [p for p in payloads if isinstance(p, ev.PolicyNotified)]
    assert notice.occurred_at == met
    with store.read() as conn:
        row = conn.execute(sa.select(NOTICES).where(NOTICES.c.version == "2")).one()
    assert row.notified_at == to_us(met)


@pytest.mark.parametrize("apart", [True, False], ids=["folded-apart", "folded-together"])
def test_an_acknowledgement_before_any_notice_does_not_spare_a_late_notice__clause_8(
    ledger, view_store_factory, apart: bool
) -> None:
    """A person acknowledges a pending major version before their data meets it; once it
    does, they are told, however the log was paged, and a rebuild records nothing more."""
    person = subject(ledger)
    later(ledger)
    _publish(ledger, _widened(load_seed_policy(), "2"))
    store = view_store_factory()
    _runner(ledger, store).catch_up()
    ledger.execute(
        PRINCIPAL,
        c.AcknowledgePolicy(
            idempotency_key=key("ack"),
            occurred_at=later(ledger),
            subject=ref(person),
            version="2",
            method="popup",
        ),
    )
    if apart:
        _runner(ledger, store).catch_up()
    _collect_for_security(ledger, person)

    _runner(ledger, store).catch_up()
    _runner(ledger, store).catch_up()  # the notice comes back folded

    assert _notified(ledger, "2") == {person}
    with store.read() as conn:
        row = conn.execute(sa.select(NOTICES).where(NOTICES.c.subject_id == person)).one()
    assert row.notified_at is not None
    assert row.acknowledged_at is not None
    before = ledger.recorder.max_notification_id()
    _runner(ledger, view_store_factory()).catch_up()
    assert ledger.recorder.max_notification_id() == before, "a rebuild recorded more"


def test_a_second_notice_of_a_version_keeps_when_the_person_was_first_told__clause_8(
    ledger, view_store_factory
) -> None:
    person = subject(ledger)
    _collect_for_security(ledger, person)
    later(ledger)
    _publish(ledger, _widened(load_seed_policy(), "2"))
    store = view_store_factory()
    _runner(ledger, store).catch_up()
    _runner(ledger, store).catch_up()
    with store.read() as conn:
        first = conn.execute(sa.select(NOTICES).where(NOTICES.c.subject_id == person)).one()
    later(ledger, 5 * 24 * 3600)
    ledger.execute(
        "admin",
        c.NotifyPolicy(
            idempotency_key=key("notice"),
            occurred_at=later(ledger),
            subject=ref(person),
            version="2",
            method="website_notice",
        ),
    )

    _runner(ledger, store).catch_up()

    with store.read() as conn:
        row = conn.execute(sa.select(NOTICES).where(NOTICES.c.subject_id == person)).one()
    assert (row.notified_at, row.notified_position, row.method) == (
        first.notified_at,
        first.notified_position,
        first.method,
    )
    rebuilt = view_store_factory()
    _runner(ledger, rebuilt).catch_up()
    with rebuilt.read() as conn:
        again = conn.execute(sa.select(NOTICES).where(NOTICES.c.subject_id == person)).one()
    assert again.notified_at == first.notified_at


@pytest.mark.parametrize("page_size", [1, 500])
def test_the_first_notice_is_the_earliest_dated_whatever_order_they_were_recorded__clause_8(
    ledger, view_store_factory, page_size
) -> None:
    """Told by e-mail at t+10 s and by pop-up at t+20 s, the pop-up recorded first: the
    person was first told at t+10 s."""
    person = subject(ledger)
    start = later(ledger)

    def notice(seconds: int, method: str) -> int:
        return ledger.execute(
            "admin",
            c.NotifyPolicy(
                idempotency_key=key("notice"),
                occurred_at=start + timedelta(seconds=seconds),
                subject=ref(person),
                version="1",
                method=method,
            ),
        ).position

    later(ledger, 30)
    notice(20, "popup")
    by_email = notice(10, "email")
    store = view_store_factory()

    _runner(ledger, store, page_size=page_size).catch_up()

    with store.read() as conn:
        row = conn.execute(sa.select(NOTICES).where(NOTICES.c.subject_id == person)).one()
    assert (row.notified_at, row.notified_position, row.method) == (
        to_us(start + timedelta(seconds=10)),
        by_email,
        "email",
    )


def test_a_version_that_stops_promising_notices_is_itself_notified__clause_8(
    ledger, view_store_factory
):
    """It is published under the promise of the version it replaces."""
    holder = subject(ledger)
    _collect_for_security(ledger, holder)
    widened = _widened(load_seed_policy(), "2")
    silent = widened.change_notice.model_copy(update={"notify_on_major_change": False})
    _publish(ledger, widened.model_copy(update={"change_notice": silent}))
    store = view_store_factory()

    _runner(ledger, store).catch_up()

    assert _notified(ledger, "2") == {holder}


def test_a_late_notice_is_not_dated_before_its_version_was_published__clause_8(
    ledger, view_store_factory
):
    person = subject(ledger)
    later(ledger, 3600)
    _publish(ledger, _widened(load_seed_policy(), "2"))
    published = ledger.clock.now()
    later(ledger)
    ledger.execute(PRINCIPAL, collection(person, at=published - timedelta(minutes=30)))
    store = view_store_factory()

    _runner(ledger, store).catch_up()

    events = ledger.recorder.select_notifications(1, 100_000)
    payloads = [getattr(ledger.mapper.to_domain_event(n), "payload", None) for n in events]
    (notice,) = [p for p in payloads if isinstance(p, ev.PolicyNotified)]
    assert notice.subject_id == person
    assert notice.occurred_at >= published


def test_a_minor_change_notifies_no_one(ledger, view_store_factory):
    sid = subject(ledger)
    ledger.execute(PRINCIPAL, collection(sid, at=later(ledger)))
    revised = load_seed_policy().model_copy(update={"version": "2", "text_sha256": "0" * 64})
    _publish(ledger, revised)
    store = view_store_factory()
    _runner(ledger, store).catch_up()

    assert _notified(ledger, "2") == set()
    with store.read() as conn:
        version = conn.execute(sa.select(VERSIONS).where(VERSIONS.c.version == "2")).one()
    assert not version.major
    assert version.affected == 0


def test_notifying_again_after_a_crash_records_each_notice_once_and_acknowledgements_show(
    ledger, view_store_factory
):
    people = _history(ledger, people=3)
    later(ledger)
    _publish(ledger, _widened(load_seed_policy(), "2"))
    first = view_store_factory()
    _runner(ledger, first).catch_up()
    size = ledger.recorder.max_notification_id()
    # A second build (as after a crash before the view committed) notifies again: the ledger
    # answers from its idempotency receipts and records nothing new.
    again = view_store_factory()
    if again.shown_url == first.shown_url:
        with again.write() as conn:
            for view in views(again.dialect):
                again.reset(conn, view.name, view.tables)
    _runner(ledger, again).catch_up()
    assert ledger.recorder.max_notification_id() == size
    assert _notified(ledger, "2") == set(people)

    ledger.execute(
        PRINCIPAL,
        c.AcknowledgePolicy(
            idempotency_key="ack-1",
            occurred_at=later(ledger),
            subject=c.SubjectRef(subject_id=people[0]),
            version="2",
        ),
    )
    _runner(ledger, again).catch_up()
    with again.read() as conn:
        rows = conn.execute(sa.select(NOTICES).where(NOTICES.c.version == "2")).all()
    waiting = {r.subject_id for r in rows if r.acknowledged_at is None}
    assert waiting == set(people[1:])


def test_catching_up_transactions_double_to_eight_pages_then_following_returns_to_one(
    ledger, view_store_factory
):
    _history(ledger, people=12)  # 48 events, and the policy's
    store = view_store_factory()
    runner = _runner(ledger, store, page_size=2)
    transactions: list[int] = []
    runner.catch_up(lambda _position, read: transactions.append(read))

    assert transactions[:5] == [2, 4, 8, 16, 16]
    assert sum(transactions) == ledger.recorder.max_notification_id()
    assert max(transactions) == runner.catch_up_size == 16

    _history(ledger, people=2)  # 8 new events: a follower reads them a page at a time
    assert runner.step() == 2


class _FailsOnce(View):
    """A view that fails the first page holding position `at` (as a lost connection would)."""

    name = "fails_once"
    tables = ()

    def __init__(self, dialect: str, at: int) -> None:
        super().__init__(dialect)
        self.at = at
        self.failed = False

    def apply(self, conn: Connection, entries: Sequence[Entry]) -> None:
        if not self.failed and entries[0][0] <= self.at <= entries[-1][0]:
            self.failed = True
            msg = "page lost"
            raise RuntimeError(msg)


def test_a_page_that_fails_mid_catch_up_is_folded_again_from_its_start_with_nothing_lost(
    ledger, view_store_factory
):
    _history(ledger, people=10)
    end = ledger.recorder.max_notification_id() or 0
    store = view_store_factory()
    flaky = _FailsOnce(store.dialect, at=end - 5)
    runner = ProjectionRunner(ledger, store, [*views(store.dialect), flaky], page_size=3)
    with pytest.raises(RuntimeError, match="page lost"):
        runner.catch_up()
    reached = runner.position
    assert 0 < reached < end - 5
    _history(ledger, people=2)  # the log grows meanwhile
    assert runner.catch_up() == ledger.recorder.max_notification_id()

    live, rebuilt = _refolded(ledger, view_store_factory, store)
    assert live == rebuilt


def _refolded(
    ledger: Ledger, view_store_factory: MakeStore, store: ViewStore
) -> tuple[dict[str, list[tuple[str, ...]]], dict[str, list[tuple[str, ...]]]]:
    """The rows of `store`'s views, and those one runner folding the whole log makes (on a
    copy where the back-end gives one database per test), tracking rows left out."""
    rebuilt = view_store_factory()
    if rebuilt.shown_url == store.shown_url:  # one database per back-end: compare a copy
        live = dump(store)
        with rebuilt.write() as conn:
            for view in views(rebuilt.dialect):
                rebuilt.reset(conn, view.name, view.tables)
        ProjectionRunner(ledger, rebuilt, views(rebuilt.dialect), page_size=1000).catch_up()
        rows = dump(rebuilt)
    else:
        ProjectionRunner(ledger, rebuilt, views(rebuilt.dialect), page_size=1000).catch_up()
        live, rows = dump(store), dump(rebuilt)
    tracking = "view_tracking"
    return (
        {k: v for k, v in live.items() if k != tracking},
        {k: v for k, v in rows.items() if k != tracking},
    )


def test_two_servers_folding_one_views_database_at_once_fold_each_event_once(
    ledger_factory, view_store_factory
):
    """Two followers on one views database (two servers sharing it), each woken by the
    events its own ledger records, fold at once while both record: every event is folded
    once, both end at the log's end, and the views equal a fold by one runner."""
    first, second = view_store_factory(), view_store_factory()
    if second.shown_url != first.shown_url:  # one views file per store (in memory): share it
        second = first
    ledger_a, ledger_b = ledger_factory(), ledger_factory()
    a = _runner(ledger_a, first, page_size=4)
    b = _runner(ledger_b, second, page_size=4)
    a.gather_seconds = b.gather_seconds = 0.0
    with a, b:
        for _ in range(3):
            _history(ledger_a, people=2)
            _history(ledger_b, people=2)
        end = ledger_a.recorder.max_notification_id() or 0
        assert a.wait(end, timeout=30)
        assert b.wait(end, timeout=30)
    assert a.positions() == b.positions() == first.positions()

    with first.read() as conn:
        collections = conn.execute(
            sa.select(sa.func.sum(REGISTER.c.events)).where(REGISTER.c.activity == "collection")
        ).scalar_one()
    assert collections == 2 * 6 * 2  # two collections for each of 12 people
    live, rebuilt = _refolded(ledger_a, view_store_factory, first)
    assert live == rebuilt


def test_a_rebuild_while_a_server_folds_the_same_views_counts_each_event_once(
    ledger_factory, view_store_factory
):
    """`pdl project --rebuild` empties views a server is folding at that moment: the server's
    fold in flight commits before the views are emptied, and both then fold from zero in
    turns, so nothing is counted twice."""
    first, second = view_store_factory(), view_store_factory()
    if second.shown_url != first.shown_url:  # one views file per store (in memory): share it
        second = first
    ledger_a, ledger_b = ledger_factory(), ledger_factory()
    server = _runner(ledger_a, first, page_size=3)
    server.gather_seconds = 0.0
    with server:
        for _ in range(3):
            _history(ledger_a, people=2)
            _runner(ledger_b, second, page_size=5).rebuild(VIEW_NAMES)
        end = ledger_a.recorder.max_notification_id() or 0
        assert server.wait(end, timeout=30)
    assert server.positions() == first.positions()

    with first.read() as conn:
        collections = conn.execute(
            sa.select(sa.func.sum(REGISTER.c.events)).where(REGISTER.c.activity == "collection")
        ).scalar_one()
    assert collections == 2 * 6  # two collections for each of 6 people
    live, rebuilt = _refolded(ledger_a, view_store_factory, first)
    assert live == rebuilt


def test_views_databases_opened_by_several_processes_at_once_all_open(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """`pdl project` workers open a new views database at the same moment: each of them opens
    it (its tables are made once, under a lock), five times over on fresh databases."""
    for attempt in range(5):
        if backend == "postgres":
            schema = f"{request.getfixturevalue('postgres_schema')}_{attempt}"
            url = request.getfixturevalue("postgres_url")
            admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
            target: dict[str, str | None] = {"url": url, "schema": schema}
        else:
            admin, target = None, {"url": f"sqlite:///{tmp_path / f'views-{attempt}.db'}"}
        try:
            _open_at_once(target, 6)
        finally:
            if admin is not None:
                with admin.connect() as conn:
                    conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
                admin.dispose()


def _open_at_once(target: dict[str, str | None], count: int) -> None:
    ready = threading.Barrier(count)
    opened: list[ViewStore] = []
    failed: list[BaseException] = []

    def open_one() -> None:
        ready.wait()
        try:
            opened.append(ViewStore(target["url"] or "", schema=target.get("schema")))
        except BaseException as error:  # noqa: BLE001 (reported below)
            failed.append(error)

    threads = [threading.Thread(target=open_one) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for store in opened:
        assert store.positions() == {}
        store.close()
    assert failed == []
    assert len(opened) == count


@pytest.mark.parametrize("everything", [False, True], ids=["one-category", "whole-person"])
def test_whom_data_was_shared_with_stays_in_the_view_after_its_erasure__clause_6_3(
    ledger, view_store_factory, everything
):
    """The trail stays in clear after erasure (the ledger's own state keeps it): only the
    erased values and what is held go."""
    sid = subject(ledger)
    usage = usage_collection(sid, at=later(ledger), purpose="advertising")
    ledger.execute(PRINCIPAL, usage)
    ledger.execute(PRINCIPAL, share(sid, at=later(ledger)))
    ledger.execute(
        PRINCIPAL,
        erasure(
            sid,
            at=later(ledger),
            ground="retention_expired",
            categories=() if everything else ("network_log.usage",),
        ),
    )
    store = view_store_factory()

    _runner(ledger, store).catch_up()

    with store.read() as conn:
        view = q.subject_view(conn, sid)
    assert view.categories == ()
    assert [(s.recipient_class, s.recipients) for s in view.shared_with] == [
        ("third_party_partners", ("Example Ads Ltd",))
    ]
    assert ledger.subject(sid).state.shared_with == {"third_party_partners": {"Example Ads Ltd"}}


def test_a_share_with_the_longest_recipient_a_command_takes_is_folded(ledger, view_store_factory):
    # A recipient is free text; the views must hold the longest a command takes whole.
    recipient = "Example Ads Ltd, " + "x" * (TEXT_MAX_LENGTH - len("Example Ads Ltd, "))
    sid = subject(ledger)
    usage = usage_collection(sid, at=later(ledger), purpose="advertising")
    ledger.execute(PRINCIPAL, usage)
    shared = ledger.execute(PRINCIPAL, share(sid, at=later(ledger), recipient=recipient))
    store = view_store_factory()

    assert _runner(ledger, store).catch_up() == shared.position
    with store.read() as conn:
        values = conn.execute(
            sa.select(FACETS.c.value).where(
                FACETS.c.subject_id == sid, FACETS.c.facet == "shared_with"
            )
        ).scalars()
        assert {shared_with_of(value) for value in values} == {("third_party_partners", recipient)}


_ONE_VIEWS_DATABASE = pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
"""The back-ends whose view stores all open one database (the in-memory one makes a database
per store)."""


@pytest.mark.parametrize(
    "backend", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_a_views_column_created_narrower_is_widened_and_every_view_folded_again(
    view_store_factory: MakeStore, postgres_schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    facets = f'"{postgres_schema}".view_subject_facets'
    store = view_store_factory()
    with store.write() as conn:  # as an earlier version left it: facet values at 128, folded
        conn.exec_driver_sql(f"ALTER TABLE {facets} ALTER COLUMN value TYPE VARCHAR(128)")
        store.set_positions(conn, {"subjects": 42})
    store.close()

    with caplog.at_level(logging.WARNING, logger="projections.store"):
        reopened = view_store_factory()

    assert reopened.positions() == {}  # every view starts again from the log
    with reopened.read() as conn:
        length = conn.execute(
            sa.text(
                "SELECT character_maximum_length FROM information_schema.columns"
                " WHERE table_schema = :s AND table_name = 'view_subject_facets'"
                " AND column_name = 'value'"
            ),
            {"s": postgres_schema},
        ).scalar_one()
    assert length == FACETS.c.value.type.length
    assert "widened view_subject_facets.value" in caplog.text
    caplog.clear()
    view_store_factory().close()  # opened again: nothing to widen, nothing emptied
    assert "widened" not in caplog.text


@_ONE_VIEWS_DATABASE
def test_a_column_an_earlier_version_lacked_is_added_and_every_view_folded_again(
    ledger: Ledger, view_store_factory: MakeStore, caplog: pytest.LogCaptureFixture
) -> None:
    _history(ledger, people=1)
    store = view_store_factory()
    folded = _runner(ledger, store).catch_up()
    schema = getattr(store, "_schema", None)
    table = "view_requests" if schema is None else f'"{schema}".view_requests'
    with store.write() as conn:  # as the version before latest_due_at left it
        conn.exec_driver_sql(f"ALTER TABLE {table} DROP COLUMN latest_due_at")
    store.close()

    with caplog.at_level(logging.WARNING, logger="projections.store"):
        reopened = view_store_factory()

    assert reopened.positions() == {}
    assert "added view_requests.latest_due_at" in caplog.text
    assert _runner(ledger, reopened).catch_up() == folded
    caplog.clear()
    view_store_factory().close()  # opened again: nothing to add, nothing emptied
    assert "folded again" not in caplog.text


@_ONE_VIEWS_DATABASE
def test_views_folded_in_an_earlier_shape_are_all_folded_again(
    ledger: Ledger, view_store_factory: MakeStore, caplog: pytest.LogCaptureFixture
) -> None:
    _history(ledger, people=2)
    store = view_store_factory()
    folded = _runner(ledger, store).catch_up()
    with store.write() as conn:  # as a version before view shapes left it
        conn.execute(SHAPES.delete())
    store.close()

    with caplog.at_level(logging.WARNING, logger="projections.store"):
        reopened = view_store_factory()
    assert reopened.positions() == {}
    with reopened.read() as conn:
        assert conn.execute(sa.select(SUBJECTS)).all() == []
        assert conn.execute(sa.select(SHAPES.c.shape)).scalar_one() == SHAPE
    assert "view shape 1; every view is folded again" in caplog.text

    assert _runner(ledger, reopened).catch_up() == folded
    caplog.clear()
    view_store_factory().close()  # in shape now: opened again, nothing is emptied
    assert "folded again" not in caplog.text
    assert reopened.positions() == dict.fromkeys(VIEW_NAMES, folded)


@_ONE_VIEWS_DATABASE
def test_views_folded_by_a_newer_version_are_refused_and_left_as_they_are(
    ledger: Ledger, view_store_factory: MakeStore
) -> None:
    _history(ledger, people=1)
    store = view_store_factory()
    folded = _runner(ledger, store).catch_up()
    with store.write() as conn:
        conn.execute(SHAPES.update().values(shape=SHAPE + 1))

    with pytest.raises(ConfigurationError, match=f"view shape {SHAPE + 1}"):
        view_store_factory()
    assert store.positions() == dict.fromkeys(VIEW_NAMES, folded)

"""Every view is a fold over the log: built incrementally (in random page sizes, caught up at
random moments while the log grows, by runners that stop and restart) it has exactly the rows
a rebuild from zero gives; and the consents view agrees with the ledger's own consent rules.
(CONVENTIONS.md §Tests 15; issue "Projections", item 2.)
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import hypothesis.strategies as st
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from scenario import PRINCIPAL, START, key, register
from test_replay import _command, operations
from tests_support import dump

from ledger import commands as c
from ledger.application import Ledger
from ledger.clock import FixedClock
from ledger.errors import LedgerError
from ledger.policy import SEED_EFFECTIVE_AT, load_seed_policy
from ledger.sealing import MasterKey, MemoryKeyStore, Sealer
from ledger.storage import StorageConfig, ledger_env
from ledger.subject_state import ConsentStatus
from projections import ProjectionRunner, ViewStore, views
from projections.consents import CONSENTS
from projections.store import from_us

_POLICY = load_seed_policy()


def _ledger(clock: FixedClock) -> Ledger:
    app = Ledger(
        ledger_env(StorageConfig(backend="memory")),
        sealer=Sealer(MasterKey.generate(), MemoryKeyStore()),
        clock=clock,
    )
    app.ensure_policy(_POLICY, SEED_EFFECTIVE_AT, "pdl-bootstrap")
    return app


_acknowledge = st.tuples(st.just("acknowledge"), st.sampled_from(["1", "2"]))


def _steps(last_choice: int) -> st.SearchStrategy[list[tuple[int, tuple[Any, ...], int]]]:
    """Up to 40 (person, operation, choice 0..last_choice) steps."""
    return st.lists(
        st.tuples(
            st.integers(0, 2), st.one_of(operations, _acknowledge), st.integers(0, last_choice)
        ),
        min_size=1,
        max_size=40,
    )


steps = _steps(3)


def _command_of(op: tuple[Any, ...], subject_id: UUID, now: datetime) -> c._Command:
    """`test_replay`'s commands, and a person acknowledging a policy version (notices and
    acknowledgements of one person can then land in the same page, in either order)."""
    if op[0] == "acknowledge":
        return c.AcknowledgePolicy(
            idempotency_key=key("ack"),
            occurred_at=now,
            subject=c.SubjectRef(subject_id=subject_id),
            version=op[1],
        )
    return _command(op, subject_id, now)


def _three_people(app: Ledger, clock: FixedClock) -> list[UUID]:
    people = []
    for _ in range(3):
        clock.advance(timedelta(seconds=1))
        sid = register(app).subject_id
        assert sid is not None
        people.append(sid)
    return people


def _try(app: Ledger, op: tuple[Any, ...], subject_id: UUID, now: datetime) -> None:
    """Run the step's command; a refusal is one of the outcomes a history may have."""
    with contextlib.suppress(LedgerError):
        app.execute(PRINCIPAL, _command_of(op, subject_id, now))


def _rebuilt_from_zero(app: Ledger) -> dict[str, list[tuple[Any, ...]]]:
    """The rows one runner folding the whole log into empty views makes."""
    rebuilt = ViewStore("sqlite://")
    ProjectionRunner(app, rebuilt, views(rebuilt.dialect), page_size=1000).catch_up()
    return dump(rebuilt)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=steps, page_size=st.integers(1, 7))
def test_views_built_incrementally_equal_a_rebuild_from_zero(
    steps: list[tuple[int, tuple[Any, ...], int]], page_size: int
) -> None:
    clock = FixedClock(START)
    app = _ledger(clock)
    live = ViewStore("sqlite://")
    runner = ProjectionRunner(app, live, views(live.dialect), page_size=page_size)
    people = _three_people(app, clock)
    for who, op, pause in steps:
        _try(app, op, people[who], clock.advance(timedelta(seconds=1)))
        if pause == 0:  # catch up part-way, as a follower between two polls would
            runner.step()
        elif pause == 1:  # a restart: a new runner resumes from the tracking rows
            runner = ProjectionRunner(app, live, views(live.dialect), page_size=page_size)
    runner.catch_up()

    assert dump(live) == _rebuilt_from_zero(app)
    _consents_agree_with_the_ledger(app, live, people)


def _consents_agree_with_the_ledger(app: Ledger, store: ViewStore, people: list[UUID]) -> None:
    """A (purpose, category) has a grant in force in the view exactly when the ledger's own
    fold says consent is given for it now."""
    now = app.clock.now()
    with store.read() as conn:
        rows = conn.execute(sa.select(CONSENTS)).all()
    for sid in people:
        state = app.subject_state(c.SubjectRef(subject_id=sid))
        pairs = {(r.purpose, r.category) for r in rows if r.subject_id == sid}
        for purpose, category in pairs:
            in_force = any(
                r.withdrawn_at is None
                for r in rows
                if (r.subject_id, r.purpose, r.category) == (sid, purpose, category)
                and from_us(r.given_at) <= now
            )
            status = state.consent_status(purpose, category, now)
            assert in_force == (status is ConsentStatus.GIVEN), (purpose, category)


folders_steps = _steps(2)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=folders_steps, page_sizes=st.lists(st.integers(1, 7), min_size=3, max_size=3))
def test_several_runners_folding_one_database_in_turns_fold_each_event_once(
    steps: list[tuple[int, tuple[Any, ...], int]], page_sizes: list[int]
) -> None:
    """Three runners on one views database (three servers sharing it, each with the views it
    knew when it last wrote): whichever folds next, in any order and page size, the views
    end exactly as one runner folding the whole log makes them."""
    clock = FixedClock(START)
    app = _ledger(clock)
    live = ViewStore("sqlite://")
    runners = [ProjectionRunner(app, live, views(live.dialect), page_size=n) for n in page_sizes]
    people = _three_people(app, clock)
    for who, op, folder in steps:
        _try(app, op, people[who], clock.advance(timedelta(seconds=1)))
        runners[folder].step()
    end = app.recorder.max_notification_id()
    for runner in runners:
        assert runner.catch_up() == end
        assert runner.positions() == live.positions()

    assert dump(live) == _rebuilt_from_zero(app)

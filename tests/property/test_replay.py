"""Replay equals live state, and a state "as of" an instant is the fold of the events up to it.

Random, mostly plausible command sequences for two people are recorded in a SQLite event
store (a fresh file per example), the clock moving one second before each command. Then:
each person's live state equals the state replayed from the store, by a second ledger on the
same files and by the first one once its cache is emptied; and `subject_state(ref, as_of=T)`
equals the live state captured after the last command recorded at or before T, for every T
on, just before and just after each recorded instant (CONVENTIONS.md §Tests 15).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings
from pydantic import SecretStr
from scenario import PRINCIPAL, START, key, register, secret

from ledger import commands as c
from ledger.application import Ledger
from ledger.clock import FixedClock
from ledger.errors import LedgerError, SubjectNotFound
from ledger.events import ConsentGiver
from ledger.policy import SEED_EFFECTIVE_AT, load_seed_policy
from ledger.sealing import MasterKey, Sealer
from ledger.storage import StorageConfig, ledger_env
from ledger.subject_state import SubjectState
from server.keystore import SqlKeyStore

_POLICY = load_seed_policy()
_PURPOSES = {p.id: p for p in _POLICY.purposes}
_CLASSES = {rc.id: rc for rc in _POLICY.recipient_classes}
_SOURCES = [s.id for s in _POLICY.sources]
_GROUNDS = [g.id for g in _POLICY.erasure_grounds]
_HALF_SECOND = timedelta(milliseconds=500)


@contextmanager
def sqlite_ledger(directory: Path, master: MasterKey, clock: FixedClock) -> Iterator[Ledger]:
    """A ledger on the SQLite files in `directory`, closed (with its key store) on exit."""
    keystore = SqlKeyStore(f"sqlite:///{directory / 'keys.db'}")
    app = Ledger(
        ledger_env(StorageConfig(backend="sqlite", sqlite_path=directory / "events.db")),
        sealer=Sealer(master, keystore),
        clock=clock,
    )
    try:
        app.ensure_policy(load_seed_policy(), SEED_EFFECTIVE_AT, "pdl-bootstrap")
        yield app
    finally:
        app.close()
        keystore.close()


# --- commands -----------------------------------------------------------------------------


@st.composite
def _purpose_with(draw: st.DrawFn) -> tuple[str, tuple[str, ...]]:
    purpose = draw(st.sampled_from(sorted(_PURPOSES)))
    needed = list(_PURPOSES[purpose].categories)
    cats = draw(st.lists(st.sampled_from(needed), min_size=1, max_size=2, unique=True))
    return purpose, tuple(cats)


@st.composite
def _share(draw: st.DrawFn) -> dict[str, Any]:
    rc = _CLASSES[draw(st.sampled_from(sorted(_CLASSES)))]
    purpose = draw(st.sampled_from(list(rc.purposes)))
    fitting = sorted(set(rc.categories) & set(_PURPOSES[purpose].categories))
    return {
        "recipient": "Example Recipient Ltd",
        "recipient_class": rc.id,
        "purpose": purpose,
        "categories": tuple(
            draw(st.lists(st.sampled_from(fitting), min_size=1, max_size=2, unique=True))
        ),
        "legal_basis": draw(st.sampled_from(list(rc.legal_bases))),
        "legal_ground": rc.legal_grounds[0] if rc.legal_grounds else None,
        "anonymised": rc.requires_anonymised,
    }


operations = st.one_of(
    st.tuples(st.just("collect"), _purpose_with(), st.sampled_from(_SOURCES)),
    st.tuples(st.just("collect"), _purpose_with(), st.sampled_from(_SOURCES)),
    st.tuples(st.just("consent"), _purpose_with(), st.sampled_from(list(ConsentGiver))),
    st.tuples(st.just("withdraw"), _purpose_with(), st.booleans()),
    st.tuples(st.just("use"), _purpose_with(), st.integers(0, 3)),
    st.tuples(st.just("share"), _share()),
    st.tuples(st.just("correct"), _purpose_with()),
    st.tuples(st.just("erase_some"), _purpose_with(), st.sampled_from(_GROUNDS)),
    st.tuples(st.just("notify"), st.sampled_from(["1", "2"])),
    st.tuples(st.just("late"), st.integers(1, 86400)),
    st.tuples(st.just("close"), st.sampled_from(["erase", "cancel"])),
)


def _command(op: tuple[Any, ...], subject_id: UUID, now: datetime) -> c._Command:
    """The command an operation stands for, at `now` (or earlier, for a late report)."""
    name, *args = op
    base: dict[str, Any] = {
        "idempotency_key": key(name),
        "occurred_at": now,
        "subject": c.SubjectRef(subject_id=subject_id),
    }
    if name == "late":
        base["occurred_at"] = now - timedelta(seconds=args[0])
        return c.RecordCollection(
            **base,
            category="network_log.ip_address",
            source="server_logs",
            purposes=("security_detection",),
            values={"ip": SecretStr(secret("ip"))},
        )
    if name == "collect":
        (purpose, cats), source = args
        return c.RecordCollection(
            **base,
            category=cats[0],
            source=source,
            purposes=(purpose,),
            values={"value": SecretStr(secret("v"))},
        )
    if name == "consent":
        (purpose, cats), by = args
        return c.GiveConsent(
            **base, purposes=(purpose,), categories=cats, given_by=by, method="device_permission"
        )
    if name == "withdraw":
        (purpose, cats), whole_purpose = args
        scope = {"purposes": (purpose,)} if whole_purpose else {"categories": cats}
        return c.WithdrawConsent(**base, **scope)
    if name == "use":
        (purpose, cats), basis = args
        bases = _PURPOSES[purpose].legal_bases
        return c.RecordUse(
            **base, purpose=purpose, categories=cats, legal_basis=bases[basis % len(bases)]
        )
    if name == "share":
        return c.RecordShare(**base, **args[0])
    if name == "correct":
        (_, cats) = args[0]
        return c.CorrectData(**base, category=cats[0], values={"value": SecretStr(secret("c"))})
    if name == "erase_some":
        (_, cats), ground = args
        return c.EraseSubject(**base, ground=ground, categories=cats)
    if name == "notify":
        return c.NotifyPolicy(**base, version=args[0])
    assert name == "close"
    if args[0] == "cancel":
        return c.CancelAccount(**base)
    return c.EraseSubject(**base, ground="no_consent")


# --- the recorded run ---------------------------------------------------------------------


@dataclass
class _Run:
    """What a run recorded: per person, the live state after each of their accepted commands."""

    registered_at: dict[UUID, datetime] = field(default_factory=dict)
    states: dict[UUID, list[tuple[datetime, SubjectState]]] = field(default_factory=dict)

    def expected_as_of(self, subject_id: UUID, instant: datetime) -> SubjectState | None:
        found = None
        for recorded_at, state in self.states[subject_id]:
            if recorded_at <= instant:
                found = state
        return found


def _record(app: Ledger, clock: FixedClock, ops: list[tuple[int, tuple[Any, ...]]]) -> _Run:
    run = _Run()
    people = []
    for _ in range(2):
        clock.advance(timedelta(seconds=1))
        sid = register(app).subject_id
        assert sid is not None
        people.append(sid)
        run.registered_at[sid] = clock.now()
        run.states[sid] = [(clock.now(), app.subject_state(c.SubjectRef(subject_id=sid)))]
    for who, op in ops:
        sid = people[who]
        now = clock.advance(timedelta(seconds=1))
        try:
            recorded = app.execute(PRINCIPAL, _command(op, sid, now))
        except LedgerError:
            continue
        assert not recorded.replayed
        run.states[sid].append((now, app.subject_state(c.SubjectRef(subject_id=sid))))
    return run


def _instants(run: _Run, subject_id: UUID) -> list[datetime]:
    """Every recorded instant of the person, and the instants just around each."""
    times = [t for t, _ in run.states[subject_id]]
    return sorted({x for t in times for x in (t - _HALF_SECOND, t, t + _HALF_SECOND)})


history_plans = st.lists(st.tuples(st.integers(0, 1), operations), min_size=1, max_size=16)
_SETTINGS = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@_SETTINGS
@given(plan=history_plans)
def test_replaying_a_subject_from_sqlite_reproduces_its_live_state(
    plan: list[tuple[int, tuple[Any, ...]]],
) -> None:
    master, clock = MasterKey.generate(), FixedClock(START)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        with sqlite_ledger(directory, master, clock) as app:
            run = _record(app, clock, plan)
            live = {sid: app.subject_state(c.SubjectRef(subject_id=sid)) for sid in run.states}
            for sid, state in live.items():
                assert state == run.states[sid][-1][1]
                assert state.events == len(app.history(sid))
            with sqlite_ledger(directory, master, clock) as fresh:
                for sid, state in live.items():
                    assert fresh.subject_state(c.SubjectRef(subject_id=sid)) == state
            cache = app.repository.cache
            assert cache is not None
            for sid, state in live.items():
                with suppress(KeyError):
                    cache.get(sid, evict=True)
                assert app.subject_state(c.SubjectRef(subject_id=sid)) == state


@_SETTINGS
@given(plan=history_plans)
def test_state_as_of_an_instant_is_the_fold_of_the_events_recorded_by_then(
    plan: list[tuple[int, tuple[Any, ...]]],
) -> None:
    master, clock = MasterKey.generate(), FixedClock(START)
    with tempfile.TemporaryDirectory() as tmp, sqlite_ledger(Path(tmp), master, clock) as app:
        run = _record(app, clock, plan)
        for sid in run.states:
            ref = c.SubjectRef(subject_id=sid)
            for instant in _instants(run, sid):
                expected = run.expected_as_of(sid, instant)
                if expected is None:
                    with pytest.raises(SubjectNotFound):
                        app.subject_state(ref, as_of=instant)
                else:
                    assert app.subject_state(ref, as_of=instant) == expected
            assert app.subject_state(ref, as_of=clock.now() + timedelta(days=1)) == (
                app.subject_state(ref)
            )

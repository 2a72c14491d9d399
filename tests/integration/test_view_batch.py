"""Bulk row writes of the views (`projections.batch.ManyRows`) on a real SQLite file and on
PostgreSQL, where they are arrays read with ``unnest`` and pipelined: the rows land as an
upsert of each back-end would write them, a later statement sees the pipelined ones, and a
failing statement anywhere in a page leaves nothing of the page.
"""

from __future__ import annotations

from collections.abc import Iterator
from uuid import UUID, uuid4

import psycopg
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from projections import ViewStore
from projections.batch import ManyRows
from projections.store import TRACKING, upsert
from projections.subjects import CATEGORIES, FACETS, SUBJECTS


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path) -> Iterator[ViewStore]:
    if request.param == "sqlite":
        made = ViewStore(f"sqlite:///{tmp_path / 'views.db'}")
    else:
        url = request.getfixturevalue("postgres_url")
        made = ViewStore(url, schema=request.getfixturevalue("postgres_schema"))
    try:
        yield made
    finally:
        made.close()


def _subject(sid: UUID, position: int) -> dict[str, object]:
    return {
        "subject_id": sid,
        "namespace": "app",
        "account_id": None,
        "registered_at": 1_000_000 * position,
        "minor": position % 2 == 0,
        "has_guardian": False,
        "storage_region": "cn-mainland",
        "erased": False,
        "cancelled": False,
        "key_shredded": False,
        "closed_at": None,
        "events": 0,
        "last_position": position,
    }


def _count(dialect: str) -> ManyRows:
    return ManyRows(
        dialect,
        SUBJECTS.update()
        .where(SUBJECTS.c.subject_id == sa.bindparam("sid", type_=sa.Uuid))
        .values(
            events=SUBJECTS.c.events + sa.bindparam("n", type_=sa.BigInteger),
            last_position=sa.bindparam("pos", type_=sa.BigInteger),
        ),
    )


def test_inserts_upserts_and_updates_land_and_later_statements_see_them(store):
    d = store.dialect
    people = [uuid4() for _ in range(5)]
    with store.write() as conn:
        ManyRows(d, SUBJECTS.insert()).run(
            conn, [_subject(sid, i + 1) for i, sid in enumerate(people)]
        )
        _count(d).run(conn, [{"sid": sid, "n": 3, "pos": 40 + i} for i, sid in enumerate(people)])
        # read inside the same transaction, after the pipelined writes
        seen = conn.execute(sa.select(sa.func.sum(SUBJECTS.c.events))).scalar_one()
        store.set_positions(conn, {"subjects": 44})
    assert seen == 15
    with store.read() as conn:
        rows = {r.subject_id: r for r in conn.execute(sa.select(SUBJECTS))}
        positions = store.positions(conn)
    assert set(rows) == set(people)
    assert [rows[sid].last_position for sid in people] == [40, 41, 42, 43, 44]
    assert rows[people[1]].minor
    assert rows[people[0]].account_id is None
    assert positions == {"subjects": 44}


def test_a_failing_statement_leaves_nothing_of_the_page_and_the_store_stays_usable(store):
    d = store.dialect
    kept, twice = uuid4(), uuid4()
    with store.write() as conn:
        ManyRows(d, SUBJECTS.insert()).run(conn, [_subject(twice, 1)])
        store.set_positions(conn, {"subjects": 1})

    insert = ManyRows(d, SUBJECTS.insert())
    facets = ManyRows(d, upsert(d, FACETS, ("subject_id", "category", "facet", "value")))
    failure = sa.exc.IntegrityError if d == "sqlite" else psycopg.errors.UniqueViolation

    def page() -> None:
        with store.write() as conn:
            facets.run(
                conn, [{"subject_id": kept, "category": "c", "facet": "source", "value": "app"}]
            )
            store.set_positions(conn, {"subjects": 2})
            insert.run(conn, [_subject(kept, 2), _subject(twice, 3)])  # `twice` is there

    with pytest.raises(failure):
        page()

    with store.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(FACETS)).scalar_one() == 0
        assert conn.execute(sa.select(SUBJECTS.c.subject_id)).scalars().all() == [twice]
        assert store.positions(conn) == {"subjects": 1}

    with store.write() as conn:  # the same pooled connection, no pipeline left behind
        insert.run(conn, [_subject(kept, 2)])
        store.set_positions(conn, {"subjects": 2})
    with store.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(SUBJECTS)).scalar_one() == 2
        rows = conn.execute(sa.select(TRACKING)).all()
    assert [(r.view, r.position) for r in rows] == [("subjects", 2)]


_Batch = list[tuple[int, str, int, int]]
_batches = st.lists(
    st.lists(
        st.tuples(
            st.integers(0, 3),
            st.sampled_from(["a", "b", "ü", "x'y\"z"]),
            st.integers(-(2**40), 2**40),
            st.integers(1, 5),
        ),
        max_size=12,
    ),
    min_size=1,
    max_size=4,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=_batches)
def test_upserts_merge_exactly_as_a_row_at_a_time_model(store, batches: list[_Batch]):
    """Category rows: first the least, last the greatest, collections summed, over pages."""
    d = store.dialect
    people = [UUID(int=i + 1) for i in range(4)]
    statement = upsert(
        d,
        CATEGORIES,
        ("subject_id", "category"),
        set_={
            "first_at": sa.func.min(CATEGORIES.c.first_at, sa.literal_column("excluded.first_at"))
            if d == "sqlite"
            else sa.func.least(CATEGORIES.c.first_at, sa.literal_column("excluded.first_at")),
            "collections": CATEGORIES.c.collections + sa.literal_column("excluded.collections"),
        },
    )
    rows = ManyRows(d, statement)
    with store.write() as conn:
        conn.execute(CATEGORIES.delete())
    model: dict[tuple[UUID, str], list[int]] = {}
    for batch in batches:
        page: dict[tuple[UUID, str], list[int]] = {}
        for who, category, at, n in batch:  # merged per key, as the views merge a page
            held = page.setdefault((people[who], category), [at, at, 0])
            held[0], held[1], held[2] = min(held[0], at), max(held[1], at), held[2] + n
        for key, (first, last, n) in page.items():
            seen = model.setdefault(key, [first, last, 0])
            seen[0], seen[2] = min(seen[0], first), seen[2] + n
        with store.write() as conn:
            rows.run(
                conn,
                [
                    {"subject_id": s, "category": c, "first_at": f, "last_at": t, "collections": n}
                    for (s, c), (f, t, n) in page.items()
                ],
            )
    with store.read() as conn:
        found = {
            (r.subject_id, r.category): [r.first_at, r.collections]
            for r in conn.execute(sa.select(CATEGORIES))
        }
    assert found == {key: [v[0], v[2]] for key, v in model.items()}

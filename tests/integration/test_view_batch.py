"""Bulk row writes of the views (`projections.batch.ManyRows`) on a real SQLite file and on
PostgreSQL, where they are arrays read with ``unnest`` and pipelined: the rows land as an
upsert of each back-end would write them, a later statement sees the pipelined ones, and a
failing statement anywhere in a page leaves nothing of the page. Rows given as tuples land as
their values, and the binary arrays built for PostgreSQL (`projections.pgarrays`) read back
as the values they were made of.
"""

from __future__ import annotations

from collections.abc import Iterator
from uuid import UUID, uuid4

import psycopg
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from projections import ViewStore, pgarrays
from projections.batch import ManyRows, uuid_param
from projections.register import REGISTER_SUBJECTS
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


def test_tuple_rows_land_as_their_values_with_each_uuid_converted_once(store):
    d = store.dialect
    uuid = uuid_param(d)
    columns = [c.name for c in SUBJECTS.c]
    insert = ManyRows(d, SUBJECTS.insert(), columns)
    count = ManyRows(
        d,
        SUBJECTS.update()
        .where(SUBJECTS.c.subject_id == sa.bindparam("sid", type_=sa.Uuid))
        .values(
            events=SUBJECTS.c.events + sa.bindparam("n", type_=sa.BigInteger),
            last_position=sa.bindparam("pos", type_=sa.BigInteger),
        ),
        ("n", "pos", "sid"),  # not the statement's order: the rows are reordered
    )
    people = [uuid4() for _ in range(3)]
    with store.write() as conn:
        insert.run(
            conn,
            [
                (uuid(sid), *list(_subject(sid, position).values())[1:])
                for position, sid in enumerate([*people, uuid4()], start=1)
            ],
        )
        count.run(conn, [(2, 50 + i, uuid(sid)) for i, sid in enumerate(people)])
    with store.read() as conn:
        rows = {r.subject_id: r for r in conn.execute(sa.select(SUBJECTS))}
    assert len(rows) == 4
    assert [(rows[sid].events, rows[sid].last_position) for sid in people] == [
        (2, 50),
        (2, 51),
        (2, 52),
    ]
    assert rows[people[1]].minor
    assert not rows[people[0]].minor
    assert rows[people[2]].closed_at is None


def test_tuple_rows_must_name_exactly_the_statements_columns():
    with pytest.raises(ValueError, match="do not match"):
        ManyRows("sqlite", FACETS.insert(), ("subject_id", "category"))


def test_an_upsert_on_sqlite_counts_only_the_rows_it_added(tmp_path):
    made = ViewStore(f"sqlite:///{tmp_path / 'views.db'}")
    try:
        pairs = ManyRows(
            "sqlite",
            upsert("sqlite", REGISTER_SUBJECTS, ("key", "subject_id")),
            ("key", "subject_id"),
        )
        uuid = uuid_param("sqlite")
        a, b = uuid(uuid4()), uuid(uuid4())
        with made.write() as conn:
            assert pairs.changed(conn, [("k", a)]) == 1
            assert pairs.changed(conn, [("k", a), ("k", b), ("j", a)]) == 2
            assert pairs.changed(conn, []) == 0
    finally:
        made.close()


_ELEMENTS = [
    (sa.Uuid(), "uuid", [uuid4(), None, UUID(int=0), UUID(int=2**128 - 1)]),
    (sa.Boolean(), "boolean", [True, False, None]),
    (sa.BigInteger(), "bigint", [0, -(2**63), 2**63 - 1, None, 1_796_109_418_258_011]),
    (sa.Integer(), "integer", [0, -(2**31), 2**31 - 1, None]),
    (sa.String(64), "varchar(64)", ["", "a", "ü € 𝄞", "x'y\"z", "{a,b}", "NULL", None, "\\"]),
    (sa.Text(), "text", ["s1:" + "A" * 300, "tab\there", None]),
]


@pytest.mark.parametrize(("column_type", "cast", "values"), _ELEMENTS)
def test_binary_arrays_read_back_as_their_values(postgres_url, column_type, cast, values):
    encode = pgarrays.encoder_for(column_type)
    dsn = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        pgarrays.register(conn)
        for sent in (values, [], [v for v in values if v is not None], values[:1]):
            row = conn.execute(f"SELECT %(a)b::{cast}[]", {"a": encode(sent)}).fetchone()
            assert row is not None
            assert row[0] == list(sent)


def test_uuid_elements_made_once_per_person_read_back_as_their_uuids(postgres_url):
    people = [uuid4(), uuid4()]
    encode = pgarrays.encoder_for(sa.Uuid())
    sent = [pgarrays.uuid_element(people[0]), people[1], pgarrays.uuid_element(people[1])]
    dsn = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        pgarrays.register(conn)
        row = conn.execute("SELECT %(a)b::uuid[]", {"a": encode(sent)}).fetchone()
    assert row is not None
    assert row[0] == [people[0], people[1], people[1]]


@settings(max_examples=50, deadline=None)
@given(
    # any text a view holds: it came as UTF-8 (protobuf strings), so no lone surrogates
    texts=st.lists(
        st.one_of(st.none(), st.text(st.characters(codec="utf-8", exclude_characters="\x00")))
    ),
    numbers=st.lists(st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1))),
)
def test_any_text_and_bigint_arrays_read_back_as_sent(postgres_url, texts, numbers):
    dsn = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        pgarrays.register(conn)
        row = conn.execute(
            "SELECT %(t)b::text[], %(n)b::bigint[]",
            {
                "t": pgarrays.encoder_for(sa.Text())(texts),
                "n": pgarrays.encoder_for(sa.BigInteger())(numbers),
            },
        ).fetchone()
    assert row is not None
    assert (row[0], row[1]) == (texts, numbers)


def test_a_value_longer_than_its_column_is_never_cut_short(store):
    # PostgreSQL refuses it (the page fails, nothing of it stays); SQLite keeps it whole.
    long_facet = "f" * (FACETS.c.facet.type.length + 1)
    row = {"subject_id": uuid4(), "category": "c", "facet": long_facet, "value": "v"}
    facets = ManyRows(store.dialect, upsert(store.dialect, FACETS, tuple(row)))

    if store.dialect == "postgresql":
        with pytest.raises(psycopg.errors.StringDataRightTruncation), store.write() as conn:
            facets.run(conn, [row])
        expected = []
    else:
        with store.write() as conn:
            facets.run(conn, [row])
        expected = [long_facet]
    with store.read() as conn:
        assert conn.execute(sa.select(FACETS.c.facet)).scalars().all() == expected

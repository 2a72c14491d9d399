"""Writing a page's rows in bulk: one statement per kind of row, sent the cheapest way each
database allows.

- **SQLite**: the statement is compiled once and the rows go to the driver's executemany as
  tuples: the views' hot statements are given tuples already in the statement's order, with
  each person's id converted once (`uuid_param`); rows given as dicts are taken apart in one C
  call, and only the values whose column type needs converting pass through a bind
  processor. SQLAlchemy's per-row parameter building cost more than the rows' own writes.
- **PostgreSQL**: the rows go as one array per column in a single statement that reads them with
  ``unnest`` (``INSERT ... SELECT ... FROM unnest(...)``, ``UPDATE ... FROM unnest(...)``), in
  binary (built whole by `projections.pgarrays`), so a page costs one plan and no per-row
  protocol exchange. The statements of a page are *pipelined* (psycopg's pipeline mode): each
  is sent without waiting for the server, which executes it while the runner folds the next
  view (and reads the next page, `ViewStore.pipelined`). Any other statement on the
  connection, and the commit, first wait for the pipelined ones (`sync`), so a failure among
  them surfaces in the page's transaction, which then rolls back as a whole.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from operator import itemgetter
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql import visitors
from sqlalchemy.sql.elements import BindParameter
from sqlalchemy.sql.sqltypes import NullType

from projections import pgarrays

__all__ = ["ArrayStatement", "ManyRows", "guard_pipelines", "sync", "uuid_param"]

_PIPELINE = "pdl_pipeline"
"""Key of the open psycopg pipeline in a connection's `info`."""
_ENCODED = "pdl_encoded_arrays"
"""Key, in a connection's `info`, of its psycopg connection taking `pgarrays.Encoded`."""


class ManyRows:
    """A statement run with many rows at once: an INSERT (or upsert) of a table's rows, or a
    statement whose bound parameters a row fills (an UPDATE).

    Rows are dicts keyed by column (or parameter) name; with `columns`, they are tuples of
    those values in that order, the cheaper form for the views' hot statements, and a UUID
    value in them is given as `uuid_param(dialect)` makes it (a view converts a person's id
    once, not once per row).

    Rows of one run must not repeat a conflict key (the views merge theirs per page): on
    PostgreSQL they are one statement, and an upsert may not touch a row twice.
    """

    def __init__(self, dialect: str, statement: Any, columns: Sequence[str] | None = None) -> None:
        self._statement = statement
        self._columns = None if columns is None else tuple(columns)
        self._sql: str | None = None
        self._postgres: dict[tuple[str, ...], ArrayStatement] = {}
        if dialect != "sqlite":
            if self._columns is not None:
                self._postgres[self._columns] = ArrayStatement(_unnest(statement, self._columns))
            return
        target = sqlite.dialect(paramstyle="qmark")
        compiled = statement.compile(dialect=target)
        names = list(compiled.positiontup or ())
        self._sql = compiled.string
        binds = {name: compiled.binds[name].type for name in names}
        getter: Any = itemgetter  # (mypy cannot type a starred itemgetter call)
        if self._columns is None:
            self._take: Any = getter(*names) if len(names) > 1 else _one_of(names)
        else:
            if sorted(names) != sorted(self._columns):
                msg = f"columns {self._columns} do not match the statement's {names}"
                raise ValueError(msg)
            order = [self._columns.index(name) for name in names]
            self._take = None if order == list(range(len(order))) else _one_of_index(order)
        self._convert = [
            (i, bind)
            for i, name in enumerate(names)
            if (self._columns is None or not isinstance(binds[name], sa.Uuid))
            and (bind := binds[name].bind_processor(target)) is not None
        ]

    def run(self, conn: Connection, rows: Sequence[Any]) -> None:
        """Write the rows (nothing when there are none)."""
        if rows:
            self._run(conn, rows)

    def changed(self, conn: Connection, rows: Sequence[Any]) -> int:
        """Write the rows and return how many the database changed (an upsert doing nothing
        changes none). SQLite only: on PostgreSQL the statement is pipelined."""
        if self._sql is None:
            msg = "row counts are only read back on SQLite"
            raise RuntimeError(msg)
        if not rows:
            return 0
        result = self._run(conn, rows)
        return int(result.rowcount)

    def _run(self, conn: Connection, rows: Sequence[Any]) -> Any:
        if self._sql is None:
            self._run_postgres(conn, rows)
            return None
        take, convert = self._take, self._convert
        params: Any
        if not convert:
            params = rows if take is None else [take(row) for row in rows]
        else:
            params = []
            for row in rows:
                values = list(row if take is None else take(row))
                for i, bind in convert:
                    values[i] = bind(values[i])
                params.append(tuple(values))
        return conn.exec_driver_sql(self._sql, params)

    def _run_postgres(self, conn: Connection, rows: Sequence[Any]) -> None:
        if self._columns is not None:
            arrays = dict(zip(self._columns, zip(*rows, strict=True), strict=True))
            self._postgres[self._columns].run(conn, arrays)
            return
        names = tuple(rows[0])
        statement = self._postgres.get(names)
        if statement is None:
            statement = self._postgres[names] = ArrayStatement(_unnest(self._statement, names))
        statement.run(conn, {name: [row[name] for row in rows] for name in names})


class ArrayStatement:
    """A PostgreSQL statement whose parameters are arrays, sent in binary and pipelined
    (the server runs it while the runner goes on; see the module's docstring). Each
    parameter's array is built by `projections.pgarrays` for its element type."""

    def __init__(self, statement: Any) -> None:
        self._statement = statement
        self._sql: dict[tuple[object, ...], str] = {}
        self._encoders: dict[str, pgarrays.Encoder] = {}

    def run(self, conn: Connection, arrays: Mapping[str, Sequence[Any]]) -> None:
        schemas = conn.get_execution_options().get("schema_translate_map") or {}
        key = tuple(sorted(schemas.items(), key=repr))
        sql = self._sql.get(key)
        if sql is None:
            compiled = self._statement.compile(
                dialect=conn.dialect,
                schema_translate_map=schemas or None,
                render_schema_translate=bool(schemas),
            )
            if set(compiled.binds) != set(arrays):
                msg = f"unexpected parameters {sorted(compiled.binds)} for {sorted(arrays)}"
                raise RuntimeError(msg)
            for name, bind in compiled.binds.items():
                if not isinstance(bind.type, postgresql.ARRAY):
                    msg = f"parameter {name} is not an array"
                    raise TypeError(msg)
                self._encoders[name] = pgarrays.encoder_for(bind.type.item_type)
            sql = compiled.string
            for name in arrays:  # psycopg: `%(x)b` sends the array in binary (no text quoting)
                sql = sql.replace(f"%({name})s", f"%({name})b")
            self._sql[key] = sql
        encoders = self._encoders
        params = {name: encoders[name](values) for name, values in arrays.items()}
        raw: Any = conn.connection.driver_connection
        if _PIPELINE not in conn.info:
            if _ENCODED not in conn.info:
                pgarrays.register(raw)
                conn.info[_ENCODED] = True
            pipeline = raw.pipeline()
            pipeline.__enter__()
            conn.info[_PIPELINE] = pipeline
        raw.cursor().execute(sql, params)


def uuid_param(dialect: str) -> Callable[[UUID], Any]:
    """How a UUID goes into a tuple row of `ManyRows`: its hex on SQLite (as SQLAlchemy's
    `Uuid` stores it there), its element of a binary array on PostgreSQL."""
    if dialect == "sqlite":
        return _hex
    return pgarrays.uuid_element


def _hex(value: UUID) -> str:
    return f"{value.int:032x}"


def sync(conn: Connection, error: BaseException | None = None) -> None:
    """Wait for the statements pipelined on `conn` (raising the first one's failure), and
    leave pipeline mode; with `error`, the transaction is failing anyway: just leave."""
    pipeline = conn.info.pop(_PIPELINE, None)
    if pipeline is None:
        return
    if error is None:
        pipeline.__exit__(None, None, None)
        return
    with suppress(Exception):  # the original error is the one that matters
        pipeline.__exit__(type(error), error, error.__traceback__)


def guard_pipelines(engine: Engine) -> None:
    """Make every statement SQLAlchemy runs on `engine` first `sync` the pipelined ones."""

    @event.listens_for(engine, "before_cursor_execute")
    def _sync_first(conn: Connection, *_: Any) -> None:
        if _PIPELINE in conn.info:
            sync(conn)


def _unnest(statement: Any, names: tuple[str, ...]) -> Any:
    """`statement` reading its rows from one array parameter per column (PostgreSQL)."""
    inserting = isinstance(statement, sa.Insert)
    if inserting:
        types = {name: statement.table.c[name].type for name in names}
    else:
        types = {e.key: e.type for e in visitors.iterate(statement) if isinstance(e, BindParameter)}
        untyped = sorted(k for k in names if isinstance(types.get(k), NullType))
        if untyped:
            msg = f"parameters {untyped} need a type to be sent as arrays"
            raise TypeError(msg)
    arrays = (sa.bindparam(name, type_=postgresql.ARRAY(_element(types[name]))) for name in names)
    source = sa.func.unnest(*arrays).table_valued(*names).render_derived()
    if inserting:
        return statement.from_select(names, sa.select(*(source.c[name] for name in names)))

    def column_for(element: Any) -> Any:
        if isinstance(element, BindParameter) and element.key in names:
            return source.c[element.key]
        return None

    traverse: Any = visitors.replacement_traverse
    return traverse(statement, {}, column_for)


def _element(column_type: Any) -> Any:
    """An array parameter's element type: text for any string column, since a cast to
    ``varchar(n)[]`` would silently cut a longer value, where storing text in the column
    refuses it."""
    return sa.Text() if isinstance(column_type, sa.String) else column_type


def _one_of_index(order: list[int]) -> Any:
    """The values at `order` of a tuple row, as a tuple (whatever their number)."""
    getter: Any = itemgetter
    return getter(*order) if len(order) > 1 else lambda row: (row[order[0]],)


def _one_of(names: list[str]) -> Any:
    """`itemgetter` of a single name returns the bare value; the driver wants a tuple."""
    if not names:
        return lambda _row: ()
    name = names[0]
    return lambda row: (row[name],)

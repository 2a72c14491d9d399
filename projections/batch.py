"""Writing a page's rows in bulk: one statement per kind of row, sent the cheapest way each
database allows.

- **SQLite**: the statement is compiled once and the rows go to the driver's executemany as
  tuples, taken from the row dicts in one C call; only the values whose column type needs
  converting (the UUIDs) pass through a bind processor. SQLAlchemy's per-row parameter building
  cost more than the rows' own writes.
- **PostgreSQL**: the rows go as one array per column in a single statement that reads them with
  ``unnest`` (``INSERT ... SELECT ... FROM unnest(...)``, ``UPDATE ... FROM unnest(...)``), in
  binary, so a page costs one plan and no per-row protocol exchange. The statements of a
  page are *pipelined* (psycopg's pipeline mode): each is sent without waiting for the server,
  which executes it while the runner folds the next view. Any other statement on the
  connection, and the commit, first wait for the pipelined ones (`sync`), so a failure among
  them surfaces in the page's transaction, which then rolls back as a whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import suppress
from operator import itemgetter
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql import visitors
from sqlalchemy.sql.elements import BindParameter
from sqlalchemy.sql.sqltypes import NullType

__all__ = ["ManyRows", "guard_pipelines", "sync"]

_PIPELINE = "pdl_pipeline"
"""Key of the open psycopg pipeline in a connection's `info`."""


class ManyRows:
    """A statement run with many rows at once: an INSERT (or upsert) of a table's rows, or a
    statement whose bound parameters a row fills (an UPDATE).

    Rows of one run must not repeat a conflict key (the views merge theirs per page): on
    PostgreSQL they are one statement, and an upsert may not touch a row twice.
    """

    def __init__(self, dialect: str, statement: Any) -> None:
        self._statement = statement
        self._sql: str | None = None
        self._postgres: dict[tuple[object, ...], str] = {}
        if dialect == "sqlite":
            target = sqlite.dialect(paramstyle="qmark")
            compiled = statement.compile(dialect=target)
            names = list(compiled.positiontup or ())
            self._sql = compiled.string
            getter: Any = itemgetter  # (mypy cannot type a starred itemgetter call)
            self._take: Any = getter(*names) if len(names) > 1 else _one_of(names)
            self._convert = [
                (i, bind)
                for i, name in enumerate(names)
                if (bind := compiled.binds[name].type.bind_processor(target)) is not None
            ]

    def run(self, conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
        if not rows:
            return
        if self._sql is None:
            self._run_postgres(conn, rows)
            return
        take, convert = self._take, self._convert
        if not convert:
            params: list[Any] = [take(row) for row in rows]
        else:
            params = []
            for row in rows:
                values = list(take(row))
                for i, bind in convert:
                    values[i] = bind(values[i])
                params.append(tuple(values))
        conn.exec_driver_sql(self._sql, params)

    def _run_postgres(self, conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
        names = tuple(rows[0])
        schemas = conn.get_execution_options().get("schema_translate_map") or {}
        key = (names, *sorted(schemas.items(), key=repr))
        sql = self._postgres.get(key)
        if sql is None:
            compiled = _unnest(self._statement, names).compile(
                dialect=conn.dialect,
                schema_translate_map=schemas or None,
                render_schema_translate=bool(schemas),
            )
            if set(compiled.binds) != set(names):  # (never: the binds are the names given)
                msg = f"unexpected parameters {sorted(compiled.binds)} for {names}"
                raise RuntimeError(msg)
            sql = compiled.string
            for name in names:  # psycopg: `%(x)b` sends the array in binary (no text quoting)
                sql = sql.replace(f"%({name})s", f"%({name})b")
            self._postgres[key] = sql
        raw: Any = conn.connection.driver_connection
        if _PIPELINE not in conn.info:
            pipeline = raw.pipeline()
            pipeline.__enter__()
            conn.info[_PIPELINE] = pipeline
        raw.cursor().execute(sql, {name: [row[name] for row in rows] for name in names})


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
    arrays = (sa.bindparam(name, type_=postgresql.ARRAY(types[name])) for name in names)
    source = sa.func.unnest(*arrays).table_valued(*names).render_derived()
    if inserting:
        return statement.from_select(names, sa.select(*(source.c[name] for name in names)))

    def column_for(element: Any) -> Any:
        if isinstance(element, BindParameter) and element.key in types:
            return source.c[element.key]
        return None

    traverse: Any = visitors.replacement_traverse
    return traverse(statement, {}, column_for)


def _one_of(names: list[str]) -> Any:
    """`itemgetter` of a single name returns the bare value; the driver wants a tuple."""
    if not names:
        return lambda _row: ()
    name = names[0]
    return lambda row: (row[name],)

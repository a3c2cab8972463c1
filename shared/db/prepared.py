"""The hottest statements, compiled once per dialect and run straight on the session's DBAPI cursor.

Why: on a fast-lane call the api and the worker spend about as much CPU in ``Connection.execute`` as
the database spends answering: a cache key for the statement, a compiled-cache lookup, an
ExecutionContext, parameter processing through generic paths, a CursorResult and its metadata.
For the few statements that run on every call (a new job, a finished attempt, the usage upsert)
``Prepared`` does that work once per dialect and keeps only what a call needs: the SQL string, the
order of its parameters and their bind processors, the statement's constants (already processed),
and the Python-side column defaults and onupdates it must fill in. Measured (``ops/bench_prepared.py``,
median of 2000, the function alone): SQLite insert_job 0.28 -> 0.19 ms, record_attempt 0.47 -> 0.25 ms;
PostgreSQL 0.81 -> 0.73 and 1.44 -> 1.17 ms.

Nothing else changes: it runs on the session's own connection, inside its transaction (the session
commits or rolls it back), fires the engine's ``before_cursor_execute``/``after_cursor_execute``
listeners (with no execution context), and raises SQLAlchemy's exception classes (``IntegrityError``
...; the connection is invalidated on a disconnect), as ``Connection.execute`` would. Rows come back
as named tuples, processed like SQLAlchemy's (PostgreSQL numerics by the column's type code).
Not for: expanding IN parameters given per call (a ValueError when compiled; constant IN lists are
fine), ``before_execute``/``handle_error`` listeners, ORM statements. A parameter named like a column
does not add that column to an INSERT or UPDATE, as it would through Core: name binds apart.
"""

from __future__ import annotations

import contextlib
import weakref
from collections import namedtuple
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, NoReturn

from sqlalchemy import exc
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import Executable

__all__ = ["Prepared", "Ran"]

_Processor = Callable[[Any], Any]


class Ran(NamedTuple):
    """What a run did: its rows (RETURNING or SELECT; named tuples) and the driver's rowcount."""

    rows: list[Any]
    rowcount: int

    def first(self) -> Any:
        return self.rows[0] if self.rows else None


class _DefaultContext:
    """What a context-sensitive column default reads: ``context.get_current_parameters()``."""

    __slots__ = ("current_parameters",)

    def __init__(self, parameters: dict[str, Any]) -> None:
        self.current_parameters = parameters

    def get_current_parameters(self, isolate_multiinsert_groups: bool = True) -> dict[str, Any]:
        return self.current_parameters


@dataclass(slots=True)
class _Plan:
    """A statement compiled for one dialect: everything a run needs, nothing it can work out once."""

    sql: str
    keys: tuple[str, ...] | None  # the driver's parameter names (None: positional)
    slots: tuple[tuple[str | None, _Processor | None, Any], ...]  # per parameter: (name, processor) or constant
    defaults: tuple[tuple[str, Any, bool], ...]  # Python-side default/onupdate: (name, arg, callable)
    result_types: tuple[Any, ...]
    row: Any  # the named tuple class of the result rows
    results: list[tuple[int, _Processor]] | None = field(default=None)  # set by the first rows fetched

    def bind(self, params: dict[str, Any]) -> Any:
        for name, arg, is_callable in self.defaults:
            if name not in params:
                params[name] = arg(_DefaultContext(params)) if is_callable else arg
        values = [const if name is None else params[name] if proc is None else proc(params[name])
                  for name, proc, const in self.slots]
        return tuple(values) if self.keys is None else dict(zip(self.keys, values, strict=True))

    def fetch(self, cursor: Any, dialect: Dialect) -> list[Any]:
        if cursor.description is None:
            return []
        if self.results is None:  # PostgreSQL's type codes tell how to read a numeric
            self.results = [(i, proc) for i, (type_, column) in enumerate(
                zip(self.result_types, cursor.description, strict=True))
                if (proc := type_._cached_result_processor(dialect, column[1])) is not None]
        make, processors = self.row._make, self.results
        if not processors:
            return [make(raw) for raw in cursor.fetchall()]
        rows = []
        for raw in cursor.fetchall():
            values = list(raw)
            for i, proc in processors:
                values[i] = proc(values[i])
            rows.append(make(values))
        return rows


def _compile(statement: Executable, dialect: Dialect) -> _Plan:
    compiled: Any = statement.compile(dialect=dialect)  # type: ignore[attr-defined]
    defaults = []
    for column, default in [(c, c.default) for c in compiled.insert_prefetch] + [
            (c, c.onupdate) for c in compiled.update_prefetch]:
        if not (default.is_scalar or default.is_callable):
            raise ValueError(f"column {column.name}: only scalar or callable Python defaults can be prefetched")
        defaults.append((compiled._within_exec_param_key_getter(column), default.arg, bool(default.is_callable)))
    binds = {name: bind for bind, name in compiled.bind_names.items()}
    per_call = {name for name, _, _ in defaults}
    for name, bind in binds.items():
        if bind.callable is not None:
            raise ValueError(f"parameter {name!r}: a callable value cannot be prepared")
        if bind.required or name in per_call:
            if bind.expanding or bind.type._is_tuple_type:
                raise ValueError(f"parameter {name!r}: expanding IN parameters cannot be prepared")
            per_call.add(name)
    state = compiled.construct_expanded_state(dict.fromkeys(per_call))  # renders constant IN lists
    escaped = compiled.escaped_bind_names or {}
    origin = {escaped.get(name, name): name for name in binds}
    origin.update((key, name) for name, keys in state.parameter_expansion.items() for key in keys)
    order = list(state.positiontup) if compiled.positional else list(state.parameters)
    slots = []
    for key in order:
        name = origin.get(key, key)
        proc = binds[name].type._cached_bind_processor(dialect)
        if name in per_call:
            slots.append((name, proc, None))
        else:
            value = state.parameters[escaped.get(key, key)]
            slots.append((None, None, value if proc is None else proc(value)))
    result_columns = compiled._result_columns
    row = namedtuple("Row", [c[0] for c in result_columns], rename=True) if result_columns else None
    return _Plan(state.statement, None if compiled.positional else tuple(order), tuple(slots), tuple(defaults),
                 tuple(c[3] for c in result_columns), row)


class Prepared:
    """A Core statement (from ``build()``) run with ``run(session, **params)`` or ``many(session, rows)``.

    Compiled the first time it runs on a dialect (not at import: the builder may need the tables).
    """

    def __init__(self, build: Callable[[], Executable]) -> None:
        self._build = build
        self._plans: weakref.WeakKeyDictionary[Dialect, _Plan] = weakref.WeakKeyDictionary()

    def run(self, session: Session, **params: Any) -> Ran:
        """Execute once with ``params``; its RETURNING/SELECT rows and rowcount."""
        return self._execute(session, params, many=False)

    def many(self, session: Session, rows: Iterable[Mapping[str, Any]]) -> int:
        """Execute once per parameter set (the driver's executemany); the rowcount."""
        return self._execute(session, rows, many=True).rowcount

    def _execute(self, session: Session, params: Any, many: bool) -> Ran:
        conn = session.connection()
        dialect = conn.dialect
        plan = self._plans.get(dialect)
        if plan is None:
            plan = self._plans[dialect] = _compile(self._build(), dialect)
        sql, args = plan.sql, params
        cursor = None
        try:
            args = [plan.bind(dict(p)) for p in params] if many else plan.bind(params)
            if many and not args:
                return Ran([], 0)
            fairy = conn.connection
            cursor = fairy.dbapi_connection.cursor()  # type: ignore[union-attr]
            events = conn.dispatch  # the engine's listeners and the connection's
            for before in events.before_cursor_execute:
                sql, args = before(conn, cursor, sql, args, None, many)
            if many:
                cursor.executemany(sql, args)
            else:
                cursor.execute(sql, args)
            for after in events.after_cursor_execute:
                after(conn, cursor, sql, args, None, many)
            return Ran([] if many or plan.row is None else plan.fetch(cursor, dialect), cursor.rowcount)
        except Exception as error:
            _raise(conn, dialect, error, sql, args, many, cursor)
        finally:
            if cursor is not None:
                with contextlib.suppress(Exception):  # a connection invalidated above took it along
                    cursor.close()


def _raise(conn: Connection, dialect: Dialect, error: Exception, sql: str, args: Any, many: bool,
           cursor: Any) -> NoReturn:
    """Re-raise as ``Connection.execute`` would: a DBAPI error as its SQLAlchemy class, any other
    error (a bind processor's) as a StatementError; a lost connection is invalidated first."""
    dbapi_error = dialect.loaded_dbapi.Error
    lost = isinstance(error, dbapi_error) and dialect.is_disconnect(
        error, conn.connection.dbapi_connection, cursor)
    if lost and not conn.invalidated:
        conn.invalidate(error)
    raise exc.DBAPIError.instance(sql, args, error, dbapi_error, hide_parameters=conn.engine.hide_parameters,
                                  connection_invalidated=lost, dialect=dialect, ismulti=many) from error

"""Prebuilt SQL statements executed on the driver's cursor.

Registration runs the same handful of statements for every submission (ITI TF-2 §3.42.4.1.3). The
SQL text still comes from the Core schema (``xds.registry.schema``), compiled once per dialect; what is
skipped is SQLAlchemy's per-execution work (parameter processing, result set-up, events), which costs
more than the SQLite statement itself. Only plain statements belong here: no ``IN`` lists expanded
at execution time, no types that need bind processing beyond what the drivers do natively (text,
integers, bytes).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement

Params = Mapping[str, object]


class Prepared:
    """One statement, compiled lazily for each dialect it meets, run with dict parameters."""

    __slots__ = ("statement", "keys", "_compiled")

    def __init__(self, statement: ClauseElement, keys: Sequence[str] | None = None) -> None:
        self.statement = statement
        self.keys = list(keys) if keys is not None else None
        self._compiled: dict[str, tuple[str, tuple[str, ...] | None]] = {}

    def _for(self, dialect: Dialect) -> tuple[str, tuple[str, ...] | None]:
        found = self._compiled.get(dialect.name)
        if found is None:
            compiled = self.statement.compile(dialect=dialect, column_keys=self.keys)
            order = tuple(compiled.positiontup or ()) if dialect.positional else None
            found = self._compiled[dialect.name] = (compiled.string, order)
        return found

    def execute(self, conn: Connection, params: Params) -> Any:
        """Run once; returns the DB-API cursor (fetch from it for RETURNING / SELECT)."""
        sql, order = self._for(conn.dialect)
        cursor = conn.connection.cursor()
        try:
            cursor.execute(sql, params if order is None else tuple(params[k] for k in order))
        except conn.dialect.loaded_dbapi.Error as exc:
            raise _translated(conn, sql, exc) from exc
        return cursor

    def execute_many(self, conn: Connection, rows: Iterable[Params]) -> None:
        """Run for each row (one ``executemany``)."""
        sql, order = self._for(conn.dialect)
        args = list(rows) if order is None else [tuple(r[k] for k in order) for r in rows]
        if not args:
            return
        cursor = conn.connection.cursor()
        try:
            if len(args) == 1:
                cursor.execute(sql, args[0])
            else:
                cursor.executemany(sql, args)
        except conn.dialect.loaded_dbapi.Error as exc:
            raise _translated(conn, sql, exc) from exc
        finally:
            cursor.close()

    def queue(self, cursor: Any, dialect: Dialect, rows: Iterable[Params]) -> None:
        """Run for each row on ``cursor`` without reading anything back (in a pipeline, they are
        sent together; errors surface when the pipeline syncs)."""
        sql, order = self._for(dialect)
        for row in rows:
            cursor.execute(sql, row if order is None else tuple(row[k] for k in order))

    def rows_on(self, dbapi_conn: Any, dialect: Dialect, params: Params) -> list[Any]:
        """All rows, run on a DB-API connection (see :class:`xds.database.QuickReads`)."""
        sql, order = self._for(dialect)
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute(sql, params if order is None else tuple(params[k] for k in order))
            return cursor.fetchall()
        except dialect.loaded_dbapi.Error as exc:
            raise DBAPIError.instance(sql, None, exc, dialect.loaded_dbapi.Error) from exc
        finally:
            cursor.close()

    def scalar(self, conn: Connection, params: Params) -> Any:
        """The first column of the first row, or None."""
        cursor = self.execute(conn, params)
        row = cursor.fetchone()
        cursor.close()
        return None if row is None else row[0]


def _translated(conn: Connection, sql: str, exc: Exception) -> DBAPIError:
    """The driver's error as SQLAlchemy's (``IntegrityError`` for a unique constraint, …), as
    ``Connection.execute`` would raise it, so callers catch one family of errors."""
    return DBAPIError.instance(sql, None, exc, conn.dialect.loaded_dbapi.Error)

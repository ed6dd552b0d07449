"""Selections of registry objects: SQL compiled once per shape, values bound per request.

The stored queries (ITI TF-2 §3.18.4.1.2.3.7, §3.51.4.1.2.3) select rows of one table under
conditions whose *kind and number* follow from which parameters a request gives and how many values
each has — the values themselves change from one request to the next. A :class:`Where` records the
conditions as a hashable shape plus the values bound to it. :class:`Selections` builds the SQL of a
shape from the Core schema (``xds.registry.schema``) the first time it meets it, compiles it for the
dialect, and from then on only binds values and runs it on the driver's cursor: building, caching
and compiling a Core statement per request cost several times what SQLite spends answering it.

Every value a request brings is bound, never written into the SQL text, and a shape names only
columns of the schema; a request cannot change the SQL beyond choosing among shapes. The number of
shapes kept is bounded (``MAX_SHAPES``, each at most ``MAX_KEPT_SQL`` long); a shape past either
bound is compiled for its request and dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import count
from typing import Any

from sqlalchemy import (
    ColumnElement,
    String,
    Table,
    bindparam,
    cast,
    exists,
    false,
    literal,
    or_,
    select,
    union,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError

from xds.registry import schema as t
from xds.registry.patients import MAX_MERGE_DEPTH

Part = tuple[Any, ...]
# (sql, positional bind names or None for named, fixed parameters, names of the request's values)
_Compiled = tuple[str, tuple[str, ...] | None, dict[str, Any], tuple[str, ...]]

MAX_SHAPES = 1024
# SQL longer than this (an IN list of hundreds of values) is compiled for its request and not kept:
# such shapes are rare, and a client sending many of them must not fill the memory.
MAX_KEPT_SQL = 16 * 1024


class Where:
    """The conditions of one SELECT: ``parts`` (its shape, hashable once a tuple) and ``values``.

    Each method appends one condition (all of them are ANDed) and binds its values in order.
    """

    __slots__ = ("parts", "values")

    def __init__(self) -> None:
        self.parts: list[Part] = []
        self.values: list[Any] = []

    def _add(self, part: Part, values: Sequence[Any]) -> Where:
        """One condition: its part of the shape, and the values it binds, in the order
        :func:`_compile` binds them."""
        self.parts.append(part)
        self.values.extend(values)
        return self

    def one_of(self, column: str, values: Sequence[Any]) -> Where:
        """``column`` equals one of ``values`` (``=`` for one value, ``IN`` for more, FALSE for none)."""
        return self._add(("in", column, len(values)), values)

    def at_least(self, column: str, value: Any) -> Where:
        return self._add((">=", column), [value])

    def below(self, column: str, value: Any) -> Where:
        return self._add(("<", column), [value])

    def either(self, first: str, second: str, values: Sequence[Any]) -> Where:
        """``first`` or ``second`` equals one of ``values``."""
        return self._add(("either", first, second, len(values)), [*values, *values])

    def document_code(self, kind: str, values: Sequence[str]) -> Where:
        """The document has a ``kind`` row in ``document_codes`` with one of ``values``."""
        return self._add(("code", kind, len(values)), values)

    def document_author(self, patterns: Sequence[str], *, sqlite: bool) -> Where:
        """An author of the document matches one of ``patterns`` (``%`` and ``_`` wildcards)."""
        return self._add(
            ("author", len(patterns), sqlite), [match_pattern(p, sqlite=sqlite) for p in patterns]
        )

    def set_author(self, pattern: str, *, sqlite: bool) -> Where:
        """An author of the submission set matches ``pattern``."""
        return self._add(("set_author", sqlite), [match_pattern(pattern, sqlite=sqlite)])

    def folder_code(self, values: Sequence[str]) -> Where:
        """The folder has one of the codes ``values``."""
        return self._add(("folder_code", len(values)), values)

    def patient(self, column: str, given: str, canonical: str) -> Where:
        """``column`` holds an identifier of the patient given as ``given`` (canonical form
        ``canonical``): either form, the identifier that survived the ITI-8 merges ``canonical``
        went through, or one merged into that survivor (ITI TF-2 §3.8.4.2) — resolved by the same
        statement, in one round trip. See ``PatientDirectory.resolve`` for the merge rules."""
        return self._add(("patient", column), [canonical, given, canonical])

    def kind_in(self, kinds: Sequence[str]) -> Where:
        """The object named by the ``kind_of`` column is of one of ``kinds`` (see :meth:`Selections.rows`)."""
        return self._add(("kind", len(kinds)), kinds)

    def never(self) -> Where:
        return self._add(("never",), [])


def match_pattern(pattern: str, *, sqlite: bool) -> str:
    """An author-person pattern (``%`` any run, ``_`` one character) as the operator of
    :func:`match` expects it: SQLite's LIKE ignores ASCII case, so there it becomes a GLOB pattern
    whose own special characters are bracketed; PostgreSQL's LIKE gets ``\\`` as its escape."""
    if not sqlite:
        return pattern.replace("\\", "\\\\")
    glob = []
    for ch in pattern:
        if ch == "%":
            glob.append("*")
        elif ch == "_":
            glob.append("?")
        elif ch in "*?[":
            glob.append(f"[{ch}]")
        else:
            glob.append(ch)
    return "".join(glob)


def match(column: ColumnElement[str], pattern: Any, *, sqlite: bool) -> ColumnElement[bool]:
    """``column`` matches ``pattern`` (made by :func:`match_pattern`), case-sensitively."""
    if sqlite:
        return column.op("GLOB")(pattern)
    return column.like(pattern, escape="\\")


class Selections:
    """The compiled SQL of each selection shape met, run with the values of each request."""

    def __init__(self) -> None:
        self._compiled: dict[tuple[Any, ...], _Compiled] = {}
        # when a list: every statement run, with its arguments, is added to it (for EXPLAIN)
        self.trace: list[tuple[str, Any]] | None = None

    def rows(
        self,
        conn: Any,
        dialect: Dialect,
        table: Table,
        columns: tuple[str, ...],
        where: Where,
        *,
        limit: int | None = None,
        ordered: bool = True,
        kind_of: str | None = None,
    ) -> list[Any]:
        """Rows (tuples of ``columns``) of ``table`` meeting ``where``, in ``seq`` order when
        ``ordered``, read on ``conn`` (a DB-API connection or SQLAlchemy's proxy of one).

        ``kind_of``: a column holding entryUUIDs; each row then ends with the kind of the object it
        names (``registry_objects.kind``; None for an object the registry does not hold).
        """
        key = (dialect.name, table.name, columns, limit, ordered, kind_of, tuple(where.parts))
        found = self._compiled.get(key)
        if found is None:
            found = _compile(dialect, table, columns, where.parts, limit, ordered, kind_of)
            if len(self._compiled) < MAX_SHAPES and len(found[0]) <= MAX_KEPT_SQL:
                self._compiled[key] = found
        sql, order, fixed, names = found
        params = dict(fixed)
        params.update(zip(names, where.values, strict=True))
        cursor = conn.cursor()
        try:
            args = params if order is None else tuple(params[k] for k in order)
            if self.trace is not None:
                self.trace.append((sql, args))
            if dialect.name == "postgresql":
                # binary results: fragments (bytea) arrive as their bytes, not as hex text
                cursor.execute(sql, args, binary=True)
            else:
                cursor.execute(sql, args)
            return cursor.fetchall()
        except dialect.loaded_dbapi.Error as exc:
            raise DBAPIError.instance(sql, None, exc, dialect.loaded_dbapi.Error) from exc
        finally:
            cursor.close()


def _compile(
    dialect: Dialect,
    table: Table,
    columns: tuple[str, ...],
    parts: Sequence[Part],
    limit: int | None,
    ordered: bool,
    kind_of: str | None = None,
) -> _Compiled:
    numbers = count()
    names: list[str] = []

    def bind() -> Any:
        name = f"v{next(numbers)}"
        names.append(name)
        return bindparam(name)

    c = table.c
    conds: list[ColumnElement[bool]] = []
    for part in parts:
        op = part[0]
        if op == "in":
            conds.append(_one_of(c[part[1]], [bind() for _ in range(part[2])]))
        elif op == ">=":
            conds.append(c[part[1]] >= bind())
        elif op == "<":
            conds.append(c[part[1]] < bind())
        elif op == "either":
            first = [bind() for _ in range(part[3])]
            second = [bind() for _ in range(part[3])]
            conds.append(or_(_one_of(c[part[1]], first), _one_of(c[part[2]], second)))
        elif op == "code":
            dc = t.document_codes.c
            values = [bind() for _ in range(part[2])]
            conds.append(exists().where(dc.doc_seq == c.seq, dc.kind == part[1], _one_of(dc.value, values)))
        elif op == "author":
            dc = t.document_codes.c
            matches = [match(dc.value, bind(), sqlite=part[2]) for _ in range(part[1])]
            conds.append(exists().where(dc.doc_seq == c.seq, dc.kind == "author", or_(*matches)))
        elif op == "set_author":
            sa = t.submission_set_authors.c
            conds.append(exists().where(sa.ss_seq == c.seq, match(sa.author_person, bind(), sqlite=part[1])))
        elif op == "folder_code":
            fc = t.folder_codes.c
            values = [bind() for _ in range(part[1])]
            conds.append(exists().where(fc.folder_seq == c.seq, _one_of(fc.value, values)))
        elif op == "patient":
            conds.append(c[part[1]].in_(_patient_identifiers(bind(), bind(), bind())))
        elif op == "kind":
            conds.append(_one_of(t.registry_objects.c.kind, [bind() for _ in range(part[1])]))
        elif op == "never":
            conds.append(false())
        else:  # pragma: no cover - a programming error, not a request's
            raise ValueError(f"unknown selection part {part!r}")
    stmt = select(*(c[name] for name in columns))
    if kind_of is not None:
        r = t.registry_objects.c
        stmt = stmt.add_columns(r.kind).outerjoin(t.registry_objects, r.uuid == c[kind_of])
    stmt = stmt.where(*conds)
    if ordered:
        stmt = stmt.order_by(c.seq)
    if limit is not None:
        stmt = stmt.limit(limit)
    compiled = stmt.compile(dialect=dialect)
    ours = set(names)  # (a list here made a request with n values cost n² steps)
    fixed = {k: v for k, v in compiled.params.items() if k not in ours}
    order = tuple(compiled.positiontup or ()) if dialect.positional else None
    return compiled.string, order, fixed, tuple(names)


def _patient_identifiers(start: Any, given: Any, canonical: Any) -> Any:
    """SELECT of every identifier a patient's objects may be filed under (see :meth:`Where.patient`).

    The merge chain from ``start`` is followed as ``PatientDirectory.resolve`` follows it: each
    step to ``merged_into`` while there is one, at most ``MAX_MERGE_DEPTH`` steps; the last
    identifier reached survives (an unknown ``start`` has none).
    """
    p = t.patients
    step = p.alias("step")
    chain = (
        select(p.c.pid, literal(0).label("depth")).where(p.c.pid == start).cte("merge_chain", recursive=True)
    )
    chain = chain.union_all(
        select(step.c.merged_into, chain.c.depth + 1).where(
            step.c.pid == chain.c.pid, step.c.merged_into.is_not(None), chain.c.depth < MAX_MERGE_DEPTH - 1
        )
    )
    survivor = select(chain.c.pid).order_by(chain.c.depth.desc()).limit(1).scalar_subquery()
    merged = p.alias("merged")
    return union(
        select(cast(given, String)),
        select(cast(canonical, String)),
        select(survivor),
        select(merged.c.pid).where(merged.c.merged_into == survivor),
    )


def _one_of(column: ColumnElement[Any], binds: list[Any]) -> ColumnElement[bool]:
    if not binds:
        return false()
    if len(binds) == 1:
        return column == binds[0]
    return column.in_(binds)


__all__ = ["Where", "Selections", "match", "match_pattern", "MAX_SHAPES", "MAX_KEPT_SQL"]

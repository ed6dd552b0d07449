"""The registry's patient directory: identifiers fed by ITI-8 and the merges between them.

IHE ITI TF-2 §3.8 (Patient Identity Feed): the Document Registry learns patient identifiers of its
affinity domain from ADT^A01/A04/A05/A08 messages (§3.8.4.1) and merges of two identifiers from
ADT^A40 (§3.8.4.2). An identifier is kept in its canonical CX form ``ID^^^&OID&ISO`` (HL7 v2.5
§2.A.14, with only CX.1 and the universal id of CX.4 kept, as ITI TF-3 §4.2.3.1.7 asks of XDS).

A merge marks the subsumed identifier with the one that survives; :meth:`PatientDirectory.resolve`
follows that mark, so a registration under a merged-away identifier is filed under the survivor.
Merges keep the marks pointing straight at a surviving identifier, so resolution is a single
primary-key look-up for an unmerged patient and two for a merged one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, select, update
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import IntegrityError

from xds.database import lock_wait_s, reader, write, write_transaction
from xds.database.statements import Prepared
from xds.metadata.hl7v2 import CX
from xds.registry.schema import patients

# How many merge marks resolution follows before giving up (a guard against cycles that a
# concurrent writer or a hand-edited database could leave behind).
MAX_MERGE_DEPTH = 16


def canonical_cx(text: str) -> str:
    """The canonical form ``ID^^^&OID&ISO`` of a patient identifier CX (HL7 v2.5 §2.A.14).

    The namespace id (CX.4.1) and every component but CX.1 and CX.4.2 are dropped. Raises
    ValueError when the identifier has no id number or no assigning-authority universal id.
    """
    cx = CX.parse(text.strip())
    ident = cx.id.strip()
    oid = cx.authority_oid.strip()
    if not ident:
        raise ValueError(f"patient identifier {text!r} has no id number (CX.1)")
    if not oid:
        raise ValueError(f"patient identifier {text!r} has no assigning authority universal id (CX.4.2)")
    return f"{ident}^^^&{oid}&ISO"


class MergeRefused(ValueError):
    """A merge of an A40 that cannot be applied; ``index``: which pair of the message."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(message)
        self.index = index


def _now() -> str:
    return datetime.now(UTC).strftime("%Y%m%d%H%M%S")


class PatientDirectory:
    """Known patient identifiers and their merges, over the ``patients`` table (ITI TF-2 §3.8)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.reader = reader(engine)
        self._lookup = Prepared(select(patients.c.merged_into).where(patients.c.pid == bindparam("pid")))
        self._loop: asyncio.AbstractEventLoop | None = None

    def write_on(self, loop: asyncio.AbstractEventLoop) -> None:
        """Run the feed's writes made from other threads (the MLLP handler's) on ``loop``, through
        :func:`xds.database.write` like every other write of the server: the write gate and a lock
        another process or session holds are waited for without holding a thread's connection,
        and a lock held past ``[registry] lock_wait_s`` is refused busy."""
        self._loop = loop

    # --- reading ------------------------------------------------------------------------------------
    def resolve(self, pid: str, conn: Connection | None = None) -> str | None:
        """The surviving canonical identifier for ``pid``, or None when ``pid`` is unknown.

        An identifier subsumed by an A40 merge (ITI TF-2 §3.8.4.2) resolves to the one that
        survived it. An identifier that cannot be put in canonical form is unknown. ``conn`` lets a
        caller resolve inside its own transaction.
        """
        try:
            current = canonical_cx(pid)
        except ValueError:
            return None
        if conn is not None:
            return self._resolve(conn, current)
        with self.reader.connect() as conn:
            return self._resolve(conn, current)

    def is_known(self, pid: str) -> bool:
        """Whether ``pid`` was fed (or merged) into this registry."""
        return self.resolve(pid) is not None

    def resolve_on(self, dbapi_conn: Any, dialect: Dialect, pid: str) -> str | None:
        """:meth:`resolve` on a DB-API connection (a stored query's, see ``QuickReads.connection``)."""
        try:
            current = canonical_cx(pid)
        except ValueError:
            return None

        def merged_into(key: str) -> tuple[Any, ...] | None:
            rows = self._lookup.rows_on(dbapi_conn, dialect, {"pid": key})
            return rows[0] if rows else None

        return self._follow(merged_into, current)

    def _resolve(self, conn: Connection, pid: str) -> str | None:
        def merged_into(key: str) -> tuple[Any, ...] | None:
            cursor = self._lookup.execute(conn, {"pid": key})
            row = cursor.fetchone()
            cursor.close()
            return row  # type: ignore[no-any-return]

        return self._follow(merged_into, pid)

    @staticmethod
    def _follow(merged_into: Callable[[str], tuple[Any, ...] | None], pid: str) -> str | None:
        current = pid
        for _ in range(MAX_MERGE_DEPTH):
            row = merged_into(current)
            if row is None:
                # The first id is unknown; a dangling mark further on still names the survivor.
                return None if current == pid else current
            if row[0] is None:
                return current
            current = row[0]
        raise ValueError(f"patient identifier {pid!r}: merge chain longer than {MAX_MERGE_DEPTH} (a cycle?)")

    # --- ADT^A01/A04/A05/A08 -------------------------------------------------------------------------
    def register(
        self,
        pid: str,
        *,
        family_name: str | None = None,
        given_name: str | None = None,
        birth_date: str | None = None,
        sex: str | None = None,
    ) -> None:
        """Add ``pid`` or update its demographics (ITI TF-2 §3.8.4.1).

        Demographics given as None are left as they are. A merged-away identifier stays merged.
        """
        self.register_all(
            [pid], family_name=family_name, given_name=given_name, birth_date=birth_date, sex=sex
        )

    def register_all(
        self,
        pids: Sequence[str],
        *,
        family_name: str | None = None,
        given_name: str | None = None,
        birth_date: str | None = None,
        sex: str | None = None,
    ) -> None:
        """:meth:`register` for every identifier of one patient (PID-3's list), in one transaction:
        all of them or none."""
        canonical = [canonical_cx(pid) for pid in pids]
        values = {
            k: v
            for k, v in {
                "family_name": family_name,
                "given_name": given_name,
                "birth_date": birth_date,
                "sex": sex,
            }.items()
            if v is not None
        }

        def work(conn: Connection) -> None:
            for pid in canonical:
                self._upsert(conn, pid, values)

        self._retrying(work)

    def _upsert(self, conn: Connection, pid: str, values: dict[str, str]) -> None:
        exists = conn.execute(select(patients.c.pid).where(patients.c.pid == pid)).first()
        if exists is None:
            conn.execute(patients.insert().values(pid=pid, merged_into=None, updated=_now(), **values))
        else:
            conn.execute(update(patients).where(patients.c.pid == pid).values(updated=_now(), **values))

    # --- ADT^A40 -----------------------------------------------------------------------------------
    def merge(self, subsumed: str, surviving: str) -> None:
        """Merge ``subsumed`` into ``surviving`` (ADT^A40, ITI TF-2 §3.8.4.2).

        Unknown identifiers are created. Identifiers already merged into ``subsumed`` follow it to
        the survivor. Raises ValueError for a merge of an identifier into itself or one that would
        make a cycle (``surviving`` already resolves to ``subsumed``).
        """
        self.merge_all([(subsumed, surviving)])

    def merge_all(self, pairs: Sequence[tuple[str, str]]) -> None:
        """:meth:`merge` of each (subsumed, surviving) pair in order, in one transaction: all of
        them or none. Raises :class:`MergeRefused` naming the first pair that cannot be applied
        after the ones before it (into itself, or a cycle)."""
        canonical = [(canonical_cx(old), canonical_cx(new)) for old, new in pairs]
        for index, (old, new) in enumerate(canonical):
            if old == new:
                raise MergeRefused(index, f"cannot merge patient identifier {old!r} into itself")

        def work(conn: Connection) -> None:
            for index, (old, new) in enumerate(canonical):
                try:
                    self._merge(conn, old, new)
                except ValueError as exc:
                    raise MergeRefused(index, str(exc)) from exc

        self._retrying(work)

    def _merge(self, conn: Connection, old: str, new: str) -> None:
        now = _now()
        # Lock both rows in a fixed order so concurrent merges of the same pair serialise
        # (PostgreSQL; SQLite transactions already take the write lock when they begin).
        rows = conn.execute(
            select(patients.c.pid, patients.c.merged_into)
            .where(patients.c.pid.in_(sorted((old, new))))
            .order_by(patients.c.pid)
            .with_for_update()
        ).all()
        known = {r.pid: r.merged_into for r in rows}
        if new not in known:
            conn.execute(patients.insert().values(pid=new, merged_into=None, updated=now))
            survivor = new
        else:
            survivor = self._resolve(conn, new) or new
        if survivor == old:
            raise ValueError(f"merging {old!r} into {new!r} would make a cycle: {new!r} is merged into it")
        if old not in known:
            conn.execute(patients.insert().values(pid=old, merged_into=survivor, updated=now))
            return
        conn.execute(update(patients).where(patients.c.pid == old).values(merged_into=survivor, updated=now))
        # Keep every mark pointing at a survivor: ids merged into ``old`` earlier now follow it.
        conn.execute(
            update(patients).where(patients.c.merged_into == old).values(merged_into=survivor, updated=now)
        )

    # --- transactions ----------------------------------------------------------------------------------
    def _retrying(self, work: Callable[[Connection], None]) -> None:
        """Run ``work(conn)`` in one transaction; retry once if a concurrent insert won the race."""
        try:
            self._transaction(work)
        except IntegrityError:
            self._transaction(work)

    def _transaction(self, work: Callable[[Connection], None]) -> None:
        loop = self._loop
        if loop is not None and loop.is_running() and not _running(loop):
            # bounded by write()'s own limit; the margin covers a loop busy with other requests
            asyncio.run_coroutine_threadsafe(write(self.engine, work), loop).result(lock_wait_s() + 60)
            return
        with write_transaction(self.engine) as conn:
            work(conn)


def _running(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether the calling thread is running ``loop`` (waiting on it there would never end)."""
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False

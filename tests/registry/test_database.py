"""The database layer the registry relies on: the write gate, background checkpoints, prebuilt
statements, and where blocking work runs."""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, bindparam, event, func, insert, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from xds import database
from xds.database import (
    Checkpointer,
    GroupCommit,
    QuickReads,
    WriteGate,
    open_engine,
    open_engine_nopool,
    run_blocking,
    use_threads,
    write_transaction,
)
from xds.database.statements import Prepared

_meta = MetaData()
_things = Table(
    "things", _meta, Column("id", Integer, primary_key=True), Column("name", String(40), unique=True)
)
_INSERT = Prepared(insert(_things).returning(_things.c.id), ["name"])


def _sqlite(tmp_path: Path):  # type: ignore[no-untyped-def]
    engine = open_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    _meta.create_all(engine)
    return engine


def test_prepared_statements_insert_and_translate_driver_errors(tmp_path: Path) -> None:
    engine = _sqlite(tmp_path)
    with write_transaction(engine) as conn:
        first = _INSERT.scalar(conn, {"name": "a"})
        second = _INSERT.scalar(conn, {"name": "b"})
    assert (first, second) == (1, 2)
    # a unique constraint refused by the driver surfaces as SQLAlchemy's IntegrityError
    with pytest.raises(IntegrityError), write_transaction(engine) as conn:
        _INSERT.scalar(conn, {"name": "c"})
        _INSERT.scalar(conn, {"name": "a"})
    with engine.connect() as conn:
        assert conn.execute(select(_things.c.name).order_by(_things.c.id)).scalars().all() == ["a", "b"]


def _hold(path: str, hold_s: float, log: str) -> None:
    gate = WriteGate(Path(path))
    with gate.held():
        with open(log, "a") as fh:
            fh.write(f"in {time.monotonic()}\n")
        time.sleep(hold_s)
        with open(log, "a") as fh:
            fh.write(f"out {time.monotonic()}\n")


def test_write_gate_excludes_other_processes_and_threads(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    log = tmp_path / "log"
    ctx = multiprocessing.get_context("spawn")
    other = ctx.Process(target=_hold, args=(str(db), 0.4, str(log)))
    other.start()
    deadline = time.monotonic() + 30
    while not log.exists() or "in" not in log.read_text():
        assert time.monotonic() < deadline, "the other process never took the gate"
        time.sleep(0.01)
    threads = [threading.Thread(target=_hold, args=(str(db), 0.05, str(log))) for _ in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    other.join(30)
    events = [line.split()[0] for line in log.read_text().splitlines()]
    # every holder left before the next one came in: in/out strictly alternate
    assert events == ["in", "out"] * 4


def test_checkpoints_run_in_the_background(tmp_path: Path) -> None:
    engine = _sqlite(tmp_path)
    db = tmp_path / "db.sqlite"
    size_before = db.stat().st_size
    with write_transaction(engine) as conn:
        conn.execute(insert(_things), [{"name": f"n{i}"} for i in range(3000)])
    deadline = time.monotonic() + 10
    while db.stat().st_size <= size_before:  # rows reach the database file without a commit doing it
        assert time.monotonic() < deadline, "no checkpoint within 10 s"
        time.sleep(0.05)


def test_checkpointer_never_creates_a_removed_database(tmp_path: Path) -> None:
    db = tmp_path / "gone.sqlite"
    (tmp_path / "gone.sqlite-wal").write_bytes(b"x" * 100)
    checkpointer = Checkpointer(db, interval=0.01)
    checkpointer.start()
    checkpointer.thread.join(5)
    assert not checkpointer.thread.is_alive()
    assert not db.exists()


@pytest.mark.parametrize("threads", [False, True])
def test_run_blocking_inline_or_in_threads(threads: bool) -> None:
    seen: list[str] = []

    def work(x: int) -> int:
        seen.append(threading.current_thread().name)
        return x * 2

    use_threads(threads)
    try:
        assert asyncio.run(run_blocking(work, 21)) == 42
    finally:
        use_threads(False)
    on_main = seen == [threading.main_thread().name]
    assert on_main is not threads
    assert database._threads is False


_NAME_OF = Prepared(select(_things.c.name).where(_things.c.id == bindparam("id")))


def test_quick_reads_see_each_commit_from_any_thread(database_url: str) -> None:
    """QuickReads (ITI-43's row lookups) on SQLite or PostgreSQL: one statement, its own snapshot."""
    engine = open_engine(database_url)
    _meta.create_all(engine)
    try:
        quick = QuickReads(engine)
        assert quick.rows(_NAME_OF, {"id": 1}) == []
        with write_transaction(engine) as conn:
            _INSERT.scalar(conn, {"name": "first"})
        # the connection kept from the first read sees what was committed after it was opened
        assert [tuple(r) for r in quick.rows(_NAME_OF, {"id": 1})] == [("first",)]
        seen: list[object] = []
        worker = threading.Thread(target=lambda: seen.extend(quick.rows(_NAME_OF, {"id": 1})))
        worker.start()
        worker.join()
        assert [tuple(r) for r in seen] == [("first",)]
        # a read is all it does: on SQLite its connection refuses to write
        if engine.dialect.name == "sqlite":
            refuse = Prepared(insert(_things), ["name"])
            with pytest.raises(DBAPIError):
                quick.rows(refuse, {"name": "sneaky"})
    finally:
        _meta.drop_all(engine)
        engine.dispose()


_COUNT = Prepared(select(func.count()).select_from(_things))


def test_quick_reads_snapshot_holds_one_state_until_it_ends(database_url: str) -> None:
    """A content query's statements see one committed state; autocommit reads see each commit."""
    engine = open_engine(database_url)
    _meta.create_all(engine)
    try:
        quick = QuickReads(engine)
        with write_transaction(engine) as conn:
            _INSERT.scalar(conn, {"name": "before"})
        with quick.snapshot() as snap:
            assert _COUNT.rows_on(snap, engine.dialect, {})[0][0] == 1
            with write_transaction(engine) as conn:  # a writer commits meanwhile
                _INSERT.scalar(conn, {"name": "during"})
            assert _COUNT.rows_on(snap, engine.dialect, {})[0][0] == 1
        with quick.connection() as conn:
            assert _COUNT.rows_on(conn, engine.dialect, {})[0][0] == 2
        # a failure inside ends the transaction too; the connection serves the next read
        with pytest.raises(RuntimeError), quick.snapshot() as snap:
            _COUNT.rows_on(snap, engine.dialect, {})
            raise RuntimeError("the query failed")
        with quick.snapshot() as snap:
            assert _COUNT.rows_on(snap, engine.dialect, {})[0][0] == 2
    finally:
        _meta.drop_all(engine)
        engine.dispose()


def _name_inserter(name: str):  # type: ignore[no-untyped-def]
    def work(conn):  # type: ignore[no-untyped-def]
        return _INSERT.scalar(conn, {"name": name})

    return work


@pytest.mark.parametrize("threads", [False, True])
def test_group_commit_shares_one_commit_and_isolates_failures(database_url: str, threads: bool) -> None:
    """Work arriving together: one commit; a piece that fails is rolled back alone, with its error."""
    engine = open_engine(database_url)
    _meta.create_all(engine)
    commits: list[int] = []
    event.listen(engine, "commit", lambda conn: commits.append(1))
    group = GroupCommit(engine)

    def count(conn):  # type: ignore[no-untyped-def]
        return conn.execute(select(func.count()).select_from(_things)).scalar_one()

    async def together() -> list[object]:
        works = [
            _name_inserter("a"),
            _name_inserter("b"),
            _name_inserter("a"),  # a unique constraint refuses this one
            count,  # sees the work before it, as a serial transaction would
            _name_inserter("c"),
        ]
        return await asyncio.gather(*(group.run(w) for w in works), return_exceptions=True)

    use_threads(threads)
    try:
        a, b, refused, seen, c = asyncio.run(together())
        committed = len(commits)
    finally:
        use_threads(False)
        _meta.drop_all(engine)
        engine.dispose()
    assert isinstance(refused, IntegrityError)
    assert seen == 2 and isinstance(a, int) and isinstance(b, int) and isinstance(c, int)
    assert committed == 1


def test_group_commit_keeps_what_each_piece_wrote(database_url: str) -> None:
    engine = open_engine(database_url)
    _meta.create_all(engine)
    group = GroupCommit(engine)

    async def together() -> None:
        results = await asyncio.gather(
            group.run(_name_inserter("x")),
            group.run(_name_inserter("x")),
            group.run(_name_inserter("y")),
            return_exceptions=True,
        )
        assert isinstance(results[1], IntegrityError)

    try:
        asyncio.run(together())
        with engine.connect() as conn:
            names = conn.execute(select(_things.c.name).order_by(_things.c.name)).scalars().all()
        assert names == ["x", "y"]
    finally:
        _meta.drop_all(engine)
        engine.dispose()


def test_group_commit_waits_for_the_write_gate_without_blocking_the_loop(tmp_path: Path) -> None:
    engine = _sqlite(tmp_path)
    group = GroupCommit(engine)
    gate = WriteGate(Path(engine.url.database).resolve())  # type: ignore[arg-type]
    held = threading.Event()
    release = threading.Event()

    def holder() -> None:  # another worker process would look the same: flock on the same file
        with gate.held():
            held.set()
            release.wait(10)

    th = threading.Thread(target=holder)
    th.start()
    held.wait(10)

    async def scenario() -> tuple[int, object]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.005)

        tick_task = asyncio.create_task(ticker())
        work = asyncio.create_task(group.run(_name_inserter("late")))
        await asyncio.sleep(0.2)
        assert not work.done()  # still waiting for the gate ...
        ticks_while_waiting = ticks  # ... while the loop kept running
        release.set()
        result = await asyncio.wait_for(work, 10)
        tick_task.cancel()
        return ticks_while_waiting, result

    try:
        ticks, result = asyncio.run(scenario())
    finally:
        release.set()
        th.join()
    assert ticks >= 10 and result == 1


def test_group_commits_that_deadlock_run_their_work_again_one_by_one(database_url: str, backend: str) -> None:
    """Two batches on PostgreSQL, each holding a lock (from its first piece) that the other's
    second piece needs: the server fails one of them with a deadlock. That batch is rolled back
    as a whole and each of its pieces runs again in a transaction of its own, so every piece is
    stored and none is answered with the deadlock."""
    if backend != "postgresql":
        pytest.skip("SQLite has one writer at a time (the write gate): runs in the PostgreSQL pass")
    engine = open_engine(database_url)
    _meta.create_all(engine)
    both_locked = threading.Barrier(2, timeout=10)
    runs: list[str] = []

    def piece(name: str, key: int, wait: bool):  # type: ignore[no-untyped-def]
        first = [wait]

        def work(conn):  # type: ignore[no-untyped-def]
            runs.append(name)
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%(k)s)", {"k": key})
            if first[0]:
                first[0] = False
                both_locked.wait()
            return _INSERT.scalar(conn, {"name": name})

        return work

    def batch(works: list[object], out: list[object]) -> None:
        group = GroupCommit(engine)  # each thread: its own event loop, as each server worker has

        async def together() -> list[object]:
            return await asyncio.gather(*(group.run(w) for w in works), return_exceptions=True)  # type: ignore[arg-type]

        out.extend(asyncio.run(together()))

    a_out: list[object] = []
    b_out: list[object] = []
    a = threading.Thread(target=batch, args=([piece("a1", 1, True), piece("a2", 2, False)], a_out))
    b = threading.Thread(target=batch, args=([piece("b1", 2, True), piece("b2", 1, False)], b_out))
    try:
        a.start()
        b.start()
        a.join(30)
        b.join(30)
        with engine.connect() as conn:
            names = conn.execute(select(_things.c.name).order_by(_things.c.name)).scalars().all()
    finally:
        _meta.drop_all(engine)
        engine.dispose()
    assert [type(r) for r in a_out + b_out] == [int] * 4, a_out + b_out
    assert names == ["a1", "a2", "b1", "b2"]
    assert len(runs) > 4  # one batch did run again


def test_conflicts_are_told_apart_from_other_errors() -> None:
    class DriverError(Exception):
        def __init__(self, sqlstate: str | None) -> None:
            self.sqlstate = sqlstate

    assert database.conflict(DriverError("40P01")) and database.conflict(DriverError("40001"))
    assert database.conflict(DBAPIError("stmt", {}, DriverError("40P01")))
    assert not database.conflict(DriverError("23505"))  # unique_violation: a refusal, not a race
    assert not database.conflict(DriverError(None)) and not database.conflict(ValueError("x"))


def _end_other_sessions(database_url: str) -> None:
    """Every other session of this test's database ends, as a server restart would end them."""
    admin = open_engine_nopool(database_url)
    with admin.connect() as conn:
        conn.execute(
            text(
                "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
    admin.dispose()


def test_lost_server_connections_are_replaced(
    database_url: str, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL restarts: a pooled connection that rested is tested before it is lent; one that
    breaks in use is dropped with the pool's others, and a stored query is asked again."""
    if backend != "postgresql":
        pytest.skip("needs a database server whose sessions can be ended: runs in the PostgreSQL pass")
    from xds.bench.query import _slot, query_message
    from xds.database import migrate
    from xds.metadata import vocabulary as v
    from xds.registry.patients import PatientDirectory
    from xds.registry.stored_query import StoredQueryEngine
    from xds.soap.envelope import parse_envelope

    engine = open_engine(database_url)
    migrate(engine)
    _meta.create_all(engine)
    try:
        with write_transaction(engine) as conn:
            _INSERT.scalar(conn, {"name": "a"})
        quick = QuickReads(engine)
        assert quick.rows(_NAME_OF, {"id": 1})
        # rested (here: any time at all) -> tested and replaced on checkout; nothing fails
        monkeypatch.setattr(database, "PING_AFTER_IDLE", 0.0)
        _end_other_sessions(database_url)
        with write_transaction(engine) as conn:
            _INSERT.scalar(conn, {"name": "b"})
        assert [tuple(r) for r in quick.rows(_NAME_OF, {"id": 2})] == [("b",)]
        # in use a moment ago -> lent untested; the read that finds it gone says so
        monkeypatch.setattr(database, "PING_AFTER_IDLE", 3600.0)
        _end_other_sessions(database_url)
        with pytest.raises(DBAPIError) as lost:
            quick.rows(_NAME_OF, {"id": 1})
        assert quick.lost(lost.value)
        assert [tuple(r) for r in quick.rows(_NAME_OF, {"id": 1})] == [("a",)]
        # a stored query that meets a lost connection is asked again, and answers
        queries = StoredQueryEngine(engine, PatientDirectory(engine))
        slots = _slot("$XDSDocumentEntryPatientId", "'13116900216^^^&2.16.578.1.12.4.1.4.1&ISO'")
        slots += _slot("$XDSDocumentEntryStatus", f"('{v.STATUS_APPROVED}')")
        # a write that meets a dead connection fails once (nothing stored); the next one works
        _end_other_sessions(database_url)
        with pytest.raises(DBAPIError), write_transaction(engine) as conn:
            _INSERT.scalar(conn, {"name": "lost"})
        with write_transaction(engine) as conn:
            _INSERT.scalar(conn, {"name": "c"})
        names = {row[0] for row in quick.rows(Prepared(select(_things.c.name)), {})}
        assert names == {"a", "b", "c"}
        body = parse_envelope(query_message(v.SQ_FIND_DOCUMENTS, "ObjectRef", slots)).body
        assert b'status="' + v.RESPONSE_SUCCESS.encode() in queries.answer(body)
        _end_other_sessions(database_url)
        assert b'status="' + v.RESPONSE_SUCCESS.encode() in queries.answer(body)
    finally:
        _meta.drop_all(engine)
        engine.dispose()

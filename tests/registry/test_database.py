"""The database layer the registry relies on: the write gate, background checkpoints, prebuilt
statements, and where blocking work runs."""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, bindparam, insert, select
from sqlalchemy.exc import DBAPIError, IntegrityError

from registry import database
from registry.database import (
    Checkpointer,
    QuickReads,
    WriteGate,
    open_engine,
    run_blocking,
    use_threads,
    write_transaction,
)
from registry.statements import Prepared

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

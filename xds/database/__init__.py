"""Opening the registry database: SQLite (WAL) in a data directory by default, PostgreSQL by URL.

The schema is created and upgraded with Alembic (``xds/database/migrations``); the embedded default
needs no server and no configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from anyio import to_thread
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.pool import NullPool

from xds.database.faults import DatabaseBusy

if TYPE_CHECKING:
    from xds.database.statements import Prepared


def sqlite_url(data_dir: str | Path) -> str:
    path = Path(data_dir) / "registry.db"
    return f"sqlite:///{path}"


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        # Let SQLAlchemy, not pysqlite, decide when transactions begin (pysqlite's own
        # handling defers BEGIN and cannot do BEGIN IMMEDIATE).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        # FULL: the WAL is synced at every commit, so a submission answered with Success survives
        # a power loss or an operating-system crash, as the blob store's fsyncs make its bytes do
        # (NORMAL would only survive the process dying). Group commit shares the sync; the
        # measured cost is ~8 % of ITI-42 throughput.
        cur.execute("PRAGMA synchronous=FULL")
        # a writer that finds the write lock taken by another process (an operator's sqlite3
        # shell, a backup) waits this long; writes of the server wait without blocking (write())
        cur.execute(f"PRAGMA busy_timeout={int(_lock_wait * 1000)}")
        cur.execute("PRAGMA cache_size=-65536")
        # Checkpoints run in the background (:class:`Checkpointer`); a commit only checkpoints
        # itself when the WAL has grown past this many pages (64 MB), as a safety net.
        cur.execute(f"PRAGMA wal_autocheckpoint={WAL_SAFETY_PAGES}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:  # type: ignore[no-untyped-def]
        # Writers take the lock up front: a reader that later upgrades to a writer can deadlock
        # with another one in WAL mode (SQLITE_BUSY without waiting). Connections of a
        # :func:`reader` engine only read, and begin deferred so they never wait for writers.
        # (straight on the driver: this runs for every transaction)
        options = conn.get_execution_options()
        dbapi = conn.connection.dbapi_connection
        if options.get("xds_read_only"):
            dbapi.execute("BEGIN")
            return
        nowait = bool(options.get("xds_nowait"))
        info = conn.connection.info
        if info.get("xds_nowait", False) != nowait:
            dbapi.execute(f"PRAGMA busy_timeout={0 if nowait else int(_lock_wait * 1000)}")
            info["xds_nowait"] = nowait
        try:
            dbapi.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if nowait and (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in (5, 6):  # BUSY, LOCKED
                raise LockTaken("the write lock is held by another process") from exc
            raise


T = TypeVar("T")

WAL_SAFETY_PAGES = 16384

# seconds a write waits for SQLite's write lock held by another process ([registry] lock_wait_s)
_lock_wait = 10.0


def lock_wait_s() -> float:
    """How long a write waits for a lock another process or session holds (set_lock_wait)."""
    return _lock_wait


def set_lock_wait(seconds: float) -> None:
    """How long a write waits for a write lock another process holds before it is refused busy."""
    global _lock_wait
    _lock_wait = max(0.0, float(seconds))


class LockTaken(Exception):
    """SQLite's write lock was taken when a transaction that must not wait for it began, or (on
    PostgreSQL) a lock a write needed was not granted within its short inline wait."""


# PostgreSQL: how long a write run on the event loop waits for a row or table lock before the
# wait moves to a worker thread (:func:`write`, :class:`GroupCommit`). Longer than the lock waits
# between the server's own transactions under load (a commit), short enough not to hold the loop.
INLINE_LOCK_MS = 20

# PostgreSQL: writes that wait for a lock in worker threads at once (each holds a pooled
# connection; the others wait for a turn without holding one, so reads keep theirs)
OFF_LOOP_WAITERS = 4

# SQLSTATE 55P03 lock_not_available: lock_timeout ran out (PostgreSQL Appendix A)
_LOCK_NOT_AVAILABLE = "55P03"


def lock_timed_out(exc: BaseException) -> bool:
    """Whether ``exc`` (or the driver's error behind it) says a lock was not granted in time."""
    return getattr(driver_error(exc), "sqlstate", None) == _LOCK_NOT_AVAILABLE


class Checkpointer:
    """Copies an SQLite database's write-ahead log into the database file, in a background thread.

    With SQLite's default, the commit that takes the WAL past 1,000 pages runs the checkpoint itself
    (a copy and an fsync of the database file) — the request that commits it pays for everyone's.
    Here a daemon thread runs a PASSIVE checkpoint every ``interval`` seconds on its own connection:
    it never blocks readers or writers, and it stops when the engine it serves is garbage collected.
    """

    def __init__(self, path: Path, interval: float = 0.25) -> None:
        self.path = path
        self.interval = interval
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"checkpoint {path}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while not self.stopped.wait(self.interval):
                wal = self.path.with_name(self.path.name + "-wal")
                try:
                    if not wal.exists() or wal.stat().st_size == 0:
                        continue
                    if conn is None:  # mode=rw: never create a database that was removed
                        conn = sqlite3.connect(f"file:{self.path}?mode=rw", uri=True, timeout=0.1)
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except (OSError, sqlite3.Error):
                    if not self.path.exists():
                        return
        finally:
            if conn is not None:
                conn.close()


def _start_checkpointer(engine: Engine) -> None:
    database = engine.url.database
    if not database or database == ":memory:":
        return
    checkpointer = Checkpointer(Path(database))
    weakref.finalize(engine, checkpointer.stop)
    checkpointer.start()


class WriteGate:
    """Lets one writer at a time into an SQLite database, across threads and processes.

    SQLite has one write lock; a writer that finds it taken sleeps in its busy handler (1, 2, 5,
    10 … ms) and retries, so under concurrent registrations most time goes to sleeping. Waiting
    here instead — a thread lock, then ``flock`` on a file beside the database for the other worker
    processes — wakes the next writer the moment the previous one commits.
    """

    def __init__(self, database: Path) -> None:
        self.path = database.with_name(database.name + "-writer")
        self.threads = threading.Lock()
        self._fd: int | None = None
        self._pid = 0

    def _file(self) -> int:
        if self._fd is None or self._pid != os.getpid():  # a forked child opens its own
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._pid = os.getpid()
        return self._fd

    @contextmanager
    def held(self) -> Iterator[None]:
        with self.threads:
            fd = self._file()
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def try_acquire(self) -> bool:
        """Take the gate if it is free at once (for a caller that must not block); see release."""
        if not self.threads.acquire(blocking=False):
            return False
        try:
            fcntl.flock(self._file(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.threads.release()
            return False
        except BaseException:
            self.threads.release()
            raise
        return True

    def release(self) -> None:
        assert self._fd is not None
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        self.threads.release()


_gates: dict[str, WriteGate] = {}
_gates_lock = threading.Lock()


def _gate(engine: Engine) -> WriteGate | None:
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database:
        return None
    gate = _gates.get(database)
    if gate is None:
        with _gates_lock:
            gate = _gates.setdefault(database, WriteGate(Path(database).resolve()))
    return gate


def write_gate(engine: Engine) -> WriteGate | None:
    """The engine's :class:`WriteGate` (SQLite), for a writer that takes it itself; None otherwise."""
    return _gate(engine)


@contextmanager
def write_transaction(
    engine: Engine,
    *,
    gate_held: bool = False,
    nowait: bool = False,
    durable: bool = True,
    lock_ms: int = 0,
) -> Iterator[Connection]:
    """``engine.begin()`` for a transaction that writes, through the database's :class:`WriteGate`
    (``gate_held``: the caller has taken it already). ``nowait``: on SQLite, raise
    :class:`LockTaken` at once instead of waiting when another process holds the write lock.
    ``lock_ms``: on PostgreSQL, a lock not granted within that many milliseconds raises
    :class:`LockTaken` (``lock_timeout``; statements are bounded by ``statement_timeout`` at
    the configured lock wait). ``durable=False``: the commit does not wait for the disk (SQLite
    ``synchronous=NORMAL``, PostgreSQL ``synchronous_commit = off``) — for records whose loss in
    a power failure is acceptable (the trust model's replay records), never for documents or
    metadata."""
    gate = None if gate_held else _gate(engine)
    sqlite = engine.dialect.name == "sqlite"
    with contextlib.ExitStack() as stack:
        if gate is not None:
            stack.enter_context(gate.held())
        conn = stack.enter_context(engine.connect())
        if nowait:
            conn.execution_options(xds_nowait=True)
        if not durable and sqlite:  # straight on the driver (autocommit): no transaction begins
            conn.connection.dbapi_connection.execute("PRAGMA synchronous=NORMAL")  # type: ignore[union-attr]
            stack.callback(conn.connection.dbapi_connection.execute, "PRAGMA synchronous=FULL")  # type: ignore[union-attr]
        try:
            with conn.begin():
                if engine.dialect.name == "postgresql":
                    _set_local(conn, durable, lock_ms)
                yield conn
        except DBAPIError as exc:
            if lock_ms and lock_timed_out(exc):
                raise LockTaken(f"a lock was not granted within {lock_ms} ms") from exc
            raise


def _set_local(conn: Connection, durable: bool, lock_ms: int) -> None:
    """This transaction's own PostgreSQL settings, in one round trip (or none)."""
    settings = []
    if lock_ms:
        settings += [("lock_timeout", f"{lock_ms}ms"), ("statement_timeout", f"{_statement_ms()}ms")]
    if not durable:
        settings.append(("synchronous_commit", "off"))
    if settings:
        calls = ", ".join(f"set_config('{name}', '{value}', true)" for name, value in settings)
        conn.exec_driver_sql(f"SELECT {calls}")


def _statement_ms() -> int:
    """A write statement's limit on PostgreSQL: the configured lock wait (at least 1 s)."""
    return max(1000, int(_lock_wait * 1000))


async def write(engine: Engine, work: Callable[[Connection], T], *args: object) -> T:
    """``work(conn, *args)`` in a write transaction, for async code: the event loop never waits
    for a lock. On SQLite the write gate and the write lock are awaited by polling, so a lock
    another process holds (an operator's ``sqlite3`` shell, a backup) delays writes only, and a
    write still waiting after :func:`set_lock_wait`'s limit raises
    :class:`xds.database.faults.DatabaseBusy`; reads go on meanwhile."""
    gate = _gate(engine)
    if gate is None:
        if engine.dialect.name != "postgresql":
            return await run_blocking(_write_now, engine, work, args, False)
        deadline = asyncio.get_running_loop().time() + _lock_wait
        try:
            return await run_blocking(_write_now, engine, work, args, False, _inline_lock_ms())
        except LockTaken:
            return await off_loop(engine, deadline, _write_now, engine, work, args, False)
    deadline = asyncio.get_running_loop().time() + _lock_wait
    await take_gate(gate, deadline)
    try:
        return await when_unlocked(lambda: run_blocking(_write_now, engine, work, args, True), deadline)
    finally:
        gate.release()


def _write_now(
    engine: Engine, work: Callable[..., T], args: tuple[object, ...], gate_held: bool, lock_ms: int = 0
) -> T:
    with write_transaction(engine, gate_held=gate_held, nowait=gate_held, lock_ms=lock_ms) as conn:
        return work(conn, *args)


def _inline_lock_ms() -> int:
    """PostgreSQL: the lock wait of a write's first try (the whole wait when it runs in a thread)."""
    return max(1, int(_lock_wait * 1000)) if _threads else INLINE_LOCK_MS


_waiters: weakref.WeakKeyDictionary[Engine, tuple[asyncio.AbstractEventLoop, asyncio.Semaphore]] = (
    weakref.WeakKeyDictionary()
)


def _waiting_turns(engine: Engine) -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    found = _waiters.get(engine)
    if found is None or found[0] is not loop:
        found = _waiters[engine] = (loop, asyncio.Semaphore(OFF_LOOP_WAITERS))
    return found[1]


async def off_loop(engine: Engine, deadline: float, attempt: Callable[..., T], *args: object) -> T:
    """PostgreSQL: ``attempt(*args, lock_ms)`` — a write that found a lock taken — again in a
    worker thread, waiting for the lock until ``deadline`` (loop time) with ``lock_timeout``: the
    event loop goes on meanwhile, and the write goes on the moment the lock is released. At most
    :data:`OFF_LOOP_WAITERS` wait so at once. DatabaseBusy when the deadline passes."""
    loop = asyncio.get_running_loop()
    turns = _waiting_turns(engine)
    busy = DatabaseBusy(f"a lock the write needs was held by another session for more than {_lock_wait:g} s")
    try:
        await asyncio.wait_for(turns.acquire(), max(0.0, deadline - loop.time()))
    except TimeoutError:
        raise busy from None
    try:
        left_ms = int((deadline - loop.time()) * 1000)
        if left_ms < 1:
            raise busy
        return await to_thread.run_sync(attempt, *args, left_ms)
    except LockTaken as exc:
        raise busy from exc
    finally:
        turns.release()


async def take_gate(gate: WriteGate, deadline: float) -> None:
    """Take ``gate`` without blocking the event loop; DatabaseBusy after ``deadline`` (loop time)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while not gate.try_acquire():
        now = loop.time()
        if now > deadline:
            raise DatabaseBusy(f"the database's write lock was not free for {_lock_wait:g} s")
        # a peer's write takes about a millisecond: poll fast, then slower for a held lock
        await asyncio.sleep(GroupCommit.GATE_POLL if now - started < 0.05 else 0.005)


async def when_unlocked(attempt: Callable[[], Awaitable[T]], deadline: float) -> T:
    """``attempt()`` (a transaction begun with ``nowait``) again each time it finds SQLite's write
    lock taken by another process, sleeping between tries; DatabaseBusy after ``deadline``."""
    loop = asyncio.get_running_loop()
    pause = 0.001
    while True:
        try:
            return await attempt()
        except LockTaken:
            left = deadline - loop.time()
            if left <= 0:
                raise DatabaseBusy(
                    f"another process held the database's write lock for more than {_lock_wait:g} s"
                ) from None
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, 0.05)


_threads = False


def use_threads(enabled: bool) -> None:
    """Choose where :func:`run_blocking` runs database work (``[server] database_threads``)."""
    global _threads
    _threads = enabled


async def run_blocking(work: Callable[..., T], *args: object) -> T:
    """Run blocking database work from async code: inline by default, or in a worker thread.

    Inline is the default because CPython threads cost more than they give here: a thread gives
    up the interpreter lock for every SQLite call or PostgreSQL round trip and then waits — up to
    the 5 ms switch interval — to get it back from the busy event loop. Measured with ``xds bench
    register`` on 2 cores: SQLite 1,030 registrations/s inline against 450/s in threads, PostgreSQL
    (local) 500/s against 260/s. A transaction never spans an ``await``, so inline work cannot
    deadlock with itself. With a distant database, turn threads on or run more workers.
    """
    if _threads:
        return await to_thread.run_sync(work, *args)
    return work(*args)


class QuickReads:
    """One-statement reads that skip SQLAlchemy's ``Connection`` (checkout, events, result set-up).

    On SQLite each thread keeps its own read-only connection outside the pool, in autocommit: every
    SELECT is its own snapshot of the WAL, and a thread never waits for a pool slot. On other
    databases a connection is checked out of the engine's pool for each read and given back.
    Used where one indexed lookup is the whole of the database work (ITI-43's rows).
    """

    def __init__(self, engine: Engine, *, time_limit: float = 0.0) -> None:
        """``time_limit`` (seconds, 0: none): on SQLite, a read still running after it is
        interrupted (``sqlite3.OperationalError: interrupted``, see :meth:`interrupted`), so one
        request cannot hold a worker that runs reads on its event loop. On PostgreSQL the server's
        own ``statement_timeout`` does this (set it for the registry's role)."""
        self.engine = engine
        self.dialect = engine.dialect
        self.time_limit = time_limit
        self._local = threading.local()
        self._sqlite = engine.dialect.name == "sqlite" and bool(engine.url.database)

    def rows(self, statement: Prepared, params: Mapping[str, object]) -> list[Any]:
        with self.connection() as conn:
            return statement.rows_on(conn, self.dialect, params)

    @contextmanager
    def connection(self) -> Iterator[Any]:
        """A DB-API connection in autocommit for reads, each statement its own snapshot.

        SQLite: this thread's read-only connection. PostgreSQL: one from the engine's pool, in
        autocommit while it is lent (no BEGIN, no COMMIT, no ROLLBACK when it goes back).
        """
        if self._sqlite:
            conn = getattr(self._local, "conn", None)
            if conn is None:
                conn = self._local.conn = _sqlite_reader(str(self.engine.url.database))
                self._local.deadline = [0.0]
                if self.time_limit:
                    deadline = self._local.deadline
                    conn.set_progress_handler(
                        lambda: deadline[0] and time.monotonic() > deadline[0], _PROGRESS_STEPS
                    )
            if self.time_limit:
                self._local.deadline[0] = time.monotonic() + self.time_limit
            try:
                yield conn
            finally:
                self._local.deadline[0] = 0.0
            return
        pooled = self.engine.raw_connection()
        try:
            driver = pooled.driver_connection
            autocommit = self.dialect.name == "postgresql" and not driver.autocommit  # type: ignore[union-attr]
            if autocommit:
                driver.autocommit = True  # type: ignore[union-attr]
            try:
                yield pooled
            except (self.dialect.loaded_dbapi.Error, DBAPIError) as exc:
                if self.lost(exc, driver):
                    # the server went away: this connection is dropped, and the pool's others
                    # (connected before the same loss) are replaced as they come back
                    pooled.invalidate(exc)
                    self.engine.dispose(close=False)
                    autocommit = False
                    if isinstance(exc, DBAPIError):
                        exc.connection_invalidated = True  # what lost() reads afterwards
                raise
            finally:
                if autocommit:
                    driver.autocommit = False  # type: ignore[union-attr]
        finally:
            pooled.close()

    @staticmethod
    def interrupted(exc: BaseException) -> bool:
        """Whether ``exc`` says a read was stopped for running past the time limit."""
        orig = driver_error(exc)
        return isinstance(orig, sqlite3.OperationalError) and "interrupted" in str(orig)

    def lost(self, exc: BaseException, driver: Any = None) -> bool:
        """Whether ``exc`` (the driver's error or SQLAlchemy's wrapping of it) says the database
        connection is gone — a read that failed so may be run again on a new connection."""
        if isinstance(exc, DBAPIError) and exc.connection_invalidated:
            return True
        orig = driver_error(exc)
        if not isinstance(orig, self.dialect.loaded_dbapi.Error):
            return False
        return bool(self.dialect.is_disconnect(orig, driver, None))

    @contextmanager
    def snapshot(self) -> Iterator[Any]:
        """A DB-API connection inside one read-only transaction: every statement sees the same
        committed state (SQLite: a deferred read transaction on the WAL; PostgreSQL: REPEATABLE READ).
        The transaction ends when the block does."""
        with self.connection() as conn:
            begin = "BEGIN" if self._sqlite else "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
            cursor = conn.cursor()
            cursor.execute(begin)
            try:
                yield conn
            except BaseException:
                try:
                    cursor.execute("ROLLBACK")
                except self.dialect.loaded_dbapi.Error:
                    pass  # the connection is gone or has no transaction left: nothing to undo
                raise
            else:
                cursor.execute("COMMIT")
            finally:
                cursor.close()


# SQLite virtual-machine steps between two looks at the clock (well under a millisecond of work)
_PROGRESS_STEPS = 20_000


def _sqlite_reader(database: str) -> sqlite3.Connection:
    conn = sqlite3.connect(database, timeout=30, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA query_only=1")
    # One per thread that reads. Inline (the default) that is one per worker, which gets as much
    # page cache as a pooled connection: at a million entries a content query reads a few dozen
    # pages scattered over the file, and each one missing here is a read from the operating
    # system. With database_threads on (up to 40 reading threads) each keeps 16 MB.
    conn.execute(f"PRAGMA cache_size={-16384 if _threads else -65536}")
    return conn


class _Queue:
    def __init__(self) -> None:
        self.pending: list[tuple[Callable[[Connection], Any], asyncio.Future[Any]]] = []
        self.leader: asyncio.Task[None] | None = None


class GroupCommit:
    """Write transactions that arrive together share one commit.

    Under load the registry's cost per ITI-42 submission is dominated by what every write
    transaction pays once — the write lock, BEGIN, the commit and its write-ahead-log pages. Here
    the first caller leads: it lets the event loop run the other requests that are ready up to
    their own :meth:`run`, then runs the whole batch in one transaction (inline or in a thread, as
    :func:`run_blocking` decides), each piece of work in its own SAVEPOINT so that one that fails
    is rolled back alone, with its own exception, as if it had never come. Work in a batch runs in
    arrival order and sees the work before it, exactly as serial transactions would. Work must be
    safe to run again: a batch that meets a deadlock is rolled back and its work run one by one.
    """

    MAX_BATCH = 64
    ATTEMPTS = 3
    GATHER_ROUNDS = 8
    GATE_POLL = 0.0002

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # per event loop (one per server thread): the work waiting, and the task leading it
        self._queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Queue] = (
            weakref.WeakKeyDictionary()
        )
        self._waiting: set[asyncio.Task[None]] = set()  # PostgreSQL work waiting for a lock

    async def run(self, work: Callable[[Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        queue = self._queues.get(loop)
        if queue is None:
            queue = self._queues[loop] = _Queue()
        future: asyncio.Future[T] = loop.create_future()
        queue.pending.append((work, future))
        if queue.leader is None or queue.leader.done():
            queue.leader = loop.create_task(self._lead(queue))
        return await future

    async def _lead(self, queue: _Queue) -> None:
        pending = queue.pending
        while pending:
            # let requests that are ready reach run() before the batch is cut
            # (a request read in one turn of the loop reaches run() in the next: stop after two
            # turns that brought nothing)
            quiet = 0
            for _ in range(self.GATHER_ROUNDS):
                waiting = len(pending)
                await asyncio.sleep(0)
                quiet = quiet + 1 if len(pending) == waiting else 0
                if quiet == 2:
                    break
            # On SQLite, wait for the write gate without blocking the loop: meanwhile this worker
            # goes on reading and preparing requests, which join the batch. A write lock another
            # process holds is waited for the same way, up to the configured limit.
            gate = _gate(self.engine)
            deadline = asyncio.get_running_loop().time() + _lock_wait
            batch: list[tuple[Callable[[Connection], Any], asyncio.Future[Any]]] = []
            taken = False
            try:
                if gate is not None:
                    await take_gate(gate, deadline)
                    taken = True
                batch = pending[: self.MAX_BATCH]
                del pending[: self.MAX_BATCH]
                batch = [(work, future) for work, future in batch if not future.cancelled()]
                works = [work for work, _ in batch]
                commit = functools.partial(run_blocking, self._commit, works, taken, self._lock_ms())
                outcomes = await when_unlocked(commit, deadline) if batch else []
            except BaseException as exc:  # the transaction itself failed: every piece with it
                if not batch:  # the gate stayed taken: the waiting work is refused busy
                    batch = pending[: self.MAX_BATCH]
                    del pending[: self.MAX_BATCH]
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
                continue
            finally:
                if taken:
                    gate.release()  # type: ignore[union-attr]
            waiting = []
            for (work, future), (ok, value) in zip(batch, outcomes, strict=True):
                if future.done():
                    continue
                if not ok and isinstance(value, LockTaken):  # PostgreSQL: waits off the loop
                    waiting.append((work, future))
                elif ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)
            if waiting:
                task = asyncio.get_running_loop().create_task(self._wait_out(waiting, deadline))
                self._waiting.add(task)
                task.add_done_callback(self._waiting.discard)

    def _lock_ms(self) -> int:
        return _inline_lock_ms() if self.engine.dialect.name == "postgresql" else 0

    async def _wait_out(
        self, waiting: list[tuple[Callable[[Connection], Any], asyncio.Future[Any]]], deadline: float
    ) -> None:
        """PostgreSQL: the work of a batch that found a lock taken, run again in a worker thread
        (:func:`off_loop`) while the leader goes on with the next batch; DatabaseBusy for work
        whose lock stays taken past ``deadline``."""
        try:
            outcomes = await off_loop(self.engine, deadline, self._each_waiting, [w for w, _ in waiting])
        except Exception as exc:
            outcomes = [(False, exc)] * len(waiting)
        for (_, future), (ok, value) in zip(waiting, outcomes, strict=True):
            if future.done():
                continue
            if ok:
                future.set_result(value)
            elif isinstance(value, LockTaken):
                future.set_exception(
                    DatabaseBusy(f"a lock the write needs was held for more than {_lock_wait:g} s")
                )
            else:
                future.set_exception(value)

    def _each_waiting(self, works: list[Callable[[Connection], Any]], lock_ms: int) -> list[tuple[bool, Any]]:
        """In a worker thread: each piece of work alone — first with the short lock wait (so work
        a lock does not hold goes at once), then the ones still locked out, each waiting for its
        lock until ``lock_ms`` from now."""
        deadline = time.monotonic() + lock_ms / 1000
        outcomes = [self._alone(work, False, INLINE_LOCK_MS) for work in works]
        for i, (ok, value) in enumerate(outcomes):
            left = int((deadline - time.monotonic()) * 1000)
            if not ok and isinstance(value, LockTaken) and left >= 1:
                outcomes[i] = self._alone(works[i], False, left)
        return outcomes

    def _commit(
        self, works: list[Callable[[Connection], Any]], gate_held: bool, lock_ms: int = 0
    ) -> list[tuple[bool, Any]]:
        """Run ``works`` in one transaction, each in a savepoint; (ok, value or exception) each.

        Two batches can deadlock on PostgreSQL where serial transactions would only have waited:
        each holds locks its earlier pieces took (a claimed document uniqueId, a relationship
        target, a folder, a blob) that a later piece of the other one needs. The server then fails
        one piece with a deadlock, but the locks that close the cycle belong to the pieces before
        it, so no retry inside the same transaction can succeed. The whole transaction is rolled
        back instead, and each piece runs again in a transaction of its own.
        """
        if len(works) > 1:
            try:
                return self._together(works, gate_held, lock_ms)
            except _Conflict:
                pass  # rolled back as a whole: nothing of the batch is stored
            except LockTaken as exc:
                if gate_held:
                    raise  # SQLite: nothing ran; the whole batch waits and begins again
                # PostgreSQL: a piece found a lock taken; rolled back as a whole, every piece
                # goes on off the event loop (one by one there)
                return [(False, exc)] * len(works)
        return [self._alone(work, gate_held, lock_ms) for work in works]

    def _together(
        self, works: list[Callable[[Connection], Any]], gate_held: bool, lock_ms: int
    ) -> list[tuple[bool, Any]]:
        outcomes: list[tuple[bool, Any]] = []
        try:
            with write_transaction(
                self.engine, gate_held=gate_held, nowait=gate_held, lock_ms=lock_ms
            ) as conn:
                for work in works:
                    conn.exec_driver_sql("SAVEPOINT xds_work")
                    try:
                        value = work(conn)
                    except Exception as exc:
                        if conflict(exc):
                            raise _Conflict from exc
                        if lock_ms and lock_timed_out(exc):
                            raise LockTaken(f"a lock was not granted within {lock_ms} ms") from exc
                        conn.exec_driver_sql("ROLLBACK TO SAVEPOINT xds_work")
                        conn.exec_driver_sql("RELEASE SAVEPOINT xds_work")
                        outcomes.append((False, exc))
                    else:
                        conn.exec_driver_sql("RELEASE SAVEPOINT xds_work")
                        outcomes.append((True, value))
        except DBAPIError as exc:
            if conflict(exc):  # at COMMIT
                raise _Conflict from exc
            raise
        return outcomes

    def _alone(
        self, work: Callable[[Connection], Any], gate_held: bool, lock_ms: int = 0
    ) -> tuple[bool, Any]:
        """``work`` in a transaction of its own, begun again (up to ATTEMPTS times) after a conflict."""
        for attempt in range(1, self.ATTEMPTS + 1):
            try:
                with write_transaction(
                    self.engine, gate_held=gate_held, nowait=gate_held, lock_ms=lock_ms
                ) as conn:
                    value = work(conn)
            except LockTaken as exc:
                if gate_held:
                    raise  # SQLite: nothing ran; the whole batch waits and begins again
                return False, exc  # PostgreSQL: this piece waits for its lock off the loop
            except Exception as exc:
                if conflict(exc) and attempt < self.ATTEMPTS:
                    continue
                return False, exc
            return True, value
        raise AssertionError("unreachable")


class _Conflict(Exception):
    """A batch met a deadlock or serialisation failure and was rolled back as a whole."""


# SQLSTATEs of a transaction that lost a race and can simply be run again: serialization_failure
# and deadlock_detected (PostgreSQL Appendix A, class 40 "Transaction Rollback").
_RETRYABLE_STATES = frozenset({"40001", "40P01"})


def conflict(exc: BaseException) -> bool:
    """Whether ``exc`` (the driver's or SQLAlchemy's wrapping of it) says the transaction lost a
    race with another one — a deadlock or a serialisation failure — and may be run again."""
    return getattr(driver_error(exc), "sqlstate", None) in _RETRYABLE_STATES


def driver_error(exc: BaseException) -> BaseException:
    """The database driver's own error behind ``exc`` (SQLAlchemy wraps it as ``orig``)."""
    return exc.orig if isinstance(exc, DBAPIError) else exc  # type: ignore[return-value]


def reader(engine: Engine) -> Engine:
    """The same engine (same pool) for read-only work: on SQLite its transactions begin deferred.

    Use it for lookups and queries; a transaction that writes must use the engine itself.
    """
    return engine.execution_options(xds_read_only=True)


def open_engine(url: str, *, pool_size: int = 8, checkpoints: bool = True) -> Engine:
    """An engine for ``url`` with the settings the registry relies on; on SQLite with a
    :class:`Checkpointer` unless ``checkpoints`` is false (a process that only reads a database
    another one writes: the writer's checkpointer copies the log)."""
    if url.startswith("sqlite"):
        if url in ("sqlite://", "sqlite:///:memory:"):
            raise ValueError("the registry needs a file or server database, not an in-memory one")
        engine = create_engine(url, pool_size=pool_size, max_overflow=pool_size)
        _configure_sqlite(engine)
        if checkpoints:
            _start_checkpointer(engine)
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    engine = create_engine(url, pool_size=pool_size, max_overflow=pool_size, connect_args=_bounded(url))
    _ping_when_idle(engine)
    return engine


# seconds to wait for a database server to accept a connection (a stopped or unreachable one)
CONNECT_TIMEOUT = 5


def _bounded(url: str) -> dict[str, object]:
    """PostgreSQL connection settings that bound the waits of the (inline) database work: a
    server that does not answer a connection within CONNECT_TIMEOUT, and a lock (a row another
    transaction holds, an operator's LOCK TABLE) not granted within the configured lock wait,
    end in an error the client is answered with, instead of holding the worker — unless the URL
    sets them itself."""
    from sqlalchemy.engine import make_url

    if not url.startswith("postgresql"):
        return {}
    query = make_url(url).query
    out: dict[str, object] = {}
    if "connect_timeout" not in query:
        out["connect_timeout"] = CONNECT_TIMEOUT
    if "options" not in query:
        out["options"] = f"-c lock_timeout={int(_lock_wait * 1000)}"
    return out


# A pooled server connection unused for this long is tested with a round trip before it is lent.
PING_AFTER_IDLE = 5.0


def _ping_when_idle(engine: Engine) -> None:
    """Pessimistic disconnect handling for a database server, without a round trip per checkout.

    A connection lent again within :data:`PING_AFTER_IDLE` seconds was working a moment ago and
    is lent as it is (a busy server saves a ``SELECT 1`` per request); one that rested longer —
    over a database restart, a failover, a firewall's idle timeout — is tested first, and replaced
    when the test fails (the pool retries on ``DisconnectionError``). A connection that breaks in
    use is dealt with where it breaks (:meth:`QuickReads.connection`, SQLAlchemy's own disconnect
    detection for ``Connection``s).
    """

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_conn, record) -> None:  # type: ignore[no-untyped-def]
        record.info["xds_rested_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_conn, record, _proxy) -> None:  # type: ignore[no-untyped-def]
        since = record.info.get("xds_rested_since")
        if since is None or time.monotonic() - since < PING_AFTER_IDLE:
            return  # new, or in use a moment ago
        try:
            cursor = dbapi_conn.cursor()
            cursor.execute("SELECT 1")
            cursor.close()
            dbapi_conn.rollback()  # lent as it came back: outside a transaction
        except engine.dialect.loaded_dbapi.Error as exc:
            raise DisconnectionError("the pooled connection no longer answers") from exc


def open_engine_nopool(url: str) -> Engine:
    """An engine without pooling, for one-shot tools (migrations, benchmark loaders)."""
    engine = create_engine(url, poolclass=NullPool)
    if url.startswith("sqlite"):
        _configure_sqlite(engine)
    return engine


def migrate(engine: Engine, target: str = "heads") -> None:
    """Bring the schema to the newest Alembic revisions (creating it on an empty database).

    The registry's tables and the repository's (branch ``repository``) share one migration
    history; ``target`` may name one branch, e.g. ``repository@head`` for a repository database.
    """
    from alembic import command
    from alembic.config import Config

    here = Path(__file__).parent
    cfg = Config()
    cfg.set_main_option("script_location", str(here / "migrations"))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, target)


def unapplied_migrations(engine: Engine) -> list[str]:
    """The Alembic heads the database has not reached yet ([] when its schema is current)."""
    from alembic.runtime.migration import MigrationContext

    heads, ancestors = _migration_graph()
    with engine.connect() as conn:
        current = set(MigrationContext.configure(conn).get_current_heads())
    applied = set().union(*(ancestors.get(rev, {rev}) for rev in current))
    return sorted(heads - applied)


@functools.cache
def _migration_graph() -> tuple[frozenset[str], dict[str, frozenset[str]]]:
    """The migrations' heads, and each revision with the ones below it (read once)."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(Path(__file__).parent / "migrations"))
    ancestors = {
        rev.revision: frozenset(r.revision for r in script.iterate_revisions(rev.revision, "base"))
        for rev in script.walk_revisions()
    }
    return frozenset(script.get_heads()), ancestors

"""Opening the registry database: SQLite (WAL) in a data directory by default, PostgreSQL by URL.

The schema is created and upgraded with Alembic (``registry/migrations``); the embedded default
needs no server and no configuration.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.pool import NullPool


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
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA cache_size=-65536")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:  # type: ignore[no-untyped-def]
        # Writers take the lock up front: a reader that later upgrades to a writer can deadlock
        # with another one in WAL mode (SQLITE_BUSY without waiting). Connections of a
        # :func:`reader` engine only read, and begin deferred so they never wait for writers.
        if conn.get_execution_options().get("xds_read_only"):
            conn.exec_driver_sql("BEGIN")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")


def reader(engine: Engine) -> Engine:
    """The same engine (same pool) for read-only work: on SQLite its transactions begin deferred.

    Use it for lookups and queries; a transaction that writes must use the engine itself.
    """
    return engine.execution_options(xds_read_only=True)


def open_engine(url: str, *, pool_size: int = 8) -> Engine:
    """An engine for ``url`` with the settings the registry relies on."""
    if url.startswith("sqlite"):
        if url in ("sqlite://", "sqlite:///:memory:"):
            raise ValueError("the registry needs a file or server database, not an in-memory one")
        engine = create_engine(url, pool_size=pool_size, max_overflow=pool_size)
        _configure_sqlite(engine)
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)


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

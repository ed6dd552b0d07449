"""The replay store behind the trust model: message identifiers seen before, shared by every worker.

ITI TF-2 §3.40.4.2 (X-Service Provider) refuses a request whose identifiers were already used; the
store keeps them in the deployment's database (table ``trust_seen_ids``, migration ``t0001``) until
they expire, so a replay sent to another worker process is refused too. It implements
:class:`xds.trust.enforcement.ReplayStore`.

Every signed request — reads too — records its identifier. On SQLite the records are kept in a
database file of their own beside the registry's (``registry-replay.db``): SQLite has one write
lock per file, and one held on the registry (an operator's ``sqlite3`` shell, a backup, a long
registration) must not hold every signed query. On PostgreSQL the table is in the registry's
database (row locks do not reach it).
"""

from __future__ import annotations

import datetime as dt
import threading
import weakref
from pathlib import Path

from sqlalchemy import Column, Engine, Index, MetaData, String, Table, delete, insert
from sqlalchemy.exc import IntegrityError

from xds.database import open_engine, write_transaction

metadata = MetaData()
seen_ids = Table(
    "trust_seen_ids",
    metadata,
    Column("id", String(300), primary_key=True),
    Column("expires", String(20), nullable=False),
)
Index("ix_trust_seen_ids_expires", seen_ids.c.expires)

# the replay engine of each registry engine, living as long as it
_engines: weakref.WeakKeyDictionary[Engine, Engine] = weakref.WeakKeyDictionary()
_engines_lock = threading.Lock()


def replay_path(database: str) -> Path:
    """The replay records' SQLite file beside the registry's SQLite file ``database``."""
    path = Path(database).resolve()
    return path.with_name(f"{path.stem}-replay{path.suffix}")


def replay_engine(engine: Engine) -> Engine:
    """Where the replay records of the registry database ``engine`` are kept: on SQLite an
    engine on ``<database>-replay.db`` beside it (made on first use, its table created under the
    file's write gate so worker processes starting together do not race), elsewhere ``engine``."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database:
        return engine
    with _engines_lock:
        found = _engines.get(engine)
        if found is None:
            found = open_engine(f"sqlite:///{replay_path(database)}", pool_size=4)
            with write_transaction(found) as conn:
                metadata.create_all(conn)
            _engines[engine] = found
    return found


class DatabaseReplayStore:
    """Identifiers seen before, shared by every process through the database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._inserts = 0

    def first_time(self, identifier: str, expires: dt.datetime) -> bool:
        stamp = expires.strftime("%Y%m%d%H%M%S")
        try:
            # not durable: a power failure may forget the last moments' records, never corrupt
            # them; a synced commit per request would be most of the enforcement path's time
            with write_transaction(self.engine, durable=False) as conn:
                conn.execute(insert(seen_ids).values(id=identifier[:300], expires=stamp))
                self._inserts += 1
                if self._inserts % 1000 == 0:
                    now = dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S")
                    conn.execute(delete(seen_ids).where(seen_ids.c.expires < now))
        except IntegrityError:
            return False
        return True

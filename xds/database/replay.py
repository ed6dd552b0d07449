"""The replay store behind the trust model: message identifiers seen before, shared by every worker.

ITI TF-2 §3.40.4.2 (X-Service Provider) refuses a request whose identifiers were already used; the
store keeps them in the deployment's database (table ``trust_seen_ids``, migration ``t0001``) until
they expire, so a replay sent to another worker process is refused too. It implements
:class:`xds.trust.enforcement.ReplayStore`.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Column, Engine, MetaData, String, Table, delete, insert
from sqlalchemy.exc import IntegrityError

from xds.database import write_transaction

metadata = MetaData()
seen_ids = Table(
    "trust_seen_ids",
    metadata,
    Column("id", String(300), primary_key=True),
    Column("expires", String(20), nullable=False),
)


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

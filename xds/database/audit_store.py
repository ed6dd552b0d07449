"""The database audit sink and the access log it answers (tables of migration ``au0001``, branch ``audit``).

Where the records are kept (:func:`audit_url`): on SQLite a database file of their own beside the
registry's (``audit.db`` beside ``registry.db``), so that storing them never takes the registry's
write lock nor makes its readers' page caches stale; on PostgreSQL the registry's database, where
the service's role may only read and append them.

:class:`DatabaseAuditSink` is an ``xds.audit.trail.Sink``: it inserts a batch of records in one
transaction and ignores an event id it already holds, so an event handed to it twice (after a crash
between the insert and the trail's cursor) is stored once. Nothing here updates a record; the
tables refuse UPDATE by trigger, and on PostgreSQL the service's role is granted no DELETE.
:func:`access_log` answers "who read this patient's record": one row per event, newest first.
:func:`purge` removes records older than the retention period (run by the owner role).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Boolean, Column, Engine, MetaData, String, Table, Text, delete, make_url, select
from sqlalchemy.dialects import postgresql, sqlite

from xds.database import migrate, open_engine, write_gate, write_transaction

GATE_WAIT_S = 0.5  # how long a batch waits for the write gate before it is tried again later
metadata = MetaData()
audit_events = Table(
    "audit_events",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("event_time", String(32), nullable=False),
    Column("transaction_code", String(32), nullable=False),
    Column("event", String(64), nullable=False),
    Column("action", String(1), nullable=False),
    Column("outcome", String(2), nullable=False),
    Column("subject", String(256), nullable=False),
    Column("hpr", String(64), nullable=False),
    Column("organisation", String(256), nullable=False),
    Column("role", String(128), nullable=False),
    Column("purpose", String(64), nullable=False),
    Column("btg", Boolean, nullable=False),
    Column("documents", Text, nullable=False),
    Column("description", Text, nullable=False),
    Column("source", String(256), nullable=False),
    Column("message", Text, nullable=False),
)
audit_event_patients = Table(
    "audit_event_patients",
    metadata,
    Column("event_id", String(36), primary_key=True),
    Column("patient", String(256), primary_key=True),
    Column("patient_id", String(64), nullable=False),
    Column("event_time", String(32), nullable=False),
)


def audit_url(registry_url: str) -> str:
    """The database of the audit records for a registry at ``registry_url``: on SQLite the file
    ``audit.db`` beside ``registry.db`` (``NAME-audit.SUFFIX`` beside any other name), else the
    registry's own database."""
    if not registry_url.startswith("sqlite"):
        return registry_url
    url = make_url(registry_url)
    path = Path(url.database or "")
    name = "audit.db" if path.name == "registry.db" else f"{path.stem}-audit{path.suffix or '.db'}"
    return url.set(database=str(path.with_name(name))).render_as_string(hide_password=False)


def open_audit_engine(
    registry_url: str,
    registry_engine: Engine | None = None,
    *,
    prepare: bool = False,
    pool_size: int = 2,
    checkpoints: bool = True,
) -> Engine:
    """An engine on :func:`audit_url` (``registry_engine`` itself when that is the registry's
    database); ``prepare``: create or upgrade its tables first (migration branch ``audit``);
    ``checkpoints``: see :func:`xds.database.open_engine`."""
    url = audit_url(registry_url)
    if url == registry_url and registry_engine is not None:
        return registry_engine
    engine = open_engine(url, pool_size=pool_size, checkpoints=checkpoints)
    if prepare and url != registry_url:
        migrate(engine, "audit@head")
    return engine


def move_records(registry_engine: Engine, engine: Engine, *, chunk: int = 2000) -> int:
    """Move audit records an earlier version kept in the registry's SQLite file into ``engine``'s
    (each copied before it is removed there; one already there is kept as it is)."""
    if engine is registry_engine or registry_engine.dialect.name != "sqlite":
        return 0
    moved = 0
    while True:
        with registry_engine.connect() as conn:
            events = (
                conn.execute(select(audit_events).order_by(audit_events.c.id).limit(chunk)).mappings().all()
            )
            ids = [e["id"] for e in events]
            links = conn.execute(select(audit_event_patients).where(audit_event_patients.c.event_id.in_(ids)))
            links = links.mappings().all() if ids else []
        if not events:
            return moved
        with write_transaction(engine) as conn:
            conn.execute(_insert(engine, audit_events), [dict(e) for e in events])
            if links:
                conn.execute(_insert(engine, audit_event_patients), [dict(p) for p in links])
        with write_transaction(registry_engine) as conn:
            conn.execute(delete(audit_event_patients).where(audit_event_patients.c.event_id.in_(ids)))
            conn.execute(delete(audit_events).where(audit_events.c.id.in_(ids)))
        moved += len(events)


def patient_id(patient: str) -> str:
    """The identifier part of a CX (``ID^^^&OID&ISO`` -> ``ID``)."""
    return patient.split("^", 1)[0].strip()[:64]


def _as_cx(patient: str) -> str:
    """``urn:oid:<authority>:<id>`` (the II-like spelling an assertion's subject may use) as the
    CX ``<id>^^^&<authority>&ISO`` the records hold; any other spelling as it is."""
    if "^" in patient or not patient.startswith("urn:oid:"):
        return patient
    authority, _, number = patient.removeprefix("urn:oid:").rpartition(":")
    return f"{number}^^^&{authority}&ISO" if authority and number else patient


def _insert(engine: Engine, table: Table) -> Any:
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing()


class DatabaseAuditSink:
    """Audit records into the audit database (queryable: the citizen's access log).

    A batch is one transaction of two ``executemany`` of a prepared ``INSERT … ON CONFLICT DO
    NOTHING`` with plain tuples, straight on the driver (SQLAlchemy's per-row processing cost more
    than the inserts)."""

    name = "database"

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        mark = "?" if engine.dialect.paramstyle == "qmark" else "%s"
        self._events = _prepared(audit_events, mark)
        self._patients = _prepared(audit_event_patients, mark)

    def deliver(self, records: Sequence[Any]) -> None:
        rows, links = [], []
        for r in records:
            s = r.summary
            rows.append(
                (
                    r.event_uuid,
                    r.time,
                    str(s.get("transaction", ""))[:32],
                    str(s.get("event", ""))[:64],
                    str(s.get("action", ""))[:1],
                    str(s.get("outcome", ""))[:2],
                    str(s.get("subject", ""))[:256],
                    str(s.get("hpr", ""))[:64],
                    str(s.get("organisation", ""))[:256],
                    str(s.get("role", ""))[:128],
                    str(s.get("purpose", ""))[:64],
                    bool(s.get("btg")),
                    json.dumps(s.get("documents", [])),
                    str(s.get("description", "")),
                    str(s.get("source", ""))[:256],
                    r.xml,
                )
            )
            for p in dict.fromkeys(s.get("patients", [])):  # type: ignore[arg-type]
                links.append((r.event_uuid, str(p)[:256], patient_id(str(p)), r.time))
        gate = write_gate(self.engine)
        if gate is None:
            with write_transaction(self.engine) as conn:
                self._insert(conn, rows, links)
            return
        # SQLite: never hold the process's write gate while another process holds the database's
        # lock (a writer would wait behind us): take the gate only when it is free within a
        # moment, and give up at once if the lock is taken; the records wait in the spool.
        deadline = time.monotonic() + GATE_WAIT_S
        while not gate.try_acquire():
            if time.monotonic() > deadline:
                raise TimeoutError("the database's write gate stayed busy")
            time.sleep(0.002)
        try:
            with write_transaction(self.engine, gate_held=True, nowait=True) as conn:
                self._insert(conn, rows, links)
        finally:
            gate.release()

    def _insert(self, conn: Any, rows: list[tuple[Any, ...]], links: list[tuple[Any, ...]]) -> None:
        conn.exec_driver_sql(self._events, rows)
        if links:
            conn.exec_driver_sql(self._patients, links)

    def close(self) -> None:
        pass


def _prepared(table: Table, mark: str) -> str:
    """``INSERT INTO table (every column) VALUES (…) ON CONFLICT DO NOTHING`` (SQLite, PostgreSQL)."""
    names = ", ".join(f'"{c.name}"' for c in table.columns)
    marks = ", ".join(mark for _ in table.columns)
    return f"INSERT INTO {table.name} ({names}) VALUES ({marks}) ON CONFLICT DO NOTHING"


def access_log(engine: Engine, patient: str, *, limit: int = 10_000) -> list[dict[str, Any]]:
    """Every recorded access to ``patient``'s record (a CX, ``urn:oid:<authority>:<id>`` or the bare
    identifier), newest first."""
    e, p = audit_events, audit_event_patients
    patient = _as_cx(patient.strip())
    stmt = (
        select(e, p.c.patient)
        .join(p, p.c.event_id == e.c.id)
        .where(p.c.patient_id == patient_id(patient))
        .order_by(e.c.event_time.desc(), e.c.id)
        .limit(limit)
    )
    if "^" in patient:
        stmt = stmt.where(p.c.patient == patient)
    with engine.connect() as conn:
        rows = conn.execute(stmt).mappings().all()
    return [
        {
            "time": r["event_time"],
            "transaction": r["transaction_code"],
            "event": r["event"],
            "action": r["action"],
            "outcome": r["outcome"],
            "who": r["subject"],
            "hpr_number": r["hpr"],
            "organisation": r["organisation"],
            "role": r["role"],
            "purpose_of_use": r["purpose"],
            "break_the_glass": bool(r["btg"]),
            "documents": json.loads(r["documents"] or "[]"),
            "patient": r["patient"],
            "description": r["description"],
            "event_id": r["id"],
        }
        for r in rows
    ]


def messages(engine: Engine, patient: str = "", *, limit: int = 10_000) -> list[tuple[str, str]]:
    """(event id, DICOM audit XML) of the stored records, of one patient when given, oldest first."""
    e, p = audit_events, audit_event_patients
    stmt = select(e.c.id, e.c.message).order_by(e.c.event_time, e.c.id).limit(limit)
    if patient:
        stmt = stmt.join(p, p.c.event_id == e.c.id).where(p.c.patient_id == patient_id(patient))
    with engine.connect() as conn:
        return [(r[0], r[1]) for r in conn.execute(stmt)]


def purge(engine: Engine, retention_days: int, *, now: dt.datetime | None = None) -> int:
    """Delete records older than ``retention_days``; the number of events removed."""
    cutoff = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(days=retention_days)
    stamp = cutoff.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    with write_transaction(engine) as conn:
        conn.execute(delete(audit_event_patients).where(audit_event_patients.c.event_time < stamp))
        return conn.execute(delete(audit_events).where(audit_events.c.event_time < stamp)).rowcount or 0

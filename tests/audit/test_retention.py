"""Retention and append-only records: `xds audit --purge` removes records past the retention period;
nothing updates a record (a trigger refuses it); on PostgreSQL the service's role, granted only
SELECT and INSERT as the README says, cannot delete or update them while the owner can purge."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from audit.conftest import query_event
from sqlalchemy import Engine, text, update
from sqlalchemy.exc import DBAPIError

from xds.audit.trail import Record
from xds.database.audit_store import (
    DatabaseAuditSink,
    access_log,
    audit_events,
    audit_url,
    open_audit_engine,
    purge,
)

PATIENT = "13116900216^^^&2.16.578.1.12.4.1.4.1&ISO"


def record(days_ago: int) -> Record:
    return Record.of(query_event(PATIENT, dt.datetime.now(dt.UTC) - dt.timedelta(days=days_ago)))


@pytest.fixture
def audit_engine(engine: Engine, database_url: str) -> Iterator[Engine]:
    """The audit records' database: a file of its own beside an SQLite registry, else the registry's."""
    audit = open_audit_engine(database_url, engine, prepare=True)
    yield audit
    if audit is not engine:
        audit.dispose()


def test_purge_keeps_the_retention_period_and_records_are_never_updated(
    audit_engine: Engine, database_url: str
) -> None:
    engine = audit_engine
    sink = DatabaseAuditSink(engine)
    sink.deliver([record(400), record(10), record(0)])
    sink.deliver([record(0)])
    assert len(access_log(engine, "13116900216")) == 4
    with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
        conn.execute(update(audit_events).values(subject="someone else"))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "xds.cli",
            "audit",
            "--purge",
            "--retention-days",
            "30",
            "--database-url",
            database_url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "removed 1 audit records older than 30 days" in out.stdout
    assert len(access_log(engine, "13116900216")) == 3
    assert purge(engine, 30) == 0


def test_records_an_earlier_version_kept_in_the_sqlite_registry_move_to_their_own_file(
    engine: Engine, database_url: str, backend: str
) -> None:
    if backend != "sqlite":
        pytest.skip("SQLite only: on PostgreSQL the records stay in the registry's database")
    DatabaseAuditSink(engine).deliver([record(3), record(0)])  # as an earlier version stored them
    assert audit_url(database_url) != database_url
    out = subprocess.run(
        [sys.executable, "-m", "xds.cli", "audit", "--patient", "13116900216", "--json"]
        + ["--database-url", database_url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.count('"event_id"') == 2
    assert access_log(engine, "13116900216") == []  # moved, not copied
    audit = open_audit_engine(database_url)
    try:
        assert len(access_log(audit, "13116900216")) == 2
    finally:
        audit.dispose()


def test_the_services_role_cannot_delete_on_postgresql(engine: Engine, backend: str) -> None:
    if backend != "postgresql":
        pytest.skip("PostgreSQL roles: runs in the PostgreSQL pass")
    role = f"xds_service_{uuid.uuid4().hex[:8]}"
    DatabaseAuditSink(engine).deliver([record(400), record(0)])
    with engine.begin() as conn:
        conn.execute(text(f"CREATE ROLE {role}"))
        # the grants the README gives the service's role
        conn.execute(text(f"GRANT SELECT, INSERT ON audit_events, audit_event_patients TO {role}"))
    try:
        with engine.connect() as conn:
            conn.execute(text(f"SET ROLE {role}"))
            conn.execute(
                text(
                    "INSERT INTO audit_events VALUES (:id, '2026-01-01T00:00:00.000Z', 'ITI-18', 'Query', 'E', '0',"
                    " '', '', '', '', '', false, '[]', '', 'svc', '<AuditMessage/>')"
                ),
                {"id": str(uuid.uuid4())},
            )
            for statement in (
                "DELETE FROM audit_events",
                "TRUNCATE audit_events",
                "UPDATE audit_events SET hpr = 'x'",
            ):
                with pytest.raises(DBAPIError, match="permission denied"):
                    with conn.begin_nested():
                        conn.execute(text(statement))
            conn.rollback()
        assert purge(engine, 30) == 1  # the owner (the role that ran the migrations) purges
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(text("UPDATE audit_events SET hpr = 'x'"))  # not even the owner updates
    finally:
        with engine.begin() as conn:
            conn.execute(text(f"REVOKE ALL ON audit_events, audit_event_patients FROM {role}"))
            conn.execute(text(f"DROP ROLE {role}"))


def test_spool_files_are_private(tmp_path: Path) -> None:
    from xds.audit.journal import Journal

    journal = Journal(tmp_path / "spool", ["database"])
    journal.append(b"x")
    assert (journal.path.stat().st_mode & 0o077) == 0
    journal.close()


def test_a_segment_file_left_unnamed_by_a_dead_writer_is_removed(tmp_path: Path) -> None:
    """A writer killed between creating a segment (``*.new``) and naming it leaves an empty file;
    the next look through the spool removes it once it is old — a young one may be mid-naming."""
    import fcntl
    import os

    from xds.audit.journal import UNBORN_AFTER_S, Journal

    spool = tmp_path / "spool"
    journal = Journal(spool, ["database"])
    dead, young, held = spool / "1-aa-000001.new", spool / "2-bb-000001.new", spool / "3-cc-000001.new"
    for path in (dead, young, held):
        path.touch()
    old = time.time() - UNBORN_AFTER_S - 1
    os.utime(dead, (old, old))
    os.utime(held, (old, old))
    holder = os.open(held, os.O_RDONLY)
    fcntl.flock(holder, fcntl.LOCK_SH)  # its writer lives
    try:
        journal.segments(look=True)
        assert not dead.exists() and young.exists() and held.exists()
    finally:
        os.close(holder)
        journal.close()

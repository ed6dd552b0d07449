"""When a delivery process delivers: a burst's events wait, on disk, until it ends (the CPUs
busy); with CPU to spare they go within MAX_LAG_S even while more keep coming."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from audit.conftest import query_event
from sqlalchemy import func, select

from xds.audit import trail as trail_module
from xds.audit.trail import AuditTrail, IdleShare
from xds.database.audit_store import DatabaseAuditSink, audit_events, open_audit_engine


def test_a_burst_waits_on_disk_and_spare_cpu_does_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trail_module, "POLL_S", 0.02)
    monkeypatch.setattr(trail_module, "MAX_LAG_S", 0.3)
    monkeypatch.setattr(trail_module, "BUSY_LAG_S", 30.0)
    monkeypatch.setattr(trail_module, "SYNC_S", 0.2)
    engine = open_audit_engine(f"sqlite:///{tmp_path}/registry.db", prepare=True)
    spool = tmp_path / "spool"
    writer = AuditTrail(spool, [DatabaseAuditSink(engine)])
    deliverer = AuditTrail(spool, [DatabaseAuditSink(engine)], owner=writer.journal.name)
    synced = []
    sync = deliverer.journal.sync
    monkeypatch.setattr(deliverer.journal, "sync", lambda: (synced.append(time.monotonic()), sync())[1])
    busy = [True]
    stopped = threading.Event()
    delivering = threading.Thread(
        target=deliverer.serve, args=(lambda: not stopped.is_set(), lambda: 0.05 if busy[0] else 0.9)
    )
    delivering.start()

    def stored() -> int:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(audit_events)).scalar_one())

    def arrive(seconds: float) -> int:
        sent, until = 0, time.monotonic() + seconds
        while time.monotonic() < until:
            writer.record([query_event("1^^^&1.2&ISO")])
            sent += 1
            time.sleep(0.005)
        return sent

    try:
        sent = arrive(1.5)  # a burst, five times MAX_LAG_S, the CPUs busy: nothing delivered ...
        assert stored() == 0
        assert len(synced) >= 4  # ... but on disk all along
        deadline = time.monotonic() + 10
        while stored() < sent and time.monotonic() < deadline:  # the burst over: all of it
            time.sleep(0.02)
        assert stored() == sent
        busy[0] = False  # CPU to spare: delivered while more keep coming
        before = stored()
        more = arrive(1.5)
        assert stored() > before
        deadline = time.monotonic() + 10
        while stored() < sent + more and time.monotonic() < deadline:
            time.sleep(0.02)
        assert stored() == sent + more
    finally:
        stopped.set()
        delivering.join()
        writer.journal.close()
        engine.dispose()


def test_the_idle_share_is_read_from_proc_stat(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3\n")
    share = IdleShare(str(stat))
    assert share() is None  # nothing to compare with yet
    stat.write_text("cpu  250 0 100 850 50 0 0 0 0 0\n")  # 200 busy, 50 idle since
    assert share() == pytest.approx(50 / 250)
    assert IdleShare(str(tmp_path / "none"))() is None  # not Linux: never busy

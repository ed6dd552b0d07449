"""Audit records to a real rsyslog: RFC 5424 over UDP (RFC 5426) and TLS (RFC 5425 octet counting);
a collector that is down for 1,000 transactions gets every event exactly once when it returns; a
server killed with SIGKILL while events wait in its spool loses none of them."""

from __future__ import annotations

import collections
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from audit.conftest import recorded
from audit.rsyslog import Rsyslog
from lxml import etree
from operating import find_documents, start_server
from sqlalchemy import make_url
from support import RunningServer, make_config, new_database

from xds import samples
from xds.database import open_engine
from xds.database.audit_store import audit_url, messages


def patient(i: int) -> str:
    return samples.patient_cx(f"{13116900216 + i * 1000:011d}")


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[Rsyslog]:
    rsyslog = Rsyslog(tmp_path / "rsyslog", tls=True).start()
    try:
        yield rsyslog
    finally:
        rsyslog.stop()


def serve(tmp_path: Path, url: str, syslog: str, ca: Path | None) -> RunningServer:
    cfg = make_config(tmp_path / "data", url)
    cfg.audit.syslog = syslog
    cfg.audit.syslog_ca_file = str(ca or "")
    return RunningServer(cfg)


def query(server_url: str, count: int, start: int = 0) -> None:
    with httpx.Client(timeout=30) as http:
        for i in range(start, start + count):
            find_documents(http, server_url + "/registry", patient(i))


def test_rfc5424_over_udp_and_tls(tmp_path: Path, collector: Rsyslog, audit_schema: etree.RelaxNG) -> None:
    targets = f"udp://127.0.0.1:{collector.udp_port}, tls://127.0.0.1:{collector.tls_port}"
    with new_database(tmp_path) as url, serve(tmp_path, url, targets, collector.ca) as server:
        query(server.url, 3)
        stored = [etree.tostring(m).decode() for m in recorded(server.app)]
        got = collector.wait_for(6, timeout=20)
    assert len(stored) == 3
    counts = collections.Counter(got)
    assert all(counts[xml] == 2 for xml in stored), counts  # once over UDP, once over TLS
    for line in collector.lines():
        pri_version, _stamp, _host, app, procid, msgid, sd, _ = line.split(" ", 7)
        assert (pri_version, app, msgid, sd) == ("<85>1", "xds", "IHE+RFC-3881", "-")
        assert procid.isdigit()
    for xml in got:
        assert audit_schema.validate(etree.fromstring(xml.encode())), audit_schema.error_log


def test_collector_down_for_1000_transactions_gets_each_event_once(
    tmp_path: Path, collector: Rsyslog
) -> None:
    target = f"tls://127.0.0.1:{collector.tls_port}"
    with new_database(tmp_path) as url, serve(tmp_path, url, target, collector.ca) as server:
        query(server.url, 5)
        assert len(collector.wait_for(5, timeout=20)) == 5
        collector.stop()
        query(server.url, 1000, start=5)
        time.sleep(0.5)
        assert len(collector.messages()) == 5  # nothing arrived while it was down
        collector.start()
        got = collector.wait_for(1005, timeout=90)
        time.sleep(2.0)  # anything sent twice would arrive by now
        got = collector.messages()
        stored = [etree.tostring(m).decode() for m in recorded(server.app)]
    assert len(stored) == 1005
    counts = collections.Counter(got)
    assert sorted(counts.values()) == [1] * 1005
    assert set(counts) == set(stored)


def test_sigkill_while_spooling_loses_nothing(tmp_path: Path, collector: Rsyslog) -> None:
    """The collector is down; 200 transactions are answered (their events spooled), the server is
    killed with SIGKILL, the collector comes back, a new server on the same data directory adopts
    the dead one's spool and delivers every event once."""
    target = f"tls://127.0.0.1:{collector.tls_port}"
    env = {"XDS_AUDIT_SYSLOG": target, "XDS_AUDIT_SYSLOG_CA_FILE": str(collector.ca)}
    data_dir = tmp_path / "data"
    collector.stop()
    with new_database(tmp_path) as url:
        first = start_server(data_dir, url, env=env)
        try:
            query(first.url, 200)
            os.kill(first.proc.pid, signal.SIGKILL)
            first.proc.wait(timeout=10)
        finally:
            first.stop()
        spooled = list((data_dir / "audit-spool").glob("*.seg"))
        assert spooled and sum(p.stat().st_size for p in spooled) > 0
        collector.start()
        with start_server(data_dir, url, env=env):
            got = collector.wait_for(200, timeout=60)
            time.sleep(1.5)
            got = collector.messages()
        engine = open_engine(audit_url(url))
        try:
            stored = [xml for _, xml in messages(engine)]
        finally:
            engine.dispose()
    queried = [m for m in stored if "ITI-18" in m]
    assert len(queried) == 200  # the database sink had them all, once
    counts = collections.Counter(got)
    assert all(counts[xml] == 1 for xml in queried), [c for c in counts.values() if c != 1]
    assert len(got) == len(stored)


def test_a_delivery_process_that_dies_is_replaced_and_loses_nothing(
    tmp_path: Path, collector: Rsyslog
) -> None:
    """The server's delivery process is killed with SIGKILL mid-stream; the server starts another,
    which takes up the spool where the cursors stand: every event reaches the database and the
    collector once."""
    target = f"tls://127.0.0.1:{collector.tls_port}"
    with new_database(tmp_path) as url, serve(tmp_path, url, target, collector.ca) as server:
        delivery = server.app.state.audit_trail.delivery
        query(server.url, 20)
        first = delivery.pid
        assert first is not None
        collector.wait_for(20, timeout=30)  # (it delivers: it has set itself up)
        # it takes the CPU only when the transactions leave it idle: every thread of it (on SQLite
        # its database's checkpointer too, which copies the log into the audit database)
        threads = [int(tid) for tid in os.listdir(f"/proc/{first}/task")]
        assert all(os.sched_getscheduler(tid) == os.SCHED_IDLE for tid in threads)
        os.kill(first, signal.SIGKILL)
        query(server.url, 30, start=20)
        deadline = time.monotonic() + 20
        while delivery.pid in (first, None) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert delivery.pid not in (first, None), "no delivery process was started again"
        stored = [etree.tostring(m).decode() for m in recorded(server.app)]
        got = collector.wait_for(50, timeout=30)
        time.sleep(1.0)
        got = collector.messages()
    assert len(stored) == 50
    counts = collections.Counter(got)
    assert set(counts) == set(stored)
    assert max(counts.values()) <= 2  # a batch sent but not noted when the process died may come twice
    assert sum(counts.values()) - len(stored) <= 20


def test_a_delivery_process_ends_when_its_server_process_is_gone(tmp_path: Path) -> None:
    """Its server process ends while it is still starting (or later): it ends too, so that the next
    server's delivery process adopts the spool."""
    import json
    import subprocess
    import sys

    from xds.audit.delivery import OWNER_ENV
    from xds.operations.audit_delivery import CONFIG_ENV

    cfg = make_config(tmp_path / "data", f"sqlite:///{tmp_path / 'registry.db'}")
    parent = (
        "import os, subprocess, sys\n"
        "child = subprocess.Popen([sys.executable, '-m', 'xds.operations.audit_delivery'],"
        f" env={{**os.environ, {OWNER_ENV!r}: f'{{os.getpid()}}-test'}},"
        " stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        "print(child.pid, flush=True)\n"
        "os._exit(0)\n"
    )
    env = {**os.environ, CONFIG_ENV: json.dumps(cfg.to_dict())}
    out = subprocess.run([sys.executable, "-c", parent], env=env, capture_output=True, text=True, timeout=60)
    child = int(out.stdout.strip())

    def running() -> bool:
        try:
            return "\nState:\tZ" not in Path(f"/proc/{child}/status").read_text()
        except FileNotFoundError:
            return False

    deadline = time.monotonic() + 30
    while running() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not running(), "the delivery process outlived its server process"


def test_a_serving_process_leaves_the_audit_databases_checkpoints_to_the_delivery(tmp_path: Path) -> None:
    """A serving process only reads the audit database (the access log); the delivery process
    writes it, and its checkpointer copies the log at the delivery's priority, so that no serving
    thread spends the transactions' CPU on the delivery's work."""
    with new_database(tmp_path) as url, serve(tmp_path, url, "", None) as server:
        query(server.url, 3)
        names = {t.name for t in threading.enumerate()}
        if url.startswith("sqlite"):  # (on PostgreSQL there are none)
            assert f"checkpoint {make_url(url).database}" in names  # the registry's own, as before
            assert f"checkpoint {make_url(audit_url(url)).database}" not in names
        assert len(recorded(server.app)) == 3  # delivered, by the delivery process

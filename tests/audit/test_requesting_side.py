"""The requesting side audits too (ITI TF-2a §3.20.4): our client (used by `xds submit` /
`xds retrieve` and the gateways) records ITI-41 as Export (R), ITI-43 as Import (C) and ITI-86 as
deleted, with the same objects as the responding side."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from audit.rsyslog import Rsyslog
from lxml import etree
from support import RunningServer, make_config, new_database

from xds import samples
from xds.audit.message import AuditSource
from xds.audit.observer import ClientAuditor
from xds.audit.trail import AuditTrail
from xds.client import RepositoryClient
from xds.database import migrate, open_engine
from xds.database.audit_store import DatabaseAuditSink, messages

PATIENT = samples.patient_cx("13116900216")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp("requesting")
    with new_database(tmp) as url, RunningServer(make_config(tmp / "data", url)) as running:
        yield running


def test_client_events(server: RunningServer, tmp_path: Path, audit_schema: etree.RelaxNG) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 'client.db'}")
    migrate(engine)
    trail = AuditTrail(tmp_path / "spool", [DatabaseAuditSink(engine)])
    auditor = ClientAuditor(trail, AuditSource("consumer-app"))
    sample = samples.submission(PATIENT, rng=random.Random(uuid.uuid4().int))
    doc = sample.documents[0]
    doc.slots = [x for x in doc.slots if x.name not in ("hash", "size", "repositoryUniqueId")]
    (tmp_path / "d.txt").write_bytes(b"hello")
    repo = server.app.state.repositories["default"]
    with RepositoryClient(server.url + "/repository", auditor=auditor) as client:
        assert client.provide_and_register(sample.submission, {doc.id: (tmp_path / "d.txt", "text/plain")}).ok
        outcome, found = client.retrieve(repo.unique_id, [doc.unique_id], tmp_path / "out")
        assert outcome.ok and len(found) == 1
        assert client.remove(repo.unique_id, [doc.unique_id]).ok
    trail.stop()
    got = [etree.fromstring(xml.encode()) for _, xml in messages(engine)]
    engine.dispose()
    by_tx = {m.find("EventIdentification/EventTypeCode").get("csd-code"): m for m in got}
    assert set(by_tx) == {"ITI-41", "ITI-43", "ITI-86"}
    expected = {"ITI-41": ("110106", "R"), "ITI-43": ("110107", "C"), "ITI-86": ("110105", "D")}
    for tx, msg in by_tx.items():
        assert audit_schema.validate(msg), audit_schema.error_log
        ev = msg.find("EventIdentification")
        assert (ev.find("EventID").get("csd-code"), ev.get("EventActionCode")) == expected[tx]
        assert ev.get("EventOutcomeIndicator") == "0"
        roles = {p.find("RoleIDCode").get("csd-code"): p for p in msg.findall("ActiveParticipant")}
        assert roles["110153"].get("AlternativeUserID") == str(os.getpid())  # we are the source
        assert roles["110152"].get("UserID") == server.url + "/repository"
        assert msg.find("AuditSourceIdentification").get("AuditSourceID") == "consumer-app"
    docs = [
        o
        for o in by_tx["ITI-43"].findall("ParticipantObjectIdentification")
        if o.get("ParticipantObjectTypeCodeRole") == "3"
    ]
    assert [d.get("ParticipantObjectID") for d in docs] == [doc.unique_id]


def test_xds_submit_sends_its_event_to_syslog(server: RunningServer, tmp_path: Path) -> None:
    collector = Rsyslog(tmp_path / "rsyslog").start()
    try:
        (tmp_path / "note.txt").write_text("a note")
        env = {
            **os.environ,
            "XDS_AUDIT_SYSLOG": f"tcp://127.0.0.1:{collector.tcp_port}",
            "XDS_SERVER_DATA_DIR": str(tmp_path / "client"),
        }
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "xds.cli",
                "submit",
                str(tmp_path / "note.txt"),
                "--patient",
                "13116900216",
                "--url",
                server.url + "/repository",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert out.returncode == 0, out.stderr
        [msg] = collector.wait_for(1, timeout=20)
    finally:
        collector.stop()
    event = etree.fromstring(msg.encode())
    assert event.find("EventIdentification/EventTypeCode").get("csd-code") == "ITI-41"
    assert event.find("EventIdentification").get("EventActionCode") == "R"

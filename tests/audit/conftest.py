"""Audit fixtures: the DICOM audit message schema and a way to read what a server recorded."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from lxml import etree
from support import RunningServer, make_config, new_database

import xds.audit
from xds.audit.message import (
    PATIENT_NUMBER,
    PERSON,
    ROLE_PATIENT,
    ActiveParticipant,
    AuditMessage,
    AuditSource,
    Code,
    ParticipantObject,
)

SCHEMA = Path(xds.audit.__file__).parent / "schema" / "dicom-audit-message.rnc"


@pytest.fixture(scope="session")
def audit_schema() -> etree.RelaxNG:
    """DICOM PS3.15 A.5.1 RELAX NG (compact syntax, read through rnc2rng)."""
    return etree.RelaxNG.from_rnc_string(SCHEMA.read_text())


def recorded(app, patient: str = "") -> list[etree._Element]:  # type: ignore[no-untyped-def]
    """Every audit message the server's database holds (after delivering what is queued)."""
    from xds.database.audit_store import messages

    trail = app.state.audit_trail
    assert trail.flush(20), "audit events were not delivered"
    return [etree.fromstring(xml.encode()) for _, xml in messages(app.state.audit_engine, patient)]


@contextlib.contextmanager
def audited_server(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[RunningServer]:
    """A server of its own database, auditing with a named source and enterprise site."""
    tmp = tmp_path_factory.mktemp(name)
    with new_database(tmp) as url:
        cfg = make_config(tmp / "data", url)
        cfg.audit.source_id = "xds-test-source"
        cfg.audit.enterprise_site_id = "983971636"
        with RunningServer(cfg) as running:
            yield running


def query_event(patient: str, when: dt.datetime | None = None) -> AuditMessage:
    """A plain ITI-18 audit message about ``patient`` (now, unless ``when``)."""
    msg = AuditMessage(
        event_id=Code("110112", "DCM", "Query"),
        action="E",
        outcome="0",
        type_codes=[Code("ITI-18", "IHE Transactions", "Registry Stored Query")],
        participants=[ActiveParticipant("a", True)],
        source=AuditSource("test"),
        objects=[ParticipantObject(patient, PATIENT_NUMBER, PERSON, ROLE_PATIENT)],
    )
    if when is not None:
        msg.when = when
    return msg

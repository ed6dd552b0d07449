"""ITI-57 Update Document Set, ITI-62 Remove Metadata and ITI-92 Restricted Update Document Set
audited by the Document Registry (ITI TF-2b §3.57.5, §3.62.5, RMU §3.92.5), field by field, over
real HTTP, checked against the DICOM audit message schema."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from audit.conftest import audited_server
from audit.test_audit_events import check_common, code, events_of, objects
from lifecycle import new_version, remove, status_update, submit, update_set
from lxml import etree
from support import RunningServer

from xds import samples
from xds.metadata import vocabulary as v
from xds.metadata.model import LocalizedString, Submission
from xds.registry.register import assign_uuids


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with audited_server(tmp_path_factory, "audit-lifecycle") as running:
        yield running


def registered(url: str, standards: Path):  # type: ignore[no-untyped-def]
    sample = samples.submission(rng=random.Random(), documents=1)
    assign_uuids(sample.submission)
    assert submit(f"{url}/registry", v.ACTION_REGISTER, sample.submission, standards)[0] == v.RESPONSE_SUCCESS
    return sample


def ss_unique_id(ss) -> str:  # type: ignore[no-untyped-def]
    return next(e.value for e in ss.external_ids if e.identification_scheme == v.SS_UNIQUE_ID)


def check_update(
    msg: etree._Element, schema: etree.RelaxNG, server: RunningServer, name: str, patient: str
) -> None:
    check_common(msg, schema, server, "/registry")
    ev = msg.find("EventIdentification")
    assert code(ev.find("EventID")) == ("110107", "DCM", "Import")
    assert code(ev.find("EventTypeCode"))[1:] == ("IHE Transactions", name)
    assert ev.get("EventActionCode") == "U"
    assert ev.get("EventOutcomeIndicator") == "0"
    assert [p.get("ParticipantObjectID") for p in objects(msg, "1")] == [patient]


def test_iti57_update(server: RunningServer, standards: Path, audit_schema: etree.RelaxNG) -> None:
    sample = registered(server.url, standards)
    ss = update_set(sample.patient)
    deprecate = status_update(ss, sample.documents[0].id, v.STATUS_APPROVED, v.STATUS_DEPRECATED)
    status, errors = submit(
        f"{server.url}/registry", v.ACTION_UPDATE_DOCUMENT_SET, Submission([ss, deprecate]), standards
    )
    assert status == v.RESPONSE_SUCCESS, errors
    [msg] = [
        m
        for m in events_of(server, "ITI-57")
        if objects(m, "20")[0].get("ParticipantObjectID") == ss_unique_id(ss)
    ]
    check_update(msg, audit_schema, server, "Update Document Set", sample.patient)


def test_iti92_restricted_update(server: RunningServer, standards: Path, audit_schema: etree.RelaxNG) -> None:
    sample = registered(server.url, standards)
    doc = sample.documents[0]
    ss = update_set(sample.patient)
    new, member = new_version(doc, "1", ss)
    new.lid = doc.id
    new.name = [LocalizedString("Rettet tittel")]
    status, errors = submit(
        f"{server.url}/registry", v.ACTION_RESTRICTED_UPDATE, Submission([ss, new, member]), standards
    )
    assert status == v.RESPONSE_SUCCESS, errors
    [msg] = [
        m
        for m in events_of(server, "ITI-92")
        if objects(m, "20")[0].get("ParticipantObjectID") == ss_unique_id(ss)
    ]
    check_update(msg, audit_schema, server, "Restricted Update Document Set", sample.patient)


def test_iti62_remove_metadata(server: RunningServer, standards: Path, audit_schema: etree.RelaxNG) -> None:
    sample = registered(server.url, standards)
    ids = [o.id for o in sample.submission.objects if o.id.startswith("urn:uuid:")]
    status, errors = remove(f"{server.url}/registry", ids, standards)
    assert status == v.RESPONSE_SUCCESS, errors
    [msg] = [
        m
        for m in events_of(server, "ITI-62")
        if {o.get("ParticipantObjectID") for o in objects(m, "3")} == set(ids)
    ]
    check_common(msg, audit_schema, server, "/registry")
    ev = msg.find("EventIdentification")
    assert code(ev.find("EventID")) == ("110110", "DCM", "Patient Record")
    assert code(ev.find("EventTypeCode")) == ("ITI-62", "IHE Transactions", "Remove Metadata")
    assert ev.get("EventActionCode") == "D"
    assert ev.get("EventOutcomeIndicator") == "0"
    # the removed objects' patient, read before they were gone (ITI TF-2b §3.62.5)
    [patient] = objects(msg, "1")
    assert patient.get("ParticipantObjectID") == sample.patient
    assert (patient.get("ParticipantObjectTypeCode"), code(patient.find("ParticipantObjectIDTypeCode"))) == (
        "1",
        ("2", "RFC-3881", "Patient Number"),
    )

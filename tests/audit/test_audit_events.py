"""Each transaction's audit message, field by field (ITI TF-2a §3.20.7 and the transactions' audit
sections), checked against the DICOM audit message schema. Transactions go over real HTTP and MLLP;
the messages are read back from the database sink."""

from __future__ import annotations

import base64
import random
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from audit.conftest import audited_server, recorded
from lxml import etree
from support import RunningServer

from xds import samples
from xds.client import RepositoryClient
from xds.metadata import ebrim
from xds.metadata import vocabulary as v
from xds.registry.mllp import send_mllp
from xds.soap.envelope import build_request

PATIENT = samples.patient_cx("13116900216")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with audited_server(tmp_path_factory, "audit") as running:
        yield running


def soap(url: str, action: str, body: bytes) -> httpx.Response:
    data, ctype = build_request(action, body, to=url)
    return httpx.post(url, content=data, headers={"Content-Type": ctype}, timeout=30)


def find_documents(patient: str) -> bytes:
    return (
        f'<query:AdhocQueryRequest xmlns:query="{v.NS_QUERY}" xmlns:rim="{v.NS_RIM}">'
        f'<query:ResponseOption returnType="LeafClass" returnComposedObjects="true"/>'
        f'<rim:AdhocQuery id="{v.SQ_FIND_DOCUMENTS}">'
        f"<rim:Slot name=\"$XDSDocumentEntryPatientId\"><rim:ValueList><rim:Value>'{patient.replace('&', '&amp;')}'"
        f"</rim:Value></rim:ValueList></rim:Slot>"
        f"<rim:Slot name=\"$XDSDocumentEntryStatus\"><rim:ValueList><rim:Value>('{v.STATUS_APPROVED}')"
        f"</rim:Value></rim:ValueList></rim:Slot></rim:AdhocQuery></query:AdhocQueryRequest>"
    ).encode()


def events_of(server: RunningServer, transaction: str) -> list[etree._Element]:
    return [
        m
        for m in recorded(server.app)
        if m.find("EventIdentification/EventTypeCode").get("csd-code") == transaction
    ]


def code(el: etree._Element | None) -> tuple[str, str, str]:
    assert el is not None
    return el.get("csd-code"), el.get("codeSystemName"), el.get("originalText")


def participants(msg: etree._Element) -> dict[str, etree._Element]:
    out = {}
    for p in msg.findall("ActiveParticipant"):
        role = p.find("RoleIDCode")
        out[role.get("csd-code") if role is not None else "human"] = p
    return out


def objects(msg: etree._Element, role: str) -> list[etree._Element]:
    return [
        o
        for o in msg.findall("ParticipantObjectIdentification")
        if o.get("ParticipantObjectTypeCodeRole") == role
    ]


def detail(obj: etree._Element, kind: str) -> str:
    for d in obj.findall("ParticipantObjectDetail"):
        if d.get("type") == kind:
            return base64.b64decode(d.get("value")).decode()
    return ""


def check_common(msg: etree._Element, schema: etree.RelaxNG, server: RunningServer, path: str) -> None:
    assert schema.validate(msg), schema.error_log
    src = msg.find("AuditSourceIdentification")
    assert src.get("AuditSourceID") == "xds-test-source"
    assert src.get("AuditEnterpriseSiteID") == "983971636"
    assert src.find("AuditSourceTypeCode").get("csd-code") == "4"
    parts = participants(msg)
    source, destination = parts["110153"], parts["110152"]
    assert code(source.find("RoleIDCode")) == ("110153", "DCM", "Source Role ID")
    assert source.get("UserIsRequestor") == "true"
    assert source.get("UserID") == "http://www.w3.org/2005/08/addressing/anonymous"
    assert source.get("NetworkAccessPointID") == "127.0.0.1"
    assert source.get("NetworkAccessPointTypeCode") == "2"
    assert code(destination.find("RoleIDCode")) == ("110152", "DCM", "Destination Role ID")
    assert destination.get("UserIsRequestor") == "false"
    assert destination.get("UserID") == f"{server.url}{path}"
    assert destination.get("AlternativeUserID").isdigit()  # process id


def test_iti42_register(server: RunningServer, audit_schema: etree.RelaxNG) -> None:
    sample = samples.submission(PATIENT, rng=random.Random(1))
    ss_uid = next(
        e.value
        for e in sample.submission.objects[0].external_ids
        if e.identification_scheme == v.SS_UNIQUE_ID
    )
    r = soap(
        server.url + "/registry", v.ACTION_REGISTER, ebrim.submit_objects_request_bytes(sample.submission)
    )
    assert v.RESPONSE_SUCCESS.encode() in r.content
    [msg] = [
        m for m in events_of(server, "ITI-42") if objects(m, "20")[0].get("ParticipantObjectID") == ss_uid
    ]
    check_common(msg, audit_schema, server, "/registry")
    ev = msg.find("EventIdentification")
    assert code(ev.find("EventID")) == ("110107", "DCM", "Import")
    assert code(ev.find("EventTypeCode")) == ("ITI-42", "IHE Transactions", "Register Document Set-b")
    assert ev.get("EventActionCode") == "C"
    assert ev.get("EventOutcomeIndicator") == "0"
    [patient] = objects(msg, "1")
    assert patient.get("ParticipantObjectID") == PATIENT
    assert patient.get("ParticipantObjectTypeCode") == "1"
    assert code(patient.find("ParticipantObjectIDTypeCode")) == ("2", "RFC-3881", "Patient Number")
    [ss] = objects(msg, "20")
    assert ss.get("ParticipantObjectTypeCode") == "2"
    assert code(ss.find("ParticipantObjectIDTypeCode"))[0] == "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd"


def test_iti42_failure_is_recorded_as_failure(server: RunningServer, audit_schema: etree.RelaxNG) -> None:
    sample = samples.submission(samples.patient_cx("29698496140"), rng=random.Random(2))
    body = ebrim.submit_objects_request_bytes(sample.submission)
    assert v.RESPONSE_SUCCESS.encode() in soap(server.url + "/registry", v.ACTION_REGISTER, body).content
    again = soap(server.url + "/registry", v.ACTION_REGISTER, body)  # same uniqueIds: refused
    assert b"ResponseStatusType:Failure" in again.content
    outcomes = [
        m.find("EventIdentification").get("EventOutcomeIndicator")
        for m in events_of(server, "ITI-42")
        if objects(m, "1")[0].get("ParticipantObjectID") == sample.patient
    ]
    assert sorted(outcomes) == ["0", "8"]


def test_iti18_query(server: RunningServer, audit_schema: etree.RelaxNG) -> None:
    body = find_documents(PATIENT)
    r = soap(server.url + "/registry", v.ACTION_STORED_QUERY, body)
    assert r.status_code == 200
    check_iti18(events_of(server, "ITI-18")[-1], body, audit_schema, server)


def check_iti18(msg: etree._Element, body: bytes, audit_schema: etree.RelaxNG, server: RunningServer) -> None:
    check_common(msg, audit_schema, server, "/registry")
    ev = msg.find("EventIdentification")
    assert code(ev.find("EventID")) == ("110112", "DCM", "Query")
    assert code(ev.find("EventTypeCode")) == ("ITI-18", "IHE Transactions", "Registry Stored Query")
    assert ev.get("EventActionCode") == "E"
    assert ev.get("EventOutcomeIndicator") == "0"
    [patient] = objects(msg, "1")
    assert patient.get("ParticipantObjectID") == PATIENT
    [query] = objects(msg, "24")
    assert query.get("ParticipantObjectID") == v.SQ_FIND_DOCUMENTS
    assert query.get("ParticipantObjectTypeCode") == "2"
    assert code(query.find("ParticipantObjectIDTypeCode")) == (
        "ITI-18",
        "IHE Transactions",
        "Registry Stored Query",
    )
    sent = etree.fromstring(body)
    got = etree.fromstring(base64.b64decode(query.findtext("ParticipantObjectQuery")))
    assert etree.tostring(got, method="c14n", exclusive=True) == etree.tostring(
        sent, method="c14n", exclusive=True
    )
    assert detail(query, "QueryEncoding") == "UTF-8"


def test_iti18_query_in_other_vendors_forms(server: RunningServer, audit_schema: etree.RelaxNG) -> None:
    """The same query as other stacks send it — as MTOM (some send every request so), and as an
    envelope of their own prefixes with a comment and white space before the payload — is
    audited the same: the short way for unsigned queries finds the payload as the endpoint did."""
    url = server.url + "/registry"
    body = find_documents(PATIENT)
    envelope, _ = build_request(v.ACTION_STORED_QUERY, body, to=url)
    boundary, start = "MIMEBoundary_7f3a", "<root.message@cxf.apache.org>"
    mtom = (
        (
            f"--{boundary}\r\nContent-Type: application/xop+xml; charset=UTF-8; "
            f'type="application/soap+xml"\r\nContent-Transfer-Encoding: binary\r\n'
            f"Content-ID: {start}\r\n\r\n"
        ).encode()
        + envelope
        + f"\r\n--{boundary}--\r\n".encode()
    )
    mtom_type = (
        f'multipart/related; type="application/xop+xml"; boundary="{boundary}"; start="{start}"; '
        f'start-info="application/soap+xml"; action="{v.ACTION_STORED_QUERY}"'
    )
    own = (
        (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<s12:Envelope xmlns:s12="http://www.w3.org/2003/05/soap-envelope" '
            'xmlns:a="http://www.w3.org/2005/08/addressing">\n'
            f' <s12:Header><a:Action s12:mustUnderstand="1">{v.ACTION_STORED_QUERY}</a:Action>'
            f"<a:MessageID>urn:uuid:{uuid.uuid4()}</a:MessageID>"
            "<a:ReplyTo><a:Address>http://www.w3.org/2005/08/addressing/anonymous</a:Address></a:ReplyTo>"
            f"<a:To>{url}</a:To></s12:Header>\n"
            " <s12:Body>\n  <!-- sent by another vendor's stack -->\n  "
        ).encode()
        + body
        + b"\n </s12:Body>\n</s12:Envelope>\n"
    )
    for data, ctype in ((mtom, mtom_type), (own, "application/soap+xml; charset=UTF-8")):
        before = len(events_of(server, "ITI-18"))
        r = httpx.post(url, content=data, headers={"Content-Type": ctype}, timeout=30)
        assert r.status_code == 200 and b"ResponseStatusType:Success" in r.content
        found = events_of(server, "ITI-18")
        assert len(found) == before + 1
        check_iti18(found[-1], body, audit_schema, server)


def test_iti51_multi_patient_query(server: RunningServer, audit_schema: etree.RelaxNG) -> None:
    other = samples.patient_cx("29698496140")
    body = find_documents(PATIENT).replace(
        b"<rim:Value>'" + PATIENT.replace("&", "&amp;").encode() + b"'",
        b"<rim:Value>('"
        + PATIENT.replace("&", "&amp;").encode()
        + b"','"
        + other.replace("&", "&amp;").encode()
        + b"')",
    )
    soap(server.url + "/registry", v.ACTION_MULTI_PATIENT_QUERY, body)
    msg = events_of(server, "ITI-51")[-1]
    check_common(msg, audit_schema, server, "/registry")
    ev = msg.find("EventIdentification")
    assert code(ev.find("EventID")) == ("110112", "DCM", "Query")
    assert code(ev.find("EventTypeCode")) == ("ITI-51", "IHE Transactions", "Multi-Patient Stored Query")
    assert [p.get("ParticipantObjectID") for p in objects(msg, "1")] == [PATIENT, other]


@pytest.fixture(scope="module")
def provided(server: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[str]]:
    """One ITI-41 submission of two documents: (submission set uniqueId, document uniqueIds)."""
    tmp = tmp_path_factory.mktemp("docs")
    sample = samples.submission(PATIENT, documents=2, rng=random.Random(uuid.uuid4().int))
    files = {}
    for i, doc in enumerate(sample.documents):
        doc.slots = [x for x in doc.slots if x.name not in ("hash", "size", "repositoryUniqueId")]
        path = tmp / f"doc{i}.txt"
        path.write_bytes(f"document {i}".encode())
        files[doc.id] = (path, "text/plain")
    with RepositoryClient(server.url + "/repository") as client:
        outcome = client.provide_and_register(sample.submission, files)
    assert outcome.ok, outcome.errors
    ss_uid = next(
        e.value
        for e in sample.submission.objects[0].external_ids
        if e.identification_scheme == v.SS_UNIQUE_ID
    )
    return ss_uid, [d.unique_id for d in sample.documents]


def test_iti41_provide(
    server: RunningServer, audit_schema: etree.RelaxNG, provided: tuple[str, list[str]]
) -> None:
    ss_uid, _ = provided
    [msg] = [
        m for m in events_of(server, "ITI-41") if objects(m, "20")[0].get("ParticipantObjectID") == ss_uid
    ]
    check_common(msg, audit_schema, server, "/repository")
    ev = msg.find("EventIdentification")
    assert code(ev.find("EventID")) == ("110107", "DCM", "Import")
    assert code(ev.find("EventTypeCode")) == (
        "ITI-41",
        "IHE Transactions",
        "Provide and Register Document Set-b",
    )
    assert ev.get("EventActionCode") == "C"
    assert ev.get("EventOutcomeIndicator") == "0"
    assert [p.get("ParticipantObjectID") for p in objects(msg, "1")] == [PATIENT]


def test_iti43_retrieve_partial_success_gives_two_messages(
    server: RunningServer, audit_schema: etree.RelaxNG, provided: tuple[str, list[str]], tmp_path: Path
) -> None:
    _, uids = provided
    repo = server.app.state.repositories["default"]
    missing = "1.2.3.4.999"
    with RepositoryClient(server.url + "/repository") as client:
        outcome, docs = client.retrieve(repo.unique_id, [uids[0], missing], tmp_path)
    assert outcome.status.endswith("PartialSuccess") and len(docs) == 1
    msgs = [
        m
        for m in events_of(server, "ITI-43")
        if {uids[0], missing} & {o.get("ParticipantObjectID") for o in objects(m, "3")}
    ]
    assert len(msgs) == 2
    by_outcome = {m.find("EventIdentification").get("EventOutcomeIndicator"): m for m in msgs}
    ok, failed = by_outcome["0"], by_outcome["4"]
    for msg in msgs:
        check_common(msg, audit_schema, server, "/repository")
        ev = msg.find("EventIdentification")
        assert code(ev.find("EventID")) == ("110106", "DCM", "Export")
        assert code(ev.find("EventTypeCode")) == ("ITI-43", "IHE Transactions", "Retrieve Document Set")
        assert ev.get("EventActionCode") == "R"
    [doc] = objects(ok, "3")
    assert doc.get("ParticipantObjectID") == uids[0]
    assert code(doc.find("ParticipantObjectIDTypeCode")) == ("9", "RFC-3881", "Report Number")
    assert detail(doc, "Repository Unique Id") == repo.unique_id
    assert [p.get("ParticipantObjectID") for p in objects(ok, "1")] == [PATIENT]  # the document's owner
    assert [o.get("ParticipantObjectID") for o in objects(failed, "3")] == [missing]


def test_iti86_remove(
    server: RunningServer, audit_schema: etree.RelaxNG, provided: tuple[str, list[str]]
) -> None:
    _, uids = provided
    repo = server.app.state.repositories["default"]
    with RepositoryClient(server.url + "/repository") as client:
        client.remove(repo.unique_id, [uids[1]])
    [msg] = [
        m for m in events_of(server, "ITI-86") if objects(m, "3")[0].get("ParticipantObjectID") == uids[1]
    ]
    check_common(msg, audit_schema, server, "/repository")
    ev = msg.find("EventIdentification")
    assert code(ev.find("EventID")) == ("110105", "DCM", "DICOM Study Deleted")
    assert code(ev.find("EventTypeCode")) == ("ITI-86", "IHE Transactions", "Remove Documents")
    assert ev.get("EventActionCode") == "D"


def test_iti8_feed(server: RunningServer, audit_schema: etree.RelaxNG) -> None:
    port = server.config.registry.mllp_port
    pid = "ABC123^^^&1.2.3.4.5&ISO"
    control = f"c{uuid.uuid4().hex[:10]}"
    msg = (
        f"MSH|^~\\&|SENDAPP|SENDFAC|XDS|XDSFAC|20261122101500||ADT^A01^ADT_A01|{control}|P|2.5\r"
        f"EVN|A01|20261122101500\rPID|||{pid}||Nordmann^Kari\rPV1||O"
    )
    assert "MSA|AA" in send_mllp("127.0.0.1", port, msg, timeout=10)
    [event] = [m for m in events_of(server, "ITI-8") if detail(objects(m, "1")[0], "MSH-10") == control]
    assert audit_schema.validate(event), audit_schema.error_log
    ev = event.find("EventIdentification")
    assert code(ev.find("EventID")) == ("110110", "DCM", "Patient Record")
    assert code(ev.find("EventTypeCode")) == ("ITI-8", "IHE Transactions", "Patient Identity Feed")
    assert ev.get("EventActionCode") == "C"
    assert ev.get("EventOutcomeIndicator") == "0"
    parts = participants(event)
    assert parts["110153"].get("UserID") == "SENDAPP|SENDFAC"
    assert parts["110152"].get("UserID") == "XDS|XDSFAC"
    assert [p.get("ParticipantObjectID") for p in objects(event, "1")] == [pid]

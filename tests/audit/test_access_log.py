"""The human requestor in audit messages (from the verified XUA assertion), refusals on record, and
the citizen's access log: `xds audit --patient`, its FHIR export, and GET /audit/access-log
answered only for the citizen's own assertion or an auditor's."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from audit.conftest import recorded
from lxml import etree
from support import RunningServer, make_config, new_database, require_trust

from xds import samples
from xds.metadata import vocabulary as v
from xds.soap.envelope import build_request
from xds.trust import assertion as xa
from xds.trust.keys import KeySet, init_keys
from xds.trust.wssecurity import secure_request

ISSUER = "https://helseid-xdssaml.test.nhn.no"
NUMBER = "13116900216"
PATIENT = samples.patient_cx(NUMBER)
OTHER = samples.patient_cx("29698496140")


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeySet:
    return init_keys(tmp_path_factory.mktemp("keys"), ["ahus", "kommune"])


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    tmp = tmp_path_factory.mktemp("accesslog")
    with new_database(tmp) as url:
        yield tmp, url


@pytest.fixture(scope="module")
def server(database: tuple[Path, str], keys: KeySet) -> Iterator[RunningServer]:
    tmp, url = database
    cfg = make_config(tmp / "data", url)
    require_trust(cfg, keys, ISSUER)
    with RunningServer(cfg) as running:
        yield running


def who(**over: object) -> xa.TrustAttributes:
    base: dict[str, object] = dict(
        subject_id="Kari Nordmann",
        hpr_number="9144900",
        role="LE",
        organisation="Kommunen",
        organisation_id="983971636",
        purpose_of_use="TREAT",
        resource_id=PATIENT,
    )
    base.update(over)
    return xa.TrustAttributes(**base)  # type: ignore[arg-type]


def signed_assertion(keys: KeySet, attributes: xa.TrustAttributes) -> etree._Element:
    return xa.sign_assertion(
        xa.build_assertion(attributes, issuer=ISSUER), keys.idp.key_pem(), keys.idp.cert_pem()
    )


def query(
    server: RunningServer, keys: KeySet, attributes: xa.TrustAttributes, patient: str = PATIENT
) -> httpx.Response:
    url = server.url + "/registry"
    body = (
        f'<query:AdhocQueryRequest xmlns:query="{v.NS_QUERY}" xmlns:rim="{v.NS_RIM}">'
        f'<query:ResponseOption returnType="ObjectRef" returnComposedObjects="true"/>'
        f'<rim:AdhocQuery id="{v.SQ_FIND_DOCUMENTS}">'
        f"<rim:Slot name=\"$XDSDocumentEntryPatientId\"><rim:ValueList><rim:Value>'{patient.replace('&', '&amp;')}'"
        f"</rim:Value></rim:ValueList></rim:Slot>"
        f"<rim:Slot name=\"$XDSDocumentEntryStatus\"><rim:ValueList><rim:Value>('{v.STATUS_APPROVED}')"
        f"</rim:Value></rim:ValueList></rim:Slot></rim:AdhocQuery></query:AdhocQueryRequest>"
    ).encode()
    env, ctype = build_request(v.ACTION_STORED_QUERY, body, to=url)
    sender = keys.institutions["kommune"]
    data = secure_request(
        env,
        assertion=signed_assertion(keys, attributes),
        key_pem=sender.key_pem(),
        cert_pem=sender.cert_pem(),
    )
    return httpx.post(url, content=data, headers={"Content-Type": ctype}, timeout=30)


def humans(msg: etree._Element) -> list[etree._Element]:
    return [
        p
        for p in msg.findall("ActiveParticipant")
        if p.find("RoleIDCode") is None or p.find("RoleIDCode").get("csd-code") not in ("110152", "110153")
    ]


def test_the_human_requestor_and_purpose_come_from_the_verified_assertion(
    server: RunningServer, keys: KeySet, audit_schema: etree.RelaxNG
) -> None:
    assert query(server, keys, who()).status_code == 200
    msg = recorded(server.app, PATIENT)[-1]
    assert audit_schema.validate(msg), audit_schema.error_log
    [human] = humans(msg)
    assert human.get("UserID") == "9144900"
    assert human.get("UserName") == f"9144900<Kari Nordmann@{ISSUER}>"
    assert human.get("AlternativeUserID") == "Kommunen"
    assert human.get("UserIsRequestor") == "true"
    assert human.find("RoleIDCode").get("csd-code") == "LE"
    purpose = msg.find("EventIdentification/PurposeOfUse")
    assert (purpose.get("csd-code"), purpose.get("codeSystemName")) == ("TREAT", "2.16.840.1.113883.5.8")


def test_a_query_about_another_patient_is_on_that_patients_record(
    server: RunningServer, keys: KeySet, audit_schema: etree.RelaxNG
) -> None:
    """The access policy withholds the other patient's objects; the attempt is on their record."""
    assert (
        query(server, keys, who(subject_id="Ola Snoker", hpr_number="1234567"), patient=OTHER).status_code
        == 200
    )
    msg = recorded(server.app, OTHER)[-1]
    assert audit_schema.validate(msg), audit_schema.error_log
    assert msg.find("EventIdentification/EventTypeCode").get("csd-code") == "ITI-18"
    assert [h.get("UserID") for h in humans(msg)] == ["1234567"]


def test_a_request_refused_by_the_security_check_is_on_record(
    server: RunningServer, keys: KeySet, audit_schema: etree.RelaxNG
) -> None:
    url = server.url + "/registry"
    env, ctype = build_request(v.ACTION_STORED_QUERY, b"<x/>", to=url)
    sender = keys.institutions["kommune"]
    data = secure_request(
        env, assertion=signed_assertion(keys, who()), key_pem=sender.key_pem(), cert_pem=sender.cert_pem()
    )
    httpx.post(url, content=data, headers={"Content-Type": ctype}, timeout=30)
    before = len(recorded(server.app))
    replayed = httpx.post(url, content=data, headers={"Content-Type": ctype}, timeout=30)
    assert replayed.status_code == 400
    after = recorded(server.app)
    assert len(after) == before + 1
    ev = after[-1].find("EventIdentification")
    assert audit_schema.validate(after[-1]), audit_schema.error_log
    assert ev.find("EventTypeCode").get("csd-code") == "ITI-18"
    assert ev.get("EventOutcomeIndicator") == "8"
    assert ev.findtext("EventOutcomeDescription").startswith("refused by the security policy: replayed")
    # an unsigned request (trust required) is refused and recorded too, with no human requestor
    env, ctype = build_request(v.ACTION_STORED_QUERY, b"<x/>", to=url)
    assert httpx.post(url, content=env, headers={"Content-Type": ctype}).status_code == 400
    last = recorded(server.app)[-1]
    assert len(recorded(server.app)) == before + 2
    assert last.find("EventIdentification").get("EventOutcomeIndicator") == "8"
    assert humans(last) == []


def test_break_the_glass_is_flagged_in_the_citizens_log(
    server: RunningServer, keys: KeySet, database: tuple[Path, str]
) -> None:
    assert (
        query(
            server, keys, who(subject_id="Legevakt Lege", hpr_number="7777777", purpose_of_use="BTG")
        ).status_code
        == 200
    )
    recorded(server.app)
    _, url = database
    out = subprocess.run(
        [sys.executable, "-m", "xds.cli", "audit", "--patient", NUMBER, "--json", "--database-url", url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)["accesses"]
    btg = [r for r in rows if r["break_the_glass"]]
    assert [(r["who"], r["hpr_number"], r["organisation"], r["purpose_of_use"]) for r in btg] == [
        ("Legevakt Lege", "7777777", "Kommunen", "BTG")
    ]
    assert all(r["patient"] == PATIENT for r in rows)
    table = subprocess.run(
        [sys.executable, "-m", "xds.cli", "audit", "--patient", NUMBER, "--database-url", url],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert "BTG BREAK-THE-GLASS" in table and "1 break-the-glass accesses: flagged for follow-up" in table
    assert "Legevakt Lege" in table and "9144900" in table


def test_fhir_export_is_valid_balp_audit_events(
    server: RunningServer, keys: KeySet, database: tuple[Path, str]
) -> None:
    from fhir.resources.R4B.auditevent import AuditEvent

    query(server, keys, who())
    recorded(server.app)
    _, url = database
    out = subprocess.run(
        [sys.executable, "-m", "xds.cli", "audit", "--patient", NUMBER, "--fhir", "--database-url", url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    bundle = json.loads(out.stdout)
    assert bundle["resourceType"] == "Bundle" and bundle["entry"]
    for entry in bundle["entry"]:
        event = (
            AuditEvent.model_validate(entry["resource"])
            if hasattr(AuditEvent, "model_validate")
            else AuditEvent.parse_obj(entry["resource"])
        )
        assert event.type.system == "http://dicom.nema.org/resources/ontology/DCM"
    query_event = next(
        e["resource"] for e in bundle["entry"] if e["resource"]["subtype"][0]["code"] == "ITI-18"
    )
    assert query_event["type"]["code"] == "110112"
    assert query_event["subtype"][0]["system"] == "urn:ihe:event-type-code"
    roles = {(e["role"]["code"], e["what"]["identifier"]["value"]) for e in query_event["entity"]}
    assert ("1", PATIENT) in roles and ("24", v.SQ_FIND_DOCUMENTS) in roles


def bearer(keys: KeySet, attributes: xa.TrustAttributes, idp: object = None) -> dict[str, str]:
    signer = idp or keys.idp
    assertion = xa.sign_assertion(
        xa.build_assertion(attributes, issuer=ISSUER), signer.key_pem(), signer.cert_pem()
    )  # type: ignore[attr-defined]
    return {"Authorization": "SAML " + base64.b64encode(etree.tostring(assertion)).decode()}


def test_the_access_log_endpoint_answers_the_citizen_and_auditors_only(
    server: RunningServer, keys: KeySet, tmp_path: Path
) -> None:
    query(server, keys, who())
    recorded(server.app)
    url = f"{server.url}/audit/access-log?patient={NUMBER}"
    assert httpx.get(url).status_code == 401
    clinician = httpx.get(url, headers=bearer(keys, who()))
    assert clinician.status_code == 403
    citizen = httpx.get(
        url, headers=bearer(keys, who(subject_id=PATIENT, hpr_number="", purpose_of_use="PATRQT"))
    )
    assert citizen.status_code == 200, citizen.text
    body = citizen.json()
    assert body["patient"] == NUMBER and body["accesses"]
    assert {
        "who",
        "hpr_number",
        "organisation",
        "purpose_of_use",
        "documents",
        "break_the_glass",
        "time",
    } <= set(body["accesses"][0])
    auditor = httpx.get(url, headers=bearer(keys, who(role="auditor", subject_id="Revisor")))
    assert auditor.status_code == 200
    other_citizen = httpx.get(
        url, headers=bearer(keys, who(subject_id=OTHER, hpr_number="", purpose_of_use="PATRQT"))
    )
    assert other_citizen.status_code == 403
    # the citizen in the urn:oid spelling of the national id is the same citizen
    spelt = who(subject_id=f"urn:oid:2.16.578.1.12.4.1.4.1:{NUMBER}", hpr_number="", purpose_of_use="PATRQT")
    assert httpx.get(url, headers=bearer(keys, spelt)).status_code == 200
    # a clinician's assertion whose subject-id is the patient's number is not the citizen's
    as_clinician = who(subject_id=PATIENT, purpose_of_use="TREAT")
    assert httpx.get(url, headers=bearer(keys, as_clinician)).status_code == 403
    rogue = init_keys(tmp_path / "rogue", ["x"], ca_name="Not our CA")
    assert httpx.get(url, headers=bearer(keys, who(subject_id=PATIENT), idp=rogue.idp)).status_code == 401
    assert httpx.get(url, headers={"Authorization": "SAML !!!"}).status_code == 401


def test_the_access_log_is_the_same_for_each_spelling_the_guard_accepts(
    server: RunningServer, keys: KeySet
) -> None:
    """The citizen may name themselves as a bare number, a CX or ``urn:oid:<authority>:<number>``;
    each spelling admitted gives the same log (the urn:oid one gave an empty log: "nobody read your
    record"), and one of another assigning authority is not this citizen's."""
    query(server, keys, who())
    recorded(server.app)
    citizen = bearer(keys, who(subject_id=PATIENT, hpr_number="", purpose_of_use="PATRQT"))
    auditor = bearer(keys, who(role="auditor", subject_id="Revisor"))
    spellings = [NUMBER, PATIENT, f"urn:oid:2.16.578.1.12.4.1.4.1:{NUMBER}"]
    logs = []
    for spelling in spellings:
        answer = httpx.get(f"{server.url}/audit/access-log", params={"patient": spelling}, headers=citizen)
        assert answer.status_code == 200, answer.text
        logs.append([a["event_id"] for a in answer.json()["accesses"]])
    assert logs[0] and logs[0] == logs[1] == logs[2]
    elsewhere = httpx.get(
        f"{server.url}/audit/access-log", params={"patient": f"urn:oid:1.2.3.4:{NUMBER}"}, headers=auditor
    )
    assert elsewhere.status_code == 200 and elsewhere.json()["accesses"] == []

"""Preparing real kit submissions for sending (11990, 12004, 11992) and evaluating their Reports."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from lxml import etree

from xds import safexml
from xds.conformance import testplan as tp
from xds.conformance.substitution import (
    Prepared,
    builtin_symbols,
    evaluate_reports,
    prepare_submission,
    substitute_symbols,
)
from xds.metadata import vocabulary as v

NS = {"rim": v.NS_RIM, "lcm": v.NS_LCM}
PATIENT = "9f3a21^^^&2.16.578.1.12.4.1.4.1&ISO"  # a Norwegian-looking CX with & in it
OTHER_PATIENT = "77aa01^^^&2.16.578.1.12.4.1.4.1&ISO"
SOURCE_ID = "2.16.578.1.12.4.5.100.1"


@pytest.fixture
def fresh_oid() -> Callable[[], str]:
    counter = itertools.count(1)
    return lambda: f"2.16.578.1.12.4.5.100.1.{next(counter)}"


def _external_ids(root: etree._Element, scheme: str) -> list[str]:
    return root.xpath("//rim:ExternalIdentifier[@identificationScheme=$s]/@value", s=scheme, namespaces=NS)


def _prepare(step: tp.TestStep, fresh_oid: Callable[[], str], **symbols: str) -> Prepared:
    return prepare_submission(
        step,
        patient_id=OTHER_PATIENT,
        fresh_oid=fresh_oid,
        symbols={f"${key}$": value for key, value in symbols.items()},
        source_id=SOURCE_ID,
    )


def test_register_one_document(testkit: Path, fresh_oid, lcm_schema: etree.XMLSchema) -> None:
    step = tp.load_test(testkit, "11990").section("submit").step("submit")
    prepared = _prepare(step, fresh_oid, patientid=PATIENT)
    root = prepared.element
    assert lcm_schema.validate(root), lcm_schema.error_log
    # NoPatientId: the message's $patientid$ (from UseReport) stays, the session id is not written
    assert _external_ids(root, v.DE_PATIENT_ID) == [PATIENT]
    assert _external_ids(root, v.SS_PATIENT_ID) == [PATIENT]
    assert _external_ids(root, v.SS_SOURCE_ID) == [SOURCE_ID]
    doc_uid, ss_uid = _external_ids(root, v.DE_UNIQUE_ID)[0], _external_ids(root, v.SS_UNIQUE_ID)[0]
    assert prepared.assigned_uids == {"Document01": doc_uid, "SubmissionSet01": ss_uid}
    assert doc_uid != ss_uid and doc_uid.startswith("2.16.578.1.12.4.5.100.1.")
    # no AssignUuids: symbolic ids go as they are, the registry assigns UUIDs
    assert prepared.assigned_uuids == {}
    assert root.xpath("//rim:ExtrinsicObject/@id", namespaces=NS) == ["Document01"]
    assert prepared.reports == {"Document01_uid": doc_uid, "SubmissionSet01_uid": ss_uid}
    assert "$" not in etree.tostring(root, encoding="unicode")


def test_session_patient_id_is_written_unless_no_patient_id(testkit: Path, fresh_oid) -> None:
    # 11996 <AltPatientId/>: the caller passes a fresh, unknown id; it lands in every patientId
    step = tp.load_test(testkit, "11996").section("submit").step("submit")
    assert step.flags.alt_patient_id
    root = prepare_submission(
        step, patient_id="UNKNOWN1^^^&1.2.3&ISO", fresh_oid=fresh_oid, symbols={}, source_id=SOURCE_ID
    ).element
    assert set(_external_ids(root, v.DE_PATIENT_ID) + _external_ids(root, v.SS_PATIENT_ID)) == {
        "UNKNOWN1^^^&1.2.3&ISO"
    }


def test_resubmission_keeps_the_original_uid(testkit: Path, fresh_oid, lcm_schema: etree.XMLSchema) -> None:
    section = tp.load_test(testkit, "12004").section("submit")
    first = _prepare(section.step("submit"), fresh_oid, patientid=PATIENT)
    original_uid = first.assigned_uids["Document01"]

    # resubmit_doc: <NoAssignUids id="Document01"/> + <UseId symbol="$doc_uid$" section="AssignedUids"/>
    again_step = section.step("resubmit_doc")
    (use_id,) = again_step.use_id
    assert (use_id.section, use_id.id, use_id.step) == (tp.ASSIGNED_UIDS, "Document01", "submit")
    again = _prepare(again_step, fresh_oid, patientid=PATIENT, doc_uid=original_uid)
    assert lcm_schema.validate(again.element)
    assert _external_ids(again.element, v.DE_UNIQUE_ID) == [original_uid]
    assert again.assigned_uids["Document01"] == original_uid
    new_ss_uid = _external_ids(again.element, v.SS_UNIQUE_ID)[0]
    assert new_ss_uid not in (original_uid, first.assigned_uids["SubmissionSet01"])

    # resubmit_doc_diff_hash: same uid, other hash (the registry must answer XDSNonIdenticalHash)
    bad = _prepare(section.step("resubmit_doc_diff_hash"), fresh_oid, patientid=PATIENT, doc_uid=original_uid)
    assert _external_ids(bad.element, v.DE_UNIQUE_ID) == [original_uid]
    hashes = [
        p.element.xpath("string(//rim:Slot[@name='hash']/rim:ValueList/rim:Value)", namespaces=NS)
        for p in (first, bad)
    ]
    assert hashes[0] != hashes[1]


def test_replace_with_assigned_uuids(testkit: Path, fresh_oid, lcm_schema: etree.XMLSchema) -> None:
    test = tp.load_test(testkit, "11992")
    submit_step = test.section("submit").step("submit")
    assert submit_step.flags.assign_uuids
    submit = _prepare(submit_step, fresh_oid, patientid=PATIENT)
    root = submit.element
    assert lcm_schema.validate(root)
    doc_uuid = submit.assigned_uuids["Document01"]
    ss_uuid = submit.assigned_uuids["SubmissionSet01"]
    assert doc_uuid.startswith("urn:uuid:") and ss_uuid.startswith("urn:uuid:") and doc_uuid != ss_uuid
    # every id is a UUID now, and every reference follows its object
    assert all(i.startswith("urn:uuid:") for i in root.xpath("//@id"))
    assert root.xpath("//rim:ExtrinsicObject/@id", namespaces=NS) == [doc_uuid]
    assert set(root.xpath("//rim:ExtrinsicObject//@classifiedObject", namespaces=NS)) == {doc_uuid}
    assert set(root.xpath("//rim:ExtrinsicObject/rim:ExternalIdentifier/@registryObject", namespaces=NS)) == {
        doc_uuid
    }
    assert root.xpath("//rim:Association/@sourceObject", namespaces=NS) == [ss_uuid]
    assert root.xpath("//rim:Association/@targetObject", namespaces=NS) == [doc_uuid]
    (node,) = root.xpath(
        "//rim:Classification[@classificationNode=$n]", n=v.SUBMISSION_SET_NODE, namespaces=NS
    )
    assert node.get("classifiedObject") == ss_uuid

    reports = evaluate_reports(submit_step.reports, root, None)
    assert reports == {"docid": doc_uuid, "ssuid": submit.assigned_uids["SubmissionSet01"]}
    assert submit.reports["Document01_uuid"] == doc_uuid

    # rplc: <UseReport reportName="docid" useAs="$rplc_doc_uuid$"/>, no AssignUuids
    rplc_step = test.section("rplc").step("rplc")
    symbols = {u.use_as: reports[u.report_name] for u in rplc_step.use_report if u.report_name in reports}
    rplc = prepare_submission(
        rplc_step,
        patient_id=OTHER_PATIENT,
        fresh_oid=fresh_oid,
        symbols={"$patientid$": PATIENT, **symbols},
        source_id=SOURCE_ID,
    )
    replacement = rplc.element
    assert lcm_schema.validate(replacement)
    (replace,) = replacement.xpath("//rim:Association[@associationType=$t]", t=v.RPLC, namespaces=NS)
    assert replace.get("targetObject") == doc_uuid
    assert replace.get("sourceObject") == "Document01"
    assert rplc.assigned_uuids == {}
    assert _external_ids(replacement, v.DE_PATIENT_ID) == [PATIENT]
    assert rplc.assigned_uids["Document01"] != submit.assigned_uids["Document01"]
    assert evaluate_reports(rplc_step.reports, replacement, None) == {
        "ssuid": rplc.assigned_uids["SubmissionSet01"]
    }


def test_no_convert_sends_21_but_still_assigns(testkit: Path, fresh_oid) -> None:
    step = tp.load_test(testkit, "11990").section("submit").step("submit")
    step = dataclasses.replace(
        step, flags=dataclasses.replace(step.flags, no_convert=True, no_patient_id=False)
    )
    prepared = _prepare(step, fresh_oid)
    root = prepared.element
    assert etree.QName(root).namespace == v.NS_RS21
    assert root.xpath(
        "//*[local-name()='ExternalIdentifier'][@identificationScheme=$s]/@value", s=v.DE_PATIENT_ID
    ) == [OTHER_PATIENT]
    assert set(prepared.assigned_uids) == {"Document01", "SubmissionSet01"}


def test_symbols_are_replaced_once_longest_first() -> None:
    root = safexml.parse(b'<a x="$uuid$-$uuid1$-$n$"><b>$pid$ and $uuid1$</b>tail $n$</a>')
    substitute_symbols(root, {"$uuid$": "U", "$uuid1$": "U1", "$pid$": "1^^^&2.3&ISO", "$n$": "$uuid$"})
    assert root.get("x") == "U-U1-$uuid$"
    assert root[0].text == "1^^^&2.3&ISO and U1"
    assert root[0].tail == "tail $uuid$"
    assert etree.tostring(root[0]).startswith(b"<b>1^^^&amp;2.3&amp;ISO")


def test_builtin_symbols() -> None:
    # $now$ is an exclusive upper bound: the first whole second after the instant
    symbols = builtin_symbols(datetime(2024, 2, 29, 13, 5, 9, 250_000, tzinfo=UTC))
    assert symbols == {"$now$": "20240229130510", "$lastyear$": "20230228130510"}
    assert len(builtin_symbols()["$now$"]) == 14


def test_report_sections_and_values() -> None:
    request = safexml.parse(b'<r><o id="a"/><o id="b"/></r>')
    response = safexml.parse(
        b'<RegistryResponse status="urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"><x>t<y>u</y></x></RegistryResponse>'
    )
    specs = [
        tp.ReportSpec("first", tp.INPUT_METADATA, "//*[local-name()='o']/@id"),
        tp.ReportSpec("count", tp.INPUT_METADATA, "count(//*[local-name()='o'])"),
        tp.ReportSpec("status", tp.RESULT, "/*/@status"),
        tp.ReportSpec("text", tp.RESULT, "//x"),
        tp.ReportSpec("none", tp.RESULT, "//nothing"),
    ]
    assert evaluate_reports(specs, request, response) == {
        "first": "a",
        "count": "2",
        "status": v.RESPONSE_SUCCESS,
        "text": "tu",
    }
    assert evaluate_reports(specs, request, None) == {"first": "a", "count": "2"}
    with pytest.raises(ValueError, match="unknown section"):
        evaluate_reports([tp.ReportSpec("x", "Elsewhere", "/")], request, response)


def test_every_kit_report_xpath_evaluates(testkit: Path) -> None:
    """All Report XPaths of the kit compile and run against a real prepared submission."""
    step = tp.load_test(testkit, "11990").section("submit").step("submit")
    prepared = prepare_submission(
        step, patient_id=PATIENT, fresh_oid=lambda: "1.2.3", symbols={}, source_id=SOURCE_ID
    ).element
    specs = [
        report
        for plan in testkit.rglob("testplan.xml")
        for s in tp.load_section(plan.parent).steps
        for report in s.reports
    ]
    assert len(specs) > 500
    evaluate_reports(specs, prepared, prepared)

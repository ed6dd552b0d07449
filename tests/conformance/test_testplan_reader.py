"""The test plan reader against the whole NIST kit and a few well-known tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from xds.conformance import testplan as tp


def test_every_testplan_in_the_kit_parses(testkit: Path) -> None:
    plans = sorted(testkit.rglob("testplan.xml"))
    assert len(plans) > 1200
    steps = 0
    for plan in plans:
        section = tp.load_section(plan.parent)
        assert section.test_name, plan
        for step in section.steps:
            assert step.id, plan
            steps += 1
    assert steps > 1700


def test_every_test_folder_loads(testkit: Path) -> None:
    ids = tp.list_tests(testkit)
    assert len(ids) > 350
    loaded = [tp.load_test(testkit, test_id) for test_id in ids]
    with_sections = [test for test in loaded if test.sections]
    assert len(with_sections) > 330
    # 12029a's index names sections the kit does not carry
    (partial,) = [test for test in loaded if test.missing_sections]
    assert partial.id == "12029a"
    assert partial.missing_sections == ("submit", "query", "retrieve")


def test_register_one_document(testkit: Path) -> None:
    test = tp.load_test(testkit, "11990")
    assert test.title == "Register single DocumentEntry"
    assert test.collections == ("R.b", "reg")
    assert [section.name for section in test.sections] == ["submit", "eval"]

    submit = test.section("submit").step("submit")
    assert submit.transaction == tp.REGISTER and submit.known_transaction
    assert submit.expected_status == ("Success",)
    assert submit.flags.xdsb and submit.flags.no_patient_id and not submit.flags.assign_uuids
    assert submit.metadata_file == testkit / "tests/11990/submit/single_doc.xml"
    assert submit.metadata_file.is_file()
    assert submit.use_report == (
        tp.UseReport(
            report_name="$patientid$", use_as="$patientid$", section="pif", step="step", test="15817"
        ),
    )

    query, check = test.section("eval").steps
    assert query.transaction == tp.STORED_QUERY
    assert query.use_id == (
        tp.UseId(
            id="SubmissionSet01", symbol="$ssuid$", step="submit", section="AssignedUids", testdir="../submit"
        ),
    )
    assert [child.tag for child in query.expected_contents] == ["SSwithOneDoc"]
    assert check.transaction == tp.NULL
    assert check.expected_status == ()
    assert [child.tag for child in check.assertions] == ["DataRef", "Assert"]


def test_resubmission_flags_and_expectations(testkit: Path) -> None:
    submit = tp.load_test(testkit, "12004").section("submit")
    assert [step.id for step in submit.steps] == ["submit", "resubmit_doc", "resubmit_doc_diff_hash"]
    first, again, bad_hash = submit.steps
    assert first.flags.assigns_uid_to("Document01")
    assert again.flags.no_assign_uids == frozenset({"Document01"})
    assert not again.flags.assigns_uid_to("Document01") and again.flags.assigns_uid_to("SubmissionSet01")
    assert again.use_id[0].testdir is None  # the same section
    assert bad_hash.expected_status == ("Failure",)
    assert bad_hash.expected_error_messages == ("XDSNonIdenticalHash",)
    assert bad_hash.expected_error_codes == ()


def test_no_assign_uids_without_id_and_commented_expectations(testkit: Path) -> None:
    update = tp.load_test(testkit, "20007").section("update").step("update")
    assert update.transaction == tp.METADATA_UPDATE
    assert update.flags.no_assign_any_uids and update.flags.assign_uuids
    assert not update.flags.assigns_uid_to("Document01")
    assert update.expected_error_codes == ()  # the plan's ExpectedErrorCodes are commented out
    assert len(update.use_id) == 4


def test_step_level_flags_and_error_codes(testkit: Path) -> None:
    unknown = tp.load_test(testkit, "11996").section("submit").step("submit")
    assert unknown.flags.alt_patient_id and not unknown.flags.no_patient_id
    assert unknown.expected_error_messages == ("XDSUnknownPatientId",)
    update = tp.load_test(testkit, "20003").section("failed_update").steps[0]
    assert update.expected_error_codes == ("XDSMetadataUpdateError",)
    feed = tp.load_test(testkit, "15817").section("pif").step("step")
    assert feed.transaction == tp.PATIENT_IDENTITY_FEED
    assert feed.flags.no_metadata and not feed.flags.new_patient_id
    # a step with no transaction at all, only <NewPatientId/>
    (reset,) = tp.load_test(testkit, "12344").section("reset_patient_id").steps
    assert reset.transaction is None and reset.flags.new_patient_id


def test_reports_documents_and_status_lists(testkit: Path) -> None:
    rplc = tp.load_test(testkit, "11992").section("rplc").step("rplc")
    assert [(r.name, r.section) for r in rplc.reports] == [("ssuid", tp.INPUT_METADATA)]
    assert rplc.reports[0].xpath.startswith("//*[local-name()='RegistryPackage']")
    assert rplc.use_report[1] == tp.UseReport("docid", "$rplc_doc_uuid$", "submit", "submit", None)

    pnr = tp.load_test(testkit, "11966_expired").section("submit").step("submit")
    assert pnr.transaction == tp.PROVIDE_AND_REGISTER
    assert pnr.documents == {"Document01": testkit / "tests/11966_expired/submit/my_document.txt"}
    assert pnr.expected_status == ("Fault",)

    retrieve = tp.load_test(testkit, "utilities/RetrieveDocumentSet").section("XDS").step("retrieve")
    assert retrieve.expected_status == ("Success", "PartialSuccess")


def test_index_order_wins_over_folder_listing(testkit: Path) -> None:
    test = tp.load_test(testkit, "12346")
    assert [s.name for s in test.sections] == [
        "single_doc",
        "doc_w_fol",
        "two_doc_w_fol",
        "doc_for_rplc",
        "rplc",
    ]


def test_unknown_transactions_are_kept_by_name(testkit: Path) -> None:
    section = tp.load_test(testkit, "11897").sections[0]
    kinds = {step.transaction for step in section.steps}
    assert kinds and all(isinstance(kind, str) for kind in kinds)


def test_collections(testkit: Path) -> None:
    good = tp.load_collection(testkit, "R-good")
    static = (testkit / "static.collections/R-good.tc").read_text().split()
    assert good == static  # no test is tagged "R-good"; the static list, in its order
    registry = tp.load_collection(testkit, "reg")
    assert "11990" in registry and "12029a" not in registry
    assert len(registry) == len(set(registry))
    assert tp.load_collection(testkit, "no-such-collection") == []


def test_testdir_resolution_and_missing_tests(testkit: Path) -> None:
    section_dir = testkit / "tests/11990/eval"
    assert tp.resolve_testdir(section_dir, "../submit") == testkit / "tests/11990/submit"
    assert tp.resolve_testdir(section_dir, "../../12346/single_doc") == testkit / "tests/12346/single_doc"
    assert tp.resolve_testdir(section_dir, None) == section_dir
    assert (
        tp.find_test_dir(testkit, "SingleDocument-Registry")
        == testkit / "testdata-registry/SingleDocument-Registry"
    )
    with pytest.raises(tp.TestNotFound):
        tp.load_test(testkit, "no-such-test")

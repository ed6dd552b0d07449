"""Each ITI-42 validation rule (ITI TF-3 §4.1-4.2) with the error code and location it reports."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from xds import samples
from xds.metadata import vocabulary as v
from xds.metadata.model import (
    Classification,
    DocumentEntry,
    LocalizedString,
    RegistryPackage,
    Slot,
    Submission,
)
from xds.metadata.validation import ValidationProfile, validate_submission

META = v.XDSRegistryMetadataError


def sample(**kw: object) -> samples.Sample:
    return samples.submission(rng=random.Random(11), **kw)  # type: ignore[arg-type]


def doc(sub: Submission) -> DocumentEntry:
    return sub.documents[0]


def ss(sub: Submission) -> RegistryPackage:
    return sub.submission_sets[0]


def drop_slot(name: str) -> Callable[[Submission], None]:
    def change(sub: Submission) -> None:
        d = doc(sub)
        d.slots = [s for s in d.slots if s.name != name]

    return change


def drop_code(scheme: str) -> Callable[[Submission], None]:
    def change(sub: Submission) -> None:
        d = doc(sub)
        d.classifications = [c for c in d.classifications if c.classification_scheme != scheme]

    return change


def set_slot(name: str, *values: str) -> Callable[[Submission], None]:
    return lambda sub: doc(sub).set_slot(name, list(values))


def set_ext(
    scheme: str, value: str, target: Callable[[Submission], object] = doc
) -> Callable[[Submission], None]:
    return lambda sub: target(sub).set_external_id(scheme, value)  # type: ignore[attr-defined]


def test_valid_submissions_have_no_errors() -> None:
    assert validate_submission(sample().submission) == []
    assert validate_submission(sample(documents=3, with_folder=True).submission) == []


# (what is changed, the code expected, where it points: "doc", "ss" or an id)
CASES: list[tuple[str, Callable[[Submission], None], str, str]] = [
    ("no classCode", drop_code(v.DE_CLASS_CODE), META, "doc"),
    ("no confidentialityCode", drop_code(v.DE_CONFIDENTIALITY_CODE), META, "doc"),
    ("no formatCode", drop_code(v.DE_FORMAT_CODE), META, "doc"),
    ("no healthcareFacilityTypeCode", drop_code(v.DE_HEALTHCARE_FACILITY_TYPE_CODE), META, "doc"),
    ("no practiceSettingCode", drop_code(v.DE_PRACTICE_SETTING_CODE), META, "doc"),
    ("no typeCode", drop_code(v.DE_TYPE_CODE), META, "doc"),
    ("no creationTime", drop_slot("creationTime"), META, "doc"),
    ("no languageCode", drop_slot("languageCode"), META, "doc"),
    ("no sourcePatientId", drop_slot("sourcePatientId"), META, "doc"),
    ("no repositoryUniqueId", drop_slot("repositoryUniqueId"), META, "doc"),
    ("no hash", drop_slot("hash"), META, "doc"),
    ("no size", drop_slot("size"), META, "doc"),
    ("creationTime not a DTM", set_slot("creationTime", "2005122"), META, "doc"),
    ("creationTime month 13", set_slot("creationTime", "20051301"), META, "doc"),
    ("creationTime twice", set_slot("creationTime", "2005", "2006"), META, "doc"),
    ("serviceStopTime before start", set_slot("serviceStopTime", "1999"), META, "doc"),
    # '$' also matches before a final newline, and \d takes any Unicode digit: neither may pass
    ("creationTime with a final newline", set_slot("creationTime", "20051224\n"), META, "doc"),
    ("creationTime in fullwidth digits", set_slot("creationTime", "\uff12\uff10\uff10\uff15"), META, "doc"),
    ("hash with a final newline", set_slot("hash", "a" * 40 + "\n"), META, "doc"),
    ("repositoryUniqueId with a final newline", set_slot("repositoryUniqueId", "1.2.3\n"), META, "doc"),
    # longer than rim.xsd allows: stored, it would make every answer carrying it invalid
    ("title past FreeFormText", lambda sub: doc(sub).name.append(LocalizedString("t" * 1025)), META, "doc"),
    ("slot value past LongName", set_slot("urn:example:note", "n" * 257), META, "doc"),
    ("slot name past LongName", set_slot("urn:example:" + "n" * 250, "x"), META, "doc"),
    (
        "code past LongName",
        lambda sub: setattr(doc(sub).classifications[0], "node_representation", "c" * 257),
        META,
        "doc",
    ),
    ("hash not SHA-1", set_slot("hash", "xyz"), META, "doc"),
    ("hash 39 hex", set_slot("hash", "a" * 39), META, "doc"),
    ("size not integer", set_slot("size", "12kB"), META, "doc"),
    ("size negative", set_slot("size", "-1"), META, "doc"),
    ("languageCode malformed", set_slot("languageCode", "nb_NO!"), META, "doc"),
    ("repositoryUniqueId not OID", set_slot("repositoryUniqueId", "repo-1"), META, "doc"),
    ("sourcePatientId not CX", set_slot("sourcePatientId", "12345"), META, "doc"),
    ("legalAuthenticator empty XCN", set_slot("legalAuthenticator", "^^^"), META, "doc"),
    ("non-URN extra slot", set_slot("myExtra", "x"), META, "doc"),
    ("urn:ihe: extra slot", set_slot("urn:ihe:iti:xds:my", "x"), META, "doc"),
    ("mimeType missing", lambda sub: setattr(doc(sub), "mime_type", ""), META, "doc"),
    ("mimeType malformed", lambda sub: setattr(doc(sub), "mime_type", "pdf"), META, "doc"),
    ("objectType unknown", lambda sub: setattr(doc(sub), "object_type", "urn:uuid:0"), META, "doc"),
    ("patientId without OID authority", set_ext(v.DE_PATIENT_ID, "123^^^&nope&ISO"), META, "doc"),
    ("patientId authority not ISO", set_ext(v.DE_PATIENT_ID, "123^^^&1.2.3&L"), META, "doc"),
    ("uniqueId not OID", set_ext(v.DE_UNIQUE_ID, "doc-1"), META, "doc"),
    ("uniqueId too long", set_ext(v.DE_UNIQUE_ID, "1." + "2" * 130), META, "doc"),
    ("SS uniqueId not OID", set_ext(v.SS_UNIQUE_ID, "1.2.3^x", ss), META, "ss"),
    ("SS sourceId not OID", set_ext(v.SS_SOURCE_ID, "source", ss), META, "ss"),
    (
        "SS without submissionTime",
        lambda sub: setattr(ss(sub), "slots", [s for s in ss(sub).slots if s.name != "submissionTime"]),
        META,
        "ss",
    ),
    (
        "SS without contentTypeCode",
        lambda sub: setattr(
            ss(sub),
            "classifications",
            [c for c in ss(sub).classifications if c.classification_scheme != v.SS_CONTENT_TYPE_CODE],
        ),
        META,
        "ss",
    ),
    (
        "code without codingScheme",
        lambda sub: doc(sub).classifications_of(v.DE_CLASS_CODE)[0].slots.clear(),
        META,
        "doc",
    ),
    (
        "two classCodes",
        lambda sub: doc(sub).classifications.append(
            Classification(
                id="cl-extra",
                classified_object=doc(sub).id,
                classification_scheme=v.DE_CLASS_CODE,
                node_representation="X",
                slots=[Slot("codingScheme", ["1.2.3"])],
            )
        ),
        META,
        "doc",
    ),
    (
        "author without person or institution",
        lambda sub: setattr(
            doc(sub).classifications_of(v.DE_AUTHOR)[0], "slots", [Slot("authorRole", ["Lege"])]
        ),
        META,
        "doc",
    ),
    (
        "document patient differs",
        set_ext(v.DE_PATIENT_ID, samples.patient_cx(samples.person_number(random.Random(99)))),
        v.XDSPatientIdDoesNotMatch,
        "doc",
    ),
    (
        "HasMember without SubmissionSetStatus",
        lambda sub: setattr(sub.associations[0], "slots", []),
        META,
        "ss-doc-0",
    ),
    (
        "HasMember with bad SubmissionSetStatus",
        lambda sub: sub.associations[0].set_slot("SubmissionSetStatus", ["Copy"]),
        META,
        "ss-doc-0",
    ),
    (
        "document not a member of the submission set",
        lambda sub: sub.objects.remove(sub.associations[0]),
        META,
        "doc",
    ),
    (
        "association to an unknown symbolic id",
        lambda sub: setattr(sub.associations[0], "target_object", "Document99"),
        META,
        "ss-doc-0",
    ),
    (
        "unknown association type",
        lambda sub: setattr(sub.associations[0], "association_type", "urn:example:Owns"),
        META,
        "ss-doc-0",
    ),
    (
        "no submission set",
        lambda sub: ss(sub).classifications.remove(
            next(c for c in ss(sub).classifications if c.classification_node == v.SUBMISSION_SET_NODE)
        ),
        META,
        "SubmissionSet01",
    ),
    (
        "two objects with one id",
        lambda sub: sub.objects.append(samples.has_member("ss-doc-0", "SubmissionSet01", "Document01")),
        META,
        "ss-doc-0",
    ),
    (
        "SubmissionSet a member of itself",
        lambda sub: sub.objects.append(
            samples.has_member("self", "SubmissionSet01", "SubmissionSet01", status=None)
        ),
        META,
        "self",
    ),
    (
        "SubmissionSet holding one of its own memberships",
        lambda sub: sub.objects.append(
            samples.has_member("loop", "SubmissionSet01", "ss-doc-0", status=None)
        ),
        META,
        "loop",
    ),
    (
        "limited metadata not accepted",
        lambda sub: doc(sub).classifications.append(
            Classification(
                id="lm", classified_object=doc(sub).id, classification_node=v.LIMITED_METADATA_DOC_ENTRY
            )
        ),
        META,
        "doc",
    ),
]


@pytest.mark.parametrize(("what", "change", "code", "where"), CASES, ids=[c[0] for c in CASES])
def test_each_rule(what: str, change: Callable[[Submission], None], code: str, where: str) -> None:
    s = sample().submission
    location = {"doc": doc(s).id, "ss": ss(s).id}.get(where, where)
    change(s)
    errors = validate_submission(s)
    assert errors, f"{what}: no error reported"
    assert any(e.code == code and e.location == location for e in errors), [
        (e.code, e.location, e.context) for e in errors
    ]
    assert all(e.context for e in errors)


def test_every_error_of_a_message_is_reported() -> None:
    s = sample(documents=2).submission
    d1, d2 = s.documents
    d1.set_slot("creationTime", ["2005122"])
    d2.set_slot("hash", ["xyz"])
    d2.set_external_id(v.DE_UNIQUE_ID, d1.unique_id or "")
    codes = [(e.code, e.location) for e in validate_submission(s)]
    assert (META, d1.id) in codes
    assert (META, d2.id) in codes
    assert (v.XDSRegistryDuplicateUniqueIdInMessage, d2.id) in codes


def test_folder_rules() -> None:
    s = sample(with_folder=True).submission
    folder = s.folders[0]
    folder.classifications = [
        c for c in folder.classifications if c.classification_scheme != v.FOLDER_CODE_LIST
    ]
    folder.name = []
    folder.set_external_id(v.FOLDER_UNIQUE_ID, ss(s).unique_id or "")
    errors = validate_submission(s)
    contexts = " | ".join(e.context for e in errors if e.location == folder.id)
    assert "codeList" in contexts and "title" in contexts
    assert any(e.code == v.XDSRegistryDuplicateUniqueIdInMessage for e in errors)


def test_on_demand_entry_has_no_hash_or_size() -> None:
    s = sample().submission
    d = doc(s)
    d.object_type = v.DOC_ENTRY_ON_DEMAND
    assert any("On-Demand" in e.context for e in validate_submission(s))
    d.slots = [
        x
        for x in d.slots
        if x.name not in {"hash", "size", "creationTime", "serviceStartTime", "serviceStopTime"}
    ]
    assert validate_submission(s) == []


def test_relationship_rules() -> None:
    s = sample().submission
    s.objects.append(
        samples.relationship("rplc", v.RPLC, "Document01", "urn:uuid:4f0e3b8e-0000-4000-8000-000000000001")
    )
    assert validate_submission(s) == []  # the target is the registry's to check
    s.objects.append(
        samples.relationship(
            "rplc2", v.RPLC, "SubmissionSet01", "urn:uuid:4f0e3b8e-0000-4000-8000-000000000002"
        )
    )
    s.objects.append(samples.relationship("rplc3", v.APND, "Document01", "Document01"))
    locations = {e.location for e in validate_submission(s)}
    assert {"rplc2", "rplc3"} <= locations


def test_documentation_classification_only_on_relationships() -> None:
    s = sample().submission
    assoc = s.associations[0]
    assoc.classifications.append(
        Classification(
            id="docn",
            classified_object=assoc.id,
            classification_scheme=v.ASSOCIATION_DOCUMENTATION,
            node_representation="reason",
            slots=[Slot("codingScheme", ["1.2.3"])],
        )
    )
    assert [e.location for e in validate_submission(s)] == [assoc.id]


def test_extra_metadata_with_urn_name_is_kept_valid() -> None:
    s = sample().submission
    doc(s).set_slot("urn:no:nhn:xds:extra", ["a", "b"])
    ss(s).set_slot("urn:no:nhn:xds:extra", ["c"])
    assert validate_submission(s) == []


def test_national_profile_hook_reports_malformed_person_numbers() -> None:
    def check(number: str, authority: str) -> str:
        return "bad check digits" if number.endswith("7") else ""

    patient = "13116900217^^^&2.16.578.1.12.4.1.4.1&ISO"
    s = samples.submission(patient, rng=random.Random(3)).submission
    errors = validate_submission(s, ValidationProfile(check_person_number=check))
    assert errors and all(e.code == META and "bad check digits" in e.context for e in errors)
    assert validate_submission(s) == []

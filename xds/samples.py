"""Realistic Norwegian-profile metadata for the demo, the benchmarks and the tests.

Builds complete ITI-42 submissions (SubmissionSet, DocumentEntries, Folders, associations) with the
codes and identifiers of ``shared/profiles/norway.md``: Volven class codes (9602), confidentiality
(9603), fødselsnummer patient ids, HPR authors and organisation numbers.
"""

from __future__ import annotations

import hashlib
import itertools
import random
import time
import uuid
from dataclasses import dataclass

from xds.metadata import vocabulary as v
from xds.metadata.model import (
    Association,
    Classification,
    DocumentEntry,
    ExternalIdentifier,
    LocalizedString,
    RegistryObject,
    RegistryPackage,
    Slot,
    Submission,
)
from xds.profiles import norway

FNR_OID = norway.OID_FNR
HPR_OID = norway.OID_HPR
ORGNR_OID = norway.OID_ORGNR
VOLVEN = "2.16.578.1.12.4.1.1."
UID_ROOT = "2.16.578.1.12.4.5.100"

CLASS_CODES = [
    ("A00-1", "Epikriser og sammenfatninger"),
    ("C00-1", "Prøvesvar"),
    ("E00-1", "Bildediagnostikk"),
]
TYPE_CODES = [("A03-2", "Epikrise"), ("C01-2", "Laboratoriesvar"), ("E01-2", "Radiologisvar")]
EVENT_CODES = [("10", "Blodprøve"), ("20", "Røntgen"), ("30", "CT"), ("40", "MR")]
FACILITY_CODES = [("86.101", "Somatiske sykehus"), ("86.211", "Allmennlegetjeneste")]
PRACTICE_CODES = [("1", "Indremedisin"), ("2", "Kirurgi"), ("3", "Radiologi"), ("4", "Allmennmedisin")]
FORMATS = [("urn:no:ehelse:document:pdf", "PDF"), ("urn:no:kith:xmlstds:svarrapport", "Svarrapport")]
INSTITUTIONS = [
    ("Finnmarkssykehuset HF", "983974880"),
    ("Helse Bergen HF", "983974724"),
    ("Oslo universitetssykehus HF", "993467049"),
]

_counter = itertools.count(1)


def person_number(rng: random.Random) -> str:
    """A synthetic fødselsnummer (month + 80, never a real person) with valid check digits."""
    while True:
        day, month = rng.randint(1, 28), rng.randint(1, 12) + 80
        first_nine = f"{day:02d}{month:02d}{rng.randint(0, 99):02d}{rng.randint(0, 499):03d}"
        digits = norway.check_digits(first_nine)
        if digits is not None:
            return first_nine + digits


def patient_cx(number: str) -> str:
    return f"{number}^^^&{FNR_OID}&ISO"


def new_oid() -> str:
    """A fresh uniqueId under this project's demo root (time, process counter, random part)."""
    return f"{UID_ROOT}.{int(time.time() * 1000)}.{next(_counter)}.{uuid.uuid4().int % 10**9}"


def _code(scheme: str, obj_id: str, code: str, system: str, display: str) -> Classification:
    return Classification(
        id=f"cl-{uuid.uuid4().hex[:12]}",
        classified_object=obj_id,
        classification_scheme=scheme,
        node_representation=code,
        name=[LocalizedString(display)],
        slots=[Slot("codingScheme", [system])],
    )


def _author(scheme: str, obj_id: str, rng: random.Random) -> Classification:
    name, orgnr = rng.choice(INSTITUTIONS)
    hpr = str(rng.randint(1000000, 9999999))
    return Classification(
        id=f"cl-{uuid.uuid4().hex[:12]}",
        classified_object=obj_id,
        classification_scheme=scheme,
        node_representation="",
        slots=[
            Slot("authorPerson", [f"{hpr}^Nordmann^Kari^^^^^^&{HPR_OID}&ISO"]),
            Slot("authorInstitution", [f"{name}^^^^^&{ORGNR_OID}&ISO^^^^{orgnr}"]),
            Slot("authorRole", ["Lege"]),
            Slot("authorSpecialty", ["Indremedisin"]),
        ],
    )


def _ext(scheme: str, obj_id: str, value: str, name: str) -> ExternalIdentifier:
    return ExternalIdentifier(
        id=f"ei-{uuid.uuid4().hex[:12]}",
        registry_object=obj_id,
        identification_scheme=scheme,
        value=value,
        name=[LocalizedString(name)],
    )


def document_entry(
    doc_id: str, patient: str, rng: random.Random, *, content: bytes | None = None, repository: str = ""
) -> DocumentEntry:
    """A stable DocumentEntry with every required attribute filled in."""
    content = content if content is not None else f"document {doc_id} {rng.random()}".encode()
    cls, cls_name = rng.choice(CLASS_CODES)
    typ, typ_name = rng.choice(TYPE_CODES)
    fmt, fmt_name = rng.choice(FORMATS)
    fac, fac_name = rng.choice(FACILITY_CODES)
    prac, prac_name = rng.choice(PRACTICE_CODES)
    ev, ev_name = rng.choice(EVENT_CODES)
    year = rng.randint(2015, 2026)
    created = f"{year}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}{rng.randint(0, 23):02d}{rng.randint(0, 59):02d}00"
    doc = DocumentEntry(
        id=doc_id,
        object_type=v.DOC_ENTRY_STABLE,
        mime_type="application/pdf" if fmt.endswith("pdf") else "text/xml",
        name=[LocalizedString(f"{typ_name} {created[:8]}", lang="nb-NO")],
        slots=[
            Slot("creationTime", [created]),
            Slot("hash", [hashlib.sha1(content).hexdigest()]),
            Slot("languageCode", ["nb-NO"]),
            Slot("repositoryUniqueId", [repository or f"{UID_ROOT}.1"]),
            Slot("serviceStartTime", [created[:12]]),
            Slot("serviceStopTime", [created[:12]]),
            Slot("size", [str(len(content))]),
            Slot("sourcePatientId", [patient]),
            Slot("sourcePatientInfo", [f"PID-3|{patient}", "PID-5|Nordmann^Ola^^^", "PID-8|M"]),
        ],
    )
    doc.classifications = [
        _author(v.DE_AUTHOR, doc_id, rng),
        _code(v.DE_CLASS_CODE, doc_id, cls, VOLVEN + "9602", cls_name),
        _code(v.DE_CONFIDENTIALITY_CODE, doc_id, "N", VOLVEN + "9603", "Normal"),
        _code(v.DE_EVENT_CODE, doc_id, ev, VOLVEN + "7210", ev_name),
        _code(v.DE_FORMAT_CODE, doc_id, fmt, "2.16.578.1.12.4.1.1.9660", fmt_name),
        _code(v.DE_HEALTHCARE_FACILITY_TYPE_CODE, doc_id, fac, VOLVEN + "1303", fac_name),
        _code(v.DE_PRACTICE_SETTING_CODE, doc_id, prac, VOLVEN + "8655", prac_name),
        _code(v.DE_TYPE_CODE, doc_id, typ, VOLVEN + "9602", typ_name),
    ]
    doc.external_ids = [
        _ext(v.DE_PATIENT_ID, doc_id, patient, "XDSDocumentEntry.patientId"),
        _ext(v.DE_UNIQUE_ID, doc_id, new_oid(), "XDSDocumentEntry.uniqueId"),
    ]
    return doc


def submission_set(ss_id: str, patient: str, rng: random.Random) -> RegistryPackage:
    ss = RegistryPackage(
        id=ss_id,
        name=[LocalizedString("Innsending", lang="nb-NO")],
        slots=[Slot("submissionTime", [time.strftime("%Y%m%d%H%M%S", time.gmtime())])],
    )
    ss.classifications = [
        _author(v.SS_AUTHOR, ss_id, rng),
        _code(v.SS_CONTENT_TYPE_CODE, ss_id, "C00-1", VOLVEN + "9602", "Prøvesvar"),
        Classification(
            id=f"cl-{uuid.uuid4().hex[:12]}",
            classified_object=ss_id,
            classification_node=v.SUBMISSION_SET_NODE,
        ),
    ]
    ss.external_ids = [
        _ext(v.SS_UNIQUE_ID, ss_id, new_oid(), "XDSSubmissionSet.uniqueId"),
        _ext(v.SS_SOURCE_ID, ss_id, UID_ROOT, "XDSSubmissionSet.sourceId"),
        _ext(v.SS_PATIENT_ID, ss_id, patient, "XDSSubmissionSet.patientId"),
    ]
    return ss


def folder(folder_id: str, patient: str) -> RegistryPackage:
    f = RegistryPackage(id=folder_id, name=[LocalizedString("Forløp", lang="nb-NO")])
    f.classifications = [
        _code(v.FOLDER_CODE_LIST, folder_id, "C00-1", VOLVEN + "9602", "Prøvesvar"),
        Classification(
            id=f"cl-{uuid.uuid4().hex[:12]}", classified_object=folder_id, classification_node=v.FOLDER_NODE
        ),
    ]
    f.external_ids = [
        _ext(v.FOLDER_PATIENT_ID, folder_id, patient, "XDSFolder.patientId"),
        _ext(v.FOLDER_UNIQUE_ID, folder_id, new_oid(), "XDSFolder.uniqueId"),
    ]
    return f


def has_member(assoc_id: str, source: str, target: str, status: str | None = "Original") -> Association:
    a = Association(id=assoc_id, association_type=v.HAS_MEMBER, source_object=source, target_object=target)
    if status:
        a.slots = [Slot("SubmissionSetStatus", [status])]
    return a


def relationship(assoc_id: str, kind: str, source: str, target: str) -> Association:
    return Association(id=assoc_id, association_type=kind, source_object=source, target_object=target)


@dataclass
class Sample:
    submission: Submission
    patient: str
    documents: list[DocumentEntry]


def submission(
    patient: str | None = None,
    *,
    documents: int = 1,
    with_folder: bool = False,
    rng: random.Random | None = None,
) -> Sample:
    """A valid ITI-42 submission: a SubmissionSet with ``documents`` entries (and a folder)."""
    rng = rng or random.Random()
    patient = patient or patient_cx(person_number(rng))
    objects: list[RegistryObject] = [submission_set("SubmissionSet01", patient, rng)]
    docs = [document_entry(f"Document{i + 1:02d}", patient, rng) for i in range(documents)]
    objects += docs
    objects += [has_member(f"ss-doc-{i}", "SubmissionSet01", d.id) for i, d in enumerate(docs)]
    if with_folder:
        objects.append(folder("Folder01", patient))
        objects.append(has_member("ss-folder", "SubmissionSet01", "Folder01", status=None))
        for i, d in enumerate(docs):
            objects.append(has_member(f"folder-doc-{i}", "Folder01", d.id, status=None))
            objects.append(
                has_member(f"ss-folder-doc-{i}", "SubmissionSet01", f"folder-doc-{i}", status=None)
            )
    return Sample(Submission(objects=objects), patient, docs)

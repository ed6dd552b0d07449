"""Table rows for registry objects: the indexed columns stored queries filter on, and the fragment.

One place that says how a DocumentEntry, SubmissionSet, Folder or Association becomes rows
(ITI TF-3 §4.2.3 attributes → ``xds.registry.schema`` columns): coded attributes as ``code^^scheme``
(the stored-query parameter form, ITI TF-2 §3.18.4.1.2.3.7), times as 14-digit sortable DTM keys,
hashes in lower case, and the object's canonical ebRIM 3.0 fragment. ITI-42 registration and the
bulk loader both use it.
"""

from __future__ import annotations

from sqlalchemy import Table

from xds.metadata import ebrim
from xds.metadata import vocabulary as v
from xds.metadata.hl7v2 import dtm_key
from xds.metadata.model import Association, DocumentEntry, RegistryObject, RegistryPackage
from xds.registry import schema

REFERENCE_ID_LIST = "urn:ihe:iti:xds:2013:referenceIdList"
AVAILABILITY = "documentAvailability"

Row = dict[str, object]


def _columns(table: Table) -> tuple[str, ...]:
    """The columns a row builder fills: all but the database-assigned ``seq``."""
    return tuple(c.name for c in table.c if c.name != "seq")


DOCUMENT_COLUMNS = _columns(schema.documents)
SUBMISSION_SET_COLUMNS = _columns(schema.submission_sets)
FOLDER_COLUMNS = _columns(schema.folders)
ASSOCIATION_COLUMNS = _columns(schema.associations)


def version_of(obj: RegistryObject) -> int:
    """The version number of ``obj`` (its ``rim:VersionInfo`` versionName; 1 when it has none)."""
    name = obj.version_name or "1"
    return int(name) if name.isdigit() else 1


def code(obj: RegistryObject, scheme: str) -> str | None:
    c = obj.code(scheme)
    return c.as_query_value() if c is not None else None


def codes(obj: RegistryObject, scheme: str) -> list[str]:
    return [c.as_query_value() for c in obj.codes(scheme)]


def dtm(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return dtm_key(value)
    except ValueError:
        return None


def document_row(doc: DocumentEntry) -> Row:
    size = doc.size
    return {
        "uuid": doc.id,
        "lid": doc.lid or doc.id,
        "unique_id": doc.unique_id or "",
        "patient_id": doc.patient_id or "",
        "status": doc.status or v.STATUS_APPROVED,
        "object_type": doc.object_type or v.DOC_ENTRY_STABLE,
        "class_code": code(doc, v.DE_CLASS_CODE),
        "type_code": code(doc, v.DE_TYPE_CODE),
        "format_code": code(doc, v.DE_FORMAT_CODE),
        "practice_setting_code": code(doc, v.DE_PRACTICE_SETTING_CODE),
        "facility_type_code": code(doc, v.DE_HEALTHCARE_FACILITY_TYPE_CODE),
        "creation_time": dtm(doc.slot_value("creationTime")),
        "service_start_time": dtm(doc.slot_value("serviceStartTime")),
        "service_stop_time": dtm(doc.slot_value("serviceStopTime")),
        "hash": (doc.hash or "").lower() or None,
        "size": int(size) if size and size.isdigit() else None,
        "repository_unique_id": doc.repository_unique_id,
        "mime_type": doc.mime_type,
        "home": doc.home,
        "xml": ebrim.to_bytes(doc),
        "version": version_of(doc),
        "latest": 1,
        "availability": doc.slot_value(AVAILABILITY) or v.DOCUMENT_AVAILABILITY_ONLINE,
    }


def document_code_rows(doc: DocumentEntry, seq: int) -> list[Row]:
    """The multi-valued attributes a query matches: event, confidentiality, author, referenceId."""
    out: list[Row] = [{"doc_seq": seq, "kind": "event", "value": c} for c in codes(doc, v.DE_EVENT_CODE)]
    out += [{"doc_seq": seq, "kind": "conf", "value": c} for c in codes(doc, v.DE_CONFIDENTIALITY_CODE)]
    out += [
        {"doc_seq": seq, "kind": "author", "value": a.person} for a in doc.authors(v.DE_AUTHOR) if a.person
    ]
    out += [{"doc_seq": seq, "kind": "refid", "value": r} for r in doc.slot_values(REFERENCE_ID_LIST)]
    return out


def submission_set_row(ss: RegistryPackage) -> Row:
    return {
        "uuid": ss.id,
        "unique_id": ss.unique_id or "",
        "patient_id": ss.patient_id or "",
        "status": v.STATUS_APPROVED,
        "source_id": ss.external_id(v.SS_SOURCE_ID),
        "submission_time": dtm(ss.slot_value("submissionTime")),
        "content_type_code": code(ss, v.SS_CONTENT_TYPE_CODE),
        "home": ss.home,
        "xml": ebrim.to_bytes(ss),
    }


def submission_set_author_rows(ss: RegistryPackage, seq: int) -> list[Row]:
    return [{"ss_seq": seq, "author_person": a.person} for a in ss.authors(v.SS_AUTHOR) if a.person]


def folder_row(folder: RegistryPackage) -> Row:
    return {
        "uuid": folder.id,
        "lid": folder.lid or folder.id,
        "unique_id": folder.unique_id or "",
        "patient_id": folder.patient_id or "",
        "status": v.STATUS_APPROVED,
        "last_update_time": dtm(folder.slot_value("lastUpdateTime")),
        "home": folder.home,
        "xml": ebrim.to_bytes(folder),
        "version": version_of(folder),
        "latest": 1,
    }


def folder_code_rows(folder: RegistryPackage, seq: int) -> list[Row]:
    return [{"folder_seq": seq, "value": c} for c in codes(folder, v.FOLDER_CODE_LIST)]


def association_row(assoc: Association) -> Row:
    return {
        "uuid": assoc.id,
        "type": assoc.association_type,
        "source": assoc.source_object,
        "target": assoc.target_object,
        "status": v.STATUS_APPROVED,
        "xml": ebrim.to_bytes(assoc),
    }

"""Validation of a submission's metadata, as the Document Registry performs it on ITI-42.

Implements the metadata rules of ITI TF-3 §4.1 (submission structure, associations, symbolic ids,
extra metadata §4.1.14) and §4.2 (attribute tables §4.2.3.2 DocumentEntry, §4.2.3.3 SubmissionSet,
§4.2.3.4 Folder; value formats §4.2.3.1.7), with the registry-side error codes of ITI TF-2
§3.42.4.1.3 and ITI TF-3 Table 4.2.4.1-2. Every problem of a message is reported, each with its
code, a human context and the id of the object it concerns as location.

Checks against what the registry already holds (patients, uniqueIds, relationship targets) are
the registrar's; this module looks only at the message.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from xds.metadata import vocabulary as v
from xds.metadata.errors import XdsError
from xds.metadata.hl7v2 import (
    CX,
    check_cx,
    check_dtm,
    check_xcn,
    check_xon,
    check_xtn,
    dtm_key,
    is_oid,
    is_unique_id,
)
from xds.metadata.model import (
    Association,
    Classification,
    DocumentEntry,
    ExternalIdentifier,
    RegistryObject,
    RegistryPackage,
    Submission,
)

_UUID_URN = re.compile(
    r"^urn:uuid:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z"
)
_SHA1 = re.compile(r"^[0-9a-fA-F]{40}\Z")
_SIZE = re.compile(r"^[0-9]{1,19}\Z")
_MIME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*(\s*;.*)?\Z")
_LANG = re.compile(r"^[A-Za-z]{1,8}(-[A-Za-z0-9]{1,8})*\Z")

SUBMISSION_SET_STATUS = "SubmissionSetStatus"
SS_STATUS_VALUES = frozenset({"Original", "Reference"})

# Slots each object type defines (ITI TF-3 §4.2.3); any other slot is extra metadata (§4.1.14).
DOCUMENT_SLOTS = frozenset(
    {
        "creationTime",
        "hash",
        "languageCode",
        "legalAuthenticator",
        "repositoryUniqueId",
        "serviceStartTime",
        "serviceStopTime",
        "size",
        "sourcePatientId",
        "sourcePatientInfo",
        "URI",
        "documentAvailability",
        "objectVersion",
        "homeCommunityId",
        v.SLOT_REFERENCE_ID_LIST,
    }
)
SUBMISSION_SET_SLOTS = frozenset({"submissionTime", "intendedRecipient"})
FOLDER_SLOTS = frozenset({"lastUpdateTime"})
# Slots that carry exactly one value where they are present (ITI TF-3 §4.2.3.2, §4.2.3.3).
SINGLE_VALUED = frozenset(
    {
        "creationTime",
        "hash",
        "languageCode",
        "legalAuthenticator",
        "repositoryUniqueId",
        "serviceStartTime",
        "serviceStopTime",
        "size",
        "sourcePatientId",
        "submissionTime",
        "lastUpdateTime",
    }
)
AUTHOR_SLOTS = frozenset(
    {"authorPerson", "authorInstitution", "authorRole", "authorSpecialty", "authorTelecommunication"}
)
# Coded attributes: scheme -> (name, minimum, maximum) per object type.
DOCUMENT_CODES: dict[str, tuple[str, int, int | None]] = {
    v.DE_CLASS_CODE: ("classCode", 1, 1),
    v.DE_CONFIDENTIALITY_CODE: ("confidentialityCode", 1, None),
    v.DE_EVENT_CODE: ("eventCodeList", 0, None),
    v.DE_FORMAT_CODE: ("formatCode", 1, 1),
    v.DE_HEALTHCARE_FACILITY_TYPE_CODE: ("healthcareFacilityTypeCode", 1, 1),
    v.DE_PRACTICE_SETTING_CODE: ("practiceSettingCode", 1, 1),
    v.DE_TYPE_CODE: ("typeCode", 1, 1),
}
SUBMISSION_SET_CODES: dict[str, tuple[str, int, int | None]] = {
    v.SS_CONTENT_TYPE_CODE: ("contentTypeCode", 1, 1),
}
FOLDER_CODES: dict[str, tuple[str, int, int | None]] = {
    v.FOLDER_CODE_LIST: ("codeList", 1, None),
}
# Codes a Metadata-Limited Document Source may leave out (ITI TF-3 §4.1.14, Table 4.3.1-3 "R2").
LIMITED_OPTIONAL = frozenset(
    {
        v.DE_CLASS_CODE,
        v.DE_CONFIDENTIALITY_CODE,
        v.DE_FORMAT_CODE,
        v.DE_HEALTHCARE_FACILITY_TYPE_CODE,
        v.DE_PRACTICE_SETTING_CODE,
        v.DE_TYPE_CODE,
        v.SS_CONTENT_TYPE_CODE,
        v.FOLDER_CODE_LIST,
    }
)


@dataclass(frozen=True)
class ValidationProfile:
    """Deployment choices that shape validation.

    ``check_person_number(id, authority_oid)`` returns a reason when a patient id under a national
    authority is malformed (the national profile's rule), '' otherwise.
    """

    check_person_number: Callable[[str, str], str] | None = None
    limited_metadata_allowed: bool = False


def validate_submission(sub: Submission, profile: ValidationProfile | None = None) -> list[XdsError]:
    """Every problem of ``sub`` as XDS errors (empty when the message is acceptable)."""
    return list(_Validator(sub, profile or ValidationProfile()).run())


def _err(context: str, location: str, code: str = v.XDSRegistryMetadataError) -> XdsError:
    return XdsError(code, context, location)


# Lengths the ebRIM 3.0 schema allows (rim.xsd: FreeFormText, LongName, String16). A value past
# them would be stored and make every later answer carrying the object invalid.
FREE_FORM_TEXT = 1024
LONG_NAME = 256
STRING16 = 16


def _lengths(obj: RegistryObject, location: str) -> Iterator[XdsError]:
    """Values of ``obj`` (and of its Classifications and ExternalIdentifiers) longer than
    rim.xsd allows them to be."""

    def too_long(what: str, value: str | None, limit: int, type_name: str) -> Iterator[XdsError]:
        if value is not None and len(value) > limit:
            yield _err(
                f"{what} is {len(value)} characters long; ebRIM allows at most {limit} ({type_name})",
                location,
            )

    for part in ("name", "description"):
        for text in getattr(obj, part):
            yield from too_long(f"{type(obj).__name__} {part}", text.value, FREE_FORM_TEXT, "FreeFormText")
    for slot in obj.slots:
        yield from too_long("a slot name", slot.name, LONG_NAME, "LongName")
        for value in slot.values:
            yield from too_long(f"a value of slot {slot.name[:64]}", value, LONG_NAME, "LongName")
    yield from too_long("versionName", obj.version_name, STRING16, "String16")
    if isinstance(obj, DocumentEntry):
        yield from too_long("mimeType", obj.mime_type, LONG_NAME, "LongName")
    elif isinstance(obj, Classification):
        yield from too_long("a code (nodeRepresentation)", obj.node_representation, LONG_NAME, "LongName")
    elif isinstance(obj, ExternalIdentifier):
        yield from too_long("an ExternalIdentifier value", obj.value, LONG_NAME, "LongName")
    for nested in (*obj.classifications, *obj.external_ids):
        yield from _lengths(nested, location)


class _Validator:
    def __init__(self, sub: Submission, profile: ValidationProfile) -> None:
        self.sub = sub
        self.profile = profile
        self.by_id: dict[str, RegistryObject] = {}

    def run(self) -> Iterator[XdsError]:
        sub = self.sub
        yield from self._ids()
        sets = sub.submission_sets
        if not sets:
            yield _err("the submission has no SubmissionSet (a RegistryPackage classified as one)", "")
        elif len(sets) > 1:
            for extra in sets[1:]:
                yield _err("a submission carries exactly one SubmissionSet", extra.id)
        for pkg in sub.packages:
            if not pkg.is_submission_set and not pkg.is_folder:
                yield _err("RegistryPackage is classified neither as SubmissionSet nor as Folder", pkg.id)
            elif pkg.is_submission_set and pkg.is_folder:
                yield _err("RegistryPackage is classified both as SubmissionSet and as Folder", pkg.id)
        for obj in sub.objects:
            if isinstance(obj, DocumentEntry):
                yield from self._document(obj)
            elif isinstance(obj, RegistryPackage):
                if obj.is_submission_set:
                    yield from self._submission_set(obj)
                elif obj.is_folder:
                    yield from self._folder(obj)
            elif isinstance(obj, Association):
                yield from self._association(obj)
            elif isinstance(obj, Classification):
                yield _err(
                    f"top-level Classification of {obj.classified_object!r} is not a SubmissionSet or Folder label",
                    obj.id,
                )
        for obj in sub.objects:
            yield from _lengths(obj, obj.id)
        if len(sets) == 1:
            yield from self._membership(sets[0])
            yield from self._patient_consistency(sets[0])
        yield from self._unique_ids()

    # --- identity ---------------------------------------------------------------------------------
    def _ids(self) -> Iterator[XdsError]:
        """Top-level ids are unique in the message (§4.1.12.3).

        Nested Classifications and ExternalIdentifiers are not referenced from elsewhere; the
        registry gives any that repeat an id a fresh UUID, as the NIST kit's messages expect.
        """
        counts: Counter[str] = Counter()
        for obj in self.sub.objects:
            if not obj.id:
                yield _err(f"{type(obj).__name__} has no id", "")
                continue
            for oid in (obj.id, *(n.id for n in (*obj.classifications, *obj.external_ids))):
                if oid.startswith("urn:uuid:") and not _UUID_URN.match(oid):
                    yield _err(
                        f"id {oid[:80]!r} is not a UUID URN (urn:uuid: and 8-4-4-4-12 hex digits)", obj.id
                    )
            counts[obj.id] += 1
            self.by_id.setdefault(obj.id, obj)
        for oid, n in sorted(counts.items()):
            if n > 1:
                yield _err(f"id {oid!r} is used by {n} objects in the submission", oid)

    def _resolves(self, ref: str) -> bool:
        """A reference points into the message or is a UUID the registry may hold (§4.1.12.3)."""
        return ref in self.by_id or ref.startswith("urn:uuid:")

    # --- common parts -----------------------------------------------------------------------------
    def _nested_parts(self, obj: RegistryObject, known_slots: frozenset[str]) -> Iterator[XdsError]:
        for c in obj.classifications:
            if c.classified_object and c.classified_object != obj.id:
                yield _err(
                    f"Classification {c.id or '(no id)'} inside {obj.id} classifies {c.classified_object!r}",
                    obj.id,
                )
        for e in obj.external_ids:
            if e.registry_object and e.registry_object != obj.id:
                yield _err(
                    f"ExternalIdentifier {e.id or '(no id)'} inside {obj.id} names {e.registry_object!r}",
                    obj.id,
                )
            if not e.value:
                name = v.EXTERNAL_ID_NAMES.get(e.identification_scheme, e.identification_scheme)
                yield _err(f"ExternalIdentifier {name} has no value", obj.id)
        for slot in obj.slots:
            if slot.name in SINGLE_VALUED and len(slot.values) > 1:
                yield _err(f"slot {slot.name} must hold one value, it holds {len(slot.values)}", obj.id)
            if slot.name not in known_slots and not slot.name.startswith("urn:"):
                yield _err(
                    f"slot {slot.name!r} is not an attribute of this object; extra metadata slot names "
                    "are URNs (ITI TF-3 §4.1.14)",
                    obj.id,
                )
            elif slot.name.startswith("urn:ihe:") and slot.name not in known_slots:
                yield _err(f"extra metadata slot {slot.name!r} must not use the urn:ihe: namespace", obj.id)
        counts = Counter(s.name for s in obj.slots)
        for name, n in counts.items():
            if n > 1:
                yield _err(f"slot {name} appears {n} times", obj.id)

    def _codes(
        self, obj: RegistryObject, table: dict[str, tuple[str, int, int | None]]
    ) -> Iterator[XdsError]:
        limited = self.profile.limited_metadata_allowed and _is_limited(obj)
        for scheme, (name, low, high) in table.items():
            found = obj.classifications_of(scheme)
            if len(found) < low and not (limited and scheme in LIMITED_OPTIONAL):
                yield _err(f"{name} is required", obj.id)
            if high is not None and len(found) > high:
                yield _err(f"{name} may appear {high} time(s), it appears {len(found)} times", obj.id)
            for c in found:
                if not c.node_representation:
                    yield _err(f"{name} has no code (nodeRepresentation)", obj.id)
                schemes = c.slot_values("codingScheme")
                if len(schemes) != 1 or not schemes[0]:
                    yield _err(
                        f"{name} {c.node_representation!r} needs exactly one codingScheme value", obj.id
                    )

    def _authors(self, obj: RegistryObject, scheme: str) -> Iterator[XdsError]:
        for c in obj.classifications_of(scheme):
            if c.node_representation not in ("", None):
                yield _err("author classification must have an empty nodeRepresentation", obj.id)
            if not (c.slot_values("authorPerson") or c.slot_values("authorInstitution")):
                yield _err("author needs authorPerson or authorInstitution", obj.id)
            for slot in c.slots:
                if slot.name not in AUTHOR_SLOTS and not slot.name.startswith("urn:"):
                    yield _err(f"author slot {slot.name!r} is not defined", obj.id)
            persons = c.slot_values("authorPerson")
            if len(persons) > 1:
                yield _err("authorPerson holds one value", obj.id)
            for p in persons:
                if reason := check_xcn(p):
                    yield _err(f"authorPerson {p!r}: {reason}", obj.id)
            for inst in c.slot_values("authorInstitution"):
                if reason := check_xon(inst):
                    yield _err(f"authorInstitution {inst!r}: {reason}", obj.id)
            for tel in c.slot_values("authorTelecommunication"):
                if reason := check_xtn(tel):
                    yield _err(f"authorTelecommunication {tel!r}: {reason}", obj.id)

    def _patient_id(self, obj: RegistryObject, name: str, value: str | None) -> Iterator[XdsError]:
        if value is None:
            yield _err(f"{name} is required", obj.id)
            return
        if reason := check_cx(value):
            yield _err(f"{name} {value!r}: {reason}", obj.id)
            return
        if self.profile.check_person_number is not None:
            cx = CX.parse(value)
            if reason := self.profile.check_person_number(cx.id, cx.authority_oid):
                yield _err(f"{name}: {reason}", obj.id)

    def _unique_id(
        self, obj: RegistryObject, name: str, value: str | None, *, oid_only: bool
    ) -> Iterator[XdsError]:
        if value is None:
            yield _err(f"{name} is required", obj.id)
        elif oid_only and not is_oid(value, max_length=128):
            yield _err(f"{name} {value!r} is not an OID", obj.id)
        elif not oid_only and not is_unique_id(value):
            yield _err(
                f"{name} {value!r} is not an OID (optionally ^extension), at most 128 characters", obj.id
            )

    def _dtm(self, obj: RegistryObject, name: str, *, required: bool) -> Iterator[XdsError]:
        value = obj.slot_value(name)
        if value is None:
            if required:
                yield _err(f"{name} is required", obj.id)
            return
        if reason := check_dtm(value):
            yield _err(f"{name} {value!r}: {reason}", obj.id)

    # --- DocumentEntry (ITI TF-3 §4.2.3.2) ------------------------------------------------------------
    def _document(self, doc: DocumentEntry) -> Iterator[XdsError]:
        if doc.object_type not in v.DOC_ENTRY_TYPES:
            yield _err(
                f"objectType {doc.object_type!r} is not a DocumentEntry type (stable or on-demand)", doc.id
            )
        if _is_limited(doc) and not self.profile.limited_metadata_allowed:
            yield _err(
                "this registry does not accept limited metadata (Metadata-Limited Document Source)", doc.id
            )
        yield from self._nested_parts(doc, DOCUMENT_SLOTS)
        if not doc.mime_type:
            yield _err("mimeType is required", doc.id)
        elif not _MIME.match(doc.mime_type):
            yield _err(f"mimeType {doc.mime_type!r} is not a MIME type", doc.id)
        yield from self._codes(doc, DOCUMENT_CODES)
        yield from self._authors(doc, v.DE_AUTHOR)
        yield from self._patient_id(doc, "XDSDocumentEntry.patientId", doc.patient_id)
        yield from self._unique_id(doc, "XDSDocumentEntry.uniqueId", doc.unique_id, oid_only=False)
        limited = self.profile.limited_metadata_allowed and _is_limited(doc)

        source_pid = doc.slot_value("sourcePatientId")
        if source_pid is None:
            if not limited:
                yield _err("sourcePatientId is required", doc.id)
        elif not CX.parse(source_pid).id or "^^^" not in source_pid:
            yield _err(f"sourcePatientId {source_pid!r} must be a CX with id and assigning authority", doc.id)
        lang = doc.slot_value("languageCode")
        if lang is None:
            if not limited:
                yield _err("languageCode is required", doc.id)
        elif not _LANG.match(lang):
            yield _err(f"languageCode {lang!r} is not an RFC 5646 language tag", doc.id)
        for legal in doc.slot_values("legalAuthenticator"):
            if reason := check_xcn(legal):
                yield _err(f"legalAuthenticator {legal!r}: {reason}", doc.id)

        if doc.is_on_demand:
            # On-Demand entries have no fixed content (ITI TF-3 §4.2.3.2, Table 4.2.3.2-1 notes)
            for name in (
                "hash",
                "size",
                "creationTime",
                "legalAuthenticator",
                "serviceStartTime",
                "serviceStopTime",
            ):
                if doc.slot(name) is not None:
                    yield _err(f"an On-Demand DocumentEntry must not carry {name}", doc.id)
        else:
            yield from self._dtm(doc, "creationTime", required=not limited)
            yield from self._dtm(doc, "serviceStartTime", required=False)
            yield from self._dtm(doc, "serviceStopTime", required=False)
            start, stop = doc.slot_value("serviceStartTime"), doc.slot_value("serviceStopTime")
            if (
                start
                and stop
                and not check_dtm(start)
                and not check_dtm(stop)
                and dtm_key(stop) < dtm_key(start)
            ):
                yield _err("serviceStopTime is before serviceStartTime", doc.id)
            digest = doc.hash
            if digest is None:
                yield _err("hash is required in a registration (the repository computes it)", doc.id)
            elif not _SHA1.match(digest):
                yield _err(f"hash {digest!r} is not a 40-hex-digit SHA-1", doc.id)
            size = doc.size
            if size is None:
                yield _err("size is required in a registration (the repository computes it)", doc.id)
            elif not _SIZE.match(size):
                yield _err(f"size {size!r} is not a non-negative integer", doc.id)
        repo = doc.repository_unique_id
        if repo is None:
            yield _err("repositoryUniqueId is required", doc.id)
        elif not is_oid(repo):
            yield _err(f"repositoryUniqueId {repo!r} is not an OID", doc.id)

    # --- SubmissionSet (ITI TF-3 §4.2.3.3) ------------------------------------------------------------
    def _submission_set(self, ss: RegistryPackage) -> Iterator[XdsError]:
        yield from self._nested_parts(ss, SUBMISSION_SET_SLOTS)
        yield from self._codes(ss, SUBMISSION_SET_CODES)
        yield from self._authors(ss, v.SS_AUTHOR)
        yield from self._dtm(ss, "submissionTime", required=True)
        yield from self._patient_id(ss, "XDSSubmissionSet.patientId", ss.patient_id)
        yield from self._unique_id(ss, "XDSSubmissionSet.uniqueId", ss.unique_id, oid_only=True)
        source = ss.external_id(v.SS_SOURCE_ID)
        if source is None:
            yield _err("XDSSubmissionSet.sourceId is required", ss.id)
        elif not is_oid(source):
            yield _err(f"XDSSubmissionSet.sourceId {source!r} is not an OID", ss.id)
        if _is_limited(ss) and not self.profile.limited_metadata_allowed:
            yield _err(
                "this registry does not accept limited metadata (Metadata-Limited Document Source)", ss.id
            )

    # --- Folder (ITI TF-3 §4.2.3.4) -------------------------------------------------------------------
    def _folder(self, folder: RegistryPackage) -> Iterator[XdsError]:
        yield from self._nested_parts(folder, FOLDER_SLOTS)
        yield from self._codes(folder, FOLDER_CODES)
        yield from self._patient_id(folder, "XDSFolder.patientId", folder.patient_id)
        yield from self._unique_id(folder, "XDSFolder.uniqueId", folder.unique_id, oid_only=True)
        if not folder.title:
            yield _err("XDSFolder.title is required", folder.id)

    # --- associations (ITI TF-3 §4.2.2) ---------------------------------------------------------------
    def _association(self, assoc: Association) -> Iterator[XdsError]:
        atype = assoc.association_type
        if atype not in v.ASSOCIATION_TYPES:
            yield _err(f"associationType {atype!r} is not an XDS association type", assoc.id)
            return
        for role, ref in (("sourceObject", assoc.source_object), ("targetObject", assoc.target_object)):
            if not ref:
                yield _err(f"association has no {role}", assoc.id)
            elif not self._resolves(ref):
                yield _err(
                    f"{role} {ref!r} is neither an object of the submission nor a urn:uuid reference",
                    assoc.id,
                )
        for c in assoc.classifications:
            if c.classification_scheme == v.ASSOCIATION_DOCUMENTATION and atype == v.HAS_MEMBER:
                yield _err(
                    "the association documentation classification belongs on relationship associations only",
                    assoc.id,
                )
        source = self.by_id.get(assoc.source_object)
        target = self.by_id.get(assoc.target_object)
        if atype in v.RELATIONSHIP_TYPES:
            if not isinstance(source, DocumentEntry):
                yield _err(f"{_short(atype)} source must be a DocumentEntry of the submission", assoc.id)
            if target is not None:
                yield _err(
                    f"{_short(atype)} target must be a DocumentEntry already in the registry", assoc.id
                )
            return
        # HasMember
        status = assoc.slot_values(SUBMISSION_SET_STATUS)
        if isinstance(source, RegistryPackage) and source.is_submission_set:
            if isinstance(target, DocumentEntry) or (target is None and assoc.target_object):
                if not isinstance(target, Association | RegistryPackage):
                    if len(status) != 1 or status[0] not in SS_STATUS_VALUES:
                        yield _err(
                            "a SubmissionSet-DocumentEntry HasMember needs slot SubmissionSetStatus "
                            "of Original or Reference",
                            assoc.id,
                        )
                    elif status[0] == "Original" and target is None:
                        yield _err(
                            "SubmissionSetStatus Original names a document not in the submission", assoc.id
                        )
            elif isinstance(target, RegistryPackage) and target.is_submission_set:
                yield _err("a SubmissionSet cannot be a member of a SubmissionSet", assoc.id)
            elif isinstance(target, Association) and target.source_object == source.id:
                # the set holding one of its own memberships: a loop, not a member (ITI TF-3 §4.2.2.1)
                yield _err("a SubmissionSet's HasMember cannot point to one of its own HasMembers", assoc.id)
        elif isinstance(source, RegistryPackage) and source.is_folder:
            if target is not None and not isinstance(target, DocumentEntry):
                yield _err("a Folder HasMember must point to a DocumentEntry", assoc.id)
        elif source is not None:
            yield _err("HasMember source must be the SubmissionSet or a Folder", assoc.id)

    def _membership(self, ss: RegistryPackage) -> Iterator[XdsError]:
        """Every DocumentEntry and Folder of the message is a member of the SubmissionSet (§4.1.4)."""
        members = {
            a.target_object
            for a in self.sub.associations
            if a.association_type == v.HAS_MEMBER and a.source_object == ss.id
        }
        for obj in self.sub.objects:
            if isinstance(obj, DocumentEntry) or (isinstance(obj, RegistryPackage) and obj.is_folder):
                if obj.id not in members:
                    yield _err(
                        f"{obj.id} is not a member of the SubmissionSet (no HasMember from it)", obj.id
                    )

    def _patient_consistency(self, ss: RegistryPackage) -> Iterator[XdsError]:
        """One patient per submission (ITI TF-2 §3.42.4.1.3.3): XDSPatientIdDoesNotMatch."""
        pid = ss.patient_id
        if not pid:
            return
        for obj in self.sub.objects:
            if isinstance(obj, DocumentEntry | RegistryPackage) and obj is not ss:
                other = obj.patient_id
                if other and other != pid:
                    yield _err(
                        f"patientId {other!r} differs from the SubmissionSet's {pid!r}",
                        obj.id,
                        v.XDSPatientIdDoesNotMatch,
                    )

    def _unique_ids(self) -> Iterator[XdsError]:
        """uniqueIds are unique within the message (XDSRegistryDuplicateUniqueIdInMessage)."""
        seen: dict[str, str] = {}
        for obj in self.sub.objects:
            if isinstance(obj, DocumentEntry | RegistryPackage):
                uid = obj.unique_id
                if not uid:
                    continue
                if uid in seen:
                    yield _err(
                        f"uniqueId {uid} is used by {seen[uid]} and {obj.id}",
                        obj.id,
                        v.XDSRegistryDuplicateUniqueIdInMessage,
                    )
                else:
                    seen[uid] = obj.id


def _is_limited(obj: RegistryObject) -> bool:
    return any(
        obj.has_node(node)
        for node in (
            v.LIMITED_METADATA_DOC_ENTRY,
            v.LIMITED_METADATA_SUBMISSION_SET,
            v.LIMITED_METADATA_FOLDER,
        )
    )


def _short(urn: str) -> str:
    return urn.rsplit(":", 1)[-1]

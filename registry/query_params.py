"""Stored-query requests: the AdhocQueryRequest, its parameters and their rules.

ITI TF-2 §3.18.4.1.2 (Registry Stored Query request) and §3.51.4.1.2 (Multi-Patient Stored Query):

- the query is named by its id (a UUID) on ``rim:AdhocQuery``; an id the registry does not know is
  XDSUnknownStoredQuery;
- each parameter is a ``rim:Slot`` whose ``rim:Value`` elements hold a quoted string (``'text'``, a
  quote inside doubled: ``'O''Brien'``), an unquoted number (times, ``$MetadataLevel``) or a list
  ``('a', 'b')``; all values of one slot are alternatives (OR) (§3.18.4.1.2.3.5);
- only the parameters that support AND semantics (event codes, confidentiality codes, folder code
  lists, reference ids) may be given in several slots: each slot is one OR-list and the slots are
  ANDed; any other parameter given twice, or a single-valued parameter given several values, is
  XDSStoredQueryParamNumber (§3.18.4.1.2.3.5, §3.18.4.1.3);
- a required parameter that is missing, or none of a set of alternatives (GetDocuments needs an
  entryUUID or a uniqueId), is XDSStoredQueryMissingParam; both alternatives at once is
  XDSStoredQueryParamNumber;
- a value of the wrong form (a code that is not ``code^^scheme``, a time that is not an HL7 DTM, a
  status or entry type that is not a known URN, a patient id that is not a CX) is XDSRegistryError
  naming the parameter;
- a parameter the query does not define is ignored and reported as a warning.

The table of queries and parameters (:data:`QUERIES`) follows ITI TF-2 §3.18.4.1.2.3.7.1-14 and
§3.51.4.1.2.3, with the Metadata Update parameters ($MetadataLevel, the LogicalID and
$XDSAssociationStatus parameters) of ITI TF-2 §3.18.4.1.2.3.5.1.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from lxml import etree

from xds.metadata import vocabulary as v
from xds.metadata.errors import XdsError, XdsException
from xds.metadata.hl7v2 import check_cx, check_dtm

_Q = "{" + v.NS_QUERY + "}"
_R = "{" + v.NS_RIM + "}"

# --- parameter names (ITI TF-2 §3.18.4.1.2.3.7) ----------------------------------------------------
DE_PATIENT_ID = "$XDSDocumentEntryPatientId"
DE_CLASS_CODE = "$XDSDocumentEntryClassCode"
DE_TYPE_CODE = "$XDSDocumentEntryTypeCode"
DE_PRACTICE_SETTING_CODE = "$XDSDocumentEntryPracticeSettingCode"
DE_CREATION_TIME_FROM = "$XDSDocumentEntryCreationTimeFrom"
DE_CREATION_TIME_TO = "$XDSDocumentEntryCreationTimeTo"
DE_SERVICE_START_FROM = "$XDSDocumentEntryServiceStartTimeFrom"
DE_SERVICE_START_TO = "$XDSDocumentEntryServiceStartTimeTo"
DE_SERVICE_STOP_FROM = "$XDSDocumentEntryServiceStopTimeFrom"
DE_SERVICE_STOP_TO = "$XDSDocumentEntryServiceStopTimeTo"
DE_FACILITY_CODE = "$XDSDocumentEntryHealthcareFacilityTypeCode"
DE_EVENT_CODE = "$XDSDocumentEntryEventCodeList"
DE_CONFIDENTIALITY_CODE = "$XDSDocumentEntryConfidentialityCode"
DE_AUTHOR_PERSON = "$XDSDocumentEntryAuthorPerson"
DE_FORMAT_CODE = "$XDSDocumentEntryFormatCode"
DE_STATUS = "$XDSDocumentEntryStatus"
DE_TYPE = "$XDSDocumentEntryType"
DE_AVAILABILITY = "$XDSDocumentEntryDocumentAvailability"
DE_REFERENCE_ID = "$XDSDocumentEntryReferenceIdList"
DE_ENTRY_UUID = "$XDSDocumentEntryEntryUUID"
DE_UNIQUE_ID = "$XDSDocumentEntryUniqueId"
DE_LOGICAL_ID = "$XDSDocumentEntryLogicalID"

SS_PATIENT_ID = "$XDSSubmissionSetPatientId"
SS_SOURCE_ID = "$XDSSubmissionSetSourceId"
SS_SUBMISSION_TIME_FROM = "$XDSSubmissionSetSubmissionTimeFrom"
SS_SUBMISSION_TIME_TO = "$XDSSubmissionSetSubmissionTimeTo"
SS_AUTHOR_PERSON = "$XDSSubmissionSetAuthorPerson"
SS_CONTENT_TYPE = "$XDSSubmissionSetContentType"
SS_STATUS = "$XDSSubmissionSetStatus"
SS_ENTRY_UUID = "$XDSSubmissionSetEntryUUID"
SS_UNIQUE_ID = "$XDSSubmissionSetUniqueId"

FOLDER_PATIENT_ID = "$XDSFolderPatientId"
FOLDER_LAST_UPDATE_FROM = "$XDSFolderLastUpdateTimeFrom"
FOLDER_LAST_UPDATE_TO = "$XDSFolderLastUpdateTimeTo"
FOLDER_CODE_LIST = "$XDSFolderCodeList"
FOLDER_STATUS = "$XDSFolderStatus"
FOLDER_ENTRY_UUID = "$XDSFolderEntryUUID"
FOLDER_UNIQUE_ID = "$XDSFolderUniqueId"
FOLDER_LOGICAL_ID = "$XDSFolderLogicalID"

PATIENT_ID = "$patientId"
UUID = "$uuid"
ASSOCIATION_TYPES = "$AssociationTypes"
ASSOCIATION_STATUS = "$XDSAssociationStatus"
METADATA_LEVEL = "$MetadataLevel"
HOME_COMMUNITY_ID = "$homeCommunityId"

# --- kinds of value ----------------------------------------------------------------------------------
PID = "pid"  # a patient identifier CX (ITI TF-3 §4.2.3.1.7)
CODE = "code"  # code^^scheme (ITI TF-2 §3.18.4.1.2.3.7)
TIME = "time"  # HL7 v2 DTM of any precision
STATUS = "status"  # urn:oasis:names:tc:ebxml-regrep:StatusType:*
ENTRY_TYPE = "entry-type"  # stable / on-demand objectType
AVAILABILITY = "availability"  # urn:ihe:iti:2010:DocumentAvailability:*
LEVEL = "level"  # $MetadataLevel: 1 or 2
TEXT = "text"  # any non-empty string (ids, uuids, author patterns, association types)

MAX_METADATA_LEVEL = 2
_UUID_PARAMS = frozenset(
    {DE_ENTRY_UUID, SS_ENTRY_UUID, FOLDER_ENTRY_UUID, UUID, DE_LOGICAL_ID, FOLDER_LOGICAL_ID}
)

# Bounds on what one request may ask. ITI TF-2 §3.18.4.1.2.3.5 sets none, but every value becomes
# a bound parameter of one SQL statement (SQLite takes at most 32,766, PostgreSQL 65,535), each
# AND'ed slot a subquery, and each author pattern a match against every author of every candidate
# document; past these a request is refused up front, naming the parameter, rather than left to
# fail in the database or to occupy a worker for minutes.
MAX_VALUES = 10_000  # values of one parameter, over all its slots
MAX_REQUEST_VALUES = 20_000  # values of all parameters of one request
MAX_AND_SLOTS = 64  # slots of one AND/OR parameter (event codes, confidentiality codes, ...)
MAX_PATTERNS = 100  # author-person patterns of one request


@dataclass(frozen=True, slots=True)
class ParamSpec:
    """One parameter of one stored query: its kind and cardinality (R/O, single/M, AND/OR)."""

    name: str
    kind: str
    required: bool = False
    multiple: bool = False
    and_or: bool = False


def _p(
    name: str, kind: str = TEXT, *, req: bool = False, multi: bool = False, and_or: bool = False
) -> ParamSpec:
    return ParamSpec(name, kind, req, multi or and_or, and_or)


@dataclass(frozen=True)
class QueryDef:
    """A stored query: id, name, parameters and the rules among them."""

    id: str
    params: dict[str, ParamSpec]
    one_of: tuple[tuple[str, ...], ...] = ()  # exactly one parameter of each group
    any_of: tuple[str, ...] = ()  # at least one of these
    multi_patient: bool = False  # ITI-51: answers may span patients

    @property
    def name(self) -> str:
        return v.STORED_QUERY_NAMES[self.id]


def _table(*specs: ParamSpec) -> dict[str, ParamSpec]:
    return {s.name: s for s in specs}


# DocumentEntry selection shared by FindDocuments and its relatives (ITI TF-2 §3.18.4.1.2.3.7.1).
_DOCUMENT_FILTERS = (
    _p(DE_CLASS_CODE, CODE, multi=True),
    _p(DE_TYPE_CODE, CODE, multi=True),
    _p(DE_PRACTICE_SETTING_CODE, CODE, multi=True),
    _p(DE_CREATION_TIME_FROM, TIME),
    _p(DE_CREATION_TIME_TO, TIME),
    _p(DE_SERVICE_START_FROM, TIME),
    _p(DE_SERVICE_START_TO, TIME),
    _p(DE_SERVICE_STOP_FROM, TIME),
    _p(DE_SERVICE_STOP_TO, TIME),
    _p(DE_FACILITY_CODE, CODE, multi=True),
    _p(DE_EVENT_CODE, CODE, and_or=True),
    _p(DE_CONFIDENTIALITY_CODE, CODE, and_or=True),
    _p(DE_AUTHOR_PERSON, TEXT, multi=True),
    _p(DE_FORMAT_CODE, CODE, multi=True),
    _p(DE_STATUS, STATUS, req=True, multi=True),
    _p(DE_TYPE, ENTRY_TYPE, multi=True),
    _p(DE_AVAILABILITY, AVAILABILITY, multi=True),
    _p(METADATA_LEVEL, LEVEL),
)
# The document filters of the "...AndContents" queries and GetAll.
_CONTENT_FILTERS = (
    _p(DE_FORMAT_CODE, CODE, multi=True),
    _p(DE_CONFIDENTIALITY_CODE, CODE, and_or=True),
    _p(DE_TYPE, ENTRY_TYPE, multi=True),
)
_GET_COMMON = (_p(HOME_COMMUNITY_ID), _p(METADATA_LEVEL, LEVEL))
_ASSOCIATION_STATUS = _p(ASSOCIATION_STATUS, STATUS, multi=True)


QUERIES: dict[str, QueryDef] = {
    q.id: q
    for q in (
        QueryDef(v.SQ_FIND_DOCUMENTS, _table(_p(DE_PATIENT_ID, PID, req=True), *_DOCUMENT_FILTERS)),
        QueryDef(
            v.SQ_FIND_DOCUMENTS_BY_REFERENCE_ID,
            _table(
                _p(DE_PATIENT_ID, PID, req=True),
                _p(DE_REFERENCE_ID, TEXT, req=True, and_or=True),
                *_DOCUMENT_FILTERS,
            ),
        ),
        QueryDef(
            v.SQ_FIND_SUBMISSION_SETS,
            _table(
                _p(SS_PATIENT_ID, PID, req=True),
                _p(SS_SOURCE_ID, TEXT, multi=True),
                _p(SS_SUBMISSION_TIME_FROM, TIME),
                _p(SS_SUBMISSION_TIME_TO, TIME),
                _p(SS_AUTHOR_PERSON, TEXT),
                _p(SS_CONTENT_TYPE, CODE, multi=True),
                _p(SS_STATUS, STATUS, req=True, multi=True),
                _p(METADATA_LEVEL, LEVEL),
            ),
        ),
        QueryDef(
            v.SQ_FIND_FOLDERS,
            _table(
                _p(FOLDER_PATIENT_ID, PID, req=True),
                _p(FOLDER_LAST_UPDATE_FROM, TIME),
                _p(FOLDER_LAST_UPDATE_TO, TIME),
                _p(FOLDER_CODE_LIST, CODE, and_or=True),
                _p(FOLDER_STATUS, STATUS, req=True, multi=True),
                _p(METADATA_LEVEL, LEVEL),
            ),
        ),
        QueryDef(
            v.SQ_GET_ALL,
            _table(
                _p(PATIENT_ID, PID, req=True),
                _p(DE_STATUS, STATUS, req=True, multi=True),
                _p(SS_STATUS, STATUS, req=True, multi=True),
                _p(FOLDER_STATUS, STATUS, req=True, multi=True),
                *_CONTENT_FILTERS,
                _ASSOCIATION_STATUS,
                *_GET_COMMON,
            ),
        ),
        QueryDef(
            v.SQ_GET_DOCUMENTS,
            _table(
                _p(DE_ENTRY_UUID, multi=True),
                _p(DE_UNIQUE_ID, multi=True),
                _p(DE_LOGICAL_ID, multi=True),
                *_GET_COMMON,
            ),
            one_of=((DE_ENTRY_UUID, DE_UNIQUE_ID, DE_LOGICAL_ID),),
        ),
        QueryDef(
            v.SQ_GET_FOLDERS,
            _table(
                _p(FOLDER_ENTRY_UUID, multi=True),
                _p(FOLDER_UNIQUE_ID, multi=True),
                _p(FOLDER_LOGICAL_ID, multi=True),
                *_GET_COMMON,
            ),
            one_of=((FOLDER_ENTRY_UUID, FOLDER_UNIQUE_ID, FOLDER_LOGICAL_ID),),
        ),
        QueryDef(
            v.SQ_GET_ASSOCIATIONS,
            _table(_p(UUID, req=True, multi=True), _ASSOCIATION_STATUS, *_GET_COMMON),
        ),
        QueryDef(
            v.SQ_GET_DOCUMENTS_AND_ASSOCIATIONS,
            _table(
                _p(DE_ENTRY_UUID, multi=True),
                _p(DE_UNIQUE_ID, multi=True),
                _ASSOCIATION_STATUS,
                *_GET_COMMON,
            ),
            one_of=((DE_ENTRY_UUID, DE_UNIQUE_ID),),
        ),
        QueryDef(
            v.SQ_GET_SUBMISSION_SETS,
            _table(_p(UUID, req=True, multi=True), _ASSOCIATION_STATUS, *_GET_COMMON),
        ),
        QueryDef(
            v.SQ_GET_SUBMISSION_SET_AND_CONTENTS,
            _table(
                _p(SS_ENTRY_UUID),
                _p(SS_UNIQUE_ID),
                *_CONTENT_FILTERS,
                _ASSOCIATION_STATUS,
                *_GET_COMMON,
            ),
            one_of=((SS_ENTRY_UUID, SS_UNIQUE_ID),),
        ),
        QueryDef(
            v.SQ_GET_FOLDER_AND_CONTENTS,
            _table(
                _p(FOLDER_ENTRY_UUID),
                _p(FOLDER_UNIQUE_ID),
                *_CONTENT_FILTERS,
                _ASSOCIATION_STATUS,
                *_GET_COMMON,
            ),
            one_of=((FOLDER_ENTRY_UUID, FOLDER_UNIQUE_ID),),
        ),
        QueryDef(
            v.SQ_GET_FOLDERS_FOR_DOCUMENT,
            _table(_p(DE_ENTRY_UUID), _p(DE_UNIQUE_ID), *_GET_COMMON),
            one_of=((DE_ENTRY_UUID, DE_UNIQUE_ID),),
        ),
        QueryDef(
            v.SQ_GET_RELATED_DOCUMENTS,
            _table(
                _p(DE_ENTRY_UUID),
                _p(DE_UNIQUE_ID),
                _p(ASSOCIATION_TYPES, req=True, multi=True),
                _p(DE_TYPE, ENTRY_TYPE, multi=True),
                _ASSOCIATION_STATUS,
                *_GET_COMMON,
            ),
            one_of=((DE_ENTRY_UUID, DE_UNIQUE_ID),),
        ),
        # ITI-51 (ITI TF-2 §3.51.4.1.2.3): patient ids optional and a list
        QueryDef(
            v.SQ_FIND_DOCUMENTS_MPQ,
            _table(_p(DE_PATIENT_ID, PID, multi=True), *_DOCUMENT_FILTERS),
            any_of=(DE_PATIENT_ID, DE_CLASS_CODE, DE_EVENT_CODE, DE_FACILITY_CODE),
            multi_patient=True,
        ),
        QueryDef(
            v.SQ_FIND_FOLDERS_MPQ,
            _table(
                _p(FOLDER_PATIENT_ID, PID, multi=True),
                _p(FOLDER_LAST_UPDATE_FROM, TIME),
                _p(FOLDER_LAST_UPDATE_TO, TIME),
                _p(FOLDER_CODE_LIST, CODE, and_or=True),
                _p(FOLDER_STATUS, STATUS, req=True, multi=True),
                _p(METADATA_LEVEL, LEVEL),
            ),
            any_of=(FOLDER_PATIENT_ID, FOLDER_CODE_LIST),
            multi_patient=True,
        ),
        QueryDef(
            v.SQ_FIND_DOCUMENTS_BY_REFERENCE_ID_MPQ,
            _table(
                _p(DE_PATIENT_ID, PID, multi=True),
                _p(DE_REFERENCE_ID, TEXT, req=True, and_or=True),
                *_DOCUMENT_FILTERS,
            ),
            multi_patient=True,
        ),
    )
}


# ------------------------------------------------------------------------------------------------
# values
# ------------------------------------------------------------------------------------------------
class MalformedValue(ValueError):
    """A parameter value that is not a quoted string, a number or a list of them."""


def parse_value(text: str) -> list[str]:
    """The values one ``rim:Value`` carries (ITI TF-2 §3.18.4.1.2.3.4 and §3.18.4.1.2.3.5).

    ``'a'`` → ``["a"]``; ``('a', 'b')`` → ``["a", "b"]``; ``20041224`` → ``["20041224"]``;
    ``()`` → ``[]``. A single quote inside a quoted string is written twice.
    """
    s = text.strip()
    if s.startswith("("):
        if not s.endswith(")"):
            raise MalformedValue(f"list {s!r} is not closed with ')'")
        return _scan_list(s[1:-1])
    values = _scan_list(s)
    if len(values) > 1:
        raise MalformedValue(f"{s!r} holds several values outside a list; write ('a', 'b')")
    return values


# one item of a list and what follows it: a quoted string ('' for a quote) or a bare number/word
_ITEM = re.compile(r"\s*(?:'((?:[^']|'')*)'|([^,'()\s](?:[^,'()]*[^,'()\s])?))\s*(,|\Z)")


def _scan_list(s: str) -> list[str]:
    """The items of a comma-separated list; anything the quick reading cannot take is read again
    by :func:`_scan_list_slowly`, which says what is wrong."""
    values: list[str] = []
    at, n = 0, len(s)
    if not s or s.isspace():
        return values
    while True:
        found = _ITEM.match(s, at)
        if found is None:
            return _scan_list_slowly(s)
        quoted, bare, comma = found.groups()
        values.append(bare if quoted is None else quoted.replace("''", "'"))
        at = found.end()
        if not comma:
            return values
        if at == n:
            return _scan_list_slowly(s)  # ends with a comma


def _scan_list_slowly(s: str) -> list[str]:
    values: list[str] = []
    i, n = 0, len(s)
    while True:
        while i < n and s[i].isspace():
            i += 1
        if i == n:
            if values:
                raise MalformedValue(f"{s!r} ends with a comma")
            return values
        if s[i] == "'":
            value, i = _quoted(s, i)
        else:
            j = i
            while j < n and s[j] != ",":
                j += 1
            value = s[i:j].strip()
            if any(c in value for c in "'()") or not value:
                raise MalformedValue(f"{s[i:j]!r} is neither a quoted string nor a number")
            i = j
        values.append(value)
        while i < n and s[i].isspace():
            i += 1
        if i == n:
            return values
        if s[i] != ",":
            raise MalformedValue(f"unexpected {s[i]!r} after {value!r} in {s!r}")
        i += 1


def _quoted(s: str, start: int) -> tuple[str, int]:
    out: list[str] = []
    i, n = start + 1, len(s)
    while i < n:
        c = s[i]
        if c == "'":
            if i + 1 < n and s[i + 1] == "'":
                out.append("'")
                i += 2
                continue
            return "".join(out), i + 1
        out.append(c)
        i += 1
    raise MalformedValue(f"quoted string in {s!r} is not closed")


def check_value(kind: str, value: str) -> str:
    """Why ``value`` is not acceptable for a parameter of ``kind``, or ''."""
    if kind == CODE:
        code, sep, scheme = value.partition("^^")
        if not sep or not code or not scheme:
            return f"{value!r} is not a code of the form code^^scheme"
        return ""
    if kind == TIME:
        problem = check_dtm(value)
        return f"{value!r} is not an HL7 DTM time: {problem}" if problem else ""
    if kind == STATUS:
        return "" if value in v.STATUSES else f"{value!r} is not an availability status URN"
    if kind == ENTRY_TYPE:
        return (
            "" if value in v.DOC_ENTRY_TYPES else f"{value!r} is not a DocumentEntry type (stable/on-demand)"
        )
    if kind == AVAILABILITY:
        known = (v.DOCUMENT_AVAILABILITY_ONLINE, v.DOCUMENT_AVAILABILITY_OFFLINE)
        return "" if value in known else f"{value!r} is not a documentAvailability URN"
    if kind == PID:
        problem = check_cx(value)
        return f"{value!r} is not a patient identifier: {problem}" if problem else ""
    if kind == LEVEL:
        if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= MAX_METADATA_LEVEL:
            return f"{value!r} is not a metadata level (1 or 2)"
        return ""
    return "" if value else "empty value"


# ------------------------------------------------------------------------------------------------
# the request
# ------------------------------------------------------------------------------------------------
@dataclass
class Params:
    """The validated parameters of one query: per name, the slots given, each a list of values."""

    slots: dict[str, list[list[str]]] = field(default_factory=dict)

    def has(self, name: str) -> bool:
        return name in self.slots

    def one(self, name: str) -> str | None:
        """The value of a single-valued parameter."""
        slots = self.slots.get(name)
        return slots[0][0] if slots else None

    def any(self, name: str) -> list[str]:
        """Every value of ``name`` (alternatives: OR)."""
        return [value for slot in self.slots.get(name, []) for value in slot]

    def groups(self, name: str) -> list[list[str]]:
        """The slots of an AND/OR parameter: ANDed lists of ORed values."""
        return self.slots.get(name, [])


@dataclass
class QueryRequest:
    """A parsed and validated AdhocQueryRequest."""

    query: QueryDef
    return_type: str
    composed: bool
    params: Params
    home: str | None = None
    metadata_level: int = 1
    warnings: list[XdsError] = field(default_factory=list)

    @property
    def leaf_class(self) -> bool:
        return self.return_type == v.RETURN_LEAF_CLASS


def parse_query_request(root: etree._Element) -> QueryRequest:
    """A :class:`QueryRequest` from a ``query:AdhocQueryRequest``, or XdsException with every problem.

    ITI TF-2 §3.18.4.1.2 (message semantics) and §3.18.4.1.3 (expected actions).
    """
    if root.tag != _Q + "AdhocQueryRequest":
        raise XdsException.of(
            v.XDSRegistryError, f"expected query:AdhocQueryRequest, found {etree.QName(root).localname}"
        )
    option = root.find(_Q + "ResponseOption")
    adhoc = root.find(_R + "AdhocQuery")
    if option is None or adhoc is None:
        missing = "query:ResponseOption" if option is None else "rim:AdhocQuery"
        raise XdsException.of(v.XDSRegistryError, f"the AdhocQueryRequest has no {missing}")

    query_id = (adhoc.get("id") or "").strip()
    query = QUERIES.get(query_id)
    if query is None:
        raise XdsException.of(
            v.XDSUnknownStoredQuery, f"stored query id {query_id!r} is not known to this registry", query_id
        )

    errors: list[XdsError] = []
    return_type = option.get("returnType", "RegistryObject")
    if return_type not in (v.RETURN_LEAF_CLASS, v.RETURN_OBJECT_REF):
        errors.append(
            XdsError(
                v.XDSRegistryError,
                f"returnType {return_type!r} is not supported; use LeafClass or ObjectRef",
                "returnType",
            )
        )
    composed_text = option.get("returnComposedObjects", "false").strip()
    if composed_text not in ("true", "false", "1", "0"):
        errors.append(
            XdsError(v.XDSRegistryError, f"returnComposedObjects {composed_text!r} is not a boolean")
        )

    params, warnings = _read_params(adhoc, query, errors)
    if errors:
        raise XdsException(errors)
    level = params.one(METADATA_LEVEL)
    return QueryRequest(
        query=query,
        return_type=return_type,
        composed=composed_text in ("true", "1"),
        params=params,
        home=(adhoc.get("home") or params.one(HOME_COMMUNITY_ID) or None),
        metadata_level=int(level) if level else 1,
        warnings=warnings,
    )


def _read_params(
    adhoc: etree._Element, query: QueryDef, errors: list[XdsError]
) -> tuple[Params, list[XdsError]]:
    """The query's parameters (ITI TF-2 §3.18.4.1.2.3.5, §3.18.4.1.2.3.7) and the warnings for the
    slots it does not define; what is wrong with them is appended to ``errors``."""
    raw, warnings = _read_slots(adhoc, query, errors)
    _check_counts_and_values(raw, query, errors)
    _check_required(raw, query, errors)
    return Params(raw), warnings


def _read_slots(
    adhoc: etree._Element, query: QueryDef, errors: list[XdsError]
) -> tuple[dict[str, list[list[str]]], list[XdsError]]:
    """Each defined parameter's values, one list per slot; a warning for each undefined slot, an
    error for each malformed or empty value list."""
    raw: dict[str, list[list[str]]] = {}
    warnings: list[XdsError] = []
    for slot in adhoc.iterchildren(_R + "Slot"):
        name = (slot.get("name") or "").strip()
        spec = query.params.get(name)
        if spec is None:
            warnings.append(
                XdsError(
                    v.XDSRegistryError,
                    f"parameter {name!r} is not defined for {query.name}; it was ignored",
                    name,
                    v.SEVERITY_WARNING,
                )
            )
            continue
        values: list[str] = []
        malformed = False
        for value in slot.iterfind(f"{_R}ValueList/{_R}Value"):
            try:
                values.extend(parse_value(value.text or ""))
            except MalformedValue as exc:
                errors.append(XdsError(v.XDSRegistryError, f"parameter {name}: {exc}", name))
                malformed = True
        if values:
            if name in _UUID_PARAMS:  # stored in lower case (RFC 4122 §3: case-insensitive input)
                values = [x.lower() if x.lower().startswith("urn:uuid:") else x for x in values]
            raw.setdefault(name, []).append(values)
        elif not malformed and not spec.required:  # (a required one is reported missing)
            # an empty list would drop the filter and widen the answer; say so instead
            errors.append(XdsError(v.XDSRegistryError, f"parameter {name} is given without a value", name))
    return raw, warnings


def _check_counts_and_values(
    raw: dict[str, list[list[str]]], query: QueryDef, errors: list[XdsError]
) -> None:
    """How many values and slots each parameter may have, each value's form, and the request's
    total of values."""
    total = 0
    for name, slots in raw.items():
        spec = query.params[name]
        given = sum(len(s) for s in slots)
        total += given
        cap = MAX_PATTERNS if name in (DE_AUTHOR_PERSON, SS_AUTHOR_PERSON) else MAX_VALUES
        if given > cap:
            errors.append(
                XdsError(
                    v.XDSRegistryError, f"parameter {name} has {given} values; at most {cap} are taken", name
                )
            )
        if spec.and_or and len(slots) > MAX_AND_SLOTS:
            errors.append(
                XdsError(
                    v.XDSRegistryError,
                    f"parameter {name} is given in {len(slots)} slots; at most {MAX_AND_SLOTS} are taken",
                    name,
                )
            )
        if len(slots) > 1 and not spec.and_or:
            errors.append(
                XdsError(
                    v.XDSStoredQueryParamNumber,
                    f"parameter {name} is given in {len(slots)} slots; {query.name} allows one",
                    name,
                )
            )
        if not spec.multiple and any(len(s) > 1 for s in slots):
            errors.append(
                XdsError(
                    v.XDSStoredQueryParamNumber,
                    f"parameter {name} takes a single value in {query.name}",
                    name,
                )
            )
        for value in (value for slot in slots for value in slot):
            problem = check_value(spec.kind, value)
            if problem:
                errors.append(XdsError(v.XDSRegistryError, f"parameter {name}: {problem}", name))

    if total > MAX_REQUEST_VALUES:
        errors.append(
            XdsError(
                v.XDSRegistryError,
                f"the query gives {total} values in all; at most {MAX_REQUEST_VALUES} are taken",
                query.name,
            )
        )


def _check_required(raw: dict[str, list[list[str]]], query: QueryDef, errors: list[XdsError]) -> None:
    """The parameters the query requires: each required one, exactly one of each one-of group, at
    least one of its any-of set."""
    for spec in query.params.values():
        if spec.required and spec.name not in raw:
            errors.append(
                XdsError(
                    v.XDSStoredQueryMissingParam,
                    f"{query.name} requires parameter {spec.name}",
                    spec.name,
                )
            )
    for group in query.one_of:
        given = [name for name in group if name in raw]
        if not given:
            errors.append(
                XdsError(
                    v.XDSStoredQueryMissingParam,
                    f"{query.name} requires one of {', '.join(group)}",
                    group[0],
                )
            )
        elif len(given) > 1:
            errors.append(
                XdsError(
                    v.XDSStoredQueryParamNumber,
                    f"{query.name} takes only one of {', '.join(given)}",
                    given[1],
                )
            )
    if query.any_of and not any(name in raw for name in query.any_of):
        errors.append(
            XdsError(
                v.XDSStoredQueryMissingParam,
                f"{query.name} requires at least one of {', '.join(query.any_of)}",
                query.any_of[0],
            )
        )

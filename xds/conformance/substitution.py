"""Preparing a step's metadata for sending, and saving what its ``<Report>``s ask for.

The toolkit never sends a kit message as written: ``$symbol$`` placeholders are filled in from
earlier steps, 2.1 is converted to 3.0, the session's patient id and source id are written in,
fresh uniqueIds are assigned and, with ``<AssignUuids/>``, symbolic ids become ``urn:uuid:``s.
:func:`prepare_submission` does exactly that, in that order, and records the uniqueIds and UUIDs
it assigned under the symbolic ids, so a later ``<UseId section="AssignedUids|AssignedUuids">``
and ``<UseReport reportName="<id>_uid|<id>_uuid">`` can find them.

uniqueIds are assigned per object, never per old value: many kit messages give two documents the
same placeholder uniqueId (11991 two_doc.xml: both "Document01") and still expect Success, so
each DocumentEntry, SubmissionSet and Folder gets its own. A uniqueId a test wants kept (the
original's, written back through ``$doc_uid$`` in a resubmission or metadata update, 12004 and the
MU tests) is exempted by ``<NoAssignUids id="X"/>``, or all of them by ``<NoAssignUids/>``.
"""

from __future__ import annotations

import copy
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from lxml import etree

from xds import safexml
from xds.conformance.ebrim21 import convert_submit_objects_request
from xds.conformance.testplan import INPUT_METADATA, RESULT, ReportSpec, TestStep
from xds.metadata import vocabulary as v

PATIENT_ID_SCHEMES = frozenset({v.DE_PATIENT_ID, v.SS_PATIENT_ID, v.FOLDER_PATIENT_ID})
UNIQUE_ID_SCHEMES = frozenset({v.DE_UNIQUE_ID, v.SS_UNIQUE_ID, v.FOLDER_UNIQUE_ID})
# attributes that refer to another object of the submission by id (rewritten by AssignUuids)
REFERENCE_ATTRIBUTES = ("classifiedObject", "registryObject", "sourceObject", "targetObject", "lid")
# registry object elements whose id AssignUuids may replace (ObjectRefs name existing objects)
_IDENTIFIED = frozenset(
    {"ExtrinsicObject", "RegistryPackage", "Association", "Classification", "ExternalIdentifier"}
)
_DTM = "%Y%m%d%H%M%S"


@dataclass(frozen=True, slots=True)
class Prepared:
    """A step's metadata ready to send, and what was assigned while preparing it."""

    element: etree._Element
    assigned_uids: dict[str, str]  # symbolic id -> uniqueId it carries (fresh unless exempted)
    assigned_uuids: dict[str, str]  # symbolic id -> urn:uuid (AssignUuids only)

    @property
    def reports(self) -> dict[str, str]:
        """The reports the toolkit saves on its own: ``<id>_uid`` and ``<id>_uuid``."""
        saved = {f"{key}_uid": value for key, value in self.assigned_uids.items()}
        saved.update({f"{key}_uuid": value for key, value in self.assigned_uuids.items()})
        return saved


def builtin_symbols(now: datetime | None = None) -> dict[str, str]:
    """``$now$`` and ``$lastyear$`` as HL7 DTM (YYYYMMDDHHMMSS, UTC).

    A plan writes ``$now$`` as the upper bound of a time range, which a stored query treats as
    exclusive (ITI TF-2a §3.18.4.1.2.3.6.1: "less than"). Metadata times have whole seconds, so a
    registry stamps what it stores in the current second with that second; ``$now$`` is therefore
    the first whole second after this instant, which takes in everything stamped up to now (cut
    to the second, an object stored in the same second as the query would fall outside it).
    ``$lastyear$`` is one year before ``$now$``.
    """
    now = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0) + timedelta(seconds=1)
    try:
        last_year = now.replace(year=now.year - 1)
    except ValueError:  # 29 February
        last_year = now.replace(year=now.year - 1, day=28)
    return {"$now$": now.strftime(_DTM), "$lastyear$": last_year.strftime(_DTM)}


def substitute_symbols(root: etree._Element, symbols: Mapping[str, str]) -> None:
    """Replace every symbol (a literal key such as ``$patientid$``) in attribute values and text.

    Works on the parsed tree, so values holding ``&`` or ``<`` (HL7 CX patient ids) need no
    escaping. One pass, longest symbol first: ``$uuid1$`` is never read as ``$uuid`` + ``1$``, and a
    substituted value is never substituted again.
    """
    keys = sorted((key for key in symbols if key), key=len, reverse=True)
    if not keys:
        return
    pattern = re.compile("|".join(re.escape(key) for key in keys))

    def replace(text: str) -> str:
        return pattern.sub(lambda match: symbols[match.group(0)], text)

    for element in root.iter():
        if isinstance(element.tag, str):
            for name, value in element.attrib.items():
                if pattern.search(value):
                    element.set(name, replace(value))
            if element.text and pattern.search(element.text):
                element.text = replace(element.text)
        if element is not root and element.tail and pattern.search(element.tail):
            element.tail = replace(element.tail)


def load_metadata(step: TestStep, symbols: Mapping[str, str], now: datetime | None = None) -> etree._Element:
    """The step's metadata (file or inline), parsed safely, with symbols and builtins substituted."""
    if step.metadata_file is not None:
        root = safexml.parse(step.metadata_file.read_bytes())
    elif step.metadata is not None:
        root = copy.deepcopy(step.metadata)
    else:
        raise ValueError(f"step {step.section}/{step.id} has no metadata")
    substitute_symbols(root, {**builtin_symbols(now), **symbols})
    return root


def prepare_submission(
    step: TestStep,
    *,
    patient_id: str,
    fresh_oid: Callable[[], str],
    symbols: Mapping[str, str],
    source_id: str,
    fresh_uuid: Callable[[], str] | None = None,
    now: datetime | None = None,
) -> Prepared:
    """Make a step's submission ready to send, in the toolkit's order.

    1. substitute ``symbols`` (UseReport / UseId values resolved by the caller) and ``$now$``,
       ``$lastyear$`` in attribute values and text;
    2. parse (``xds.safexml``) and convert ebRIM 2.1 to 3.0 unless ``<NoConvert/>``;
    3. write ``patient_id`` into every DocumentEntry/SubmissionSet/Folder patientId unless
       ``<NoPatientId/>`` (for ``<AltPatientId/>`` the caller passes a fresh, unknown id);
    4. give each DocumentEntry/SubmissionSet/Folder uniqueId a fresh ``fresh_oid()`` except those
       exempted by ``<NoAssignUids>``;
    5. write ``source_id`` into the SubmissionSet sourceId;
    6. with ``<AssignUuids/>``, replace symbolic ids (not ``urn:...``) by fresh ``urn:uuid:``s and
       every reference to them (classifiedObject, registryObject, sourceObject, targetObject, lid).
    """
    root = load_metadata(step, symbols, now)
    if not step.flags.no_convert:
        root = convert_submit_objects_request(root)
    uids: dict[str, str] = {}
    for identifier in _elements_named(root, "ExternalIdentifier"):
        scheme = identifier.get("identificationScheme")
        owner = _owner_id(identifier)
        if scheme in PATIENT_ID_SCHEMES and not step.flags.no_patient_id:
            identifier.set("value", patient_id)
        elif scheme in UNIQUE_ID_SCHEMES:
            if step.flags.assigns_uid_to(owner):
                identifier.set("value", fresh_oid())
            uids[owner] = identifier.get("value", "")
        elif scheme == v.SS_SOURCE_ID:
            identifier.set("value", source_id)
    uuids = _assign_uuids(root, fresh_uuid or _new_uuid) if step.flags.assign_uuids else {}
    return Prepared(element=root, assigned_uids=uids, assigned_uuids=uuids)


def evaluate_reports(
    report_specs: Sequence[ReportSpec],
    input_metadata_element: etree._Element | None,
    result_element: etree._Element | None,
) -> dict[str, str]:
    """Evaluate ``<Report>`` XPaths: InputMetadata against the prepared request, Result the response.

    The value is the string value of the XPath's first result (an attribute, an element's text, or
    a string/number/boolean expression). A report whose XPath selects nothing, or whose document is
    missing (``None``, e.g. no response after a fault), is left out; an unknown section is an error.
    """
    values: dict[str, str] = {}
    for spec in report_specs:
        if spec.section == INPUT_METADATA:
            context = input_metadata_element
        elif spec.section == RESULT:
            context = result_element
        else:
            raise ValueError(f"report {spec.name!r}: unknown section {spec.section!r}")
        if context is None:
            continue
        value = _string_value(context.xpath(spec.xpath))
        if value is not None:
            values[spec.name] = value
    return values


# --- helpers -----------------------------------------------------------------------------------------
def _new_uuid() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def _localname(element: etree._Element) -> str:
    return etree.QName(element).localname if isinstance(element.tag, str) else ""


def _elements_named(root: etree._Element, localname: str) -> list[etree._Element]:
    """Elements with this local name in any namespace (rim 3.0, or rim 2.1 with NoConvert)."""
    return [element for element in root.iter() if _localname(element) == localname]


def _owner_id(identifier: etree._Element) -> str:
    """The id of the object an ExternalIdentifier belongs to (2.1 ones may only be nested)."""
    owner = identifier.get("registryObject")
    if owner:
        return owner
    parent = identifier.getparent()
    return parent.get("id", "") if parent is not None else ""


def _assign_uuids(root: etree._Element, fresh_uuid: Callable[[], str]) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for element in root.iter():
        if _localname(element) in _IDENTIFIED:
            symbolic = element.get("id")
            if symbolic and not symbolic.lower().startswith("urn:"):
                mapping.setdefault(symbolic, fresh_uuid())
                element.set("id", mapping[symbolic])
    for element in root.iter():
        if isinstance(element.tag, str):
            for attribute in REFERENCE_ATTRIBUTES:
                target = element.get(attribute)
                if target in mapping:
                    element.set(attribute, mapping[target])
    return mapping


def _string_value(result: object) -> str | None:
    if isinstance(result, list):
        if not result:
            return None
        result = result[0]
    if isinstance(result, etree._Element):
        return "".join(result.itertext())
    if isinstance(result, bool):
        return "true" if result else "false"
    if isinstance(result, float):
        return str(int(result)) if result.is_integer() else str(result)
    return str(result)
